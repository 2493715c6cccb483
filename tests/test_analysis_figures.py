"""Which panels of a figure drew data: the inspection behind every figure's `.panels.json`.

A "no data" placeholder, a panel of NaN lines or an all-NaN heatmap must read as empty; one
finite point, bar, step or image cell as data; guide lines (the random-router diagonal) never.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fsgen.analysis.figbase import drawn_points, grid, guide, no_data, panel_status, plt
from fsgen.analysis.figures import placeholder, read_panels, render, save


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def one_panel():
    fig, axes = grid(1, 1)
    return fig, axes[0, 0]


@pytest.mark.parametrize("draw, points", [
    (lambda ax: ax.plot([0, 1, 2], [np.nan, np.nan, np.nan]), 0),
    (lambda ax: ax.plot([0, 1, 2], [0.1, np.nan, 0.3]), 2),
    (lambda ax: ax.scatter([np.nan], [np.nan]), 0),
    (lambda ax: ax.scatter([1, 2, 3], [0.5, 0.2, np.nan]), 2),
    (lambda ax: ax.bar([0, 1], [np.nan, np.nan]), 0),
    (lambda ax: ax.bar([0, 1, 2], [0.0, 0.4, np.nan]), 2),  # a bar of height 0 is a value
    (lambda ax: ax.imshow(np.full((2, 3), np.nan)), 0),
    (lambda ax: ax.imshow(np.array([[0.6, np.nan, 0.9]])), 2),
    (lambda ax: ax.stairs(np.array([0.2, 0.5]), np.array([0.0, 0.5, 1.0])), 2),
    (lambda ax: ax.errorbar([0, 1], [np.nan, np.nan], yerr=[[0.1, 0.1], [0.1, 0.1]], fmt="o"), 0),
    (lambda ax: guide(ax.plot([0, 1], [0, 1])), 0),
    (lambda ax: ax.text(0.5, 0.5, "a label is not data"), 0),
])
def test_drawn_points_counts_finite_data_only(draw, points):
    fig, ax = one_panel()
    draw(ax)
    assert drawn_points(ax) == points


def test_placeholder_reads_as_empty_with_its_reason(tmp_path):
    png = save(placeholder("speculative", "no speculative job"), tmp_path / "speculative.png", "speculative")
    panels = read_panels(png)
    assert panels["status"] == "no data"
    assert panels["panels"] == [{"title": "speculative", "points": 0, "has_data": False, "note": "no speculative job"}]


def test_partial_figure_and_colorbar_is_not_a_panel(tmp_path):
    fig, axes = grid(1, 2)
    image = axes[0, 0].imshow(np.array([[0.7, 0.8]]))
    fig.colorbar(image, ax=axes[0, 0])
    no_data(axes[0, 1], "proxy not run on mtbench")
    status = panel_status(fig)
    assert [p["has_data"] for p in status] == [True, False]
    assert status[1]["note"] == "proxy not run on mtbench"
    save(fig, tmp_path / "f.png")
    assert json.loads((tmp_path / "f.panels.json").read_text())["status"] == "partial"


def test_render_marks_a_silently_empty_panel(tmp_path):
    """A figure function that leaves a panel blank still gets the panel annotated (never a blank panel)."""
    jobs = pd.DataFrame({"benchmark": ["b"], "method": ["oracle"], "kind": ["oracle"], "router": ["always"],
                         "large": ["L"], "small": ["S"], "large_params": [2.0], "small_params": [1.0],
                         "freq_pooled": [np.nan], "freq_pooled_low": [np.nan], "freq_pooled_high": [np.nan],
                         "status": ["no generated tokens"]})
    png = render("collaboration", {"jobs": jobs}, tmp_path / "collaboration.png")
    panel = read_panels(png)["panels"][0]
    assert not panel["has_data"] and "no generated tokens" in panel["note"]
