"""Figures of accuracy, collaboration frequency and the scaling laws.

Each function takes the tables dict and returns a Figure, or a string saying why there is none
(then `fsgen.analysis.figures.render` draws a labelled placeholder). Empty panels say why.
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


def not_run_note(sub: pd.DataFrame, methods: list[str]) -> str:
    absent = [m for m in methods if m not in set(sub["method"])]
    return f"\n(not run: {', '.join(absent)})" if absent else ""


def fig_accuracy(tables):
    jobs = always_jobs(tables)
    if jobs.empty:
        return "no pair job with router always"
    benchmarks, methods = sorted(jobs["benchmark"].unique()), sorted(jobs["method"].unique())
    fig, axes = grid(1, len(benchmarks), w=max(4.0, 0.9 * len(pairs_in_order(jobs)) + 1), h=3.2)
    series = ["small alone", *methods, "large alone"]
    width = 0.8 / len(series)
    for ax, bench in zip(axes[0], benchmarks):
        sub = jobs[jobs["benchmark"] == bench]
        pairs = pairs_in_order(sub)
        x = np.arange(len(pairs))
        for i, name in enumerate(series):
            column, color = BASELINES.get(name, ("accuracy", f"C{methods.index(name)}" if name in methods else None))
            rows = sub if name in BASELINES else sub[sub["method"] == name]
            values = rows.drop_duplicates(["large", "small"]).set_index(["large", "small"])[column].reindex(pairs).to_numpy()
            ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, color=color)
        ax.set_xticks(x, [pair_label(*p) for p in pairs], rotation=30, ha="right")
        ax.set_title(f"{bench}{not_run_note(sub, methods)}")
        ax.set_ylabel("accuracy")
        if sub[["accuracy", "small_accuracy", "large_accuracy"]].isna().all().all():
            no_data(ax, f"{bench}: {reasons(sub, 'accuracy_status', 'no accuracy')}")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("Accuracy of each method beside the small-alone and large-alone baselines")
    return fig


def fig_collaboration(tables):
    jobs = always_jobs(tables)
    if jobs.empty:
        return "no pair job with router always"
    benchmarks, methods = sorted(jobs["benchmark"].unique()), sorted(jobs["method"].unique())
    fig, axes = grid(1, len(benchmarks), w=max(4.0, 0.8 * len(pairs_in_order(jobs)) + 1), h=3.2)
    for ax, bench in zip(axes[0], benchmarks):
        sub = jobs[jobs["benchmark"] == bench]
        pairs = pairs_in_order(sub)
        x = np.arange(len(pairs))
        for i, method in enumerate(methods):
            m = sub[sub["method"] == method].set_index(["large", "small"]).reindex(pairs)
            offset = (i - (len(methods) - 1) / 2) * 0.8 / max(len(methods), 1)
            yerr = np.vstack([m["freq_pooled"] - m["freq_pooled_low"], m["freq_pooled_high"] - m["freq_pooled"]])
            ax.errorbar(x + offset, m["freq_pooled"], yerr=yerr, fmt="o", ms=4, capsize=2, label=method, color=f"C{i}")
        ax.set_xticks(x, [pair_label(*p) for p in pairs], rotation=30, ha="right")
        ax.set_title(f"{bench}{not_run_note(sub, methods)}")
        ax.set_ylim(bottom=0)
        if sub["freq_pooled"].isna().all():
            no_data(ax, f"{bench}: {reasons(sub)}")
    axes[0, 0].set_ylabel("collaboration frequency\n(interventions / tokens)")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("Collaboration frequency per pair, pooled over tokens, with 95% bootstrap CI")
    return fig


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.floating)) and bool(np.isfinite(value))


def _scaling_series(ax, fit: pd.Series, pts: pd.DataFrame, bench: str, color: str, alternative: bool) -> None:
    """One benchmark's points and fitted curve in a scaling panel; the legend carries R² or the status."""
    status = str(fit.get("status", "ok"))
    note = "" if status == "ok" else f", {status}"
    if alternative:
        x = pts["small_params"].to_numpy(float) / 1e9
        r2 = fit.get("alt_r2")
        ax.scatter(x, pts["freq"], s=14, color=color, label=f"{bench} (R²={r2:.2f})" if _finite(r2) else f"{bench}{note}")
        if _finite(fit.get("alt_c")) and len(x):
            curve = np.geomspace(x.min(), x.max(), 50)
            ax.plot(curve, fit["alt_c"] + fit["alt_d"] * np.log(curve), color=color, lw=1.2)
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
    if _finite(fit.get("a")) and len(ratio):
        curve = np.geomspace(ratio.min(), ratio.max(), 50)
        ax.plot(curve ** -alpha, power_law(curve, fit["a"], alpha, fit["b"]), color=color, lw=1.2)
    ax.set_xlabel("r^(−α)")


def _scaling_panels(tables, fits, residuals, alternative: bool):
    fits, residuals = table({"f": fits}, "f"), table({"r": residuals}, "r")
    if fits.empty or residuals.empty:
        return "no pair jobs to fit"
    always = set(always_jobs(tables).get("method", pd.Series(dtype=object)))
    fits = fits[(fits["source"] != "ours") | fits["method"].isin(always)]
    sources = [s for s in ("ours", "paper") if s in set(fits["source"])]
    if not sources:
        return "no method run with router always"
    methods = {s: sorted(fits[fits["source"] == s]["method"].unique()) for s in sources}
    n_cols = max(len(m) for m in methods.values())
    fig, axes = grid(len(sources), n_cols, w=3.3, h=2.9)
    for r, source in enumerate(sources):
        benchmarks = sorted(fits[fits["source"] == source]["benchmark"].unique())
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(methods[source]):
                ax.set_visible(False)
                continue
            method = methods[source][c]
            for j, bench in enumerate(benchmarks):
                fit = fits[(fits["source"] == source) & (fits["method"] == method) & (fits["benchmark"] == bench)]
                pts = residuals[(residuals["source"] == source) & (residuals["method"] == method)
                                & (residuals["benchmark"] == bench)].dropna(subset=["freq"])
                if len(fit) and len(pts):
                    _scaling_series(ax, fit.iloc[0], pts, bench, f"C{j}", alternative)
            ax.set_title(f"{source}: {method}")
            ax.set_ylabel("collaboration frequency")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
            else:
                no_data(ax, reasons(fits[(fits["source"] == source) & (fits["method"] == method)], "status",
                                    "no frequency to fit"))
    return fig


def fig_scaling_law(tables, fits=None, residuals=None):
    fig = _scaling_panels(tables, fits, residuals, alternative=False)
    if not isinstance(fig, str):
        fig.suptitle("Scaling law f(r) = b − a·r^(−α), r = large/small parameter ratio, α fitted per benchmark:"
                     " points and fitted curves (rows: source)")
    return fig


def fig_scaling_small_size(tables, fits=None, residuals=None):
    fig = _scaling_panels(tables, fits, residuals, alternative=True)
    if not isinstance(fig, str):
        fig.suptitle("Alternative predictor f = c + d·ln N_small: frequency against the small model's size")
    return fig
