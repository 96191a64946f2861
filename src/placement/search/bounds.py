"""A proven lower bound of the serving-step time of *every* placement with a given slot budget.

Valid for any replica rule (any routing over replicas, ``split`` included) and any placement with at
most ``S`` slots per GPU, under transports that send one copy per (token, expert) (``nccl`` without
de-duplication, ``deepep-ll``); ``None`` under de-duplicating transports, where a token sent once may
serve several experts.  Per serving step and layer (the evaluator's steps, :mod:`placement.evaluation.serving`):

Dispatch and combine (a cut, for servers and for racks: the larger)
    The GPUs of server ``n`` *own* the nodes every route through which starts or ends in ``n`` (their
    NICs, an NVSwitch); ``C_n`` are the arcs leaving that set.  Every route from a GPU of ``n`` to
    another server crosses ``C_n``, and some arc carries at least the cut's average, so dispatch takes at
    least ``B_n * bytes / sum_{a in C_n} bw[a]`` seconds, where ``B_n`` is the selections sent from ``n``
    that no replica inside ``n`` can serve: ``n`` holds at most ``S G_n`` experts, so at most the ``S G_n``
    largest of its per-expert selection counts stay inside.  Combine sends the same selections back over
    the arcs entering the set, with its own bytes per token.
Compute
    Every expert that receives a token in the step runs on at least one slot, each costing at least one
    weight read, so some GPU runs at least ``ceil(active experts / G)`` slots; it also runs its shared
    experts on the tokens it holds: at least ``ceil(active / G) * expert_time(0+) + min_g shared[g]``.
Layer
    ``dispatch + compute + combine`` of the bounds (with ``overlap``, ``max(dispatch + combine, compute)``),
    averaged over steps as the evaluator does; the bound of a placement set is the sum over layers.

Latency terms of the evaluator are left out (they only add).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..evaluation.replica_rules import sending_gpus
from ..evaluation.serving import ServingSetup

if TYPE_CHECKING:  # pragma: no cover
    from ..topology import Topology
    from ..trace import Trace

__all__ = ["step_time_bound", "server_cuts", "groupings", "compute_floor"]


def server_cuts(topology: Topology, group_of: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(out_bw, in_bw)`` ``float64 [groups]``: total bandwidth (bytes/s) of the arcs leaving and entering
    the nodes each group of GPUs owns (module docstring; ``group_of int [G]``, default the servers, e.g.
    ``topology.rack_of`` for racks); ``inf`` for a group no route leaves."""
    G = topology.num_gpus
    group = topology.server_of if group_of is None else np.asarray(group_of)
    N = int(group.max()) + 1
    route = topology.route_matrix.tocoo()
    pair, arc = route.row, route.col
    su, sv = group[pair // G], group[pair % G]
    n_nodes = len(topology.nodes)
    src, dst = topology.arc_src.astype(np.int64), topology.arc_dst.astype(np.int64)
    # touched[node, server]: a route through the node starts or ends in that server; foreign: one that does not
    owned = np.ones((n_nodes, N), dtype=bool)
    for ends in (src[arc], dst[arc]):
        for s in range(N):
            foreign = (su != s) & (sv != s)
            owned[ends[foreign], s] = False
    touched = np.zeros((n_nodes, N), dtype=bool)
    for ends in (src[arc], dst[arc]):
        touched[ends, su] = True
        touched[ends, sv] = True
    owned &= touched
    owned[topology.gpu_node, :] = False
    owned[topology.gpu_node, group] = True
    bw = topology.arc_bandwidth
    out_bw = np.array([bw[owned[src, s] & ~owned[dst, s]].sum() for s in range(N)])
    in_bw = np.array([bw[~owned[src, s] & owned[dst, s]].sum() for s in range(N)])
    return np.where(out_bw > 0, out_bw, np.inf), np.where(in_bw > 0, in_bw, np.inf)


def _step_counts(trace: Trace, topology: Topology, setup: ServingSetup,
                 group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(per_group float64 [steps, L, N, E], held float64 [steps, G])``: selections each group of GPUs
    (``group int [G]``) sends of each expert, and the tokens each GPU holds, per serving step as the
    evaluator cuts them."""
    G, N = topology.num_gpus, int(group.max()) + 1
    L, E = trace.num_layers, trace.num_experts
    per_step = setup.tokens_per_step
    if trace.kind == "tokens":
        ex = trace.experts
        n = ex.shape[0]
        has = trace.origin is not None and trace.num_ranks == G
        src = sending_gpus(trace, G, "trace" if has else "round_robin")
        if n >= per_step:
            steps, scale = n // per_step, 1.0
            keep = steps * per_step
            step = np.arange(keep) // per_step
        else:
            steps, scale, keep = 1, per_step / max(n, 1), n
            step = np.zeros(n, dtype=np.int64)
        ex, src = ex[:keep].astype(np.int64), src[:keep]
        server = group[src]
        idx = ((step[:, None, None] * L + np.arange(L)[None, :, None]) * N + server[:, None, None]) * E + ex
        counts = np.bincount(idx.ravel(), minlength=steps * L * N * E).reshape(steps, L, N, E) * scale
        held = np.bincount(step * G + src, minlength=steps * G).reshape(steps, G) * scale
        return counts, held
    counts = trace.counts.astype(np.float64)
    if counts.ndim == 3 and trace.num_ranks == G:
        per_gpu = counts  # [G, L, E]
    else:
        per_gpu = np.broadcast_to(trace.layer_counts()[None] / G, (G, L, E))
    per_layer = per_gpu.sum(axis=(0, 2)).max() / trace.top_k
    scale = per_step / max(per_layer, 1e-300)
    by_server = np.zeros((N, L, E))
    np.add.at(by_server, group, per_gpu * scale)
    return np.transpose(by_server, (1, 0, 2))[None], np.full((1, G), per_step / G)


def groupings(topology: Topology) -> list[np.ndarray]:
    """``[int [G], ...]``: the groups of GPUs whose cuts bound a step: the servers, and the racks (leaves) when
    they hold several servers."""
    out = [np.asarray(topology.server_of, dtype=np.int64)]
    if not np.array_equal(topology.rack_of, topology.server_of):
        out.append(np.asarray(topology.rack_of, dtype=np.int64))
    return out


def compute_floor(setup: ServingSetup, counts: np.ndarray, held: np.ndarray, num_gpus: int) -> np.ndarray:
    """``float64 [steps, L]``: the compute bound of the module docstring from the per-group counts
    ``[steps, L, N, E]`` and the tokens each GPU holds ``[steps, G]`` (:func:`_step_counts`)."""
    active = (counts.sum(axis=2) > 0).sum(axis=2)  # [steps, L] experts that receive a token
    read = float(setup.expert_time(np.array([1e-9]))[0])  # one slot that receives tokens, at the least
    shared = setup.num_shared_experts * setup.expert_time(held)  # [steps, G]
    return np.ceil(active / num_gpus) * read + shared.min(axis=1)[:, None]


def step_time_bound(trace: Trace, topology: Topology, setup: ServingSetup, slots_per_gpu: int) -> np.ndarray | None:
    """``float64 [L]``: per layer, no placement of at most ``slots_per_gpu`` slots per GPU is faster (module
    docstring); ``None`` under a de-duplicating transport."""
    if setup.dedup or setup.transport == "deepep":
        return None
    G = topology.num_gpus
    dispatch = combine = None
    held = None
    for group in groupings(topology):  # servers, and racks of several servers: the tighter cut per step
        counts, held = _step_counts(trace, topology, setup, group)  # [steps, L, N, E], [steps, G]
        size = np.bincount(group, minlength=counts.shape[2])  # GPUs per group
        keep = slots_per_gpu * size  # experts a group can hold
        ordered = -np.sort(-counts, axis=3)  # decreasing per-expert counts
        cum = np.concatenate([np.zeros(ordered.shape[:3] + (1,)), np.cumsum(ordered, axis=3)], axis=3)
        inside = np.take_along_axis(cum, np.minimum(keep, counts.shape[3])[None, None, :, None], axis=3)[..., 0]
        leaving = np.maximum(counts.sum(axis=3) - inside, 0.0)  # [steps, L, N]
        out_bw, in_bw = server_cuts(topology, group)
        d = (leaving * setup.dispatch_wire.bytes_per_token / out_bw).max(axis=2)  # [steps, L]
        c = (leaving * setup.combine_wire.bytes_per_token / in_bw).max(axis=2)
        dispatch = d if dispatch is None else np.maximum(dispatch, d)
        combine = c if combine is None else np.maximum(combine, c)
    compute = compute_floor(setup, counts, held, G)
    layer = np.maximum(dispatch + combine, compute) if setup.overlap else dispatch + compute + combine
    return layer.mean(axis=0)
