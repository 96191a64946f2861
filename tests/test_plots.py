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
    METHOD_COLOURS,
    METHOD_MARKERS,
    method_styles,
    plot_expert_map,
    plot_layer_times,
    plot_solve_time,
    plot_step_breakdown,
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


# ------------------------------------------------------------------------------ figures a paper prints
def test_sixteen_methods_get_distinct_colours_and_markers():
    from matplotlib.colors import to_rgb

    styles = method_styles([f"m{i}" for i in range(16)])
    colours = np.array([to_rgb(st["color"]) for st in styles.values()])
    gaps = np.linalg.norm(colours[:, None] - colours[None, :], axis=2)[np.triu_indices(16, 1)]
    assert gaps.min() > 0.2  # no two within 0.2 in RGB (tab10 repeats after ten)
    assert len({st["marker"] for st in styles.values()}) == 16
    assert len(set(METHOD_COLOURS)) == len(set(METHOD_MARKERS)) == 16
    assert method_styles(["a", "b"])["b"] == styles["m1"]  # the same position, the same style


@pytest.fixture(scope="module")
def held_table(trace):
    held = synthesize("mixtral-8x7b", 300, seed=3, token_seed=1, num_ranks=8)
    return placement.compare(trace, TOPO, ["round_robin", "eplb"], test_trace=held)


def test_step_breakdown_bars_are_the_phases_over_the_reference(tmp_path, held_table):
    fig = plot_step_breakdown(held_table)  # the table's reference: contiguous
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    ref = held_table.loc["contiguous"]
    for name in held_table.index:
        row = held_table.loc[name]
        y = labels.index(name)
        widths = [p.get_width() for p in ax.patches if abs(p.get_y() + p.get_height() / 2 - y) < 1e-9]
        assert len(widths) == 3  # dispatch, compute, combine
        assert sum(widths) == pytest.approx(row["step_time_ms"] / ref["step_time_ms"])
        phases = np.array([row["dispatch_ms"], row["compute_ms"], row["combine_ms"]])
        assert np.array(widths) / sum(widths) == pytest.approx(phases / phases.sum())
    oos = ax.collections[0].get_offsets()  # out-of-sample diamonds
    for x, y in oos:
        name = labels[int(round(y))]
        assert x == pytest.approx(held_table.loc[name, "test_step_time_ms"] / ref["test_step_time_ms"])
    save_figure(fig, tmp_path / "step.png")
    check_png(tmp_path / "step.png")


def test_layer_times_draw_each_layer(tmp_path, trace, solution):
    topo = placement.api.as_topology(TOPO)
    metrics = {"eplb": placement.evaluate(solution.placement, trace, topo),
               "contiguous": placement.evaluate(placement.solve(trace, topo).placement, trace, topo)}
    fig = plot_layer_times(metrics, reference="contiguous")
    top, ratio = fig.axes[0], fig.axes[1]
    for line, m in zip(top.lines, metrics.values(), strict=True):
        assert np.allclose(line.get_ydata(), m.step.layer_time * 1e6)
    assert np.allclose(ratio.lines[0].get_ydata(), metrics["eplb"].step.layer_time
                       / metrics["contiguous"].step.layer_time)
    assert top.lines[0].get_color() != top.lines[1].get_color()
    save_figure(fig, tmp_path / "layers.png")
    check_png(tmp_path / "layers.png")


def test_traffic_panels_share_one_scale_mask_the_diagonal_and_mark_servers(tmp_path, trace, solution):
    topo = placement.api.as_topology(TOPO)
    mats = {"eplb": placement.evaluate(solution.placement, trace, topo).traffic,
            "contiguous": placement.evaluate(placement.solve(trace, topo).placement, trace, topo).traffic}
    fig = plot_traffic(mats, topology=TOPO)
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(panels) == 2
    off = ~np.eye(8, dtype=bool)
    lo = min(m[off].min() for m in mats.values())
    hi = max(m[off].max() for m in mats.values())
    for ax, m in zip(panels, mats.values(), strict=True):
        image = ax.images[0]
        assert image.norm.vmin == pytest.approx(lo) and image.norm.vmax == pytest.approx(hi)  # one scale
        data = image.get_array()
        assert data.mask[np.eye(8, dtype=bool)].all() and not data.mask[off].any()  # diagonal masked
        assert np.allclose(data.data[off], m[off])
        # fat-tree:2x4: one server boundary, between GPU 3 and GPU 4, drawn across and down
        xs = sorted({line.get_xdata()[0] for line in ax.lines if line.get_xdata()[0] == line.get_xdata()[1]})
        assert xs == [3.5]
    save_figure(fig, tmp_path / "traffic.png")
    check_png(tmp_path / "traffic.png")


def test_expert_map_of_256_experts_is_aggregated(tmp_path):
    trace = synthesize("deepseek-v3", 64, seed=0, num_ranks=32, weights=False)
    p = placement.solve(trace, "rail:4x8", method="eplb").placement
    fig = plot_expert_map(p, trace, topology="rail:4x8", top=10)
    load_ax, replica_ax, hot_ax = fig.axes[0], fig.axes[2], fig.axes[4]
    counts = p.replica_counts()  # [L, E, G]
    load = trace.layer_counts().astype(float)
    per_gpu = (counts / counts.sum(axis=2, keepdims=True) * load[:, :, None]).sum(axis=1)
    assert np.allclose(load_ax.images[0].get_array(), per_gpu / per_gpu.mean(axis=1, keepdims=True))
    hottest_first = np.take_along_axis(p.num_replicas(), np.argsort(-load, axis=1, kind="stable"), axis=1)
    assert np.array_equal(replica_ax.images[0].get_array(), hottest_first)
    assert len(hot_ax.patches) == 10
    top_share = np.sort((load / load.sum(axis=1, keepdims=True)).ravel())[::-1][:10] * 100
    assert sorted(b.get_width() for b in hot_ax.patches)[::-1] == pytest.approx(list(top_share))
    w, h = fig.get_size_inches() * 120
    assert w < 2000 and h < 1300  # one readable page, not a 2160 x 4464 image
    save_figure(fig, tmp_path / "map.png")
    check_png(tmp_path / "map.png")


def test_solve_time_marks_runs_stopped_by_a_limit(tmp_path):
    frame = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3, "size": [8, 64, 256] * 2,
                          "time_s": [0.01, 0.1, 1.5, 0.02, 0.5, 60.0],
                          "termination": ["optimal"] * 5 + ["feasible"]})
    fig = plot_solve_time(frame, time_limit=60)
    ax = fig.axes[0]
    hollow = [line for line in ax.lines if line.get_markerfacecolor() == "white" and len(line.get_xdata())]
    assert len(hollow) == 1 and list(hollow[0].get_xdata()) == [256] and list(hollow[0].get_ydata()) == [60.0]
    assert any(list(line.get_ydata()) == [60, 60] for line in ax.lines)  # the limit
    save_figure(fig, tmp_path / "t.png")
    check_png(tmp_path / "t.png")


def test_tier_bytes_relative_to_a_reference(table):
    fig = plot_tier_bytes(table, reference="contiguous")
    ax = fig.axes[0]
    tiers = [c for c in table.columns if c.startswith("MB_") and table.loc["contiguous", c] > 0]
    others = [m for m in table.index if m != "contiguous"]
    assert len(ax.patches) == len(others) * len(tiers)  # the reference itself is the line at 1
    tops = sorted(p.get_y() + p.get_height() for p in ax.patches)
    want = sorted((table.loc[m, t] / table.loc["contiguous", t]) for m in others for t in tiers)
    assert tops == pytest.approx(want)
    assert ax.get_ylim()[0] > 0.5  # not from 0: a few percent show


def test_plot_commands(tmp_path, trace, solution):
    from placement.cli import main
    from placement.trace import save_trace

    save_trace(trace, tmp_path / "t.npz")
    solution.placement.save(tmp_path / "p.json")
    table = tmp_path / "cmp.csv"
    base = ["--trace", str(tmp_path / "t.npz"), "--topology", TOPO]
    assert main(["compare", *base, "--methods", "round_robin,eplb", "--out", str(table)]) == 0
    assert main(["plot", "step", "--table", str(table), "--out", str(tmp_path / "s.png")]) == 0
    assert main(["plot", "tiers", "--table", str(table), "--reference", "contiguous", "--out",
                 str(tmp_path / "b.png")]) == 0
    assert main(["plot", "layers", *base, "--methods", f"round_robin,{tmp_path / 'p.json'}", "--reference",
                 "contiguous", "--out", str(tmp_path / "l.png")]) == 0
    assert main(["plot", "traffic", *base, "--placement", str(tmp_path / "p.json"), "--placement",
                 str(tmp_path / "p.json"), "--out", str(tmp_path / "x.png")]) == 0
    assert main(["plot", "map", "--placement", str(tmp_path / "p.json"), "--view", "summary", "--topology", TOPO,
                 "--out", str(tmp_path / "m.png")]) == 0
    for name in ("s", "b", "l", "x", "m"):
        check_png(tmp_path / f"{name}.png")


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
