"""Figures of the routers (offline sweeps, online runs) and of speculative decoding.

Each function takes the tables dict and returns a Figure or a string saying why there is none;
empty panels say why.
"""

from __future__ import annotations

import pandas as pd

from fsgen.analysis.fig_collaboration import reasons
from fsgen.analysis.figbase import grid, guide, no_data, pair_label, table

ROUTER_COLORS = {"threshold": "C0", "margin": "C1", "entropy": "C2", "learned": "C3"}


def fig_router_offline(tables):
    curves = table(tables, "router_offline")
    if curves.empty:
        return "no oracle job with router always (with 2 or more requests)"
    benchmarks = sorted(curves["benchmark"].unique())
    fig, axes = grid(1, len(benchmarks), w=3.6, h=3.3, sharey=True)
    for ax, bench in zip(axes[0], benchmarks):
        sub = curves[curves["benchmark"] == bench]
        n_pairs = sub[["large", "small"]].drop_duplicates().shape[0]
        for router, g in sub.groupby("router"):
            by_grid = g.groupby("grid").agg(x=("share_sent", "mean"), y=("recall", "mean"),
                                            lo=("recall", "min"), hi=("recall", "max"))
            color = ROUTER_COLORS.get(router, "k")
            ax.plot(by_grid["x"], by_grid["y"], color=color, lw=1.5, label=router)
            ax.fill_between(by_grid["x"], by_grid["lo"], by_grid["hi"], color=color, alpha=0.12, lw=0)
        guide(ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1, label="random"))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("share of tokens sent to System 2")
        ax.set_title(f"{bench} (mean over {n_pairs} pairs; band = min–max)")
        if sub["recall"].isna().all():
            no_data(ax, "recall undefined: no intervention among held-out requests")
    axes[0, 0].set_ylabel("share of interventions caught (recall)")
    axes[0, -1].legend(loc="lower right")
    fig.suptitle("Offline router sweep on oracle traces (held-out requests)")
    return fig


def fig_router_online(tables):
    online = table(tables, "router_online")
    if online.empty:
        return "no run with a router other than always"
    benchmarks = sorted(online["benchmark"].unique())
    fig, axes = grid(1, len(benchmarks), w=3.8, h=3.3)
    markers = {"never": "s", "always": "^"}
    for ax, bench in zip(axes[0], benchmarks):
        sub = online[online["benchmark"] == bench]
        for i, ((large, small, kind), g) in enumerate(sub.groupby(["large", "small", "kind"], sort=True)):
            g = g.sort_values("s2_call_rate")
            ax.plot(g["s2_call_rate"], g["accuracy"], color=f"C{i}", lw=1, label=f"{pair_label(large, small)} ({kind})")
            for _, p in g.iterrows():
                ax.scatter(p["s2_call_rate"], p["accuracy"], color=f"C{i}", s=22, zorder=3,
                           marker=markers.get(p["router"], "o"))
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel("System 2 call rate (consulted / tokens)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{bench}  (■ never, ● routed, ▲ always)")
        if sub["accuracy"].isna().all():
            no_data(ax, f"{bench}: {reasons(sub)}")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.suptitle("Online routers: accuracy against System 2 call rate")
    return fig


def _acceptance_panel(ax, sub: pd.DataFrame, col: str, label: str, bench: str) -> None:
    """Predicted (lines) and measured (stars) acceptance of every pair against K."""
    pred, meas = sub[sub["source"] == "predicted"], sub[sub["source"] == "measured"]
    for i, (large, small) in enumerate(sub[["large", "small"]].drop_duplicates().itertuples(index=False, name=None)):
        p = pred[(pred["large"] == large) & (pred["small"] == small)]
        m = meas[(meas["large"] == large) & (meas["small"] == small)]
        if p[col].notna().any():
            ax.plot(p["k"], p[col], color=f"C{i}", lw=1, label=pair_label(large, small))
        if m[col].notna().any():
            ax.scatter(m["k"], m[col], color=f"C{i}", marker="*", s=70, zorder=3, edgecolor="k", lw=0.4)
    ax.set_xlabel("draft length K")
    ax.set_ylabel(label)
    ax.set_title(f"{bench}: lines predicted from oracle, ★ measured", fontsize=8.5)
    if sub[col].isna().all():
        no_data(ax, reasons(sub, default="no rounds"))


def _accepted_hist_panel(ax, h: pd.DataFrame, bench: str) -> None:
    """Share of rounds by accepted drafts, measured (bars) and predicted at the measured K (outline)."""
    k_meas = sorted(h[h["source"] == "measured"]["k"].dropna().unique())
    for source, style in (("measured", dict(color="C0", alpha=0.6)), ("predicted", dict(color="k", fill=False, lw=1.5))):
        g = h[(h["source"] == source) & h["k"].isin(k_meas)].groupby("accepted")["rounds"].sum()
        if g.sum():
            ax.bar(g.index, g / g.sum(), width=0.8, label=f"{source} (K={','.join(f'{k:g}' for k in k_meas)})", **style)
    ax.set_xlabel("accepted drafts per round")
    ax.set_ylabel("share of rounds")
    ax.set_title(f"{bench}: accepted lengths (pooled over pairs)", fontsize=8.5)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        no_data(ax, "no measured speculative round" if k_meas else "no speculative run on this benchmark")


def fig_speculative(tables):
    spec, hist = table(tables, "speculative"), table(tables, "accepted_lengths")
    if spec.empty:
        return "no speculative job and no oracle job with router always"
    if hist.empty:
        hist = pd.DataFrame(columns=["benchmark", "source", "k", "accepted", "rounds"])
    benchmarks = sorted(spec["benchmark"].unique())
    fig, axes = grid(len(benchmarks), 3, w=3.4, h=2.8)
    for r, bench in enumerate(benchmarks):
        sub = spec[spec["benchmark"] == bench]
        _acceptance_panel(axes[r, 0], sub, "acceptance_rate", "acceptance rate", bench)
        _acceptance_panel(axes[r, 1], sub, "mean_accepted_length", "tokens per round (1 + accepted)", bench)
        if axes[r, 0].get_legend_handles_labels()[0]:
            axes[r, 0].legend(fontsize=6)
        _accepted_hist_panel(axes[r, 2], hist[hist["benchmark"] == bench], bench)
    fig.suptitle("Speculative decoding: measured vs predicted from the oracle trace")
    return fig

