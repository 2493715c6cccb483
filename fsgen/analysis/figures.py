"""Figures from the aggregate tables: matplotlib (Agg), one consistent style, PNG + PDF + panel sidecar.

The figure names, their report categories and the tables each is drawn from are in the registry
`fsgen.analysis.outputs.FIGURES`; here each name has its drawing function. A drawing function
returns a Figure, or a string saying why there is none (then `render` draws a labelled "no data"
placeholder, so the workflow output always exists). Beside every `<name>.png`, `render` writes
`<name>.panels.json`: per panel, whether it drew data (`fsgen.analysis.figbase.panel_status`)
and, for an empty one, why; the figure's `status` is "ok", "partial" or "no data".
"""

from __future__ import annotations

import json
from pathlib import Path

from fsgen import atomic
from fsgen.analysis import outputs
from fsgen.analysis.fig_cost import fig_frontier
from fsgen.analysis.fig_critical import fig_critical
from fsgen.analysis.fig_collaboration import fig_accuracy, fig_collaboration, fig_scaling_law, fig_scaling_small_size
from fsgen.analysis.fig_routers import fig_router_offline, fig_router_online, fig_speculative
from fsgen.analysis.fig_uncertainty import fig_auroc, fig_positions, fig_uncertainty
from fsgen.analysis.figbase import STYLE, grid, mark_empty_panels, no_data, panel_status, plt
from fsgen.atomic import atomic_path

DRAW = {  # registry name -> (drawing function, the figure's title)
    "accuracy": (fig_accuracy, "Accuracy of each variant beside the small-alone and large-alone baselines"),
    "collaboration": (fig_collaboration,
                      "Collaboration frequency per pair, pooled over tokens, with 95% bootstrap CI"),
    "scaling_law": (fig_scaling_law, "Scaling law f(r) = b − a·r^(−α), r = large/small parameter ratio, α fitted per"
                                     " benchmark: points, fitted curves, 95% bootstrap bands (rows: source)"),
    "scaling_small_size": (fig_scaling_small_size,
                           "Alternative predictor f = c + d·ln N_small: frequency against the small model's size"
                           " (shaded: 95% bootstrap bands)"),
    "uncertainty_distributions": (fig_uncertainty, "System 1's confidence at positions with and without"
                                                   " intervention (pooled over pairs)"),
    "auroc": (fig_auroc,
              "AUROC of System 1 uncertainty signals for predicting an intervention (consulted positions)"),
    "positions": (fig_positions, "Where interventions fall along the generation (share per 10% bin; rows sum to 1)"),
    "router_offline": (fig_router_offline, "Offline router sweep on oracle traces (held-out requests)"),
    "router_online": (fig_router_online, "Online routers: accuracy against System 2 call rate"),
    "speculative": (fig_speculative, "Speculative decoding: measured vs predicted from the oracle trace"),
    "frontier": (fig_frontier, "Accuracy against cost per pair: every setting (filled: on the Pareto frontier), the"
                               " frontier with its 95% band, dotted: 90% of the small→large gap"),
    "critical": (fig_critical, "Which interventions matter: share that changes the outcome when System 1's token"
                               " is kept, and routers judged by the critical ones they catch"),
}
if set(DRAW) != set(outputs.FIGURES):  # one home for the names: fsgen.analysis.outputs
    raise RuntimeError(f"figures.DRAW and the outputs registry disagree on {sorted(set(DRAW) ^ set(outputs.FIGURES))}")
FIGURES = {name: outputs.FIGURES[name] for name in DRAW}  # name -> registry entry (report category, needs)
SCALING_INPUTS = ("fits", "residuals")  # passed as arguments, not looked up in `tables`


def placeholder(name: str, why: str):
    """A one-panel figure that says "<name>: no data" and why."""
    fig, axes = grid(1, 1, w=5, h=1.6)
    ax = axes[0, 0]
    ax.axis("off")
    ax.set_title(name)
    no_data(ax, why)
    return fig


def sidecar_path(png_path) -> Path:
    return Path(png_path).with_suffix(".panels.json")


def figure_status(panels: list[dict]) -> str:
    with_data = sum(p["has_data"] for p in panels)
    return "ok" if with_data == len(panels) and panels else ("no data" if not with_data else "partial")


def save(fig, png_path, name: str | None = None) -> Path:
    """Write `<stem>.png`, `<stem>.pdf` and `<stem>.panels.json` atomically; close the figure."""
    png_path = Path(png_path)
    panels = panel_status(fig)
    for path, fmt in ((png_path, "png"), (png_path.with_suffix(".pdf"), "pdf")):
        with atomic_path(path) as tmp:
            # "tight" grows the canvas to the suptitle, which is often wider than narrow panels
            fig.savefig(tmp, format=fmt, bbox_inches="tight")
    plt.close(fig)
    sidecar = {"figure": name or png_path.stem, "status": figure_status(panels), "panels": panels}
    atomic.write_text(sidecar_path(png_path), json.dumps(sidecar, indent=1))
    return png_path


def read_panels(png_path) -> dict:
    """The sidecar of a rendered figure: {"figure", "status", "panels": [{title, points, has_data, note}]}."""
    return json.loads(sidecar_path(png_path).read_text(encoding="utf-8"))


def draw(name: str, tables: dict, fits=None, residuals=None):
    """The figure of `name` (a placeholder saying why when there is nothing to draw)."""
    if name not in DRAW:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(DRAW)}")
    func, title = DRAW[name]
    fig = func(tables, fits, residuals) if "fits" in FIGURES[name].needs else func(tables)
    if fig is None or isinstance(fig, str):
        return placeholder(name, fig or "the runs this figure needs are not in the configuration")
    fig.suptitle(title)
    mark_empty_panels(fig)
    return fig


def render(name: str, tables: dict, png_path, fits=None, residuals=None) -> Path:
    with plt.rc_context(STYLE):
        return save(draw(name, tables, fits, residuals), png_path, name)


def render_all(tables: dict, fits, residuals, out_dir) -> dict[str, Path]:
    return {name: render(name, tables, Path(out_dir) / f"{name}.png", fits, residuals) for name in DRAW}
