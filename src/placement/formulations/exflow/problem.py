"""ExFlow's data: transition counts, a GPU-pair crossing cost and its hierarchy, in model units.

Units
-----
The models work in *model units*: transition counts ``T[l][i, j]`` (all ``k x k`` pairs of a
token, weight 1 each, as :attr:`placement.stats.TraceStats.transitions` counts them) times a
pair cost ``C[g, h]`` taken from :func:`placement.costs.pair_costs`:

* ``cost="cross"``: :attr:`~placement.costs.PairCosts.cross_gpu` (1 between distinct GPUs);
* ``cost="hops"``: :attr:`~placement.costs.PairCosts.hops` (links on the route);
* ``cost="time"``: :attr:`~placement.costs.PairCosts.seconds_per_token` divided by
  :attr:`AffinityProblem.cost_unit`, a power of two near the largest entry, so the solver sees
  numbers near 1 (seconds per token are ~1e-7) and the division is exact.  Tokens are
  :func:`placement.costs.wire_for` the trace's model with the default dtype (bf16): the method
  has no dtype option.

:attr:`AffinityProblem.scale` divides model units into the reported units:

* ``cross``: the evaluator's ``boundary_cross_fraction`` (``scale = k^2 N (L - 1)``);
* ``hops``: hop-transmissions per token under coherent dispatch, the evaluator's
  ``hop_transmissions`` (``scale = k N``: boundary pairs weigh ``1/k``, plus the layer-0 dispatch
  from the token origins);
* ``time``: seconds per token, the same sends each costing its route's ``seconds_per_token``
  (``scale = k N / cost_unit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ...costs import pair_costs, wire_for
from ...errors import SolveFailedError, input_error
from .._common import power_of_two_near

__all__ = ["COSTS", "REPORTED_UNITS", "AffinityProblem", "build_problem", "check_balanced", "cost_levels",
           "nonzero_pairs", "objective"]

#: The crossing costs ExFlow accepts.
COSTS = ("cross", "hops", "time")
#: What the reported objective and bound of each cost measure.
REPORTED_UNITS = {"cross": "boundary_cross_fraction (share of boundary pairs that cross GPUs)",
                  "hops": "hop-transmissions per token (coherent dispatch)",
                  "time": "seconds per token (coherent dispatch, each send at its route's seconds_per_token)"}


@dataclass(frozen=True, eq=False)
class AffinityProblem:
    """Everything the ExFlow models read, in model units (module docstring).

    Attributes
    ----------
    num_layers, num_experts, num_gpus, top_k, num_tokens:
        ``L``, ``E``, ``G``, ``k``, ``N``.
    experts_per_gpu:
        ``m = E / G``, experts of one layer on every GPU.
    transitions:
        ``L - 1`` sparse ``float64 [E, E]`` transition counts ``T[l]``.
    pair_cost:
        ``float64 [G, G]`` ``C``: model units of one counted pair whose experts sit on GPUs
        ``g`` (layer ``l``) and ``h`` (layer ``l + 1``).
    first_layer_cost:
        ``float64 [E, G]`` ``F``: model units of expert ``e`` of layer 0 on GPU ``g`` (dispatch
        from the token origins), or ``None`` (``cost="cross"``).
    scale:
        Model units per reported unit: reported = model / ``scale``.
    cost_unit:
        The power of two the pair costs were divided by (1 for ``cross`` and ``hops``; seconds per
        token for ``time``).
    levels:
        ``[(weight, group_of_gpu int64 [G])]``, fine to coarse:
        ``C >= sum_k w_k [group_k(g) != group_k(h)]``.
    exact_levels:
        True when the levels reproduce ``C`` exactly (then the MILP objective is the true one).
    cost:
        ``"cross"``, ``"hops"`` or ``"time"``.
    """

    num_layers: int
    num_experts: int
    num_gpus: int
    top_k: int
    num_tokens: int
    experts_per_gpu: int
    transitions: tuple[sp.csr_matrix, ...]
    pair_cost: np.ndarray
    first_layer_cost: np.ndarray | None
    scale: float
    cost_unit: float
    levels: tuple[tuple[float, np.ndarray], ...]
    exact_levels: bool
    cost: str

    @property
    def interchangeable_gpus(self) -> bool:
        """True when no objective term tells GPUs apart (``C = c (1 - I)``, no layer-0 term)."""
        off = self.pair_cost[~np.eye(self.num_gpus, dtype=bool)]
        return self.first_layer_cost is None and (off.size == 0 or bool(np.all(off == off[0])))


def cost_levels(pair_cost: np.ndarray,
                groupings: list[np.ndarray]) -> tuple[tuple[tuple[float, np.ndarray], ...], bool]:
    """Largest hierarchical under-estimator of ``pair_cost``: weights per grouping (fine to coarse).

    ``C[g, h] >= sum_k w_k [grouping_k(g) != grouping_k(h)]`` with ``w_k >= 0``, each weight
    the smallest residual cost among the pairs its grouping separates; the second value says
    whether the hierarchy reproduces ``C`` exactly.

    Parameters
    ----------
    pair_cost:
        ``float64 [G, G]``.
    groupings:
        ``int [G]`` group of each GPU per level (GPU, server, rack).
    """
    residual = np.array(pair_cost, dtype=np.float64, copy=True)
    out = []
    for grp in groupings:
        differ = grp[:, None] != grp[None, :]
        if not differ.any():
            continue
        w = float(residual[differ].min())
        if w > 0:
            out.append((w, grp.astype(np.int64)))
            residual[differ] -= w
    exact = bool(np.allclose(residual, 0.0, atol=1e-12 * max(1.0, float(np.abs(pair_cost).max()))))
    return tuple(out), exact


def build_problem(stats: Any, topology: Any, cost: str = "cross", *, experts_per_gpu_check: bool = True,
                  transitions: tuple[sp.csr_matrix, ...] | None = None) -> AffinityProblem:
    """An :class:`AffinityProblem` from trace statistics and a topology.

    Parameters
    ----------
    stats:
        :class:`~placement.stats.TraceStats` of a token trace.
    topology:
        :class:`~placement.topology.Topology`.
    cost:
        One of :data:`COSTS`.
    experts_per_gpu_check:
        Refuse ``E`` not divisible by ``G``.
    transitions:
        Transition counts to use instead of ``stats.transitions`` (a token prefix).
    """
    trace = stats.trace
    L, E, G, k = trace.num_layers, trace.num_experts, topology.num_gpus, trace.top_k
    if cost not in COSTS:
        raise input_error(f"cost must be one of {list(COSTS)}, got {cost!r}", field="cost")
    if experts_per_gpu_check and E % G:
        raise input_error(f"the model has {E} experts per layer, which does not divide over {G} GPUs; "
                          "affinity methods place exactly E/G experts of each layer on every GPU", field="topology")
    if L < 2:
        raise input_error("affinity placement needs at least two MoE layers", field="trace")
    T = transitions if transitions is not None else stats.transitions
    T = tuple(sp.csr_matrix(t, dtype=np.float64) for t in T)
    N = trace.num_tokens
    costs = pair_costs(topology, wire_for(trace.model))
    first = None
    unit = 1.0
    if cost == "cross":
        C = np.array(costs.cross_gpu)
        scale = float(k * k * N * (L - 1))
    else:
        if cost == "hops":
            C = np.array(costs.hops)
        else:
            unit = power_of_two_near(float(costs.seconds_per_token.max()))
            C = costs.seconds_per_token / unit
        # boundary pair weight 1/k, layer-0 dispatch from the origins (the evaluator's coherent model)
        scale = float(k * N) / unit
        by_origin = stats.load_by_origin
        if by_origin is not None and by_origin.shape[0] == G:
            first = k * np.einsum("ue,ug->eg", by_origin[:, 0, :].astype(np.float64), C)
        else:
            first = k * np.outer(stats.load[0].astype(np.float64), C.mean(axis=0))
    groupings = [np.arange(G), np.asarray(topology.server_of), np.asarray(topology.rack_of)]
    levels, exact = cost_levels(C, groupings)
    return AffinityProblem(num_layers=L, num_experts=E, num_gpus=G, top_k=k, num_tokens=N, experts_per_gpu=E // G,
                           transitions=T, pair_cost=C, first_layer_cost=first, scale=scale, cost_unit=unit,
                           levels=levels, exact_levels=exact, cost=cost)


def objective(problem: AffinityProblem, assignment: np.ndarray) -> float:
    """Model-unit objective of ``assignment`` (``int [L, E]``, GPU of each expert)."""
    tot = 0.0
    if problem.first_layer_cost is not None:
        tot += float(problem.first_layer_cost[np.arange(problem.num_experts), assignment[0]].sum())
    for layer, t in enumerate(problem.transitions):
        c = t.tocoo()
        tot += float((c.data * problem.pair_cost[assignment[layer][c.row], assignment[layer + 1][c.col]]).sum())
    return tot


def check_balanced(problem: AffinityProblem, assignment: np.ndarray) -> None:
    """Raise :class:`SolveFailedError` unless every GPU holds ``m`` experts of every layer."""
    counts = np.stack([np.bincount(row, minlength=problem.num_gpus) for row in assignment])
    if not np.all(counts == problem.experts_per_gpu):
        raise SolveFailedError("internal error: a decoded assignment is not balanced")


def nonzero_pairs(problem: AffinityProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero transitions ``p = (l, i, j)`` as arrays: ``int64`` layer ``l``, expert ``i`` at
    ``l``, expert ``j`` at ``l + 1``, and ``float64`` count ``T[l][i, j]`` (each ``[P]``)."""
    ls, is_, js, ws = [], [], [], []
    for layer, t in enumerate(problem.transitions):
        c = t.tocoo()
        keep = c.data != 0
        ls.append(np.full(int(keep.sum()), layer, dtype=np.int64))
        is_.append(c.row[keep].astype(np.int64))
        js.append(c.col[keep].astype(np.int64))
        ws.append(c.data[keep].astype(np.float64))
    return np.concatenate(ls), np.concatenate(is_), np.concatenate(js), np.concatenate(ws)
