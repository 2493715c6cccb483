"""Figures of accuracy, collaboration frequency and the scaling laws.

Each function takes the tables dict and returns a Figure, or a string saying why there is none
(then `fsgen.analysis.figures.render` draws a labelled placeholder; it also sets the figure's
title, `figures.DRAW`). Empty panels say why.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fsgen.analysis.figbase import always_jobs, grid, no_data, pair_label, pairs_in_order, table
from fsgen.analysis.scaling import power_law

BASELINES = {"small alone": ("small_accuracy", "0.75"), "large alone": ("large_accuracy", "0.35")}


def reasons(df: pd.DataFrame, column: str = "status", default: str = "no values") -> str:
    """The distinct non-"ok" reasons of a table slice, joined (for a no-data panel)."""
    if column not in df.columns:
        return default
    found = [r for r in dict.fromkeys(df[column].dropna().astype(str)) if r != "ok"]
    return "; ".join(found[:3]) or default


def not_run_note(sub: pd.DataFrame, variants: list[str]) -> str:
    absent = [m for m in variants if m not in set(sub["variant"])]
    return f"\n(not run: {', '.join(absent)})" if absent else ""


def pair_panels(tables, width_per_pair: float):
    """One panel per benchmark over the pairs (x) of the pair jobs with router `always`, ticks and
    title set: (variants, fig, axes, [(ax, benchmark, its jobs, its pairs, x)]), or why none."""
    jobs = always_jobs(tables)
    if jobs.empty:
        return "no pair job with router always"
    benchmarks, variants = sorted(jobs["benchmark"].unique()), sorted(jobs["variant"].unique())
    fig, axes = grid(1, len(benchmarks), w=max(4.0, width_per_pair * len(pairs_in_order(jobs)) + 1), h=3.2)
    panels = []
    for ax, bench in zip(axes[0], benchmarks):
        sub = jobs[jobs["benchmark"] == bench]
        pairs = pairs_in_order(sub)
        x = np.arange(len(pairs))
        ax.set_xticks(x, [pair_label(*p) for p in pairs], rotation=30, ha="right")
        ax.set_title(f"{bench}{not_run_note(sub, variants)}")
        panels.append((ax, bench, sub, pairs, x))
    return variants, fig, axes, panels


def fig_accuracy(tables):
    layout = pair_panels(tables, 0.9)
    if isinstance(layout, str):
        return layout
    variants, fig, axes, panels = layout
    series = ["small alone", *variants, "large alone"]
    width = 0.8 / len(series)
    for ax, bench, sub, pairs, x in panels:
        for i, name in enumerate(series):
            column, color = BASELINES.get(name, ("accuracy", f"C{variants.index(name)}" if name in variants else None))
            rows = sub if name in BASELINES else sub[sub["variant"] == name]
            values = rows.drop_duplicates(["large", "small"]).set_index(["large", "small"])[column].reindex(pairs)
            ax.bar(x + (i - (len(series) - 1) / 2) * width, values.to_numpy(), width, label=name, color=color)
        ax.set_ylabel("accuracy")
        if sub[["accuracy", "small_accuracy", "large_accuracy"]].isna().all().all():
            no_data(ax, f"{bench}: {reasons(sub, 'accuracy_status', 'no accuracy')}")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def fig_collaboration(tables):
    layout = pair_panels(tables, 0.8)
    if isinstance(layout, str):
        return layout
    variants, fig, axes, panels = layout
    for ax, bench, sub, pairs, x in panels:
        for i, variant in enumerate(variants):
            m = sub[sub["variant"] == variant].set_index(["large", "small"]).reindex(pairs)
            offset = (i - (len(variants) - 1) / 2) * 0.8 / max(len(variants), 1)
            yerr = np.vstack([m["freq_pooled"] - m["freq_pooled_low"], m["freq_pooled_high"] - m["freq_pooled"]])
            ax.errorbar(x + offset, m["freq_pooled"], yerr=yerr, fmt="o", ms=4, capsize=2, label=variant, color=f"C{i}")
        ax.set_ylim(bottom=0)
        if sub["freq_pooled"].isna().all():
            no_data(ax, f"{bench}: {reasons(sub)}")
    axes[0, 0].set_ylabel("collaboration frequency\n(interventions / tokens)")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.floating)) and bool(np.isfinite(value))


BAND_ALPHA = {"pairs": 0.12, "requests": 0.3}  # pairs resampled (outer, lighter); requests within jobs (inner)


def band_of(bands: pd.DataFrame, source: str, variant: str, bench: str, form: str) -> pd.DataFrame:
    """The bootstrap bands of one fitted form (`scaling_bands` rows, every scheme)."""
    if bands.empty:
        return bands
    return bands[(bands["source"] == source) & (bands["variant"] == variant) & (bands["benchmark"] == bench)
                 & (bands["form"] == form)]


def _draw_bands(ax, band: pd.DataFrame, x, color: str, shown) -> None:
    """Each scheme's pointwise 95% band: pairs resampled (lighter), requests resampled (darker),
    cut at one data span beyond the points and the curve (`shown`): a resample of few pairs can
    fit a wild curve, which would otherwise set the axis."""
    shown = np.asarray(shown, float)
    shown = shown[np.isfinite(shown)]
    span = max(float(np.ptp(shown)), 0.02) if len(shown) else 1.0
    low, high = (shown.min() - span, shown.max() + span) if len(shown) else (-np.inf, np.inf)
    for scheme, alpha in BAND_ALPHA.items():
        rows = band[band["scheme"] == scheme] if len(band) else band
        if len(rows):
            ax.fill_between(x(rows), rows["low"].clip(low, high), rows["high"].clip(low, high), color=color,
                            alpha=alpha, lw=0)


def _scaling_series(ax, fit: pd.Series, pts: pd.DataFrame, bench: str, color: str, alternative: bool,
                    band: pd.DataFrame) -> None:
    """One benchmark's points, fitted curve and its 95% bootstrap band in a scaling panel; the legend
    carries R² or the status."""
    status, at_bound = str(fit.get("status", "ok")), fit.get("at_bound")
    note = "" if status == "ok" else f", {status}"
    if isinstance(at_bound, str) and at_bound:  # the long reason is in the table and the caption
        note = ", " + ", ".join(f"{'α' if p == 'alpha' else p} at bound" for p in at_bound.split(","))
    if alternative:
        x = pts["small_params"].to_numpy(float) / 1e9
        r2 = fit.get("alt_r2")
        ax.scatter(x, pts["freq"], s=14, color=color, label=f"{bench} (R²={r2:.2f})" if _finite(r2) else f"{bench}{note}")
        shown = pts["freq"].to_numpy(float)
        if _finite(fit.get("alt_c")) and len(x):
            curve = np.geomspace(x.min(), x.max(), 50)
            line = fit["alt_c"] + fit["alt_d"] * np.log(curve)
            ax.plot(curve, line, color=color, lw=1.2)
            shown = np.r_[shown, line]
        _draw_bands(ax, band, lambda rows: rows["small_params"].to_numpy(float) / 1e9, color, shown)
        ax.set_xscale("log")
        sizes = np.unique(x[np.isfinite(x)])
        ax.set_xticks(sizes, [f"{v:g}" for v in sizes])
        ax.minorticks_off()
        ax.set_xlabel("N_small (billions of params, log scale)")
        return
    ratio = pts["ratio"].to_numpy(float)
    alpha = fit["alpha"] if _finite(fit.get("alpha")) else 1.0
    label = f"{bench} (α={alpha:.2f}, R²={fit['r2']:.2f}{note})" if _finite(fit.get("r2")) else f"{bench} ({status})"
    ax.scatter(ratio ** -alpha, pts["freq"], s=14, color=color, label=label)
    shown = pts["freq"].to_numpy(float)
    if _finite(fit.get("a")) and len(ratio):
        curve = np.geomspace(ratio.min(), ratio.max(), 50)
        line = power_law(curve, fit["a"], alpha, fit["b"])
        ax.plot(curve ** -alpha, line, color=color, lw=1.2)
        shown = np.r_[shown, line]
    _draw_bands(ax, band, lambda rows: rows["ratio"].to_numpy(float) ** -alpha, color, shown)
    ax.set_xlabel("r^(−α)")


def _scaling_panels(tables, fits, residuals, alternative: bool):
    fits, residuals = table({"f": fits}, "f"), table({"r": residuals}, "r")
    bands = table(tables, "scaling_bands")
    form = "log_small" if alternative else "power"
    if fits.empty or residuals.empty:
        return "no pair jobs to fit"
    always = set(always_jobs(tables).get("variant", pd.Series(dtype=object)))
    fits = fits[(fits["source"] != "ours") | fits["variant"].isin(always)]
    sources = [s for s in ("ours", "paper") if s in set(fits["source"])]
    if not sources:
        return "no variant run with router always"
    variants = {s: sorted(fits[fits["source"] == s]["variant"].unique()) for s in sources}
    n_cols = max(len(m) for m in variants.values())
    fig, axes = grid(len(sources), n_cols, w=3.3, h=2.9)
    for r, source in enumerate(sources):
        benchmarks = sorted(fits[fits["source"] == source]["benchmark"].unique())
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(variants[source]):
                ax.set_visible(False)
                continue
            variant = variants[source][c]
            for j, bench in enumerate(benchmarks):
                fit = fits[(fits["source"] == source) & (fits["variant"] == variant) & (fits["benchmark"] == bench)]
                pts = residuals[(residuals["source"] == source) & (residuals["variant"] == variant)
                                & (residuals["benchmark"] == bench)].dropna(subset=["freq"])
                if len(fit) and len(pts):
                    band = band_of(bands, source, variant, bench, form)
                    _scaling_series(ax, fit.iloc[0], pts, bench, f"C{j}", alternative, band)
            ax.set_title(f"{source}: {variant}")
            ax.set_ylabel("collaboration frequency")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
            else:
                no_data(ax, reasons(fits[(fits["source"] == source) & (fits["variant"] == variant)], "status",
                                    "no frequency to fit"))
    return fig


def fig_scaling_law(tables, fits=None, residuals=None):
    """Points against r^(−α) with the fitted law, one panel per source × variant."""
    return _scaling_panels(tables, fits, residuals, alternative=False)


def fig_scaling_small_size(tables, fits=None, residuals=None):
    """Points against N_small with the fitted c + d·ln N_small, one panel per source × variant."""
    return _scaling_panels(tables, fits, residuals, alternative=True)
