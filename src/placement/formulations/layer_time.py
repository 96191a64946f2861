"""``layer-time``: the fast path of the placement that minimises the MoE layer time, with replicas.

This module holds the *fast path* (numpy, for online rebalancing): the ``layer-time`` method's
``solver="fast"`` and the starts of its search (:mod:`placement.search.method`), and
:func:`rebalance`, the EPLB-compatible entry point.

The fast path (per layer, vectorised over layers)
-------------------------------------------------
Data
    ``w[l, e]`` tokens of expert ``e`` in layer ``l`` (``float64 [layers, experts]``); ``G`` GPUs in
    ``N`` nodes of ``G / N`` GPUs; ``P = num_replicas`` physical slots per layer, ``S = P / G`` per GPU.
Replica counts
    D'Hondt: start with one replica per expert and give each of the ``P - E`` extra replicas, one at
    a time, to the expert with the largest ``w / count`` (EPLB's rule).  Under the stacks' replica rules
    that split evenly (``vllm``, ``trtllm``; ``sglang-dynamic`` without a near replica) each replica
    then carries ``w / count`` tokens.
Packing
    When the model's expert groups divide over the nodes (DeepSeek-V3: 8 groups on 4 or 8 nodes), the
    groups are packed to nodes first (LPT on group load, as EPLB's hierarchical policy does, so a token's
    experts, chosen within a few groups, share nodes and DeepEP sends it over RDMA fewer times) and the
    replica counts are D'Hondt within each node's share of slots; otherwise replicas in decreasing load go
    to the node with the least load among those with a free slot (LPT).  Within each node, replicas in
    decreasing load go to the least-loaded GPU with a free slot, preferring GPUs that do not hold the same
    expert yet (a second copy on one GPU only when nothing else has room); a swap pass then exchanges
    pairs of slots (an empty slot is a zero-load item) between the
    busiest GPU of each layer and another GPU of its node while that lowers the layer's largest GPU load.
Lower bound
    For the chosen counts no placement has a GPU load below
    ``max(sum_e w[l, e] / G, max_e w[l, e] / count[l, e])`` (:func:`load_lower_bound`); the method
    reports its max load over that bound per layer.

:func:`rebalance` is the EPLB-compatible entry point (``weight [layers, experts]`` in, ``phy2log``,
``log2phy``, ``logcnt`` out, as DeepSeek's ``rebalance_experts`` returns them).
"""

from __future__ import annotations

import numpy as np

from ..errors import input_error
from ..placement import Placement

__all__ = ["rebalance", "replica_counts", "grouped_counts", "group_nodes", "pack", "load_lower_bound",
           "slot_loads"]

#: Swap rounds of the refinement per call at most (each round improves every layer that can improve).
MAX_SWAP_ROUNDS = 200


def replica_counts(weight: np.ndarray, num_replicas: int) -> np.ndarray:
    """``int64 [layers, experts]`` replicas per expert by D'Hondt on ``weight [layers, experts]``.

    >>> replica_counts(np.array([[6.0, 3.0, 1.0]]), 5).tolist()
    [[3, 1, 1]]
    """
    w = np.asarray(weight, dtype=np.float64)
    L, E = w.shape
    count = np.ones((L, E), dtype=np.int64)
    rows = np.arange(L)
    for _ in range(int(num_replicas) - E):
        e = np.argmax(w / count, axis=1)
        count[rows, e] += 1
    return count


def load_lower_bound(weight: np.ndarray, count: np.ndarray, num_gpus: int) -> np.ndarray:
    """``float64 [layers]``: no placement with these replica counts has a smaller largest GPU load."""
    w = np.asarray(weight, dtype=np.float64)
    return np.maximum(w.sum(axis=1) / num_gpus, (w / count).max(axis=1))


def _lpt(item_load: np.ndarray, item_expert: np.ndarray, bins: int, capacity: int, num_experts: int,
         allowed: np.ndarray | None = None, per_expert: int = 1) -> np.ndarray:
    """``int64 [L, n]`` bin of each item: decreasing load to the least-loaded bin with room, preferring bins
    that hold fewer than ``per_expert`` copies of the item's expert (``num_experts > 0``; a bin over that is
    taken only when no other bin has room); ``allowed [L, n, bins]`` restricts the bins."""
    L, n = item_load.shape
    order = np.argsort(-item_load, axis=1, kind="stable")
    load = np.zeros((L, bins))
    fill = np.zeros((L, bins), dtype=np.int64)
    copies = np.zeros((L, bins, max(num_experts, 1)), dtype=np.int64)
    out = np.empty((L, n), dtype=np.int64)
    rows = np.arange(L)
    for i in range(n):
        idx = order[:, i]
        e = item_expert[rows, idx]
        blocked = fill >= capacity
        if allowed is not None:
            blocked = blocked | ~allowed[rows, idx]
        if blocked.all(axis=1).any():
            raise input_error("no bin has room for a replica; the slots per GPU cannot hold the replicas",
                              field="redundant")
        cost = np.where(blocked, np.inf, load)
        if num_experts:
            crowded = copies[rows, :, e] >= per_expert
            cost = cost + np.where(crowded & ~blocked, np.finfo(np.float64).max / 4, 0.0)
        b = np.argmin(cost, axis=1)
        out[rows, idx] = b
        load[rows, b] += item_load[rows, idx]
        fill[rows, b] += 1
        if num_experts:
            copies[rows, b, e] += 1
    return out


def group_nodes(weight: np.ndarray, num_groups: int, num_nodes: int) -> np.ndarray:
    """``int64 [layers, groups]`` node of each expert group: groups of ``E / num_groups`` contiguous expert
    ids packed ``num_groups / num_nodes`` per node by LPT on their load (EPLB's hierarchical first step:
    experts a token picks together, within its few groups, stay on one node, so DeepEP sends it once)."""
    w = np.asarray(weight, dtype=np.float64)
    L, E = w.shape
    group_load = w.reshape(L, num_groups, E // num_groups).sum(axis=2)
    return _lpt(group_load, np.zeros((L, num_groups), dtype=np.int64), num_nodes, num_groups // num_nodes, 0)


def grouped_counts(weight: np.ndarray, node_of_expert: np.ndarray, num_nodes: int, num_replicas: int) -> np.ndarray:
    """``int64 [layers, experts]``: D'Hondt within each node, ``num_replicas / num_nodes`` slots per node
    (every node's experts get exactly its slots, so no replica leaves its group's node)."""
    w = np.asarray(weight, dtype=np.float64)
    L, E = w.shape
    per = E // num_nodes
    order = np.argsort(node_of_expert, axis=1, kind="stable")  # [L, E]: experts of node 0, then node 1, ...
    sub = np.take_along_axis(w, order, axis=1).reshape(L * num_nodes, per)
    counts = replica_counts(sub, num_replicas // num_nodes).reshape(L, E)
    out = np.empty((L, E), dtype=np.int64)
    np.put_along_axis(out, order, counts, axis=1)
    return out


def pack(weight: np.ndarray, count: np.ndarray, num_gpus: int, num_nodes: int, slots_per_gpu: int,
         swap_rounds: int = MAX_SWAP_ROUNDS, node_of_expert: np.ndarray | None = None) -> np.ndarray:
    """``int64 [layers, gpus, slots_per_gpu]`` expert per slot (``-1`` empty): the packing of the
    module docstring (nodes, then GPUs, then swaps against the busiest GPU).  ``node_of_expert
    int [layers, experts]`` fixes each expert's node (group-aware packing); else replicas are packed to
    nodes by LPT."""
    w = np.asarray(weight, dtype=np.float64)
    L, E = w.shape
    G, N, S = int(num_gpus), int(num_nodes), int(slots_per_gpu)
    per_node = G // N
    n = int(count[0].sum())
    rep_expert = np.stack([np.repeat(np.arange(E), count[lay]) for lay in range(L)])  # [L, n]
    rep_load = np.take_along_axis(w / count, rep_expert, axis=1)
    if node_of_expert is not None:
        node = np.take_along_axis(np.asarray(node_of_expert, dtype=np.int64), rep_expert, axis=1)
    elif N > 1:
        node = _lpt(rep_load, rep_expert, N, S * per_node, E, per_expert=per_node)
    else:
        node = np.zeros((L, n), dtype=np.int64)
    gpu_node = np.arange(G) // per_node
    allowed = gpu_node[None, None, :] == node[:, :, None]  # [L, n, G]
    gpu = _lpt(rep_load, rep_expert, G, S, E, allowed)
    # slots: each GPU's replicas in increasing expert id, then empty slots
    key = gpu * (E + 1) + rep_expert
    order = np.argsort(key, axis=1, kind="stable")
    sorted_gpu = np.take_along_axis(gpu, order, axis=1)
    sorted_exp = np.take_along_axis(rep_expert, order, axis=1)
    pos = _rank_in_group(sorted_gpu)
    slots = np.full((L, G, S), -1, dtype=np.int64)
    rows = np.repeat(np.arange(L), n)
    slots[rows, sorted_gpu.ravel(), pos.ravel()] = sorted_exp.ravel()
    return _swap(slots, w / count, swap_rounds, gpu_node)


def _rank_in_group(sorted_group: np.ndarray) -> np.ndarray:
    """``int64 [L, n]`` rank of each entry within its run of equal values (rows sorted)."""
    L, n = sorted_group.shape
    start = np.ones((L, n), dtype=bool)
    start[:, 1:] = sorted_group[:, 1:] != sorted_group[:, :-1]
    idx = np.broadcast_to(np.arange(n), (L, n))
    return idx - np.maximum.accumulate(np.where(start, idx, 0), axis=1)


def slot_loads(slots: np.ndarray, share: np.ndarray) -> np.ndarray:
    """``float64 [L, G, S]``: the tokens each slot of ``slots int [L, G, S]`` serves (0 when empty), each
    replica of expert ``e`` carrying ``share[l, e]``."""
    L = slots.shape[0]
    flat = np.take_along_axis(share, np.maximum(slots, 0).reshape(L, -1), axis=1).reshape(slots.shape)
    return np.where(slots >= 0, flat, 0.0)


def _swap(slots: np.ndarray, share: np.ndarray, rounds: int, gpu_node: np.ndarray) -> np.ndarray:
    """Exchange two slots between the busiest GPU of a layer and another GPU of the same node while
    that lowers the layer's largest GPU load (strictly, by more than 1e-12 relative)."""
    L, G, S = slots.shape
    rows = np.arange(L)
    E = share.shape[1]
    for _ in range(int(rounds)):
        load_of = slot_loads(slots, share)  # [L, G, S]
        gpu_load = load_of.sum(axis=2)
        top = np.argmax(gpu_load, axis=1)
        peak = gpu_load[rows, top]
        a = load_of[rows, top]  # [L, S] loads on the busiest GPU
        delta = a[:, None, :, None] - load_of[:, :, None, :]  # [L, G, S(a), S(b)] load moved off the top GPU
        new_top = peak[:, None, None, None] - delta
        new_other = gpu_load[:, :, None, None] + delta
        value = np.maximum(new_top, new_other)
        ea = slots[rows, top]  # [L, S]
        # the swap must not put an expert on a GPU that already holds it, and stays within the node
        holds = np.zeros((L, G, E + 1), dtype=bool)
        holds[np.repeat(rows, G * S), np.tile(np.repeat(np.arange(G), S), L), (slots + 1).ravel()] = True
        eb = slots  # [L, G, S]
        dup_b_on_top = np.take_along_axis(holds[rows, top][:, None, :], (eb + 1), axis=2)  # [L, G, S(b)]
        dup_a_on_other = np.take_along_axis(holds, (ea + 1)[:, None, :].repeat(G, 1), axis=2)  # [L, G, S(a)]
        same = ea[:, None, :, None] == eb[:, :, None, :]
        bad = (dup_b_on_top[:, :, None, :] & (eb[:, :, None, :] >= 0)) | \
              (dup_a_on_other[:, :, :, None] & (ea[:, None, :, None] >= 0)) | same
        bad |= (np.arange(G)[None, :] == top[:, None])[:, :, None, None]
        bad |= (gpu_node[None, :] != gpu_node[top][:, None])[:, :, None, None]
        value = np.where(bad, np.inf, value)
        flat = value.reshape(L, -1)
        best = np.argmin(flat, axis=1)
        improve = flat[rows, best] < peak * (1 - 1e-12)
        if not improve.any():
            break
        g, sa, sb = np.unravel_index(best, (G, S, S))
        lr = rows[improve]
        g, sa, sb, t = g[improve], sa[improve], sb[improve], top[improve]
        va, vb = slots[lr, t, sa].copy(), slots[lr, g, sb].copy()
        slots[lr, t, sa], slots[lr, g, sb] = vb, va
    return slots


def rebalance(weight: np.ndarray, num_replicas: int, num_groups: int, num_nodes: int,
              num_gpus: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EPLB-compatible entry point: ``(phy2log [L, P], log2phy [L, E, R], logcnt [L, E])``.

    ``num_groups`` is accepted for EPLB's signature; the packing balances nodes directly.  Physical
    slot ``p`` of GPU ``p // (P / G)``; ``log2phy`` lists an expert's slots increasing, ``-1`` padded.

    >>> phy2log, log2phy, logcnt = rebalance(np.array([[40.0, 10, 10, 20]]), 6, 1, 1, 2)
    >>> logcnt.tolist()
    [[3, 1, 1, 1]]
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 2:
        raise input_error(f"expected weight [layers, experts], got shape {w.shape}", field="weight")
    L, E = w.shape
    P, G, N = int(num_replicas), int(num_gpus), int(num_nodes)
    if P < E or P % G or N < 1 or G % N:
        raise input_error(f"num_replicas={P} must be >= experts={E} and divide over num_gpus={G}, which must divide "
                          f"over num_nodes={N}", field="num_replicas")
    slots, count = _place(w, P, G, N, int(num_groups))
    phy2log = slots.reshape(L, P)
    holder = Placement(slots, num_experts=E)
    log2phy = holder.replica_slots()
    return phy2log, log2phy, count


def _place(w: np.ndarray, P: int, G: int, N: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``(slots [L, G, P/G], count [L, E])``: group-aware when the groups divide over the nodes and each
    node's share of slots holds its experts, else node-blind."""
    L, E = w.shape
    if N > 1 and groups > 1 and E % groups == 0 and groups % N == 0 and P % N == 0 and P // N >= E // N:
        node_of_group = group_nodes(w, groups, N)  # [L, groups]
        node_of_expert = np.repeat(node_of_group, E // groups, axis=1)
        count = grouped_counts(w, node_of_expert, N, P)
        return pack(w, count, G, N, P // G, node_of_expert=node_of_expert), count
    count = replica_counts(w, P)
    return pack(w, count, G, N, P // G), count
