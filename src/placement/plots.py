"""Figures for placements and comparisons (matplotlib, imported lazily; the ``notebook`` extra).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global
state, no GUI backend: rendering uses Agg), which notebooks display and :func:`save_figure`
writes as PNG or SVG (atomically: a failure leaves no file).

* :func:`plot_step_breakdown`: modelled step time per method as a ratio to the reference, each bar
  split into dispatch / compute / combine, the out-of-sample ratio marked when the table has it.
* :func:`plot_layer_times`: modelled time of every MoE layer in a serving step, one line per method.
* :func:`plot_traffic`: GPU-to-GPU traffic matrices of one or several placements on one colour
  scale, server boundaries drawn, the diagonal (a GPU's traffic to itself, never sent) masked.
* :func:`plot_expert_map`: which GPU serves which expert; up to 64 experts a GPU x expert heatmap per
  layer, beyond that aggregated views (load per GPU and layer, replicas per expert, hottest experts).
* :func:`plot_tier_bytes`: bytes per link tier and method, from the table of :func:`placement.compare`
  (absolute, or as ratios to a reference so that 5 % differences show).
* :func:`plot_solve_time`: solve time against problem size, one line per method, runs stopped by a
  limit drawn hollow.

Methods keep one colour and marker across figures (:func:`method_styles`; 16 distinct pairs).

>>> import numpy as np
>>> from placement import Placement
>>> fig = plot_expert_map(Placement.from_assignment(np.array([[0, 0, 1, 1]]), num_gpus=2))
>>> len(fig.axes) >= 2
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import input_error

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

    from .evaluate import Metrics
    from .placement import Placement
    from .topology import Topology
    from .trace import Trace

__all__ = [
    "plot_step_breakdown",
    "plot_layer_times",
    "plot_expert_map",
    "plot_traffic",
    "plot_tier_bytes",
    "plot_solve_time",
    "method_styles",
    "save_figure",
    "IMAGE_SUFFIXES",
    "METHOD_COLOURS",
    "METHOD_MARKERS",
    "PHASE_COLOURS",
]

IMAGE_SUFFIXES = (".png", ".svg")
NOTEBOOK_HINT = "pip install 'placement[notebook]'"

#: 16 colours told apart on white and in print: matplotlib's ten (tab10) and six of Trubetskoy's
#: distinct colours that differ from them (black, navy, magenta, lime, teal, gold).
METHOD_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf", "#000000", "#000075", "#f032e6", "#7fd11b", "#469990", "#ffc20a")
#: 16 marker shapes, one per colour (so that a method is told apart in grey print too).
METHOD_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p", "d", "8", "H", "+")
#: Colours of the serving step's phases (dispatch, compute, combine).
PHASE_COLOURS = {"dispatch": "#4c72b0", "compute": "#dd8452", "combine": "#55a868"}


def method_styles(names: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{name: {"color": ..., "marker": ...}}``: a distinct colour and marker for each of up to 16
    methods, in order (beyond 16 they repeat with a dashed line style added)."""
    out = {}
    for i, name in enumerate(dict.fromkeys(map(str, names))):
        out[name] = {"color": METHOD_COLOURS[i % 16], "marker": METHOD_MARKERS[i % 16],
                     "linestyle": "-" if i < 16 else "--"}
    return out


def _figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A pyplot-free figure with an Agg canvas (``layout=None``: the caller places the axes)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is installed in the test environment
        raise input_error(
            f"plots need matplotlib, which is not installed: {NOTEBOOK_HINT}", field="matplotlib"
        ) from exc
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write ``fig`` as ``.png`` or ``.svg`` (by suffix), atomically."""
    from ._io import atomic_path

    p = Path(path)
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise input_error(f"unsupported image extension '{p.suffix}'; use .png or .svg", str(path))
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=dpi, format=p.suffix.lower().lstrip("."))
    return p


# ------------------------------------------------------------------------------------- helpers
def _server_bounds(topology: Topology | str | None, num_gpus: int) -> np.ndarray:
    """GPU indices where a new server starts (``[]`` without a topology), for boundary lines at ``i - 0.5``."""
    if topology is None:
        return np.zeros(0, dtype=np.int64)
    from .api import as_topology

    topo = as_topology(topology)
    if topo.num_gpus != num_gpus:
        raise input_error(f"the topology has {topo.num_gpus} GPUs but the figure's data {num_gpus}", field="topology")
    server = np.asarray(topo.server_of)
    return np.flatnonzero(server[1:] != server[:-1]) + 1


def _gpu_ticks(ax: Any, num_gpus: int, axis: str, bounds: np.ndarray) -> None:
    """GPU ticks: every GPU up to 16, else the first GPU of each server (or 8 evenly spaced)."""
    if num_gpus <= 16:
        ticks = np.arange(num_gpus)
    elif len(bounds):
        ticks = np.concatenate([[0], bounds])
    else:
        ticks = np.linspace(0, num_gpus - 1, 9).round().astype(int)
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks)


def _check_step_table(frame: pd.DataFrame) -> np.ndarray:
    cols = ["step_time_ms", "dispatch_ms", "compute_ms", "combine_ms"]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise input_error(f"no {missing} columns (found {list(map(str, frame.columns))}); pass the table of "
                          "placement.compare or `placement compare --out` with origin dispatch", field="columns")
    values = frame[cols].apply(lambda s: s.astype(float)).to_numpy()
    if not np.isfinite(values).all() or (values[:, 0] <= 0).any():
        raise input_error("step time columns hold NaN, non-numbers or non-positive times (coherent dispatch has "
                          "no step model)", field="step_time_ms")
    return values


# ------------------------------------------------------------------------------------- step time
def plot_step_breakdown(table: pd.DataFrame, *, reference: str | None = None) -> Figure:
    """Modelled step time of each method (row of ``table``) divided by the reference's, one horizontal bar
    per method split into its dispatch, compute and combine shares, fastest at the top.

    ``reference`` is a row; by default the table's own (the row whose ``step_time_ms/ref`` is 1), else
    absolute milliseconds are drawn.  With ``test_step_time_ms`` in the table a black diamond marks each
    method's out-of-sample ratio.  With overlap the phases sum to more than the step; the bar is the step
    and the phases keep their proportions.
    """
    frame = _frame(table, "table")
    values = _check_step_table(frame)
    names = [str(n) for n in frame.index]
    if reference is not None and reference not in names:
        raise input_error(f"reference {reference!r} is not a row of the table {names}", field="reference")
    if reference is None and "step_time_ms/ref" in frame.columns:
        ratio = frame["step_time_ms/ref"].astype(float).to_numpy()
        at_one = np.flatnonzero(np.isclose(ratio, 1.0, rtol=0, atol=1e-12))
        reference = names[at_one[-1]] if len(at_one) else None
    ref_ms = float(values[names.index(reference), 0]) if reference is not None else 1.0
    step = values[:, 0] / ref_ms
    shares = values[:, 1:] / values[:, 1:].sum(axis=1, keepdims=True)
    order = np.argsort(-step, kind="stable")  # slowest at the bottom, fastest on top
    n = len(names)
    fig = _figure(8.5, 1.9 + 0.38 * n)
    ax = fig.add_subplot()
    y = np.arange(n)
    left = np.zeros(n)
    for j, phase in enumerate(("dispatch", "compute", "combine")):
        width = step[order] * shares[order, j]
        ax.barh(y, width, left=left, height=0.7, color=PHASE_COLOURS[phase], label=phase)
        left += width
    test_ratio = None
    if "test_step_time_ms" in frame.columns:
        test = frame["test_step_time_ms"].astype(float).to_numpy()
        if np.isfinite(test).all() and (test > 0).all():
            test_ratio = test / (float(test[names.index(reference)]) if reference is not None else 1.0)
            ax.scatter(test_ratio[order], y, marker="D", color="black", s=26, zorder=3,
                       label="out-of-sample (held-out trace)")
    right = step if test_ratio is None else np.maximum(step, test_ratio)
    fmt = (lambda v: f"{v:.3f}x") if reference is not None else (lambda v: f"{v:.4g} ms")
    for i, k in enumerate(order):
        label = fmt(step[k]) + ("" if test_ratio is None else f"  (out-of-sample {fmt(test_ratio[k])})")
        ax.text(right[k] + 0.015 * right.max(), i, label, va="center", fontsize="small")
    if reference is not None:
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(y, [names[k] for k in order])
    ax.set_xlim(0, float(right.max()) * (1.22 if test_ratio is None else 1.5))
    ax.set_xlabel(f"modelled step time / {reference}'s" if reference is not None else "modelled step time (ms)")
    title = "serving step time, split into dispatch / compute / combine"
    if reference is not None:
        title += f"\n(reference {reference}: {ref_ms:.4g} ms per step, in-sample)"
    ax.set_title(title, fontsize="medium")
    fig.legend(loc="outside lower center", ncol=4, fontsize="small", frameon=False)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def plot_layer_times(metrics: Mapping[str, Metrics], *, reference: str | None = None) -> Figure:
    """Modelled time of each MoE layer in one serving step (``Metrics.step.layer_time``), one line per
    method in its :func:`method_styles` colour and marker; with ``reference`` a second panel shows each
    method's per-layer ratio to it."""
    if not isinstance(metrics, Mapping) or not metrics:
        raise input_error("expected a non-empty {name: Metrics} mapping", field="metrics")
    times = {}
    for name, m in metrics.items():
        step = getattr(m, "step", None)
        if step is None:
            raise input_error(f"{name!r} has no serving-step model (coherent dispatch, or not a Metrics)",
                              field="metrics")
        times[str(name)] = np.asarray(step.layer_time, dtype=np.float64) * 1e6
    lengths = {len(t) for t in times.values()}
    if len(lengths) != 1:
        raise input_error(f"the methods have different numbers of layers {sorted(lengths)}", field="metrics")
    if reference is not None and reference not in times:
        raise input_error(f"reference {reference!r} is not among {list(times)}", field="reference")
    L = lengths.pop()
    styles = method_styles(list(times))
    fig = _figure(8, 4.2 if reference is None else 6.4)
    axes = [fig.add_subplot(2 if reference else 1, 1, 1)]
    if reference is not None:
        axes.append(fig.add_subplot(2, 1, 2, sharex=axes[0]))
    x = np.arange(L)
    every = max(1, L // 12)
    for name, t in times.items():
        st = styles[name]
        kw = dict(color=st["color"], marker=st["marker"], linestyle=st["linestyle"], markevery=every,
                  markersize=5, linewidth=1.3)
        axes[0].plot(x, t, label=f"{name} ({t.sum() / 1e3:.4g} ms)", **kw)
        if reference is not None:
            axes[1].plot(x, t / np.where(times[reference] > 0, times[reference], np.nan), **kw)
    axes[0].set_ylabel("layer time (µs)")
    axes[0].set_title("modelled time of each MoE layer in one serving step", fontsize="medium")
    axes[0].legend(title="method (step time)", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    if reference is not None:
        axes[1].axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        axes[1].set_ylabel(f"/ {reference}")
    axes[-1].set_xlabel("MoE layer")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig


# ------------------------------------------------------------------------------------- expert map
def _layer_load(trace_or_load: Trace | np.ndarray | None, placement: Placement) -> np.ndarray | None:
    if trace_or_load is None:
        return None
    if hasattr(trace_or_load, "layer_counts"):
        load = np.asarray(trace_or_load.layer_counts(), dtype=np.float64)
    else:
        load = np.asarray(trace_or_load, dtype=np.float64)
    want = (placement.num_layers, placement.num_experts)
    if load.shape != want:
        raise input_error(
            f"load shape {load.shape} does not match the placement's [layers, experts] = {want}", field="load"
        )
    return load


#: Experts up to which :func:`plot_expert_map` draws the GPU x expert heatmap by default.
DETAIL_MAX_EXPERTS = 64


def plot_expert_map(
    placement: Placement,
    load: Trace | np.ndarray | None = None,
    *,
    layers: Sequence[int] | None = None,
    max_layers: int = 4,
    view: str = "auto",
    topology: Topology | str | None = None,
    top: int = 16,
) -> Figure:
    """Which GPU serves which expert, shaded by load.

    Parameters
    ----------
    placement:
        The placement.
    load:
        A trace or ``[layers, experts]`` token counts; each expert's load is split evenly over
        its replicas.  ``None``: every expert weighs 1 (the map then shows experts, not tokens).
    layers:
        MoE layers of the detailed view (default: ``max_layers`` layers spread evenly).
    view:
        ``"detail"``: per layer, a GPU x expert heatmap and each GPU's total; ``"summary"``: three
        aggregated views readable at 256 experts (each GPU's load per layer over the layer's mean, the
        replicas of every expert with experts sorted hottest first, and the ``top`` hottest experts with
        the GPUs holding them); ``"auto"``: detail up to :data:`DETAIL_MAX_EXPERTS` experts.
    topology:
        Draws server boundaries in the summary (optional).
    """
    if view not in ("auto", "detail", "summary"):
        raise input_error(f"unknown view {view!r}; choose auto, detail or summary", field="view")
    if view == "summary" or (view == "auto" and placement.num_experts > DETAIL_MAX_EXPERTS and layers is None):
        return _expert_summary(placement, _layer_load(load, placement), topology, top)
    return _expert_detail(placement, load, layers, max_layers)


def _served(placement: Placement, load: np.ndarray | None) -> np.ndarray:
    """``float64 [layers, experts, gpus]`` load each GPU serves of each expert (even split over replicas)."""
    counts = placement.replica_counts().astype(np.float64)  # [L, E, G]
    if load is None:
        return counts
    share = counts / np.maximum(counts.sum(axis=2, keepdims=True), 1)
    return share * load[:, :, None]


def _expert_detail(placement: Placement, load: Any, layers: Sequence[int] | None, max_layers: int) -> Figure:
    from matplotlib.ticker import MaxNLocator

    L, G = placement.num_layers, placement.num_gpus
    if layers is None:
        layers = sorted({int(round(x)) for x in np.linspace(0, L - 1, min(max_layers, L))})
    layers = list(layers)
    if not layers:
        raise input_error("give at least one layer", field="layers")
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < L:
            raise input_error(f"layer {layer!r} is outside [0, {L})", field="layers")
    ld = _layer_load(load, placement)
    cell = _served(placement, ld)
    label = "tokens served" if ld is not None else "replicas"
    E = placement.num_experts
    # placed by hand: a layout engine measures every tick label twice and is several times slower here
    width, height = min(max(6.5, 4 + 0.12 * E), 18), 1.2 + (1.0 + 0.25 * min(G, 32)) * len(layers)
    fig = _figure(width, height, layout=None)
    grid = fig.add_gridspec(len(layers), 3, width_ratios=[5, 1, 0.12], left=0.9 / width,
                            right=1 - 0.8 / width, bottom=0.5 / height, top=1 - 0.75 / height,
                            hspace=0.3, wspace=0.16)
    vmax = max(float(cell[layers].max()), 1e-12)
    from matplotlib import colormaps

    # a GPU that does not hold the expert: blank, not the scale's darkest colour
    cmap = colormaps["viridis_r"].with_extremes(bad="white")
    image = None
    for row, layer in enumerate(layers):
        ax = fig.add_subplot(grid[row, 0])
        held = np.ma.masked_equal(cell[layer].T, 0)
        image = ax.imshow(held, aspect="auto", cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_ylabel(f"layer {layer}\nGPU")
        ax.set_yticks(range(G) if G <= 16 else np.linspace(0, G - 1, 9).round().astype(int))
        if row == len(layers) - 1:
            ax.set_xlabel("expert")
        bar = fig.add_subplot(grid[row, 1], sharey=ax)
        per_gpu = cell[layer].sum(axis=0)
        bar.barh(np.arange(G), per_gpu, color="tab:orange")
        bar.tick_params(labelleft=False)
        bar.xaxis.set_major_locator(MaxNLocator(2))
        if row == 0:
            bar.set_title("per GPU", fontsize="small")
    fig.colorbar(image, cax=fig.add_subplot(grid[:, 2]), label=label)
    fig.suptitle(f"expert placement ({placement.metadata.get('method', 'placement')}), {label}",
                 y=1 - 0.2 / height)
    return fig


def _expert_summary(placement: Placement, load: np.ndarray | None, topology: Any, top: int) -> Figure:
    from matplotlib.colors import BoundaryNorm, ListedColormap, TwoSlopeNorm

    L, E, G = placement.num_layers, placement.num_experts, placement.num_gpus
    bounds = _server_bounds(topology, G)
    weights = load if load is not None else np.ones((L, E))
    served = _served(placement, weights)  # [L, E, G]
    per_gpu = served.sum(axis=1)  # [L, G]
    rel = per_gpu / np.maximum(per_gpu.mean(axis=1, keepdims=True), 1e-12)
    replicas = placement.num_replicas()  # [L, E]
    order = np.argsort(-weights, axis=1, kind="stable")  # hottest first, per layer
    sorted_replicas = np.take_along_axis(replicas, order, axis=1)
    what = "tokens" if load is not None else "experts"
    fig = _figure(13, 8.8)
    grid = fig.add_gridspec(2, 2, height_ratios=[1.25, 1], width_ratios=[1, 1.35])
    # (a) load per GPU and layer over the layer's mean
    ax = fig.add_subplot(grid[0, 0])
    vmax = max(2.0, float(rel.max()))
    image = ax.imshow(rel, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(vcenter=1.0, vmin=0.0, vmax=vmax),
                      interpolation="nearest")
    for b in bounds:
        ax.axvline(b - 0.5, color="black", linewidth=0.8)
    _gpu_ticks(ax, G, "x", bounds)
    ax.set_xlabel("GPU" + (" (lines: server boundaries)" if len(bounds) else ""))
    ax.set_ylabel("MoE layer")
    ax.set_title(f"{what} served per GPU / layer mean\n(worst {rel.max():.2f}x, mean of layer maxima "
                 f"{rel.max(axis=1).mean():.2f}x)", fontsize="medium")
    fig.colorbar(image, ax=ax, label="x the layer's mean", shrink=0.9)
    # (b) replicas of every expert, hottest first
    ax = fig.add_subplot(grid[0, 1])
    rmax = int(replicas.max())
    cmap = ListedColormap(["#f0f0f0", *[c for c in ("#9ecae1", "#4292c6", "#08519c", "#08306b", "#000000")]][:rmax])
    norm = BoundaryNorm(np.arange(0.5, rmax + 1.5), cmap.N)
    image = ax.imshow(sorted_replicas, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_xlabel("expert, hottest first in each layer" if load is not None else "expert")
    ax.set_ylabel("MoE layer")
    extra = int((replicas - 1).sum())
    ax.set_title(f"replicas per expert ({extra} extra copies, {placement.slots_per_gpu} slots per GPU)",
                 fontsize="medium")
    fig.colorbar(image, ax=ax, label="replicas", ticks=np.arange(1, rmax + 1), shrink=0.9)
    # (c) hottest experts and where they are
    ax = fig.add_subplot(grid[1, :])
    k = int(min(max(1, top), L * E))
    flat = np.argsort(-weights.ravel(), kind="stable")[:k]
    lay, exp = np.unravel_index(flat, (L, E))
    share = weights[lay, exp] / np.maximum(weights[lay].sum(axis=1), 1e-12)
    y = np.arange(k)
    ax.barh(y, share * 100, color="#dd8452")
    holders = placement.replica_counts()[lay, exp] > 0  # [k, G]
    for i in range(k):
        gpus = np.flatnonzero(holders[i])
        where = ", ".join(map(str, gpus[:8])) + (", ..." if len(gpus) > 8 else "")
        r = int(replicas[lay[i], exp[i]])
        ax.text(share[i] * 100, i, f"  {r} replica{'s' if r > 1 else ''} on GPU {where}", va="center",
                fontsize="small")
    ax.set_yticks(y, [f"layer {a} expert {b}" for a, b in zip(lay, exp, strict=True)], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, float(share.max()) * 100 * 1.45)
    ax.set_xlabel(f"share of the layer's {what} (%)")
    ax.set_title(f"the {k} hottest experts and the GPUs holding them", fontsize="medium")
    ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"expert placement ({placement.metadata.get('method', 'placement')}): {L} layers x {E} experts "
                 f"on {G} GPUs")
    return fig


# ------------------------------------------------------------------------------------- traffic
def plot_traffic(traffic: Metrics | np.ndarray | Mapping[str, Metrics | np.ndarray], *, title: str | None = None,
                 unit: str = "tokens", topology: Topology | str | None = None, vmin: float | None = None,
                 vmax: float | None = None) -> Figure:
    """Heatmaps of ``traffic [gpus, gpus]`` (sender row, receiver column); a Metrics gives its ``traffic``.

    A mapping ``{name: Metrics or matrix}`` draws one panel per entry on one shared colour scale, from
    ``vmin`` to ``vmax`` (default: the smallest and largest off-diagonal cell of all panels, so that the
    differences between GPU pairs show; pass ``vmin=0`` for a scale from zero).  The diagonal (a GPU's
    traffic to itself, which never crosses a link) is masked and drawn grey; with ``topology`` lines mark
    the servers.
    """
    entries = dict(traffic) if isinstance(traffic, Mapping) else {title or "": traffic}
    if not entries:
        raise input_error("give at least one traffic matrix", field="traffic")
    mats = {}
    for name, t in entries.items():
        m = np.asarray(getattr(t, "traffic", t), dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1] or m.size == 0:
            raise input_error(f"expected a square [gpus, gpus] matrix, got shape {m.shape}", field="traffic")
        if not np.isfinite(m).all():
            raise input_error("holds NaN or infinity", field="traffic")
        mats[str(name)] = m
    sizes = {m.shape[0] for m in mats.values()}
    if len(sizes) != 1:
        raise input_error(f"the matrices have different sizes {sorted(sizes)}", field="traffic")
    G = sizes.pop()
    bounds = _server_bounds(topology, G)
    off = ~np.eye(G, dtype=bool)
    cells = np.concatenate([m[off] for m in mats.values()]) if G > 1 else np.zeros(1)
    vmax = float(vmax) if vmax is not None else max(float(cells.max()), 1e-12)
    vmin = float(vmin) if vmin is not None else min(float(cells.min()), vmax * (1 - 1e-9))
    from matplotlib import colormaps

    cmap = colormaps["magma_r"].with_extremes(bad="#bdbdbd")
    n = len(mats)
    side = 2.2 + 0.12 * min(G, 32)
    fig = _figure(0.9 + side * n + 1.0, side + 0.9)
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    image = None
    for ax, (name, m) in zip(axes, mats.items(), strict=True):
        masked = np.ma.masked_array(m, mask=~off)
        image = ax.imshow(masked, cmap=cmap, interpolation="nearest", vmin=vmin, vmax=vmax)
        for b in bounds:
            ax.axhline(b - 0.5, color="#2b8cbe", linewidth=1.0)
            ax.axvline(b - 0.5, color="#2b8cbe", linewidth=1.0)
        _gpu_ticks(ax, G, "x", bounds)
        _gpu_ticks(ax, G, "y", bounds)
        ax.set_xlabel("to GPU")
        total = m[off].sum()
        cross = m[off].sum() if not len(bounds) else _cross_server(m, bounds)
        label = f"{name}\n" if name else ""
        ax.set_title(f"{label}{_human(total)} {unit} between GPUs" + (f", {cross / total:.0%} across servers"
                     if len(bounds) and total > 0 else ""), fontsize="medium")
    axes[0].set_ylabel("from GPU")
    fig.colorbar(image, ax=axes, label=f"{unit} (one scale; diagonal masked)", shrink=0.85)
    if title and n > 1:
        fig.suptitle(title)
    return fig


def _human(value: float) -> str:
    """``1.84e6`` -> ``"1.84 M"``."""
    for scale, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _cross_server(m: np.ndarray, bounds: np.ndarray) -> float:
    server = np.zeros(m.shape[0], dtype=np.int64)
    server[bounds] = 1
    server = np.cumsum(server)
    return float(m[server[:, None] != server[None, :]].sum())


# ------------------------------------------------------------------------------------- tiers
def _frame(table: pd.DataFrame | Any, what: str) -> pd.DataFrame:
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise input_error(f"expected a pandas DataFrame, got {type(table).__name__}", field=what)
    if table.empty:
        raise input_error("the table has no rows", field=what)
    return table


def plot_tier_bytes(table: pd.DataFrame, *, methods: Sequence[str] | None = None,
                    reference: str | None = None) -> Figure:
    """Grouped bars: for each link tier (``MB_<tier>`` columns), one bar per method (row).

    With ``reference`` (a row) the bars are each method's bytes over the reference's on that tier, on an
    axis around 1 (not from 0), so that differences of a few percent show; tiers the reference leaves
    empty are left out.
    """
    frame = _frame(table, "table")
    cols = [c for c in frame.columns if str(c).startswith("MB_")]
    if not cols:
        raise input_error(
            f"no MB_<tier> columns (found {list(map(str, frame.columns))}); pass the table of "
            "placement.compare or `placement compare --out`",
            field="columns",
        )
    if reference is not None and reference not in frame.index:
        raise input_error(f"reference {reference!r} is not a row of the table {list(frame.index)}", field="reference")
    ref_row = frame.loc[reference] if reference is not None else None
    if methods is not None:
        missing = [m for m in methods if m not in frame.index]
        if missing:
            raise input_error(
                f"methods {missing} are not rows of the table {list(frame.index)}", field="methods"
            )
        frame = frame.loc[list(methods)]
    values = frame[cols].apply(lambda s: s.astype(float)).to_numpy()
    if not np.isfinite(values).all():
        raise input_error("MB_<tier> columns hold NaN or non-numbers", field="columns")
    if ref_row is not None:
        ref = ref_row[cols].astype(float).to_numpy()
        keep = ref > 0
        cols, values = [c for c, k in zip(cols, keep, strict=True) if k], values[:, keep] / ref[keep]
        if not cols:
            raise input_error(f"the reference {reference!r} sends nothing on any tier", field="reference")
    styles = method_styles(list(map(str, frame.index)))  # before dropping the reference: colours stay put
    if ref_row is not None and reference in frame.index and len(frame) > 1:
        keep_rows = np.asarray([str(n) != str(reference) for n in frame.index])
        frame, values = frame[keep_rows], values[keep_rows]
    n_methods, n_tiers = values.shape
    fig = _figure(max(4.5, 1.8 + n_tiers * (0.35 * n_methods + 0.5)), 3.8)
    ax = fig.add_subplot()
    width = 0.8 / n_methods
    x = np.arange(n_tiers)
    base = 1.0 if ref_row is not None else 0.0
    for i, name in enumerate(frame.index):
        st = styles[str(name)]
        ax.bar(x - 0.4 + width * (i + 0.5), values[i] - base, width, bottom=base, label=str(name),
               color=st["color"], edgecolor="white", linewidth=0.5)
    ax.set_xticks(x, [str(c)[3:] for c in cols])
    ax.set_xlabel("link tier")
    if ref_row is not None:
        ax.axhline(1.0, color="black", linewidth=0.8)
        lo, hi = float(values.min()), float(values.max())
        pad = max(0.02, 0.12 * (hi - lo))
        ax.set_ylim(min(lo, 1.0) - pad, max(hi, 1.0) + pad)
        ax.set_ylabel(f"bytes / {reference}'s")
        ax.set_title(f"bytes per link tier relative to {reference} (axis not from 0)")
    else:
        ax.set_ylabel("MB over all links of the tier")
        ax.set_title("bytes per link tier")
    ax.legend(title="method", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(True, axis="y", alpha=0.3)
    return fig


# ------------------------------------------------------------------------------------- solve time
#: Values of a status column that mean "stopped by a limit, not proven optimal" (:class:`~placement.Termination`).
LIMITED = ("feasible", "no_solution", "time_limit", "limit")


def plot_solve_time(
    table: pd.DataFrame,
    *,
    size: str = "size",
    time: str = "time_s",
    method: str | None = "method",
    log: bool = True,
    status: str | None = "termination",
    time_limit: float | None = None,
) -> Figure:
    """Solve time (column ``time``) against problem size (column ``size``), one line per ``method``.

    ``method`` may be a column or the index name; ``None`` draws one line.  When the table has the
    ``status`` column (a :class:`~placement.Termination` value per run), runs stopped by a limit
    (``feasible``, ``no_solution``) are drawn hollow and named in the legend, proven optima filled;
    ``time_limit`` draws the limit as a dashed line.
    """
    frame = _frame(table, "table").reset_index()
    for col in (size, time):
        if col not in frame.columns:
            raise input_error(f"no column '{col}' (found {list(map(str, frame.columns))})", field=col)
    if method is not None and method not in frame.columns:
        raise input_error(
            f"no column '{method}' (found {list(map(str, frame.columns))}); pass method=None for one line",
            field=method,
        )
    try:
        xs = frame[size].astype(float).to_numpy()
        ys = frame[time].astype(float).to_numpy()
    except (TypeError, ValueError) as exc:
        raise input_error(f"size and time columns must be numbers ({exc})", field=f"{size}/{time}") from exc
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise input_error("size or time holds NaN or infinity", field=f"{size}/{time}")
    if log and ((xs <= 0).any() or (ys <= 0).any()):
        raise input_error(
            "log axes need positive sizes and times; pass log=False (--linear)", field=f"{size}/{time}"
        )
    limited = np.zeros(len(frame), dtype=bool)
    if status is not None and status in frame.columns:
        limited = frame[status].astype(str).str.lower().isin(LIMITED).to_numpy()
    fig = _figure(7.5, 4.4)
    ax = fig.add_subplot()
    groups = (
        [(None, np.arange(len(frame)))]
        if method is None
        else [
            (name, np.flatnonzero((frame[method] == name).to_numpy()))
            for name in dict.fromkeys(frame[method])
        ]
    )
    styles = method_styles([str(name) for name, _ in groups])
    for name, idx in groups:
        st = styles[str(name)]
        order = idx[np.argsort(xs[idx], kind="stable")]
        done = [i for i, k in enumerate(order) if not limited[k]]  # proven runs: filled markers on the line
        ax.plot(xs[order], ys[order], color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                markevery=done, markersize=6, label=None if name is None else str(name))
        cut = order[limited[order]]
        if len(cut):
            ax.plot(xs[cut], ys[cut], linestyle="none", marker=st["marker"], markerfacecolor="white",
                    markeredgecolor=st["color"], markeredgewidth=1.5, markersize=7)
    if limited.any():
        ax.plot([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="black",
                label="hollow: stopped by a limit,\nnot proven optimal")
    if time_limit is not None:
        ax.axhline(float(time_limit), color="black", linestyle="--", linewidth=0.8,
                   label=f"time limit {time_limit:g} s")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(size)
    ax.set_ylabel(f"{time} (solve time)")
    if method is not None or limited.any() or time_limit is not None:
        ax.legend(title=method, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("solve time vs problem size", fontsize="medium")
    return fig
