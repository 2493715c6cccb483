"""Figures from the aggregate tables: matplotlib (Agg), one consistent style, PNG + PDF.

Each `fig_*` takes the tables dict (see `tables.build_tables`) and returns a Figure, or None when
its inputs are empty (then `render` draws a labelled placeholder so the workflow output exists).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fsgen.analysis.scaling import power_law  # noqa: E402
from fsgen.atomic import atomic_path  # noqa: E402
from fsgen.analysis.stats import SINGLE_KINDS, pair_mask  # noqa: E402

STYLE = {
    "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "figure.constrained_layout.use": True,
}
ROUTER_COLORS = {"threshold": "C0", "margin": "C1", "entropy": "C2", "learned": "C3"}


def short(name) -> str:
    return str(name).rstrip("/").split("/")[-1]


def pair_label(large, small) -> str:
    return f"{short(large)} / {short(small)}"


def _t(tables: dict, name: str) -> pd.DataFrame:
    """A table by name; an empty one when the rule did not pass it."""
    table = tables.get(name)
    return table if table is not None else pd.DataFrame()


def always_jobs(tables) -> pd.DataFrame:
    """Pair jobs whose router is `always` (the method as the paper ran it)."""
    jobs = _t(tables, "jobs")
    if jobs.empty:
        return jobs
    return jobs[(jobs["router"].fillna("always") == "always") & pair_mask(jobs)]


def _pairs_in_order(df: pd.DataFrame) -> list[tuple]:
    cols = ["small_params", "large_params"] if "small_params" in df else ["small", "large"]
    return list(df.sort_values(cols)[["large", "small"]].drop_duplicates().itertuples(index=False, name=None))


def _grid(n_rows, n_cols, w=3.4, h=2.8, **kw):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(w * n_cols, h * n_rows), squeeze=False, **kw)
    return fig, axes


def fig_accuracy(tables):
    jobs = always_jobs(tables)
    if jobs.empty or jobs["accuracy"].isna().all():
        return None
    benchmarks = sorted(jobs["benchmark"].unique())
    methods = sorted(jobs["method"].unique())
    fig, axes = _grid(1, len(benchmarks), w=max(4.0, 0.9 * len(_pairs_in_order(jobs)) + 1), h=3.2)
    series = ["small alone", *methods, "large alone"]
    width = 0.8 / len(series)
    for ax, bench in zip(axes[0], benchmarks):
        sub = jobs[jobs["benchmark"] == bench]
        pairs = _pairs_in_order(sub)
        x = np.arange(len(pairs))
        for i, name in enumerate(series):
            values = []
            for large, small in pairs:
                p = sub[(sub["large"] == large) & (sub["small"] == small)]
                col = {"small alone": "small_accuracy", "large alone": "large_accuracy"}.get(name, "accuracy")
                p = p if name in ("small alone", "large alone") else p[p["method"] == name]
                values.append(p[col].iloc[0] if len(p) else np.nan)
            color = {"small alone": "0.75", "large alone": "0.35"}.get(name, f"C{methods.index(name)}" if name in methods else None)
            ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, color=color)
        ax.set_xticks(x, [pair_label(*p) for p in pairs], rotation=30, ha="right")
        ax.set_title(f"{bench}")
        ax.set_ylabel("accuracy")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("Accuracy of each method beside the small-alone and large-alone baselines")
    return fig


def fig_collaboration(tables):
    jobs = always_jobs(tables)
    if jobs.empty:
        return None
    benchmarks = sorted(jobs["benchmark"].unique())
    methods = sorted(jobs["method"].unique())
    fig, axes = _grid(1, len(benchmarks), w=max(4.0, 0.8 * len(_pairs_in_order(jobs)) + 1), h=3.2)
    for ax, bench in zip(axes[0], benchmarks):
        sub = jobs[jobs["benchmark"] == bench]
        pairs = _pairs_in_order(sub)
        x = np.arange(len(pairs))
        for i, method in enumerate(methods):
            m = sub[sub["method"] == method].set_index(["large", "small"]).reindex(pairs)
            offset = (i - (len(methods) - 1) / 2) * 0.8 / max(len(methods), 1)
            yerr = np.vstack([m["freq_pooled"] - m["freq_pooled_low"], m["freq_pooled_high"] - m["freq_pooled"]])
            ax.errorbar(x + offset, m["freq_pooled"], yerr=yerr, fmt="o", ms=4, capsize=2, label=method, color=f"C{i}")
        ax.set_xticks(x, [pair_label(*p) for p in pairs], rotation=30, ha="right")
        ax.set_title(bench)
        ax.set_ylim(bottom=0)
    axes[0, 0].set_ylabel("collaboration frequency\n(interventions / tokens)")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("Collaboration frequency per pair, pooled over tokens, with 95% bootstrap CI")
    return fig


def _scaling_panels(tables, fits, residuals, alternative: bool):
    if fits is None or fits.empty or residuals is None or residuals.empty:
        return None
    always = set(always_jobs(tables)["method"])
    keep = (fits["source"] != "ours") | fits["method"].isin(always)
    fits = fits[keep]
    sources = [s for s in ("ours", "paper") if s in set(fits["source"])]
    methods = {s: sorted(fits[fits["source"] == s]["method"].unique()) for s in sources}
    n_cols = max(len(m) for m in methods.values())
    fig, axes = _grid(len(sources), n_cols, w=3.3, h=2.9)
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
                                & (residuals["benchmark"] == bench)]
                if fit.empty or pts.empty:
                    continue
                fit = fit.iloc[0]
                color = f"C{j}"
                if alternative:
                    x = pts["small_params"].to_numpy(float) / 1e9
                    ax.scatter(x, pts["freq"], s=14, color=color, label=f"{bench} (R²={fit['alt_r2']:.2f})")
                    if np.isfinite(fit["alt_c"]):
                        grid = np.geomspace(x.min(), x.max(), 50)
                        ax.plot(grid, fit["alt_c"] + fit["alt_d"] * np.log(grid), color=color, lw=1.2)
                    ax.set_xscale("log")
                    sizes = np.unique(x)
                    ax.set_xticks(sizes, [f"{v:g}" for v in sizes])
                    ax.minorticks_off()
                    ax.set_xlabel("N_small (billions of params, log scale)")
                else:
                    ratio = pts["ratio"].to_numpy(float)
                    alpha = fit["alpha"] if np.isfinite(fit["alpha"]) else 1.0
                    label = f"{bench} (α={alpha:.2f}, R²={fit['r2']:.2f})" if np.isfinite(fit["r2"]) else f"{bench} ({fit['status']})"
                    ax.scatter(ratio ** -alpha, pts["freq"], s=14, color=color, label=label)
                    if np.isfinite(fit["a"]):
                        grid = np.geomspace(ratio.min(), ratio.max(), 50)
                        ax.plot(grid ** -alpha, power_law(grid, fit["a"], alpha, fit["b"]), color=color, lw=1.2)
                    ax.set_xlabel("r^(−α)")
            ax.set_title(f"{source}: {method}")
            ax.set_ylabel("collaboration frequency")
            ax.legend(fontsize=7)
    return fig


def fig_scaling_law(tables, fits=None, residuals=None):
    fig = _scaling_panels(tables, fits, residuals, alternative=False)
    if fig:
        fig.suptitle("Scaling law f(r) = b − a·r^(−α), r = large/small parameter ratio, α fitted per benchmark:"
                     " points and fitted curves (rows: source)")
    return fig


def fig_scaling_small_size(tables, fits=None, residuals=None):
    fig = _scaling_panels(tables, fits, residuals, alternative=True)
    if fig:
        fig.suptitle("Alternative predictor f = c + d·ln N_small: frequency against the small model's size")
    return fig


def fig_uncertainty(tables):
    hist = _t(tables, "histograms")
    if hist.empty:
        return None
    always = set(always_jobs(tables)["method"])
    hist = hist[hist["method"].isin(always)]
    if hist.empty:
        return None
    methods, benchmarks = sorted(hist["method"].unique()), sorted(hist["benchmark"].unique())
    signals = [("top1_prob", "System 1 top-1 probability"), ("entropy", "System 1 entropy (nats)")]
    fig, axes = _grid(len(methods), len(benchmarks) * len(signals), w=2.9, h=2.3)
    for r, method in enumerate(methods):
        for b, bench in enumerate(benchmarks):
            for s, (signal, label) in enumerate(signals):
                ax = axes[r, b * len(signals) + s]
                sub = hist[(hist["method"] == method) & (hist["benchmark"] == bench) & (hist["signal"] == signal)]
                for group, color in (("kept", "0.4"), ("intervened", "C3")):
                    g = sub[sub["group"] == group].groupby(["bin_left", "bin_right"], as_index=False)["count"].sum()
                    widths = g["bin_right"] - g["bin_left"]
                    total = g["count"].sum()
                    density = g["count"] / (total * widths) if total else g["count"] * 0
                    ax.stairs(density.to_numpy(), np.r_[g["bin_left"].to_numpy(), g["bin_right"].iloc[-1]],
                              color=color, fill=group == "kept", alpha=0.35 if group == "kept" else 1.0,
                              lw=1.5, label=f"{group} (n={int(total)})")
                nonzero = sub[sub["count"] > 0]
                if len(nonzero):
                    ax.set_xlim(0, max(float(nonzero["bin_right"].max()), 1.0))
                ax.set_title(f"{method} · {bench}", fontsize=9)
                ax.set_xlabel(label)
                if b * len(signals) + s == 0:
                    ax.set_ylabel("density")
                ax.legend(fontsize=6.5)
    fig.suptitle("System 1's confidence at positions with and without intervention (pooled over pairs)")
    return fig


def fig_auroc(tables):
    au = _t(tables, "auroc")
    if au.empty:
        return None
    always = set(always_jobs(tables)["method"])
    au = au[au["method"].isin(always) & ~au["kind"].isin(SINGLE_KINDS)]
    if au.empty:
        return None
    benchmarks = sorted(au["benchmark"].unique())
    jobs = always_jobs(tables)
    pairs = _pairs_in_order(jobs)
    cols = sorted(au[["method", "signal"]].drop_duplicates().itertuples(index=False, name=None))
    fig, axes = _grid(1, len(benchmarks), w=0.55 * len(cols) + 2.2, h=0.38 * len(pairs) + 1.8)
    for ax, bench in zip(axes[0], benchmarks):
        sub = au[au["benchmark"] == bench].set_index(["large", "small", "method", "signal"])["auroc"]
        grid = np.array([[sub.get((l, s, m, sig), np.nan) for (m, sig) in cols] for (l, s) in pairs])
        im = ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] < 0.75 else "black")
        ax.set_xticks(range(len(cols)), [f"{m}\n{sig}" for m, sig in cols], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(pairs)), [pair_label(*p) for p in pairs])
        ax.grid(False)
        ax.set_title(bench)
    fig.colorbar(im, ax=axes[0, -1], label="AUROC (0.5 = chance)")
    fig.suptitle("AUROC of System 1 uncertainty signals for predicting an intervention")
    return fig


def fig_positions(tables):
    pos = _t(tables, "positions")
    if pos.empty:
        return None
    always = set(always_jobs(tables)["method"])
    pos = pos[pos["method"].isin(always) & ~pos["kind"].isin(SINGLE_KINDS)]
    if pos.empty:
        return None
    methods, benchmarks = sorted(pos["method"].unique()), sorted(pos["benchmark"].unique())
    pairs = _pairs_in_order(always_jobs(tables))
    n_bins = int(pos["bin"].max()) + 1
    fig, axes = _grid(len(methods), len(benchmarks), w=4.2, h=0.3 * len(pairs) + 1.5)
    vmax = float(np.nanmax(pos["share"])) if pos["share"].notna().any() else 1.0
    for r, method in enumerate(methods):
        for c, bench in enumerate(benchmarks):
            ax = axes[r, c]
            sub = pos[(pos["method"] == method) & (pos["benchmark"] == bench)].set_index(["large", "small", "bin"])["share"]
            grid = np.array([[sub.get((l, s, b), np.nan) for b in range(n_bins)] for (l, s) in pairs])
            im = ax.imshow(grid, vmin=0, vmax=vmax, cmap="magma", aspect="auto")
            ax.set_xticks(range(n_bins), [f"{100 * b // n_bins}" for b in range(n_bins)])
            ax.set_yticks(range(len(pairs)), [pair_label(*p) for p in pairs], fontsize=7)
            ax.set_xlabel("relative position in the generation (%, bin start)")
            ax.set_title(f"{method} · {bench}")
            ax.grid(False)
            fig.colorbar(im, ax=ax, label="share of interventions")
    fig.suptitle("Where interventions fall along the generation (share per 10% bin; rows sum to 1)")
    return fig


def fig_router_offline(tables):
    curves = _t(tables, "router_offline")
    if curves.empty:
        return None
    benchmarks = sorted(curves["benchmark"].unique())
    fig, axes = _grid(1, len(benchmarks), w=3.6, h=3.3, sharey=True)
    for ax, bench in zip(axes[0], benchmarks):
        sub = curves[curves["benchmark"] == bench]
        n_pairs = sub[["large", "small"]].drop_duplicates().shape[0]
        for router, g in sub.groupby("router"):
            by_grid = g.groupby("grid").agg(x=("share_sent", "mean"), y=("recall", "mean"),
                                            lo=("recall", "min"), hi=("recall", "max"))
            color = ROUTER_COLORS.get(router, "k")
            ax.plot(by_grid["x"], by_grid["y"], color=color, lw=1.5, label=router)
            ax.fill_between(by_grid["x"], by_grid["lo"], by_grid["hi"], color=color, alpha=0.12, lw=0)
        ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1, label="random")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("share of tokens sent to System 2")
        ax.set_title(f"{bench} (mean over {n_pairs} pairs; band = min–max)")
    axes[0, 0].set_ylabel("share of interventions caught (recall)")
    axes[0, -1].legend(loc="lower right")
    fig.suptitle("Offline router sweep on oracle traces (held-out requests)")
    return fig


def fig_router_online(tables):
    online = _t(tables, "router_online")
    if online is None or online.empty:
        return None
    benchmarks = sorted(online["benchmark"].unique())
    fig, axes = _grid(1, len(benchmarks), w=3.8, h=3.3)
    markers = {"never": "s", "always": "^"}
    for ax, bench in zip(axes[0], benchmarks):
        sub = online[online["benchmark"] == bench]
        groups = list(sub.groupby(["large", "small", "kind"], sort=True))
        for i, ((large, small, kind), g) in enumerate(groups):
            g = g.sort_values("s2_call_rate")
            ax.plot(g["s2_call_rate"], g["accuracy"], color=f"C{i}", lw=1, label=f"{pair_label(large, small)} ({kind})")
            for _, p in g.iterrows():
                ax.scatter(p["s2_call_rate"], p["accuracy"], color=f"C{i}", s=22, zorder=3,
                           marker=markers.get(p["router"], "o"))
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel("System 2 call rate (consulted / tokens)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{bench}  (■ never, ● routed, ▲ always)")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.suptitle("Online routers: accuracy against System 2 call rate")
    return fig


def fig_speculative(tables):
    spec, hist = _t(tables, "speculative"), _t(tables, "accepted_lengths")
    if spec.empty:
        return None
    benchmarks = sorted(spec["benchmark"].unique())
    fig, axes = _grid(len(benchmarks), 3, w=3.4, h=2.8)
    for r, bench in enumerate(benchmarks):
        sub = spec[spec["benchmark"] == bench]
        pred, meas = sub[sub["source"] == "predicted"], sub[sub["source"] == "measured"]
        pairs = list(sub[["large", "small"]].drop_duplicates().itertuples(index=False, name=None))
        for c, (col, label) in enumerate([("acceptance_rate", "acceptance rate"),
                                          ("mean_accepted_length", "tokens per round (1 + accepted)")]):
            ax = axes[r, c]
            for i, (large, small) in enumerate(pairs):
                p = pred[(pred["large"] == large) & (pred["small"] == small)]
                m = meas[(meas["large"] == large) & (meas["small"] == small)]
                ax.plot(p["k"], p[col], color=f"C{i}", lw=1, label=pair_label(large, small))
                ax.scatter(m["k"], m[col], color=f"C{i}", marker="*", s=70, zorder=3, edgecolor="k", lw=0.4)
            ax.set_xlabel("draft length K")
            ax.set_ylabel(label)
            ax.set_title(f"{bench}: lines predicted from oracle, ★ measured", fontsize=8.5)
        axes[r, 0].legend(fontsize=6)
        ax = axes[r, 2]
        h = hist[hist["benchmark"] == bench]
        k_meas = sorted(h[h["source"] == "measured"]["k"].unique())
        for source, style in (("measured", dict(color="C0", alpha=0.6)), ("predicted", dict(color="k", fill=False, lw=1.5))):
            g = h[(h["source"] == source) & h["k"].isin(k_meas)].groupby("accepted")["rounds"].sum()
            if g.sum():
                ax.bar(g.index, g / g.sum(), width=0.8, label=f"{source} (K={','.join(map(str, k_meas))})", **style)
        ax.set_xlabel("accepted drafts per round")
        ax.set_ylabel("share of rounds")
        ax.set_title(f"{bench}: accepted lengths (pooled over pairs)", fontsize=8.5)
        ax.legend(fontsize=7)
    fig.suptitle("Speculative decoding: measured vs predicted from the oracle trace")
    return fig


FIGURES = {  # name -> (function, needs the scaling fits)
    "accuracy": (fig_accuracy, False),
    "collaboration": (fig_collaboration, False),
    "scaling_law": (fig_scaling_law, True),
    "scaling_small_size": (fig_scaling_small_size, True),
    "uncertainty_distributions": (fig_uncertainty, False),
    "auroc": (fig_auroc, False),
    "positions": (fig_positions, False),
    "router_offline": (fig_router_offline, False),
    "router_online": (fig_router_online, False),
    "speculative": (fig_speculative, False),
}


def placeholder(name: str, why: str):
    fig, ax = plt.subplots(figsize=(5, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{name}: no data\n{why}", ha="center", va="center")
    return fig


def save(fig, png_path) -> Path:
    """Write `<stem>.png` and `<stem>.pdf` atomically; close the figure."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    for path, fmt in ((png_path, "png"), (png_path.with_suffix(".pdf"), "pdf")):
        with atomic_path(path) as tmp:
            # "tight" grows the canvas to the suptitle, which is often wider than narrow panels
            fig.savefig(tmp, format=fmt, bbox_inches="tight")
    plt.close(fig)
    return png_path


def render(name: str, tables: dict, png_path, fits=None, residuals=None) -> Path:
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    func, needs_fits = FIGURES[name]
    with plt.rc_context(STYLE):
        fig = func(tables, fits, residuals) if needs_fits else func(tables)
        if fig is None:
            fig = placeholder(name, "the runs this figure needs are not in the configuration")
        return save(fig, png_path)


def render_all(tables: dict, fits, residuals, out_dir) -> dict[str, Path]:
    return {name: render(name, tables, Path(out_dir) / f"{name}.png", fits, residuals) for name in FIGURES}
