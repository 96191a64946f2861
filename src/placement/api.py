"""The high-level API: solve a placement, evaluate it, compare methods.

>>> import placement
>>> from placement.trace.synthesize import synthesize
>>> trace = synthesize("mixtral-8x7b", 256, seed=1)
>>> sol = placement.solve(trace, "fat-tree:2x4", method="round_robin")
>>> sol.placement.slots.shape
(32, 8, 1)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .evaluate import Metrics, evaluate
from .methods import Solution, run_method
from .stats import TraceStats
from .trace._trace import Trace
from .verdict import Verdict, memory_cost, verdict

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .placement import Placement
    from .progress import Report
    from .topology import Topology
    from .trace import ModelSpec

__all__ = ["solve", "compare", "metrics_table", "verdict", "Verdict", "memory_cost", "as_topology", "as_stats",
           "parse_method_spec", "comparison_frame", "resolve_entry", "PLACEMENT_SUFFIXES"]

#: Suffixes of placement files: an entry of :func:`compare`'s ``methods`` ending so is a file, not a method.
PLACEMENT_SUFFIXES = (".json", ".yaml", ".yml")


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


def solve(trace: Trace | TraceStats, topology: Topology | str, method: str = "contiguous", *,
          progress: Callable[[Report], Any] | None = None, **options: Any) -> Solution:
    """Place the experts of ``trace``'s model on ``topology`` with ``method`` (see :data:`placement.METHODS`).

    ``progress``, when given, is called about once a second during a long solve with a
    :class:`~placement.progress.Report` (incumbent, bound and gap in the method's units, and the
    stage or layer it is on); :func:`placement.progress.print_report` prints them as the CLI does.
    """
    return run_method(method, as_stats(trace), as_topology(topology), progress=progress, **options)


def metrics_table(metrics: Mapping[str, Metrics], reference: str | None = None, *,
                  test: Mapping[str, Metrics] | None = None) -> pd.DataFrame:
    """One row per method of every scalar metric; with ``reference``, ``<metric>/ref`` ratio columns.

    Ratios are method / reference for numeric metrics (``nan`` where the reference is 0).  ``test`` holds
    the same placements evaluated on a held-out trace: its step time, all-to-all time and what bounds the
    step become ``test_step_time_ms``, ``test_alltoall_time_ms`` and ``test_bound_by`` (out-of-sample).
    """
    import numpy as np
    import pandas as pd

    frame = pd.concat([m.to_frame(name) for name, m in metrics.items()])
    if test is not None:
        held = pd.concat([m.to_frame(name) for name, m in test.items()])
        for col in ("step_time_ms", "alltoall_time_ms", "bound_by"):
            if col in held.columns:
                frame[f"test_{col}"] = held[col]
    if reference is not None:
        if reference not in metrics:
            raise ValueError(f"reference {reference!r} is not among the compared methods {list(metrics)}")
        ref = frame.loc[reference]
        for col in ("step_time_ms", "hop_transmissions", "server_crossings", "alltoall_time_ms", "busiest_link_MB",
                    "load_imbalance", "test_step_time_ms", "test_alltoall_time_ms"):
            if col not in frame.columns:
                continue
            denom = float(ref[col])
            frame[f"{col}/ref"] = frame[col].astype(float) / denom if denom else np.nan
    return frame


def compare(trace: Trace | TraceStats, topology: Topology | str,
            methods: Iterable[str | os.PathLike[str] | tuple[str, Placement]], *,
            reference: str | os.PathLike[str] | None = "contiguous", test_trace: Trace | None = None,
            dispatch: str = "origin", dedup: bool = False, origins: str = "auto", hidden_size: int | None = None,
            dtype: str = "bf16", options: Mapping[str, Mapping[str, Any]] | None = None,
            progress: Callable[[Report], Any] | None = None, **serving: Any) -> pd.DataFrame:
    """Solve with every method (or take given placements) and tabulate the evaluator's metrics.

    ``methods`` holds registry names, names with inline options such as
    ``"eplb(faithful=true, redundant=32)"`` (so one method can appear with several settings),
    placement files (``.json``/``.yaml``, labelled by their stem: the deployed placement beside the
    methods) or ``(label, placement)`` pairs; ``options`` maps a method name to its options.  The
    reference (a method or a placement file) is added when missing.  ``serving`` holds the serving-step
    options of :func:`~placement.evaluate` (``replica``, ``transport``, ``tokens_per_step``,
    ``tokens_per_gpu``, ``dispatch_dtype``, ``combine_dtype``, ``gpu``, ``overlap``).

    Every row also carries the placement's :func:`memory_cost` (``slots_per_gpu``, ``extra_replicas``,
    ``replica_GB``) and, for solved methods, ``solve_s``, ``termination`` and ``gap``.  With
    ``test_trace`` (a held-out trace of the same model) the placements, fitted to ``trace``, are also
    evaluated on it: the ``test_*`` columns are out-of-sample.  :func:`verdict` reads the table.
    ``progress`` receives every method's progress reports (see :func:`solve`).
    """
    stats = as_stats(trace)
    topo = as_topology(topology)
    if test_trace is not None and not isinstance(test_trace, Trace):
        from .errors import input_error

        raise input_error(f"must be a Trace (a held-out trace of the same model), got {type(test_trace).__name__}",
                          field="test_trace")
    options = options or {}
    entries = [resolve_entry(e) for e in methods]
    names = [label for label, _ in entries]
    if reference is not None:
        ref_label, ref_what = resolve_entry(reference)
        if ref_label not in names:
            entries.append((ref_label, ref_what))
        reference = ref_label
    if len(set(names)) != len(names):
        from .errors import input_error

        raise input_error(f"two entries share a label: {names}; give distinct methods or file names",
                          field="methods")
    results: dict[str, Metrics] = {}
    held: dict[str, Metrics] = {}
    placements: dict[str, Placement] = {}
    solved: dict[str, dict[str, Any]] = {}
    kwargs = dict(dispatch=dispatch, dedup=dedup, origins=origins, hidden_size=hidden_size, dtype=dtype, **serving)
    for name, what in entries:
        if isinstance(what, str):
            method, inline = parse_method_spec(what)
            sol = run_method(method, stats, topo, progress=progress,
                             **{**dict(options.get(method, {})), **inline})
            placements[name] = sol.placement
            solved[name] = {"solve_s": sol.wall_time, "termination": sol.termination.value, "gap": sol.gap}
        else:
            placements[name] = what
        results[name] = evaluate(placements[name], stats.trace, topo, **kwargs)
        if test_trace is not None:
            held[name] = evaluate(placements[name], test_trace, topo, **kwargs)
    return comparison_frame(results, placements, stats.trace.model, reference,
                            test=held if test_trace is not None else None, solved=solved)


def comparison_frame(metrics: Mapping[str, Metrics], placements: Mapping[str, Placement], model: ModelSpec,
                     reference: str | None = None, *, test: Mapping[str, Metrics] | None = None,
                     solved: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """The table of :func:`compare` from evaluated placements: :func:`metrics_table` (with the ``test``
    figures, out-of-sample), each placement's :func:`memory_cost` and, for rows in ``solved``, its
    ``solve_s``, ``termination`` and ``gap``."""
    import pandas as pd

    frame = metrics_table(metrics, reference, test=test)
    extra = {name: {**dict((solved or {}).get(name, {})), **memory_cost(placements[name], model)} for name in metrics}
    return frame.join(pd.DataFrame.from_dict(extra, orient="index"))


def resolve_entry(entry: Any) -> tuple[str, str | Placement]:
    """``(label, method spec or placement)`` of one entry of :func:`compare`'s ``methods``."""
    from pathlib import Path

    from .errors import input_error
    from .placement import Placement, load_placement

    if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], Placement):
        return str(entry[0]), entry[1]
    if isinstance(entry, (str, os.PathLike)):
        path = Path(entry)
        if path.suffix.lower() in PLACEMENT_SUFFIXES:
            return path.stem, load_placement(path)
        if isinstance(entry, str):
            return entry, entry
    raise input_error(f"expected a method name, a placement file or a (label, Placement) pair, got {entry!r}",
                      field="methods")
