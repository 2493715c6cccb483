"""The accuracy–cost figure: each pair's settings, its Pareto frontier with a bootstrap band, 90% of the gap.

Takes the tables of rule `frontier` (`fsgen.analysis.cost.frontier_tables`) and returns a Figure
titled by `fsgen.analysis.figures.DRAW`, or a string saying why there is none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fsgen.analysis.cost import LARGE_ALONE, SMALL_ALONE
from fsgen.analysis.fig_collaboration import reasons
from fsgen.analysis.figbase import grid, guide, no_data, pair_label, table

COST_LABELS = {"s2_share": "share of tokens System 2 decided", "s2_calls": "System 2 calls per request",
               "flops": "FLOPs per request", "wall_s": "wall seconds per request"}
MARKERS = {SMALL_ALONE: "s", LARGE_ALONE: "^"}


def _colors(points: pd.DataFrame) -> dict:
    """One colour per setting across every panel (the baselines grey and black)."""
    settings = sorted(set(points["setting"]) - set(MARKERS))
    return {SMALL_ALONE: "0.6", LARGE_ALONE: "k", **{s: f"C{i % 10}" for i, s in enumerate(settings)}}


def _frontier_panel(ax, pts: pd.DataFrame, band: pd.DataFrame, gap: pd.DataFrame, colors: dict) -> None:
    """Settings with their intervals (filled: on the frontier), the frontier and its band, the 90% target."""
    if len(band):
        band = band.sort_values("cost")
        ax.fill_between(band["cost"], band["low"], band["high"], color="C0", alpha=0.15, lw=0)
        ax.plot(band["cost"], band["accuracy"], color="C0", lw=1.2)
    for row in pts.itertuples():
        on = bool(row.on_frontier)
        ax.errorbar(row.cost, row.accuracy, xerr=[[row.cost - row.cost_low], [row.cost_high - row.cost]],
                    yerr=[[row.accuracy - row.accuracy_low], [row.accuracy_high - row.accuracy]],
                    fmt=MARKERS.get(row.setting, "o"), ms=5, capsize=1.5, lw=0.7, color=colors[row.setting],
                    mfc=colors[row.setting] if on else "white", label=row.setting)
    if len(gap) and np.isfinite(gap["target"].iloc[0]):
        g = gap.iloc[0]
        guide(ax.axhline(g["target"], ls=":", color="0.4", lw=0.8))
        if np.isfinite(g["cost"]):
            guide(ax.axvline(g["cost"], ls=":", color="C3", lw=0.8))
            ax.text(g["cost"], ax.get_ylim()[0], f" 90%: {g['cost']:.3g}", color="C3", fontsize=7, va="bottom")


def fig_frontier(tables):
    points, bands, gaps = (table(tables, n) for n in ("frontier_points", "frontier_bands", "gap_recovery"))
    if points.empty:
        return "no pair with per-request costs and outcomes (rule frontier)"
    pairs = list(points[["benchmark", "large", "small"]].drop_duplicates().itertuples(index=False, name=None))
    models = [m for m in COST_LABELS if m in set(points["cost_model"])]
    colors = _colors(points)
    fig, axes = grid(len(models), len(pairs), w=3.1, h=2.6)
    for c, (bench, large, small) in enumerate(pairs):
        for r, model in enumerate(models):
            ax = axes[r, c]

            def rows(df):
                return df[(df["benchmark"] == bench) & (df["large"] == large) & (df["small"] == small)
                          & (df["cost_model"] == model)] if len(df) else df

            pts, gap = rows(points), rows(gaps)
            ax.set_title(f"{bench}: {pair_label(large, small)}" if r == 0 else "", fontsize=8.5)
            ax.set_xlabel(COST_LABELS[model], fontsize=8)
            if c == 0:
                ax.set_ylabel("accuracy")
            if pts["accuracy"].isna().all() or pts["cost"].isna().all():
                no_data(ax, reasons(gap, default="no accuracy or no cost for this pair"))
                continue
            _frontier_panel(ax, pts, rows(bands), gap, colors)
    handles, labels = [], []
    for ax in axes.flat:  # one legend entry per setting
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if handles:
        axes[0, -1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return fig
