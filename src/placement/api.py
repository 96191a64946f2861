"""The high-level API: solve a placement, evaluate it, compare methods.

>>> import placement
>>> from placement.trace.synthesize import synthesize
>>> trace = synthesize("mixtral-8x7b", 256, seed=1)
>>> sol = placement.solve(trace, "fat-tree:2x4", method="round_robin")
>>> sol.placement.slots.shape
(32, 8, 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .evaluate import Metrics, evaluate
from .methods import Solution, run_method
from .stats import TraceStats
from .trace._trace import Trace

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .placement import Placement
    from .topology import Topology

__all__ = ["solve", "compare", "metrics_table", "verdict", "as_topology", "as_stats", "parse_method_spec"]


def parse_method_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"name(key=value, ...)"`` into the method name and its inline options.

    >>> parse_method_spec("eplb(faithful=true, redundant=32)")
    ('eplb', {'faithful': 'true', 'redundant': '32'})
    >>> parse_method_spec("contiguous")
    ('contiguous', {})
    """
    from .errors import input_error

    spec = spec.strip()
    if "(" not in spec:
        return spec, {}
    name, _, rest = spec.partition("(")
    if not rest.endswith(")"):
        raise input_error(f"expected NAME(KEY=VALUE, ...), got {spec!r}", field="method")
    options: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in rest[:-1].split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise input_error(f"expected KEY=VALUE inside {spec!r}, got {item!r}", field="method")
        options[key.strip()] = value.strip()
    return name.strip(), options


def as_topology(topology: Topology | str) -> Topology:
    """A :class:`~placement.topology.Topology` from itself, a preset spec or a YAML path."""
    import os

    from .errors import input_error
    from .topology import Topology, load_topology

    if isinstance(topology, Topology):
        return topology
    if not isinstance(topology, (str, os.PathLike)):
        raise input_error(f"must be a Topology, a preset spec such as 'fat-tree:4x8' or a YAML path, got "
                          f"{type(topology).__name__}", field="topology")
    return load_topology(topology)


def as_stats(trace: Trace | TraceStats) -> TraceStats:
    """Statistics of ``trace`` (passed through when already a :class:`TraceStats`)."""
    from .errors import input_error

    if isinstance(trace, TraceStats):
        return trace
    if not isinstance(trace, Trace):
        hint = "; load the file first: placement.load_trace(path)" if isinstance(trace, str) else ""
        raise input_error(f"must be a Trace or TraceStats, got {type(trace).__name__}{hint}", field="trace")
    return TraceStats(trace)


def solve(trace: Trace | TraceStats, topology: Topology | str, method: str = "contiguous",
          **options: Any) -> Solution:
    """Place the experts of ``trace``'s model on ``topology`` with ``method`` (see :data:`placement.METHODS`)."""
    return run_method(method, as_stats(trace), as_topology(topology), **options)


def metrics_table(metrics: Mapping[str, Metrics], reference: str | None = None) -> pd.DataFrame:
    """One row per method of every scalar metric; with ``reference``, ``<metric>/ref`` ratio columns.

    Ratios are method / reference for numeric metrics (``nan`` where the reference is 0).
    """
    import numpy as np
    import pandas as pd

    frame = pd.concat([m.to_frame(name) for name, m in metrics.items()])
    if reference is not None:
        if reference not in metrics:
            raise ValueError(f"reference {reference!r} is not among the compared methods {list(metrics)}")
        ref = frame.loc[reference]
        for col in ("step_time_ms", "hop_transmissions", "server_crossings", "alltoall_time_ms", "busiest_link_MB",
                    "load_imbalance"):
            if col not in frame.columns:
                continue
            denom = float(ref[col])
            frame[f"{col}/ref"] = frame[col].astype(float) / denom if denom else np.nan
    return frame


def verdict(frame: pd.DataFrame, reference: str | None = None) -> str:
    """One line naming the fastest placement of a :func:`compare` table by modelled step time, its ratio
    to the reference and to the runner-up, what bounds it and its memory (slots on the fullest GPU).

    Falls back to the all-to-all time for tables without the step model (coherent dispatch).
    """
    import numpy as np

    col = "step_time_ms" if "step_time_ms" in frame.columns and np.isfinite(frame["step_time_ms"].astype(float)).all() \
        else "alltoall_time_ms"
    times = frame[col].astype(float)
    order = times.sort_values(kind="stable")
    best = order.index[0]
    what = "step time" if col == "step_time_ms" else "all-to-all time"
    parts = [f"fastest: {best} ({what} {times[best]:.4g} ms"]
    if reference is not None and reference in frame.index and reference != best:
        parts.append(f", {times[best] / times[reference]:.3f}x {reference}")
    if len(order) > 1:
        parts.append(f", {times[best] / times[order.index[1]]:.3f}x runner-up {order.index[1]}")
    parts.append(")")
    if "bound_by" in frame.columns:
        parts.append(f"; bound by {frame.loc[best, 'bound_by']}")
    if "max_slots_used" in frame.columns:
        parts.append(f"; memory {int(frame.loc[best, 'max_slots_used'])} expert slots on the fullest GPU")
    return "".join(parts)


def compare(trace: Trace | TraceStats, topology: Topology | str, methods: Iterable[str | tuple[str, Placement]],
            *, reference: str | None = "contiguous", dispatch: str = "origin", dedup: bool = False,
            origins: str = "auto", hidden_size: int | None = None, dtype: str = "bf16",
            options: Mapping[str, Mapping[str, Any]] | None = None, **serving: Any) -> pd.DataFrame:
    """Solve with every method (or take given placements) and tabulate the evaluator's metrics.

    ``methods`` holds registry names, names with inline options such as
    ``"eplb(faithful=true, redundant=32)"`` (so one method can appear with several settings),
    or ``(label, placement)`` pairs; ``options`` maps a method name to its options.  The
    reference method is added when missing.  ``serving`` holds the serving-step options of
    :func:`~placement.evaluate` (``replica``, ``transport``, ``tokens_per_step``, ``tokens_per_gpu``,
    ``dispatch_dtype``, ``combine_dtype``, ``gpu``, ``overlap``); :func:`verdict` reads the table.
    """
    stats = as_stats(trace)
    topo = as_topology(topology)
    options = options or {}
    entries = list(methods)
    names = [e if isinstance(e, str) else e[0] for e in entries]
    if reference is not None and reference not in names:
        entries.append(reference)
    results: dict[str, Metrics] = {}
    extra: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if isinstance(entry, str):
            method, inline = parse_method_spec(entry)
            sol = run_method(method, stats, topo, **{**dict(options.get(method, {})), **inline})
            placement, name = sol.placement, entry
            extra[name] = {"solve_s": sol.wall_time, "termination": sol.termination.value, "gap": sol.gap}
        else:
            name, placement = entry
            extra[name] = {}
        results[name] = evaluate(placement, stats.trace, topo, dispatch=dispatch, dedup=dedup, origins=origins,
                                 hidden_size=hidden_size, dtype=dtype, **serving)
    import pandas as pd

    frame = metrics_table(results, reference)
    solved = pd.DataFrame.from_dict(extra, orient="index")
    return frame.join(solved) if len(solved.columns) else frame
