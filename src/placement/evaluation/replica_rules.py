"""Which replica serves a token: the rules of real serving stacks, one registered function each.

Replicas of an expert are listed in increasing physical slot id ``p = gpu * slots_per_gpu + j``
(:meth:`~placement.placement.Placement.replica_slots`), the order vLLM (``compute_logical_maps``),
SGLang (``init_by_mapping``) and TensorRT-LLM (``globalSlotIds``) list them for a placement loaded
from a file.  Every rule sees one layer of one serving step: the tokens each GPU sends, in token
order, with their top-k experts.  A token's *local index* ``t`` is its position among the tokens its
GPU sends in that step; ``j`` is the top-k slot.

``nearest``
    The replica nearest to the sender (hops, then seconds per byte); replicas tied for nearest
    share the selections of each (sender, expert) round-robin in token order (:mod:`.routing`).
``vllm``
    vLLM with EPLB: replica ``(t * k + j) mod replicas``, no locality preference
    (vllm ``model_executor/layers/fused_moe/router/base_router.py``, the EPLB map kernel, which
    indexes the flattened ``topk_ids`` of the rank's batch).
``trtllm``
    TensorRT-LLM's MoE load balancer: the rank's flattened selections are cut into tiles of 1024;
    within tile ``b`` the ``n``-th selection of expert ``e`` takes replica
    ``(n + b + rank) mod replicas`` (rank offset on, as with attention data parallelism)
    (TensorRT-LLM ``cpp/tensorrt_llm/kernels/moeLoadBalance/moeLoadBalanceKernels.cu``,
    ``moeComputeRouteKernel``).
``sglang-static``
    SGLang's default static dispatch map: each rank sends every token of expert ``e`` to one fixed
    replica: the first on its own GPU; else the first on its own node, when that narrows the
    choice; ranks with neither are spread over all replicas as evenly as possible by a seeded
    shuffle (Python's ``random.Random(42)``, consumed layer by layer, expert by expert) (sglang
    ``python/sglang/srt/eplb/expert_location.py``, ``compute_logical_to_rank_dispatch_physical_map``).
``sglang-dynamic``
    SGLang's ``dynamic`` dispatch: the same nearest replica when the rank has one on its GPU or
    (narrowing) node, otherwise a uniformly random replica per selection (sglang
    ``srt/eplb/expert_location_dispatch.py``); the evaluator takes the expectation.
``split``
    The placement's own routing fractions (:attr:`~placement.placement.Placement.routing`) per
    (sender GPU, expert) over replicas (SGLang's LP dispatch, our optimiser); expectation.

Each rule returns, for every selection, candidate physical slots and the probability of each
(``int64 [n, k, C]`` and ``float64 [n, k, C]``); deterministic rules have ``C = 1``.  The evaluator and
:mod:`placement_runtime` (``plan.Router``) both call these functions, so the runtime replays exactly the
replica choice the evaluator predicts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ..errors import input_error
from .routing import deal_ranks, replica_tables, route_layer

if TYPE_CHECKING:  # pragma: no cover
    from ..placement import Placement
    from ..topology import Topology

__all__ = ["REPLICA_RULES", "ReplicaRule", "RoutingContext", "expected_flows", "get_rule", "local_index",
           "sending_gpus"]

#: TensorRT-LLM's routing tile: 256 threads x 4 selections per thread block.
TRTLLM_TILE = 1024
#: The seed of SGLang's static dispatch map.
SGLANG_SEED = 42


@dataclass(frozen=True, eq=False)
class RoutingContext:
    """What every rule may read of a placement on a topology (computed once per evaluation).

    Attributes
    ----------
    placement, topology:
        The placement and the cluster.
    replica_slots:
        ``int64 [L, E, R]`` physical slots of each expert's replicas, increasing, ``-1`` padded.
    num_replicas:
        ``int64 [L, E]``.
    """

    placement: Placement
    topology: Topology
    replica_slots: np.ndarray
    num_replicas: np.ndarray

    @classmethod
    def build(cls, placement: Placement, topology: Topology) -> RoutingContext:
        if placement.num_gpus != topology.num_gpus:
            raise input_error(f"placement is for {placement.num_gpus} GPUs but the topology has "
                              f"{topology.num_gpus}", placement.source, "num_gpus")
        rs = placement.replica_slots()
        return cls(placement, topology, rs, (rs >= 0).sum(axis=2).astype(np.int64))

    @property
    def slots_per_gpu(self) -> int:
        return self.placement.slots_per_gpu

    @cached_property
    def nearest_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`~placement.evaluation.routing.replica_tables` of the placement (computed once)."""
        return replica_tables(self.placement, self.topology)

    @cached_property
    def sglang_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """SGLang's ``(near, static)`` maps, ``int64 [L, G, E]`` each (computed once; :func:`_sglang_choice`)."""
        return _sglang_choice(self)

    def gpu_of_slot(self, slot: np.ndarray) -> np.ndarray:
        return np.asarray(slot) // self.slots_per_gpu


def sending_gpus(trace, num_gpus: int, senders: str) -> np.ndarray:
    """``int64 [tokens]``: the GPU each token of a token trace is sent from: its origin rank for
    ``senders="trace"``, else token ``t`` from GPU ``t mod num_gpus`` (``"round_robin"``)."""
    if senders == "trace":
        return trace.origin.astype(np.int64)
    return (np.arange(trace.num_tokens) % num_gpus).astype(np.int64)


def local_index(src: np.ndarray, step: np.ndarray, num_gpus: int) -> np.ndarray:
    """``int64 [n]``: each token's position among the tokens its GPU sends in its step (token order).

    >>> local_index(np.array([0, 1, 0, 0, 1]), np.zeros(5, dtype=int), 2).tolist()
    [0, 0, 1, 2, 1]
    """
    return deal_ranks(step.astype(np.int64) * num_gpus + src.astype(np.int64))


def _one(slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return slots[..., None].astype(np.int64), np.ones(slots.shape + (1,))


def _by_replica_index(ctx: RoutingContext, layer: int, experts: np.ndarray, r: np.ndarray):
    e = experts.astype(np.int64)
    return _one(ctx.replica_slots[layer][e, r % ctx.num_replicas[layer][e]])


# ------------------------------------------------------------------------------------ the rules
def _nearest(ctx: RoutingContext, layer: int, experts: np.ndarray, src: np.ndarray, step: np.ndarray):
    tied, ntied = ctx.nearest_tables
    replay = step.astype(np.int64) if step.size and step.max() > 0 else None
    gpu = route_layer(experts, src, tied[layer], ntied[layer], replay)  # [n, k]
    # co-located replicas on the chosen GPU share its selections evenly
    S = ctx.slots_per_gpu
    on_gpu = ctx.placement.slots[layer]  # [G, S]
    hit = on_gpu[gpu] == experts[..., None]  # [n, k, S]
    count = hit.sum(axis=2, keepdims=True)
    slots = gpu[..., None] * S + np.arange(S)[None, None, :]
    return np.where(hit, slots, -1), np.where(hit, 1.0 / np.maximum(count, 1), 0.0)


def _vllm(ctx: RoutingContext, layer: int, experts: np.ndarray, src: np.ndarray, step: np.ndarray):
    k = experts.shape[1]
    t = local_index(src, step, ctx.topology.num_gpus)
    return _by_replica_index(ctx, layer, experts, t[:, None] * k + np.arange(k)[None, :])


def _trtllm(ctx: RoutingContext, layer: int, experts: np.ndarray, src: np.ndarray, step: np.ndarray):
    n, k = experts.shape
    G = ctx.topology.num_gpus
    E = ctx.placement.num_experts
    flat = local_index(src, step, G)[:, None] * k + np.arange(k)[None, :]  # position in the rank's batch
    tile = flat // TRTLLM_TILE
    batch = (step.astype(np.int64) * G + src.astype(np.int64))[:, None]
    tiles = int(tile.max()) + 1 if tile.size else 1
    # selections in the order the kernel sees them: by rank batch, then flat position
    key = ((batch * tiles + tile) * E + experts.astype(np.int64)).ravel()
    order = np.lexsort((flat.ravel(), batch.repeat(k, axis=1).ravel()))
    arrivals = np.empty(n * k, dtype=np.int64)
    arrivals[order] = deal_ranks(key[order])
    r = arrivals.reshape(n, k) + tile + src.astype(np.int64)[:, None]
    return _by_replica_index(ctx, layer, experts, r)


def _sglang_choice(ctx: RoutingContext) -> tuple[np.ndarray, np.ndarray]:
    """SGLang's per-rank candidate narrowing, for every layer.

    Returns ``near int64 [L, G, E]`` (the chosen slot for ranks with a same-GPU or narrowing
    same-node replica, else ``-1``) and ``static int64 [L, G, E]`` (the static map: ``near`` where
    set, else the seeded even spread).
    """
    rs, nrep = ctx.replica_slots, ctx.num_replicas
    L, E, R = rs.shape
    G = ctx.topology.num_gpus
    S = ctx.slots_per_gpu
    server = np.asarray(ctx.topology.server_of, dtype=np.int64)
    valid = rs >= 0  # [L, E, R]
    gpu = np.where(valid, rs // S, -1)
    node = np.where(valid, server[np.maximum(gpu, 0)], -1)
    ranks = np.arange(G)
    same_gpu = valid[:, None] & (gpu[:, None] == ranks[None, :, None, None])  # [L, G, E, R]
    same_node = valid[:, None] & (node[:, None] == server[None, :, None, None])
    n_node = same_node.sum(axis=3)
    narrows = (n_node > 0) & (n_node < nrep[:, None, :])
    by_rank = np.broadcast_to(rs[:, None], same_gpu.shape)

    def first(mask: np.ndarray) -> np.ndarray:  # the first replica (list order) where ``mask`` holds
        return np.take_along_axis(by_rank, np.argmax(mask, axis=3)[..., None], axis=3)[..., 0]

    single = np.broadcast_to((nrep == 1)[:, None, :], (L, G, E))
    near = np.where(single, np.broadcast_to(rs[:, None, :, 0], (L, G, E)),
                    np.where(same_gpu.any(axis=3), first(same_gpu), np.where(narrows, first(same_node), -1)))
    static = near.copy()
    rng = random.Random(SGLANG_SEED)
    for layer in range(L):
        for e in np.flatnonzero((near[layer] < 0).any(axis=0)):
            remaining = np.flatnonzero(near[layer, :, e] < 0)
            cand = [int(p) for p in rs[layer, e, :nrep[layer, e]]]
            q, m = divmod(len(remaining), len(cand))
            ans = cand * q + rng.sample(cand, m)
            rng.shuffle(ans)
            static[layer, remaining, e] = ans
    return near, static


def _sglang_static(ctx: RoutingContext, layer: int, experts: np.ndarray, src: np.ndarray, step: np.ndarray):
    _, static = ctx.sglang_tables
    return _one(static[layer][src.astype(np.int64)[:, None], experts.astype(np.int64)])


def _sglang_dynamic(ctx: RoutingContext, layer: int, experts: np.ndarray, src: np.ndarray, step: np.ndarray):
    near, _ = ctx.sglang_tables
    e = experts.astype(np.int64)
    chosen = near[layer][src.astype(np.int64)[:, None], e]  # [n, k]
    rs = ctx.replica_slots[layer][e]  # [n, k, R]
    nrep = ctx.num_replicas[layer][e][..., None]
    uniform = np.where(rs >= 0, 1.0 / nrep, 0.0)
    fixed = chosen >= 0
    slots = np.where(fixed[..., None], np.where(np.arange(rs.shape[2]) == 0, chosen[..., None], -1), rs)
    weights = np.where(fixed[..., None], (np.arange(rs.shape[2]) == 0).astype(np.float64), uniform)
    return slots, weights


def _split(ctx: RoutingContext, layer: int, experts: np.ndarray, src: np.ndarray, step: np.ndarray):
    table = ctx.placement.routing
    if table is None:
        raise input_error("replica rule 'split' needs routing fractions in the placement; solve with a method that "
                          "writes them or choose another replica rule", ctx.placement.source, "routing")
    e = experts.astype(np.int64)
    weights = table[layer][src.astype(np.int64)[:, None], e]  # [n, k, R]
    return ctx.replica_slots[layer][e], weights


# ------------------------------------------------------------------------------------ expectations
def _uniform_expectation(ctx: RoutingContext, layer: int) -> np.ndarray:
    rs, nrep = ctx.replica_slots[layer], ctx.num_replicas[layer]
    share = np.where(rs >= 0, 1.0 / nrep[:, None], 0.0)  # [E, R]
    return np.broadcast_to(share[None], (ctx.topology.num_gpus,) + share.shape).copy()


def _one_hot(ctx: RoutingContext, layer: int, chosen: np.ndarray) -> np.ndarray:
    rs = ctx.replica_slots[layer]  # [E, R]
    return (rs[None] == chosen[..., None]).astype(np.float64)  # [G, E, R]


def _nearest_expectation(ctx: RoutingContext, layer: int) -> np.ndarray:
    tied, ntied = ctx.nearest_tables
    rs = ctx.replica_slots[layer]  # [E, R]
    gpu = np.where(rs >= 0, rs // ctx.slots_per_gpu, -1)  # [E, R]
    t = tied[layer]  # [G, E, Rg] tied GPUs from each sender
    on_tied = (gpu[None, :, :, None] == t[:, :, None, :]).any(axis=3) & (rs >= 0)[None]  # [G, E, R]
    # each tied GPU gets 1/ntied, shared evenly by its co-located replicas
    colocated = (gpu[:, :, None] == gpu[:, None, :]).sum(axis=2)  # [E, R]
    return np.where(on_tied, 1.0 / (ntied[layer][..., None] * colocated[None]), 0.0)


def _sglang_static_expectation(ctx: RoutingContext, layer: int) -> np.ndarray:
    return _one_hot(ctx, layer, ctx.sglang_tables[1][layer])


def _sglang_dynamic_expectation(ctx: RoutingContext, layer: int) -> np.ndarray:
    near = ctx.sglang_tables[0][layer]  # [G, E]
    return np.where((near >= 0)[..., None], _one_hot(ctx, layer, near), _uniform_expectation(ctx, layer))


def _split_expectation(ctx: RoutingContext, layer: int) -> np.ndarray:
    if ctx.placement.routing is None:
        _split(ctx, layer, np.zeros((0, 1), dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    return np.array(ctx.placement.routing[layer], dtype=np.float64)


@dataclass(frozen=True)
class ReplicaRule:
    """A replica rule: ``route(ctx, layer, experts int [n, k], src int [n], step int [n])`` returns
    ``(slots int64 [n, k, C], probability float64 [n, k, C])`` (``-1`` slots have probability 0).

    ``expectation(ctx, layer)`` is ``float64 [gpus, experts, R]``: the share of each replica (in
    :attr:`RoutingContext.replica_slots` order) among many selections of an expert sent from a
    GPU, what count traces are evaluated with.  ``source`` names the upstream file the rule follows.
    """

    name: str
    summary: str
    source: str
    route: Callable[..., tuple[np.ndarray, np.ndarray]]
    expectation: Callable[[RoutingContext, int], np.ndarray]


#: Replica rules by name (the evaluator's ``replica=`` option).
REPLICA_RULES: dict[str, ReplicaRule] = {r.name: r for r in (
    ReplicaRule("nearest", "nearest replica (hops, then s/byte); ties dealt round-robin per (sender, expert)",
                "placement (this project's rule, shared with placement_runtime)", _nearest, _nearest_expectation),
    ReplicaRule("vllm", "replica (t * k + j) mod replicas over the rank's batch; no locality",
                "vllm model_executor/layers/fused_moe/router/base_router.py", _vllm, _uniform_expectation),
    ReplicaRule("trtllm", "per-expert round robin in arrival order within 1024-selection tiles, rank offset",
                "TensorRT-LLM cpp/tensorrt_llm/kernels/moeLoadBalance/moeLoadBalanceKernels.cu", _trtllm,
                _uniform_expectation),
    ReplicaRule("sglang-static", "fixed replica per (rank, expert): same GPU, else same node, else seeded spread",
                "sglang python/sglang/srt/eplb/expert_location.py", _sglang_static, _sglang_static_expectation),
    ReplicaRule("sglang-dynamic", "same-GPU/node replica if any, else uniform random over replicas",
                "sglang python/sglang/srt/eplb/expert_location_dispatch.py", _sglang_dynamic,
                _sglang_dynamic_expectation),
    ReplicaRule("split", "the placement's routing fractions per (sender GPU, expert)",
                "placement (Placement.routing)", _split, _split_expectation),
)}


def get_rule(name: str) -> ReplicaRule:
    """The replica rule called ``name`` (the error lists the rules)."""
    try:
        return REPLICA_RULES[name]
    except KeyError:
        raise input_error(f"unknown replica rule {name!r}; choose one of {list(REPLICA_RULES)}",
                          field="replica") from None


def expected_flows(ctx: RoutingContext, rule: ReplicaRule, layer: int,
                   tokens_by_origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected flows of one layer of a count trace under ``rule``.

    Parameters
    ----------
    tokens_by_origin:
        ``float64 [G, E]`` selections of each expert sent from each GPU.

    Returns
    -------
    slot_tokens:
        ``float64 [G * slots_per_gpu]`` selections each physical slot serves.
    traffic:
        ``float64 [G, G]`` selections sent from GPU ``u`` (row) to GPU ``v`` (column), the diagonal local.
    """
    G = ctx.topology.num_gpus
    Sg = ctx.slots_per_gpu
    rs = ctx.replica_slots[layer]  # [E, R]
    flow = tokens_by_origin[:, :, None] * rule.expectation(ctx, layer)  # [G, E, R]
    ok = np.broadcast_to(rs >= 0, flow.shape)
    slot = np.broadcast_to(np.maximum(rs, 0), flow.shape)
    slot_tokens = np.bincount(slot[ok], weights=flow[ok], minlength=G * Sg)
    sender = np.broadcast_to(np.arange(G)[:, None, None], flow.shape)
    traffic = np.bincount((sender * G + slot // Sg)[ok], weights=flow[ok], minlength=G * G).reshape(G, G)
    return slot_tokens, traffic
