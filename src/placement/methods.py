"""The catalogue of placement methods: importing this module registers every method, in a stated order.

:mod:`placement.registry` is the leaf that holds :data:`METHODS`; the modules below register their
methods there when imported, and the order of the imports is the order of ``placement methods``
(baselines first, then the formulations from the simplest model to the largest).  Listing methods
imports no solver.  :func:`run_method` runs one by name with its options checked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

# The catalogue, in order.  Each import registers its module's methods.
from .baselines import methods as _baselines  # noqa: F401, I001  isort: skip
from .formulations import transmission as _transmission  # noqa: F401, I001  isort: skip
from .formulations import affinity as _affinity  # noqa: F401, I001  isort: skip
from .formulations import alltoall as _alltoall  # noqa: F401, I001  isort: skip
from .formulations import balance as _balance  # noqa: F401, I001  isort: skip
from .search import method as _layer_time  # noqa: F401, I001  isort: skip
from .errors import input_error
from .progress import Report, Run, running
from .registry import METHODS, Method, Option, get_method, register
from .solution import Limit, Solution, Termination

if TYPE_CHECKING:  # pragma: no cover
    from .stats import TraceStats
    from .topology import Topology

__all__ = ["METHODS", "Method", "Option", "Solution", "Termination", "get_method", "register", "run_method"]


def run_method(name: str, stats: TraceStats, topology: Topology, *,
               progress: Callable[[Report], Any] | None = None, **options: Any) -> Solution:
    """Run method ``name`` with ``options`` (converted and checked) and time it.

    The method runs inside a :class:`~placement.progress.Run` (:mod:`placement.progress`): its
    ``time_limit`` option, when it has one, counts from here (model building included) and is
    shared by all its stages; ``progress`` is called with a :class:`~placement.progress.Report`
    (incumbent, bound and gap in the method's units, and the stage or layer it is on) about once a
    second while it runs; the ``verbose`` option prints the same reports on stderr.  A method cut
    short by its time limit or by Ctrl-C returns its best answer so far with
    :attr:`Solution.limit <placement.solution.Solution.limit>` saying which.
    """
    method = get_method(name)
    opts = method.parse_options(options)
    if progress is not None and not callable(progress):
        raise input_error(f"must be a callable taking a progress Report, got {type(progress).__name__}",
                          field="progress")
    if method.needs == "tokens":
        stats.trace.require_tokens(f"method '{name}'")
    t0 = time.perf_counter()
    run = Run(name, opts.get("time_limit"), callback=progress, verbose=bool(opts.get("verbose")))
    with running(run):
        solution = method.resolve()(stats, topology, **opts)
    elapsed = time.perf_counter() - t0
    if solution.limit is Limit.NONE and run.limit != "none" and solution.termination is not Termination.OPTIMAL:
        solution = replace(solution, limit=Limit(run.limit))
    meta = dict(solution.placement.metadata)
    meta.update({"method": name, "options": opts, "termination": solution.termination.value})
    if solution.limit is not Limit.NONE:
        meta["limit"] = solution.limit.value
    for key in ("objective", "bound", "gap"):
        value = getattr(solution, key)
        if value is not None and math.isfinite(value):
            meta[key] = value
    layout = solution.placement.layout or _trace_layout(stats, solution.placement.num_layers)
    return replace(solution, placement=replace(solution.placement, metadata=meta, layout=layout),
                   wall_time=solution.wall_time or elapsed)


def _trace_layout(stats: TraceStats, num_layers: int) -> Any:
    """The layer layout of the trace's model (``None`` when unknown): placements carry it to the exports."""
    trace = getattr(stats, "trace", None)
    layout = trace.model.layout() if trace is not None else None
    return layout if layout is not None and layout.num_moe_layers == num_layers else None
