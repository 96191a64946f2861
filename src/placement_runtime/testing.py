"""Small workloads for the runtime's tests and benchmarks (numpy only, no torch).

* :func:`affinity_trace`: a token trace whose tokens prefer experts tied to their origin rank,
  so placement matters;
* :func:`hop_optimal_placement`: the exact optimum, per layer, of the evaluator's
  hop-transmissions for ``dispatch="origin"`` without replicas or de-duplication, under a
  balanced capacity of ``ceil(E / G)`` experts per GPU (a linear assignment problem);
* :func:`with_replicas`: a placement plus extra copies of chosen experts in one extra slot per GPU.
"""

from __future__ import annotations

import numpy as np

from placement.placement import Placement
from placement.topology import Topology
from placement.trace._trace import ModelSpec, Trace

from .plan import token_ranks

__all__ = ["affinity_trace", "hop_optimal_placement", "with_replicas"]


def affinity_trace(num_tokens: int, num_layers: int, num_experts: int, top_k: int, world: int, *,
                   seed: int = 0, affinity: float = 0.8, hidden_size: int | None = None) -> Trace:
    """Token ``t`` starts on rank ``t mod world``; with probability ``affinity`` each choice comes from
    its rank's preferred block of ``num_experts / world`` experts (a per-layer random permutation).

    >>> t = affinity_trace(8, 2, 8, 2, 4, seed=1)
    >>> t.experts.shape, t.num_ranks
    ((8, 2, 2), 4)
    """
    rng = np.random.default_rng(seed)
    E, k = num_experts, top_k
    origin = np.arange(num_tokens) % world
    block = max(E // world, 1)
    experts = np.empty((num_tokens, num_layers, k), dtype=np.int64)
    for layer in range(num_layers):
        perm = rng.permutation(E)
        for t in range(num_tokens):
            pref = perm[(origin[t] * block) % E:(origin[t] * block) % E + block]
            p = np.full(E, (1 - affinity) / E)
            p[pref] += affinity / pref.size
            experts[t, layer] = rng.choice(E, size=k, replace=False, p=p)
    spec = ModelSpec("affinity", num_layers=num_layers, num_experts=E, top_k=k, hidden_size=hidden_size)
    return Trace.from_tokens(spec, experts, origin=origin, num_ranks=world, metadata={"generator": "affinity",
                                                                                       "seed": seed})


def hop_optimal_placement(trace: Trace, topology: Topology, origins: str = "round_robin") -> Placement:
    """Per layer, the balanced one-replica placement minimising ``sum_t sum_k hops[origin_t, gpu(e_tk)]``.

    With ``dispatch="origin"`` and no de-duplication this is exactly the evaluator's
    hop-transmissions (combine doubles it when hops are symmetric), so the result is optimal for
    that metric.  Solved as a linear assignment of experts to ``ceil(E / G)`` slots per GPU.
    """
    from scipy.optimize import linear_sum_assignment

    experts = trace.require_tokens("hop_optimal_placement")
    G, E, L = topology.num_gpus, trace.num_experts, trace.num_layers
    src = token_ranks(trace, G, origins)
    cap = -(-E // G)
    assign = np.empty((L, E), dtype=np.int64)
    for layer in range(L):
        counts = np.zeros((G, E))
        np.add.at(counts, (np.repeat(src, trace.top_k), experts[:, layer].ravel().astype(np.int64)), 1)
        cost = counts.T @ topology.hops  # [E, G]
        rows, cols = linear_sum_assignment(np.repeat(cost, cap, axis=1))
        assign[layer, rows] = cols // cap
    return Placement.from_assignment(assign, G, metadata={"method": "hop_optimal"})


def with_replicas(placement: Placement, extra: dict[int, int]) -> Placement:
    """``placement`` plus one slot per GPU; ``extra[gpu] = expert`` puts a copy there (in every layer)."""
    L, G, S = placement.slots.shape
    slots = np.concatenate([placement.slots, np.full((L, G, 1), -1, dtype=np.int32)], axis=2)
    for gpu, expert in extra.items():
        slots[:, gpu, S] = expert
    meta = dict(placement.metadata)
    meta["replicas"] = {str(g): int(e) for g, e in extra.items()}
    return Placement(slots, placement.num_experts, metadata=meta)
