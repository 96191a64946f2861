"""Min-cost flow on arrays: the network-flow counterpart of the MILP backends.

Some formulations (the transmission ILP with a binding memory row) are network flows; they
build the network as arrays and call :func:`min_cost_flow`, which reaches OR-Tools' C++
``SimpleMinCostFlow`` in one bulk call.  Like every backend it sees arrays, never traces or
graphs, and imports its solver only when called.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import input_error

__all__ = ["FlowResult", "min_cost_flow"]


@dataclass(frozen=True, eq=False)
class FlowResult:
    """``flows int64 [arcs]`` of an optimal flow and its ``cost`` (an integer, in the given units)."""

    flows: np.ndarray
    cost: int


def min_cost_flow(tails: np.ndarray, heads: np.ndarray, capacities: np.ndarray, unit_costs: np.ndarray,
                  supplies: np.ndarray) -> FlowResult:
    """Minimum-cost flow meeting ``supplies`` (``int64 [nodes]``, positive = source).

    Parameters
    ----------
    tails, heads:
        ``int64 [arcs]`` node indices of each arc.
    capacities, unit_costs:
        ``int64 [arcs]``; costs must be integers (scale and round before, and account for it).
    supplies:
        ``int64 [nodes]``, summing to zero.

    Raises
    ------
    RuntimeError
        When the solver does not report an optimal flow (infeasible supplies, overflow...);
        there is no fallback.

    Examples
    --------
    Two units from node 0 to node 2, directly (cost 5 each, capacity 1) or via node 1 (1 + 1):

    >>> r = min_cost_flow(np.array([0, 0, 1]), np.array([2, 1, 2]), np.array([1, 1, 1]),
    ...                   np.array([5, 1, 1]), np.array([2, 0, -2]))
    >>> r.flows.tolist(), r.cost
    ([1, 1, 1], 7)
    """
    arrays = [np.asarray(v) for v in (tails, heads, capacities, unit_costs)]
    n = arrays[0].shape[0]
    for name, arr in zip(("tails", "heads", "capacities", "unit_costs"), arrays, strict=True):
        if arr.ndim != 1 or arr.shape[0] != n or arr.dtype.kind not in "iu":
            raise input_error(f"must be a 1-D integer array of length {n}", source="min_cost_flow", field=name)
    supplies = np.asarray(supplies)
    if supplies.dtype.kind not in "iu" or int(supplies.sum()) != 0:
        raise input_error("must be integers summing to zero", source="min_cost_flow", field="supplies")
    from ortools.graph.python import min_cost_flow as mcf

    solver = mcf.SimpleMinCostFlow()
    solver.add_arcs_with_capacity_and_unit_cost(*(a.astype(np.int64) for a in arrays))
    solver.set_nodes_supplies(np.arange(supplies.shape[0], dtype=np.int64), supplies.astype(np.int64))
    status = solver.solve()
    if status != solver.OPTIMAL:
        raise RuntimeError(f"min-cost flow ended with status {status!r} (not OPTIMAL)")
    flows = np.asarray(solver.flows(np.arange(n, dtype=np.int64)), dtype=np.int64)
    return FlowResult(flows=flows, cost=int(solver.optimal_cost()))
