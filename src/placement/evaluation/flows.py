"""Token flows per layer: how many tokens each GPU sends to each GPU, and each GPU's load.

Turns a trace, the replica tables of :mod:`placement.evaluation.routing` and the rules of
:mod:`placement.evaluation` (origins, dispatch model, de-duplication) into :class:`Flows`;
:mod:`placement.evaluation.metrics` turns flows into bytes, times and loads over a topology.

* :func:`resolve_origins` resolves the origins mode (``"auto"`` -> ``"trace"`` or ``"uniform"``);
* :func:`trace_flows` picks the simulation for the trace kind and the mode;
* :func:`simulate_tokens` replays a token trace from given source GPUs;
* :func:`simulate_uniform_origin` and :func:`simulate_uniform_coherent` are the exact averages
  over uniform origins when replicas make the route depend on the sender;
* :func:`simulate_counts` is the origin model on a count trace (ties split fractionally).

Shapes: ``L`` layers, ``G`` GPUs, ``E`` experts per layer, ``R`` the most replicas of any
expert, ``N`` tokens, ``k`` experts per token.  Flows are in tokens (expected tokens, floats).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import input_error
from ..stats import TraceStats
from ..trace._trace import Trace
from .replica_rules import expected_flows, sending_gpus
from .routing import deal_ranks, first_of_each, route_independent, route_layer
from .transports import destination_probability

__all__ = ["Flows", "resolve_origins", "trace_flows", "simulate_tokens", "simulate_uniform_origin",
           "simulate_uniform_coherent", "simulate_counts", "rule_flows"]

#: expert selections replayed at once when averaging over origins (bounds temporary memory)
_VIRTUAL_SELECTIONS = 1 << 24


@dataclass
class Flows:
    """Token flows of a whole trace, per layer.

    Attributes
    ----------
    traffic:
        ``float64 [L, G, G]`` tokens sent from GPU ``u`` (row) to GPU ``v`` (column): the
        dispatch phase (origin model; combine is its transpose) or the boundary into the layer
        (coherent model; layer 0 is the dispatch from the origins).
    load:
        ``float64 [L, G]`` expert computations (token-expert pairs) per GPU.
    cross:
        ``float64 [L - 1]`` per layer boundary, the summed weight over tokens of (expert pair)
        whose two experts ran on different GPUs (pairs weighted ``1/k**2``); ``nan`` for count
        traces.
    """

    traffic: np.ndarray
    load: np.ndarray
    cross: np.ndarray


def resolve_origins(origins: str, trace: Trace, G: int) -> str:
    """The origins mode to use: ``origins``, or for ``"auto"`` ``"trace"`` when the trace has
    origins of exactly ``G`` ranks, else ``"uniform"``.

    Raises :class:`~placement.errors.PlacementInputError` when ``"trace"`` is asked of a trace
    without origins or with origins of another number of ranks.
    """
    has = trace.origin is not None or (trace.counts is not None and trace.counts.ndim == 3)
    if origins == "auto":
        return "trace" if has and trace.num_ranks == G else "uniform"
    if origins == "trace":
        if not has:
            raise input_error("the trace has no origin ranks; use origins='uniform' or 'round_robin'",
                              trace.source, "origin")
        if trace.num_ranks != G:
            raise input_error(f"the trace's origins are ranks of a {trace.num_ranks}-rank run but the topology has "
                              f"{G} GPUs; use origins='uniform' or a matching topology", trace.source, "origin")
    return origins


def trace_flows(trace: Trace, tied: np.ndarray, ntied: np.ndarray, G: int, *, dispatch: str, dedup: bool,
                mode: str) -> Flows:
    """The flows of ``trace`` under the rules.

    Parameters
    ----------
    trace:
        A token trace, or a count trace (origin model without de-duplication only).
    tied, ntied:
        ``int32 [L, G, E, R]`` and ``int32 [L, G, E]`` from
        :func:`~placement.evaluation.routing.replica_tables`.
    G:
        GPUs.
    dispatch, dedup:
        The dispatch model (``"origin"`` or ``"coherent"``) and de-duplication.
    mode:
        A resolved origins mode (:func:`resolve_origins`): ``"trace"``, ``"uniform"`` or
        ``"round_robin"``.
    """
    if trace.kind == "counts":
        if dispatch != "origin" or dedup:
            trace.require_tokens(f"the {dispatch} dispatch model" + (" with de-duplication" if dedup else ""))
        stats = TraceStats(trace)
        L, E = trace.num_layers, trace.num_experts
        if mode == "trace":
            by_origin = stats.load_by_origin.astype(np.float64)
        elif mode == "uniform":
            by_origin = np.broadcast_to(stats.load.astype(np.float64) / G, (G, L, E))
        else:
            raise input_error("round_robin origins need a token trace; use origins='uniform'", trace.source,
                              "origins")
        return simulate_counts(by_origin, tied, ntied, G)
    experts = trace.require_tokens("token flows")
    N = experts.shape[0]
    if mode == "trace":
        return simulate_tokens(experts, trace.origin, tied, ntied, G, dispatch, dedup, uniform=False)
    if mode == "round_robin":
        src = (np.arange(N) % G).astype(np.int64)
        return simulate_tokens(experts, src, tied, ntied, G, dispatch, dedup, uniform=False)
    if not (ntied > 1).any() and route_independent(tied):  # the sender does not change any destination
        return simulate_tokens(experts, np.zeros(N, dtype=np.int64), tied, ntied, G, dispatch, dedup, uniform=True)
    if dispatch == "origin":  # uniform origins, origin-dependent replicas: exact average
        return simulate_uniform_origin(experts, tied, ntied, G, dedup)
    return simulate_uniform_coherent(experts, tied, ntied, G, dedup)


def simulate_tokens(experts: np.ndarray, src: np.ndarray, tied: np.ndarray, ntied: np.ndarray, G: int,
                    dispatch: str, dedup: bool, uniform: bool, replay: np.ndarray | None = None) -> Flows:
    """Token-level flows for integer sources.

    Parameters
    ----------
    experts:
        ``int [N, L, k]`` expert ids.
    src:
        ``int [N]`` origin GPU of each token.
    tied, ntied:
        ``int32 [L, G, E, R]`` and ``int32 [L, G, E]`` replica tables.
    G:
        GPUs.
    dispatch, dedup:
        The dispatch model and de-duplication.
    uniform:
        Spread the origin-dependent flows evenly over origins instead of taking them from
        ``src`` (only valid when the route does not depend on the sender).
    replay:
        ``int [N]`` optional replay id of each token (ties are dealt per replay).
    """
    N, L, k = experts.shape
    traffic = np.zeros((L, G, G))
    load = np.zeros((L, G))
    cross = np.zeros(max(L - 1, 0))
    prev = None
    for layer in range(L):
        from_gpu = src if (layer == 0 or dispatch == "origin") else prev[:, 0]
        dest = route_layer(experts[:, layer, :], from_gpu, tied[layer], ntied[layer], replay)
        load[layer] = np.bincount(dest.ravel(), minlength=G)
        if dispatch == "origin" or layer == 0:
            w = first_of_each(dest).astype(np.float64) if dedup else np.ones(dest.shape)
            if uniform:
                per_dest = np.bincount(dest.ravel(), weights=w.ravel(), minlength=G)
                traffic[layer] = np.broadcast_to(per_dest / G, (G, G))
            else:
                codes = (src.astype(np.int64)[:, None] * G + dest).ravel()
                traffic[layer] = np.bincount(codes, weights=w.ravel(), minlength=G * G).reshape(G, G)
        else:
            pairs = prev[:, :, None] * G + dest[:, None, :]  # [N, k(prev), k(next)]
            if dedup:
                vs = first_of_each(prev)  # distinct sources
                vd = first_of_each(dest)  # distinct destinations
                held = (prev[:, :, None] == dest[:, None, :]).any(axis=1)  # [N, k] dest already there
                ns = vs.sum(axis=1)
                w = vs[:, :, None] & (vd & ~held)[:, None, :]
                w = w / ns[:, None, None]
            else:
                w = np.full(pairs.shape, 1.0 / k)
            traffic[layer] = np.bincount(pairs.ravel(), weights=w.ravel(), minlength=G * G).reshape(G, G)
        if layer > 0:
            cross[layer - 1] = (prev[:, :, None] != dest[:, None, :]).sum() / (k * k)
        prev = dest
    return Flows(traffic, load, cross)


def simulate_uniform_origin(experts: np.ndarray, tied: np.ndarray, ntied: np.ndarray, G: int,
                            dedup: bool) -> Flows:
    """Origin dispatch with uniform origins and origin-dependent replicas, averaged over origins.

    Replaying every token from origin ``u``, the group (``u``, expert) holds all selections of
    that expert in token order whatever ``u`` is, so each selection's round-robin rank is the
    same for every origin and is computed once per layer; the replicas themselves are a gather.
    Equal, by construction, to replaying the trace once per origin (a test checks it).

    Parameters
    ----------
    experts:
        ``int [N, L, k]`` expert ids.
    tied, ntied:
        ``int32 [L, G, E, R]`` and ``int32 [L, G, E]`` replica tables.
    G:
        GPUs.
    dedup:
        De-duplication.
    """
    N, L, k = experts.shape
    traffic = np.zeros((L, G, G))
    load = np.zeros((L, G))
    cross = np.zeros(max(L - 1, 0))
    per_block = max(1, _VIRTUAL_SELECTIONS // max(1, N * k))
    ranks = [deal_ranks(experts[:, layer, :].astype(np.int64).ravel()).reshape(N, k) for layer in range(L)]
    for u0 in range(0, G, per_block):
        us = np.arange(u0, min(G, u0 + per_block))
        U = us.size
        prev = None
        for layer in range(L):
            e = experts[:, layer, :].astype(np.int64)[None]  # [1, N, k]
            uu = us[:, None, None]
            c = ntied[layer][uu, e]  # [U, N, k]
            dest = tied[layer][uu, e, ranks[layer][None] % c].astype(np.int64)
            load[layer] += np.bincount(dest.ravel(), minlength=G)
            w = first_of_each(dest.reshape(U * N, k)).astype(np.float64) if dedup else np.ones(U * N * k)
            codes = (np.broadcast_to(uu, dest.shape) * G + dest).ravel()
            traffic[layer] += np.bincount(codes, weights=w.ravel(), minlength=G * G).reshape(G, G)
            if layer > 0:
                cross[layer - 1] += (prev[:, :, :, None] != dest[:, :, None, :]).sum() / (k * k)
            prev = dest
    return Flows(traffic / G, load / G, cross / G)


def simulate_uniform_coherent(experts: np.ndarray, tied: np.ndarray, ntied: np.ndarray, G: int,
                              dedup: bool) -> Flows:
    """Coherent dispatch with uniform origins and origin-dependent replicas, averaged over origins.

    Every token is replayed once from every origin GPU.  Replica ties are dealt per (origin,
    expert) group in token order, so replaying a block of origins as one batch of virtual
    tokens (origin-major) deals exactly as ``G`` separate replays would.

    Parameters
    ----------
    experts:
        ``int [N, L, k]`` expert ids.
    tied, ntied:
        ``int32 [L, G, E, R]`` and ``int32 [L, G, E]`` replica tables.
    G:
        GPUs.
    dedup:
        De-duplication.
    """
    N = experts.shape[0]
    per_block = max(1, _VIRTUAL_SELECTIONS // max(1, experts[0].size * N))
    blocks = []
    for u0 in range(0, G, per_block):
        us = np.arange(u0, min(G, u0 + per_block))
        virtual = np.tile(experts, (us.size, 1, 1))
        src = np.repeat(us, N).astype(np.int64)
        blocks.append(simulate_tokens(virtual, src, tied, ntied, G, "coherent", dedup, uniform=False, replay=src))
    acc = blocks[0]
    for f in blocks[1:]:
        acc.traffic += f.traffic
        acc.load += f.load
        acc.cross += f.cross
    return Flows(acc.traffic / G, acc.load / G, acc.cross / G)


def simulate_counts(counts_by_origin: np.ndarray, tied: np.ndarray, ntied: np.ndarray, G: int) -> Flows:
    """Origin-model flows (no de-duplication) of a count trace; ties split evenly.

    Parameters
    ----------
    counts_by_origin:
        ``float64 [G(origin), L, E]`` tokens per (origin GPU, layer, expert).
    tied, ntied:
        ``int32 [L, G, E, R]`` and ``int32 [L, G, E]`` replica tables.
    G:
        GPUs.
    """
    _, L, E = counts_by_origin.shape
    R = tied.shape[-1]
    c = np.transpose(counts_by_origin, (1, 0, 2))  # [L, G(u), E]
    share = c / ntied  # [L, G, E]
    lay = np.arange(L)[:, None, None]
    u = np.arange(G)[None, :, None]
    traffic = np.zeros(L * G * G)
    for r in range(R):
        gpu = tied[..., r]  # [L, G, E]
        ok = gpu >= 0
        codes = ((lay * G + u) * G + gpu)[ok]
        traffic += np.bincount(codes, weights=np.broadcast_to(share, gpu.shape)[ok], minlength=L * G * G)
    traffic = traffic.reshape(L, G, G)
    return Flows(traffic, traffic.sum(axis=1), np.full(max(L - 1, 0), np.nan))


def rule_flows(trace: Trace, ctx, rule, senders: str, dedup: bool) -> Flows:
    """Origin-model flows of the whole trace when a serving stack's replica rule picks the replicas.

    Parameters
    ----------
    trace:
        A token trace (every selection routed by ``rule.route``, one serving step) or a count trace
        (``rule.expectation``, no de-duplication).
    ctx:
        The :class:`~placement.evaluation.replica_rules.RoutingContext` of the placement.
    rule:
        A :class:`~placement.evaluation.replica_rules.ReplicaRule`.
    senders:
        ``"trace"``: the trace's origins (token traces) or per-origin counts (count traces);
        ``"round_robin"``: token ``t`` from GPU ``t mod G``; ``"uniform"`` (count traces only): an even
        share of every count from each GPU.
    dedup:
        One copy per (token, destination GPU).

    A rule that picks at random (or by fractions) gives expected flows: a token reaches GPU ``v``
    with probability ``1 - prod_j (1 - q[j, v])`` under de-duplication, and a layer boundary pair
    crosses GPUs with probability ``1 - sum_v q_prev[v] q_next[v]``.
    """
    L, E = trace.num_layers, trace.num_experts
    G = ctx.topology.num_gpus
    Sg = ctx.slots_per_gpu
    traffic = np.zeros((L, G, G))
    load = np.zeros((L, G))
    if trace.kind == "counts":
        if dedup:
            trace.require_tokens("de-duplication")
        stats = TraceStats(trace)
        by_origin = (stats.load_by_origin.astype(np.float64) if senders == "trace" else
                     np.broadcast_to(stats.load.astype(np.float64) / G, (G, L, E)))
        for layer in range(L):
            _, traffic[layer] = expected_flows(ctx, rule, layer, by_origin[:, layer, :])
            load[layer] = traffic[layer].sum(axis=0)
        return Flows(traffic, load, np.full(max(L - 1, 0), np.nan))
    experts = trace.require_tokens("token flows")
    N, _, k = experts.shape
    src = sending_gpus(trace, G, senders)
    step = np.zeros(N, dtype=np.int64)
    cross = np.zeros(max(L - 1, 0))
    prev = None
    for layer in range(L):
        slots, weights = rule.route(ctx, layer, experts[:, layer, :], src, step)
        q = destination_probability(slots, weights, Sg, G)  # [N, k, G]
        load[layer] = q.sum(axis=(0, 1))
        per_gpu = 1.0 - np.prod(1.0 - np.clip(q, 0.0, 1.0), axis=1) if dedup else q.sum(axis=1)  # [N, G]
        codes = (src.astype(np.int64)[:, None] * G + np.arange(G)[None, :]).ravel()
        traffic[layer] = np.bincount(codes, weights=per_gpu.ravel(), minlength=G * G).reshape(G, G)
        if prev is not None:
            same = np.einsum("nav,nbv->nab", prev, q)  # [N, k, k] probability a pair shares a GPU
            cross[layer - 1] = (k * k * N - same.sum()) / (k * k)
        prev = q
    return Flows(traffic, load, cross)
