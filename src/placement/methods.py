"""The catalogue of placement methods: importing this module registers every method, in a stated order.

:mod:`placement.registry` is the leaf that holds :data:`METHODS`; the modules below register their
methods there when imported, and the order of the imports is the order of ``placement methods``
(baselines first, then the formulations from the simplest model to the largest).  Listing methods
imports no solver.  :func:`run_method` runs one by name with its options checked.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

# The catalogue, in order.  Each import registers its module's methods.
from .baselines import methods as _baselines  # noqa: F401, I001  isort: skip
from .formulations import transmission as _transmission  # noqa: F401, I001  isort: skip
from .formulations import affinity as _affinity  # noqa: F401, I001  isort: skip
from .formulations import alltoall as _alltoall  # noqa: F401, I001  isort: skip
from .search import method as _layer_time  # noqa: F401, I001  isort: skip
from .registry import METHODS, Method, Option, get_method, register
from .solution import Solution, Termination

if TYPE_CHECKING:  # pragma: no cover
    from .stats import TraceStats
    from .topology import Topology

__all__ = ["METHODS", "Method", "Option", "Solution", "Termination", "get_method", "register", "run_method"]


def run_method(name: str, stats: TraceStats, topology: Topology, **options: Any) -> Solution:
    """Run method ``name`` with ``options`` (converted and checked) and time it."""
    method = get_method(name)
    opts = method.parse_options(options)
    if method.needs == "tokens":
        stats.trace.require_tokens(f"method '{name}'")
    t0 = time.perf_counter()
    solution = method.resolve()(stats, topology, **opts)
    elapsed = time.perf_counter() - t0
    meta = dict(solution.placement.metadata)
    meta.update({"method": name, "options": opts, "termination": solution.termination.value})
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
