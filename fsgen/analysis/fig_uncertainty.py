"""Figures of System 1's uncertainty: confidence distributions, AUROC heatmaps, intervention positions.

Each function takes the tables dict and returns a Figure or a string saying why there is none;
empty panels and empty histogram groups say why (never an empty group's crash).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fsgen.analysis.fig_collaboration import reasons
from fsgen.analysis.figbase import always_jobs, grid, no_data, pair_label, pairs_in_order, table
from fsgen.analysis.stats import SINGLE_KINDS

SIGNAL_LABELS = [("top1_prob", "System 1 top-1 probability"), ("entropy", "System 1 entropy (nats)")]


def _always_rows(tables, name: str) -> pd.DataFrame:
    """Rows of a per-job table from pair jobs of methods run with router `always`."""
    df = table(tables, name)
    if df.empty:
        return df
    always = set(always_jobs(tables).get("method", pd.Series(dtype=object)))
    keep = df["method"].isin(always)
    if "kind" in df.columns:
        keep &= ~df["kind"].isin(SINGLE_KINDS)
    return df[keep]


def density_steps(group: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(density [bins], edges [bins+1], count) of one histogram group; None when it has no bins.

    group: rows bin_left, bin_right, count (summed over jobs per bin).
    """
    g = group.groupby(["bin_left", "bin_right"], as_index=False)["count"].sum()
    if g.empty:
        return None
    total = int(g["count"].sum())
    widths = (g["bin_right"] - g["bin_left"]).to_numpy(float)
    density = g["count"].to_numpy(float) / (total * widths) if total else np.zeros(len(g))
    return density, np.r_[g["bin_left"].to_numpy(float), g["bin_right"].iloc[-1]], total


def _histogram_panel(ax, sub: pd.DataFrame, why_empty: str) -> None:
    drawn = 0
    for group, color in (("kept", "0.4"), ("intervened", "C3")):
        steps = density_steps(sub[sub["group"] == group])
        if steps is None or steps[2] == 0:
            continue
        density, edges, total = steps
        ax.stairs(density, edges, color=color, fill=group == "kept", alpha=0.35 if group == "kept" else 1.0,
                  lw=1.5, label=f"{group} (n={total})")
        drawn += total
    if drawn:
        nonzero = sub[sub["count"] > 0]
        ax.set_xlim(0, max(float(nonzero["bin_right"].max()), 1.0))
        ax.legend(fontsize=6.5)
    else:
        no_data(ax, why_empty)


def fig_uncertainty(tables):
    hist = _always_rows(tables, "histograms")
    if hist.empty:
        return "no tokens from a pair job with router always"
    jobs = always_jobs(tables)
    methods, benchmarks = sorted(hist["method"].unique()), sorted(jobs["benchmark"].unique())
    run = set(zip(jobs["method"], jobs["benchmark"]))
    fig, axes = grid(len(methods), len(benchmarks) * len(SIGNAL_LABELS), w=2.9, h=2.3)
    for r, method in enumerate(methods):
        for b, bench in enumerate(benchmarks):
            rows = hist[(hist["method"] == method) & (hist["benchmark"] == bench)]
            why = "no generated tokens" if (method, bench) in run else f"{method} not run on {bench}"
            for s, (signal, label) in enumerate(SIGNAL_LABELS):
                ax = axes[r, b * len(SIGNAL_LABELS) + s]
                _histogram_panel(ax, rows[rows["signal"] == signal], why)
                ax.set_title(f"{method} · {bench}", fontsize=9)
                ax.set_xlabel(label)
                if b * len(SIGNAL_LABELS) + s == 0:
                    ax.set_ylabel("density")
    fig.suptitle("System 1's confidence at positions with and without intervention (pooled over pairs)")
    return fig


def _annotate_cells(ax, values: np.ndarray) -> None:
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] < 0.75 else "black")


def fig_auroc(tables):
    """AUROC on consulted positions (`auroc_consulted`; all positions for an older table)."""
    au = _always_rows(tables, "auroc")
    if au.empty:
        return "no pair job with router always"
    value = "auroc_consulted" if "auroc_consulted" in au.columns else "auroc"
    benchmarks = sorted(au["benchmark"].unique())
    pairs = pairs_in_order(always_jobs(tables))
    cols = sorted(au[["method", "signal"]].drop_duplicates().itertuples(index=False, name=None))
    fig, axes = grid(1, len(benchmarks), w=0.55 * len(cols) + 2.2, h=0.38 * len(pairs) + 1.8)
    image = None
    for ax, bench in zip(axes[0], benchmarks):
        sub = au[au["benchmark"] == bench]
        lookup = sub.set_index(["large", "small", "method", "signal"])[value]
        values = np.array([[lookup.get((lg, sm, m, sig), np.nan) for (m, sig) in cols] for (lg, sm) in pairs], float)
        ax.set_xticks(range(len(cols)), [f"{m}\n{sig}" for m, sig in cols], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(pairs)), [pair_label(*p) for p in pairs])
        ax.grid(False)
        ax.set_title(bench)
        if not np.isfinite(values).any():
            no_data(ax, f"AUROC undefined: {reasons(sub)}")
            continue
        image = ax.imshow(values, vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
        _annotate_cells(ax, values)
    if image is not None:
        fig.colorbar(image, ax=axes[0, -1], label="AUROC (0.5 = chance)")
    fig.suptitle("AUROC of System 1 uncertainty signals for predicting an intervention (consulted positions)")
    return fig


def fig_positions(tables):
    pos = _always_rows(tables, "positions")
    if pos.empty:
        return "no pair job with router always"
    methods, benchmarks = sorted(pos["method"].unique()), sorted(pos["benchmark"].unique())
    pairs = pairs_in_order(always_jobs(tables))
    binned = pos.dropna(subset=["bin"])
    n_bins = int(binned["bin"].max()) + 1 if len(binned) else 10
    fig, axes = grid(len(methods), len(benchmarks), w=4.2, h=0.3 * len(pairs) + 1.5)
    vmax = float(np.nanmax(binned["share"])) if binned["share"].notna().any() else 1.0
    for r, method in enumerate(methods):
        for c, bench in enumerate(benchmarks):
            ax = axes[r, c]
            sub = pos[(pos["method"] == method) & (pos["benchmark"] == bench)]
            lookup = sub.dropna(subset=["bin"]).set_index(["large", "small", "bin"])["share"]
            values = np.array([[lookup.get((lg, sm, b), np.nan) for b in range(n_bins)] for (lg, sm) in pairs], float)
            ax.set_xticks(range(n_bins), [f"{100 * b // n_bins}" for b in range(n_bins)])
            ax.set_yticks(range(len(pairs)), [pair_label(*p) for p in pairs], fontsize=7)
            ax.set_xlabel("relative position in the generation (%, bin start)")
            ax.set_title(f"{method} · {bench}")
            ax.grid(False)
            if not np.isfinite(values).any():
                no_data(ax, f"{method} not run on {bench}" if sub.empty else reasons(sub))
                continue
            image = ax.imshow(values, vmin=0, vmax=vmax, cmap="magma", aspect="auto")
            fig.colorbar(image, ax=ax, label="share of interventions")
    fig.suptitle("Where interventions fall along the generation (share per 10% bin; rows sum to 1)")
    return fig
