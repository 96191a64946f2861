"""Figures: each is written as PNG and SVG, opened again, and checked for size and content."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import placement
from placement import PlacementInputError
from placement.trace.synthesize import synthesize

pytest.importorskip("matplotlib", reason="plots need matplotlib (the notebook extra)")
from matplotlib.image import imread  # noqa: E402

from placement.plots import (  # noqa: E402
    plot_expert_map,
    plot_solve_time,
    plot_tier_bytes,
    plot_traffic,
    save_figure,
)

TOPO = "fat-tree:2x4"


@pytest.fixture(scope="module")
def trace():
    return synthesize("mixtral-8x7b", 300, seed=3, num_ranks=8)


@pytest.fixture(scope="module")
def solution(trace):
    return placement.solve(trace, TOPO, method="eplb")


@pytest.fixture(scope="module")
def table(trace):
    return placement.compare(trace, TOPO, ["round_robin", "eplb"])


def check_png(path, min_w=300, min_h=200):
    img = imread(path)
    h, w = img.shape[:2]
    assert w >= min_w and h >= min_h, (w, h)
    colours = np.unique(img.reshape(-1, img.shape[-1]), axis=0)
    assert len(colours) > 10, "image is (nearly) one colour"


def check_svg(path):
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert len(text) > 5000 and text.count("<path") + text.count("<image") > 5


def test_expert_map(tmp_path, trace, solution):
    fig = plot_expert_map(solution.placement, trace)
    assert len(fig.axes) == 2 * 4 + 1  # 4 layers x (heatmap, bars) + colour bar
    save_figure(fig, tmp_path / "map.png")
    check_png(tmp_path / "map.png")
    save_figure(plot_expert_map(solution.placement, layers=[0]), tmp_path / "map.svg")
    check_svg(tmp_path / "map.svg")


def test_traffic(tmp_path, trace, solution):
    metrics = placement.evaluate(solution.placement, trace, placement.api.as_topology(TOPO))
    save_figure(plot_traffic(metrics), tmp_path / "traffic.png")
    check_png(tmp_path / "traffic.png")


def test_tier_bytes(tmp_path, table):
    assert any(c.startswith("MB_") for c in table.columns)
    fig = plot_tier_bytes(table)
    ax = fig.axes[0]
    n_tiers = sum(c.startswith("MB_") for c in table.columns)
    assert len(ax.patches) == len(table) * n_tiers  # one bar per (method, tier)
    save_figure(fig, tmp_path / "tiers.svg")
    check_svg(tmp_path / "tiers.svg")
    save_figure(fig, tmp_path / "tiers.png")
    check_png(tmp_path / "tiers.png")


def test_solve_time(tmp_path):
    frame = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3, "size": [8, 64, 256] * 2,
                          "time_s": [0.01, 0.1, 1.5, 0.02, 0.5, 9.0]})
    fig = plot_solve_time(frame)
    assert len(fig.axes[0].lines) == 2
    save_figure(fig, tmp_path / "t.png")
    check_png(tmp_path / "t.png")
    fig = plot_solve_time(frame.set_index("method"), method="method", log=False)
    assert len(fig.axes[0].lines) == 2


# --------------------------------------------------------------------------------------- bad input
def test_errors_name_the_field_and_leave_no_file(tmp_path, table, solution):
    with pytest.raises(PlacementInputError, match="no MB_<tier> columns") as err:
        plot_tier_bytes(table.drop(columns=[c for c in table.columns if c.startswith("MB_")]))
    assert err.value.field == "columns"
    frame = pd.DataFrame({"size": [1, 2], "time_s": [0.0, 1.0]})
    with pytest.raises(PlacementInputError, match="positive") as err:
        plot_solve_time(frame, method=None)
    with pytest.raises(PlacementInputError, match="no column 'seconds'") as err:
        plot_solve_time(frame, time="seconds", method=None)
    assert err.value.field == "seconds"
    with pytest.raises(PlacementInputError, match="square"):
        plot_traffic(np.zeros((2, 3)))
    with pytest.raises(PlacementInputError, match=r"layer 99 is outside \[0, 32\)"):
        plot_expert_map(solution.placement, layers=[99])
    with pytest.raises(PlacementInputError, match="load shape"):
        plot_expert_map(solution.placement, np.ones((2, 2)))
    with pytest.raises(PlacementInputError, match="use .png or .svg"):
        save_figure(plot_traffic(np.eye(2)), tmp_path / "x.jpg")
    assert list(tmp_path.iterdir()) == []
