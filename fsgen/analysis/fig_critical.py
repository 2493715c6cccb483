"""Which interventions matter: the critical share per pair, along the answer, by System 1's confidence,
and routers judged by the critical interventions they catch.

Takes the tables of rule `critical` (`fsgen.analysis.critical.critical_tables`) and returns a
Figure titled by `fsgen.analysis.figures.DRAW`, or a string saying why there is none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fsgen.analysis.fig_collaboration import reasons
from fsgen.analysis.figbase import grid, guide, no_data, pair_label, table
from fsgen.analysis.status import OK

BIN_TITLES = {"position": "relative position in the answer", "confidence": "System 1's top-1 probability"}
TARGET_STYLE = {"critical": "-", "intervention": "--"}
ROUTERS = {"entropy": "C2", "threshold": "C0"}


def _pair_panel(ax, crit: pd.DataFrame) -> None:
    ok = crit[crit["status"] == OK]
    x = np.arange(len(ok))
    ax.errorbar(x, ok["share"], yerr=[ok["share"] - ok["share_low"], ok["share_high"] - ok["share"]], fmt="o",
                ms=4, capsize=2, color="C3")
    ax.set_xticks(x, [pair_label(r.large, r.small) for r in ok.itertuples()], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("critical share of interventions")


def _bin_panel(ax, bins: pd.DataFrame, by: str) -> None:
    """Pooled over pairs: critical / sampled interventions in each bin (bar width = bin)."""
    rows = bins[bins["by"] == by]
    pooled = rows.groupby(["bin_low", "bin_high"], sort=True)[["n", "n_critical"]].sum().reset_index()
    share = pooled["n_critical"] / pooled["n"].where(pooled["n"] > 0)
    ax.bar(pooled["bin_low"], share, width=pooled["bin_high"] - pooled["bin_low"], align="edge", color="C3",
           alpha=0.7, edgecolor="white")
    for row, s in zip(pooled.itertuples(), share):
        if np.isfinite(s):
            ax.text((row.bin_low + row.bin_high) / 2, s, f"n={int(row.n)}", ha="center", va="bottom", fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel(BIN_TITLES[by])
    ax.set_ylabel("critical share")


def _router_panel(ax, curves: pd.DataFrame) -> None:
    """Mean over pairs of the best recall at each share sent, critical vs all interventions."""
    for (router, target), g in curves[curves["router"].isin(ROUTERS)].groupby(["router", "target"], sort=True):
        mean = g.groupby("grid").agg(x=("share_sent", "mean"), y=("recall", "mean"))
        ax.plot(mean["x"], mean["y"], ls=TARGET_STYLE[target], color=ROUTERS[router], lw=1.3,
                label=f"{router}: {'critical' if target == 'critical' else 'all interventions'}")
    guide(ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("share of tokens sent to System 2")
    ax.set_ylabel("recall")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6.5, loc="lower right")


def fig_critical(tables):
    crit, bins, curves = (table(tables, n) for n in ("critical", "critical_bins", "critical_routers"))
    if crit.empty:
        return reasons(tables.get("critical", pd.DataFrame()), default="no counterfactual job")
    benchmarks = sorted(crit["benchmark"].unique())
    fig, axes = grid(len(benchmarks), 4, w=3.3, h=2.8)
    for r, bench in enumerate(benchmarks):
        sub = crit[crit["benchmark"] == bench]
        titles = [f"{bench}: by pair (95% CI)", f"{bench}: along the answer", f"{bench}: by System 1 confidence",
                  f"{bench}: routers, critical vs all"]
        for ax, title in zip(axes[r], titles):
            ax.set_title(title, fontsize=8.5)
        if not sub["status"].eq(OK).any():
            for ax in axes[r]:
                no_data(ax, reasons(sub, default="no critical share"))
            continue
        _pair_panel(axes[r, 0], sub)
        in_bench = bins[(bins["benchmark"] == bench) & bins["status"].eq(OK)] if len(bins) else bins
        for ax, by in zip(axes[r, 1:3], ("position", "confidence")):
            _bin_panel(ax, in_bench, by) if len(in_bench) else no_data(ax, "no sampled intervention")
        routed = curves[(curves["benchmark"] == bench) & curves["recall"].notna()] if len(curves) else curves
        _router_panel(axes[r, 3], routed) if len(routed) else no_data(axes[r, 3], reasons(
            curves[curves["benchmark"] == bench] if len(curves) else curves, default="no router curve"))
    return fig
