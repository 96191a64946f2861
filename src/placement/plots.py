"""Figures for placements and comparisons (matplotlib, imported lazily; the ``notebook`` extra).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global
state, no GUI backend: rendering uses Agg), which notebooks display and :func:`save_figure`
writes as PNG or SVG (atomically: a failure leaves no file).

* :func:`plot_expert_map`: per MoE layer, a GPU x expert heatmap of the tokens each GPU serves
  for each expert (its share of the expert's load; replica counts when no load is given), with
  each GPU's total load beside it.
* :func:`plot_traffic`: the GPU-to-GPU traffic matrix of :class:`~placement.evaluate.Metrics`.
* :func:`plot_tier_bytes`: bytes per link tier and method as grouped bars, from the table of
  :func:`placement.compare` (its ``MB_<tier>`` columns).
* :func:`plot_solve_time`: solve time against problem size, one line per method.

>>> import numpy as np
>>> from placement import Placement
>>> fig = plot_expert_map(Placement.from_assignment(np.array([[0, 0, 1, 1]]), num_gpus=2))
>>> len(fig.axes) >= 2
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import input_error

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

    from .evaluate import Metrics
    from .placement import Placement
    from .trace import Trace

__all__ = [
    "plot_expert_map",
    "plot_traffic",
    "plot_tier_bytes",
    "plot_solve_time",
    "save_figure",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".png", ".svg")
NOTEBOOK_HINT = "pip install 'placement[notebook]'"


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


def plot_expert_map(
    placement: Placement,
    load: Trace | np.ndarray | None = None,
    *,
    layers: Sequence[int] | None = None,
    max_layers: int = 4,
) -> Figure:
    """Which GPU serves which expert, per layer, shaded by load.

    Parameters
    ----------
    placement:
        The placement.
    load:
        A trace or ``[layers, experts]`` token counts; each expert's load is split evenly over
        its replicas.  ``None`` shades by replica count.
    layers:
        MoE layers to draw (default: ``max_layers`` layers spread evenly from first to last).
    """
    L, G = placement.num_layers, placement.num_gpus
    if layers is None:
        layers = sorted({int(round(x)) for x in np.linspace(0, L - 1, min(max_layers, L))})
    layers = list(layers)
    if not layers:
        raise input_error("give at least one layer", field="layers")
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < L:
            raise input_error(f"layer {layer!r} is outside [0, {L})", field="layers")
    counts = placement.replica_counts().astype(np.float64)  # [L, E, G]
    ld = _layer_load(load, placement)
    if ld is not None:
        share = counts / np.maximum(counts.sum(axis=2, keepdims=True), 1)
        cell = share * ld[:, :, None]
        label = "tokens served"
    else:
        cell = counts
        label = "replicas"
    E = placement.num_experts
    # placed by hand: a layout engine measures every tick label twice and is several times slower here
    width, height = min(max(6.5, 4 + 0.12 * E), 18), 1.2 + (1.0 + 0.25 * G) * len(layers)
    fig = _figure(width, height, layout=None)
    grid = fig.add_gridspec(len(layers), 3, width_ratios=[5, 1, 0.12], left=0.9 / width,
                            right=1 - 0.8 / width, bottom=0.5 / height, top=1 - 0.75 / height,
                            hspace=0.3, wspace=0.06)
    vmax = max(float(cell[layers].max()), 1e-12)
    image = None
    for row, layer in enumerate(layers):
        ax = fig.add_subplot(grid[row, 0])
        image = ax.imshow(
            cell[layer].T, aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest"
        )
        ax.set_ylabel(f"layer {layer}\nGPU")
        ax.set_yticks(range(G) if G <= 16 else np.linspace(0, G - 1, 9).round().astype(int))
        if row == len(layers) - 1:
            ax.set_xlabel("expert")
        bar = fig.add_subplot(grid[row, 1], sharey=ax)
        per_gpu = cell[layer].sum(axis=0)
        bar.barh(np.arange(G), per_gpu, color="tab:orange")
        bar.tick_params(labelleft=False)
        if row == 0:
            bar.set_title("per GPU", fontsize="small")
    assert image is not None
    fig.colorbar(image, cax=fig.add_subplot(grid[:, 2]), label=label)
    fig.suptitle(f"expert placement ({placement.metadata.get('method', 'placement')}), {label}",
                 y=1 - 0.2 / height)
    return fig


# ------------------------------------------------------------------------------------- traffic
def plot_traffic(traffic: Metrics | np.ndarray, *, title: str | None = None, unit: str = "tokens") -> Figure:
    """Heatmap of ``traffic [gpus, gpus]`` (sender row, receiver column); a Metrics gives its ``traffic``."""
    matrix = getattr(traffic, "traffic", traffic)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.size == 0:
        raise input_error(f"expected a square [gpus, gpus] matrix, got shape {m.shape}", field="traffic")
    if not np.isfinite(m).all():
        raise input_error("holds NaN or infinity", field="traffic")
    G = m.shape[0]
    fig = _figure(2.5 + 0.3 * min(G, 32), 2 + 0.28 * min(G, 32))
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap="magma", interpolation="nearest", vmin=0)
    ax.set_xlabel("to GPU")
    ax.set_ylabel("from GPU")
    if G <= 16:
        ax.set_xticks(range(G))
        ax.set_yticks(range(G))
    fig.colorbar(image, ax=ax, label=unit)
    ax.set_title(title or f"GPU-to-GPU traffic (total {m.sum():.4g} {unit})")
    return fig


# ------------------------------------------------------------------------------------- tiers
def _frame(table: pd.DataFrame | Any, what: str) -> pd.DataFrame:
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise input_error(f"expected a pandas DataFrame, got {type(table).__name__}", field=what)
    if table.empty:
        raise input_error("the table has no rows", field=what)
    return table


def plot_tier_bytes(table: pd.DataFrame, *, methods: Sequence[str] | None = None) -> Figure:
    """Grouped bars: for each link tier (``MB_<tier>`` columns), one bar per method (row)."""
    frame = _frame(table, "table")
    cols = [c for c in frame.columns if str(c).startswith("MB_")]
    if not cols:
        raise input_error(
            f"no MB_<tier> columns (found {list(map(str, frame.columns))}); pass the table of "
            "placement.compare or `placement compare --out`",
            field="columns",
        )
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
    n_methods, n_tiers = values.shape
    fig = _figure(max(4.0, 1.2 + n_tiers * (0.35 * n_methods + 0.5)), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / n_methods
    x = np.arange(n_tiers)
    for i, name in enumerate(frame.index):
        ax.bar(x - 0.4 + width * (i + 0.5), values[i], width, label=str(name))
    ax.set_xticks(x, [str(c)[3:] for c in cols])
    ax.set_xlabel("link tier")
    ax.set_ylabel("MB over all links of the tier")
    ax.legend(title="method", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title("bytes per link tier")
    return fig


# ------------------------------------------------------------------------------------- solve time
def plot_solve_time(
    table: pd.DataFrame,
    *,
    size: str = "size",
    time: str = "time_s",
    method: str | None = "method",
    log: bool = True,
) -> Figure:
    """Solve time (column ``time``) against problem size (column ``size``), one line per ``method``.

    ``method`` may be a column or the index name; ``None`` draws one line.
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
    fig = _figure(5.5, 3.8)
    ax = fig.add_subplot()
    groups = (
        [(None, np.arange(len(frame)))]
        if method is None
        else [
            (name, np.flatnonzero((frame[method] == name).to_numpy()))
            for name in dict.fromkeys(frame[method])
        ]
    )
    for name, idx in groups:
        order = idx[np.argsort(xs[idx], kind="stable")]
        ax.plot(xs[order], ys[order], marker="o", label=None if name is None else str(name))
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(size)
    ax.set_ylabel(f"{time} (solve time)")
    if method is not None:
        ax.legend(title=method, fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("solve time vs problem size")
    return fig
