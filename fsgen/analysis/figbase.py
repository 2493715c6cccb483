"""What every figure shares: style, panel grid, table access, and which panels drew data.

A figure's panels are the axes `grid` made (colour bars are not panels). A panel with nothing to
draw says so in the panel (`no_data(ax, why)`: "no data: <why>"). `panel_status(fig)` inspects
what each panel actually drew (finite line vertices, scatter points, image cells, bar and step
heights; guide lines such as a diagonal are left out), so a sidecar written from it tells a real
plot from a placeholder without trusting the drawing code.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import Collection, PathCollection  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle, StepPatch  # noqa: E402

from fsgen.analysis.stats import pair_mask  # noqa: E402
from fsgen.analysis.status import data_rows as table  # noqa: E402,F401  (re-exported for the figure modules)

STYLE = {
    "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "figure.constrained_layout.use": True,
}
GUIDE = "guide"  # gid of reference artists (diagonals, chance lines): not data
NO_DATA = "_fsgen_no_data"  # attribute of a panel marked by no_data()
PANELS = "_fsgen_panels"  # attribute of a figure: its panel axes


def short(name) -> str:
    return str(name).rstrip("/").split("/")[-1]


def pair_label(large, small) -> str:
    return f"{short(large)} / {short(small)}"


def always_jobs(tables) -> pd.DataFrame:
    """Pair jobs whose router is `always` (the method as the paper ran it)."""
    jobs = table(tables, "jobs")
    if jobs.empty:
        return jobs
    return jobs[(jobs["router"].fillna("always") == "always") & pair_mask(jobs)]


def pairs_in_order(df: pd.DataFrame) -> list[tuple]:
    cols = ["small_params", "large_params"] if "small_params" in df else ["small", "large"]
    return list(df.sort_values(cols)[["large", "small"]].drop_duplicates().itertuples(index=False, name=None))


def grid(n_rows, n_cols, w=3.4, h=2.8, **kw):
    """(figure, [n_rows, n_cols] axes); the axes are the figure's panels."""
    n_rows, n_cols = max(n_rows, 1), max(n_cols, 1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(w * n_cols, h * n_rows), squeeze=False, **kw)
    setattr(fig, PANELS, list(axes.flat))
    return fig, axes


def no_data(ax, why: str) -> None:
    """Mark an empty panel: "no data: <why>" in its centre (and in the figure's sidecar)."""
    text = "\n".join(textwrap.wrap(f"no data: {why}", 40))
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7.5, color="0.3",
            bbox={"facecolor": "white", "edgecolor": "0.7", "boxstyle": "round"})
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    setattr(ax, NO_DATA, why)


def guide(artist):
    """Mark a reference artist (diagonal, chance line): not counted as data."""
    for a in artist if isinstance(artist, list) else [artist]:
        a.set_gid(GUIDE)
    return artist


def _finite_rows(xy) -> int:
    xy = np.ma.filled(np.ma.asarray(xy, dtype=float), np.nan)
    return int(np.isfinite(xy).all(axis=-1).sum()) if xy.size else 0


def drawn_points(ax) -> int:
    """Finite data values a panel drew: line vertices, scatter offsets, paths of other
    collections, image cells, bar and step heights (guide artists excluded)."""
    n = 0
    for artist in ax.get_children():
        if artist.get_gid() == GUIDE or not artist.get_visible():
            continue
        if isinstance(artist, Line2D):
            n += _finite_rows(artist.get_xydata())
        elif isinstance(artist, PathCollection):
            n += _finite_rows(artist.get_offsets())
        elif isinstance(artist, Collection):
            n += sum(1 for p in artist.get_paths() if len(p.vertices) and _finite_rows(p.vertices))
        elif isinstance(artist, AxesImage):
            n += int(np.ma.masked_invalid(artist.get_array()).count())
        elif isinstance(artist, StepPatch):
            n += int(np.isfinite(artist.get_data().values).sum())
        elif isinstance(artist, Rectangle) and artist is not ax.patch:
            n += int(np.isfinite(artist.get_height()) and np.isfinite(artist.get_x()))
    return n


def panel_status(fig) -> list[dict]:
    """Per visible panel: title, finite points drawn, has_data, and the no-data reason if marked."""
    out = []
    for ax in getattr(fig, PANELS, fig.axes):
        if not ax.get_visible():
            continue
        points = drawn_points(ax)
        out.append({"title": ax.get_title() or ax.get_label(), "points": points, "has_data": points > 0,
                    "note": getattr(ax, NO_DATA, None)})
    return out


def mark_empty_panels(fig, why: str = "nothing to draw for this panel") -> None:
    """Every panel that drew nothing and has no reason yet gets the generic one (never a blank panel)."""
    for ax in getattr(fig, PANELS, fig.axes):
        if ax.get_visible() and not drawn_points(ax) and getattr(ax, NO_DATA, None) is None:
            no_data(ax, why)
