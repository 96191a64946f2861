"""MoETuner's data (loads, token transitions, GPU-pair weights) and the objectives of an assignment.

Units
-----
Loads are token-expert selections (:attr:`placement.stats.TraceStats.load`).  Traffic is tokens:
transition counts divided by ``k`` (a token's ``k x k`` boundary pairs each carry ``1/k`` token,
as in the evaluator's coherent dispatch).  Pair weights ``D[u, v]`` come from
:func:`placement.costs.pair_costs`, 0 on the diagonal:

* ``cost="cross"``: :attr:`~placement.costs.PairCosts.cross_gpu` -> objective in tokens;
* ``cost="hops"``: :attr:`~placement.costs.PairCosts.hops` -> token-hops;
* ``cost="time"``: :attr:`~placement.costs.PairCosts.seconds_per_token` -> seconds.  Tokens are
  :func:`placement.costs.wire_for` the trace's model with the default dtype (bf16): the methods
  have no dtype option.

Inside the models the weights are divided by :attr:`TunerProblem.cost_unit`, a power of two near
the largest weight (so the solver sees numbers near 1 and the division is exact); reported
objectives and bounds are model values times ``cost_unit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ...costs import pair_costs, wire_for
from ...errors import input_error
from .._common import power_of_two_near

__all__ = ["COSTS", "REPORTED_UNITS", "TunerProblem", "boundary_bottleneck", "bottleneck_objective",
           "build_problem", "gpu_traffic", "load_deviation", "max_load_ratio"]

#: The pair weights MoETuner accepts.
COSTS = ("cross", "hops", "time")
#: What the reported communication objective and bound measure for each pair weight: the sum over
#: layer boundaries of the largest weighted GPU-pair traffic.
REPORTED_UNITS = {"cross": "tokens", "hops": "token-hops", "time": "seconds"}


@dataclass(frozen=True, eq=False)
class TunerProblem:
    """What the MoETuner models read (module docstring for the units).

    Attributes
    ----------
    num_layers, num_experts, num_gpus, top_k:
        ``L``, ``E``, ``G``, ``k``.
    experts_per_gpu:
        ``m = E / G``: experts of one layer per GPU (one cluster per GPU).
    load:
        ``float64 [L, E]`` ``n``: token-expert selections of each expert.
    token_transitions:
        ``L - 1`` sparse ``float64 [E, E]`` ``T[l] / k``: tokens from expert ``i`` of layer ``l``
        to expert ``j`` of layer ``l + 1``.
    pair_weight:
        ``float64 [G, G]`` ``D``: weight of one token from GPU ``u`` to GPU ``v``, in model units
        (reported units / ``cost_unit``), 0 on the diagonal.
    cost_unit:
        Reported units per model unit (a power of two).
    cost:
        ``"cross"``, ``"hops"`` or ``"time"``.
    """

    num_layers: int
    num_experts: int
    num_gpus: int
    top_k: int
    experts_per_gpu: int
    load: np.ndarray
    token_transitions: tuple[sp.csr_matrix, ...]
    pair_weight: np.ndarray
    cost_unit: float
    cost: str

    @property
    def interchangeable_gpus(self) -> bool:
        """True when every off-diagonal pair weight is equal."""
        off = self.pair_weight[~np.eye(self.num_gpus, dtype=bool)]
        return off.size == 0 or bool(np.all(off == off[0]))


def build_problem(stats: Any, topology: Any, cost: str) -> TunerProblem:
    """A :class:`TunerProblem` from trace statistics and a topology; ``cost`` one of :data:`COSTS`."""
    trace = stats.trace
    L, E, G, k = trace.num_layers, trace.num_experts, topology.num_gpus, trace.top_k
    if E % G:
        raise input_error(f"the model has {E} experts per layer, which does not divide over {G} GPUs; MoETuner "
                          "puts one cluster of E/G experts per GPU", field="topology")
    if L < 2:
        raise input_error("affinity placement needs at least two MoE layers", field="trace")
    if cost not in COSTS:
        raise input_error(f"cost must be one of {list(COSTS)}, got {cost!r}", field="cost")
    costs = pair_costs(topology, wire_for(trace.model))
    kind = {"cross": "cross_gpu", "hops": "hops", "time": "seconds_per_token"}[cost]
    D = np.array(costs.of(kind), dtype=np.float64)
    np.fill_diagonal(D, 0.0)
    unit = power_of_two_near(float(D.max()))
    D /= unit
    T = tuple(sp.csr_matrix(t, dtype=np.float64) / k for t in stats.transitions)
    return TunerProblem(num_layers=L, num_experts=E, num_gpus=G, top_k=k, experts_per_gpu=E // G,
                        load=stats.load.astype(np.float64), token_transitions=T, pair_weight=D, cost_unit=unit,
                        cost=cost)


def _gpu_loads(problem: TunerProblem, a: np.ndarray) -> np.ndarray:
    """``float64 [L, G]`` selections on each GPU (or cluster) of assignment ``a int [L, E]``."""
    return np.stack([np.bincount(a[layer], weights=problem.load[layer], minlength=problem.num_gpus)
                     for layer in range(problem.num_layers)])


def load_deviation(problem: TunerProblem, a: np.ndarray) -> float:
    """ILP1's objective for assignment (or clustering) ``a int [L, E]``: ``sum_l sum_g |load - mean|``
    (selections)."""
    loads = _gpu_loads(problem, a)
    return float(np.abs(loads - loads.mean(axis=1, keepdims=True)).sum())


def max_load_ratio(problem: TunerProblem, a: np.ndarray) -> float:
    """Largest max/mean GPU load over the layers of ``a int [L, E]``."""
    loads = _gpu_loads(problem, a)
    mean = loads.mean(axis=1)
    return float(np.max(np.divide(loads.max(axis=1), mean, out=np.ones(problem.num_layers), where=mean > 0)))


def gpu_traffic(problem: TunerProblem, a: np.ndarray) -> np.ndarray:
    """``float64 [L-1, G, G]`` tokens sent from GPU ``u`` (layer ``l``) to GPU ``v`` (layer ``l+1``)
    under assignment (or clustering) ``a int [L, E]``."""
    out = np.zeros((problem.num_layers - 1, problem.num_gpus, problem.num_gpus))
    for layer, t in enumerate(problem.token_transitions):
        c = t.tocoo()
        np.add.at(out[layer], (a[layer][c.row], a[layer + 1][c.col]), c.data)
    return out


def bottleneck_objective(problem: TunerProblem, a: np.ndarray) -> float:
    """ILP2's objective in model units: ``sum_l max_{u != v} D[u, v] traffic_l(u, v)``."""
    return float((gpu_traffic(problem, a) * problem.pair_weight[None]).max(axis=(1, 2)).sum())


def boundary_bottleneck(problem: TunerProblem, a: np.ndarray, layer: int) -> float:
    """Boundary ``layer``'s term of :func:`bottleneck_objective` (model units)."""
    c = problem.token_transitions[layer].tocoo()
    t = np.zeros((problem.num_gpus, problem.num_gpus))
    np.add.at(t, (a[layer][c.row], a[layer + 1][c.col]), c.data)
    return float((t * problem.pair_weight).max())
