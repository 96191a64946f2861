"""EPLB: DeepSeek's expert-parallelism load balancer, in numpy.

This is our own implementation of the algorithm published in DeepSeek's EPLB repository
(``eplb.py`` and its README, https://github.com/deepseek-ai/EPLB), the balancer that vLLM and
SGLang run in production.  It takes per-expert loads and returns where every physical expert
slot goes, in EPLB's own output convention.

Algorithm
---------
Data: ``weight [layers, num_logical_experts]`` loads; ``num_replicas`` physical slots per layer,
split evenly over ``num_gpus`` GPUs, which are split evenly over ``num_nodes`` nodes; the logical
experts form ``num_groups`` equal, contiguous groups (DeepSeek-V3's group-limited routing).

*Balanced packing* of ``n`` weighted items into ``m`` packs of exactly ``n / m`` items each: take
the items heaviest first and put each into the lightest pack that still has room.

*Hierarchical policy*, used when ``num_groups % num_nodes == 0``:

1. Pack the groups onto nodes by balanced packing of the group loads, so that every node holds
   ``num_groups / num_nodes`` whole groups (tokens then rarely leave their node).
2. Inside each node, replicate: start with one replica per expert and repeatedly give one more
   replica to the expert whose load per replica is highest, until the node's
   ``num_replicas / num_nodes`` slots are filled.
3. Inside each node, pack the physical experts (each carrying its expert's load divided by its
   replica count) onto the node's GPUs by balanced packing.
4. Map the node-local numbering back to logical experts and physical slots.

*Global policy*, otherwise: the same routine with one group and one node, i.e. replicate over all
slots and pack all physical experts onto all GPUs.

Two modes
---------
``faithful=True`` reproduces EPLB exactly, including its ``float32`` arithmetic and its
tie-breaking: ``max``/``min`` take the first best index (as numpy's ``argmax``/``argmin`` do), and
``torch.sort(descending=True)`` on the CPU is ``std::sort``, which is *not* stable.  Ties are
common (the replicas of one expert carry equal loads, and their order decides which replica rank
lands on which GPU), so both modes sort in torch's order, reproduced by the transcription of
GCC's ``std::sort`` in :mod:`placement.baselines._torch_order`; that module says what torch does
and where the reproduction stops.

EPLB's step 3 ignores which expert a physical item belongs to, so it can put two replicas of one
expert on the same GPU (an open upstream bug).  The pair does no more than one replica would: the
slot is wasted for spreading that expert's tokens, and one GPU fewer holds a local copy.

The default mode (``faithful=False``) fixes that.  Step 3 then puts each item into the lightest
GPU that has room *and* does not yet hold a replica of the same expert (the lightest GPU with room
if none qualifies).  Because the greedy can still paint itself into a corner late in the packing,
a repair pass follows: while some GPU holds expert ``e`` twice and another GPU of the node does not
hold ``e``, swap one replica of ``e`` with an item of that GPU so that the number of duplicated
(GPU, expert) pairs strictly falls (choosing the swap with the smallest resulting peak load of the
two GPUs).  Such a swap always exists, so the result has no co-located replicas whenever every
expert has at most as many replicas as its node has GPUs.  An expert with more replicas than that
must share a GPU; it then sits on every GPU of its node.  Replica counts are the same in both
modes, and wherever EPLB produces no co-location in a layer, both modes give that layer the same
answer.  Under an even split of each expert's load over its replicas the peak GPU load moves
either way, by little: the gain is in spreading replicas, not in that static figure.

Both modes compute in ``float32`` like EPLB, so ``faithful`` matches EPLB bit for bit on integer
loads whose group sums stay below ``2**24``; beyond that, sums rounded differently in the last bit
could break a near-tie the other way.

Examples
--------
The example from EPLB's README (2 layers, 12 experts in 4 groups, 16 slots on 2 nodes x 4 GPUs):

>>> import numpy as np
>>> weight = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
...                    [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]])
>>> res = rebalance_experts(weight, 16, 4, 2, 8, faithful=True)
>>> res.phy2log
array([[ 5,  6,  5,  7,  8,  4,  3,  4, 10,  9, 10,  2,  0,  1, 11,  1],
       [ 7, 10,  6,  8,  6, 11,  8,  9,  2,  4,  5,  1,  5,  0,  3,  1]])
>>> res.slots(8)[0]  # layer 0: two slots per GPU
array([[ 5,  6],
       [ 5,  7],
       [ 8,  4],
       [ 3,  4],
       [10,  9],
       [10,  2],
       [ 0,  1],
       [11,  1]])
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from ..errors import PlacementInputError
from ._torch_order import argsort_descending

__all__ = ["EplbResult", "rebalance_experts", "default_redundant", "physical_slots"]

_F32 = np.float32


@dataclass(frozen=True, eq=False)
class EplbResult:
    """A replicated placement in EPLB's convention.  The arrays are read-only.

    Attributes
    ----------
    phy2log:
        ``int64 [layers, num_replicas]``: the logical expert held by each physical slot.  Slot
        ``p`` lives on GPU ``p // (num_replicas // num_gpus)``.
    log2phy:
        ``int64 [layers, num_logical_experts, max_replicas]``: the physical slots of each logical
        expert, ordered by replica rank and padded with ``-1``; ``max_replicas = logcnt.max()``.
    logcnt:
        ``int64 [layers, num_logical_experts]``: the number of replicas of each logical expert.
    """

    phy2log: np.ndarray
    log2phy: np.ndarray
    logcnt: np.ndarray

    def __post_init__(self) -> None:
        for name in ("phy2log", "log2phy", "logcnt"):
            getattr(self, name).setflags(write=False)

    def slots(self, num_gpus: int) -> np.ndarray:
        """The slots grouped by GPU.

        Parameters
        ----------
        num_gpus:
            Number of GPUs; must divide ``num_replicas``.

        Returns
        -------
        numpy.ndarray
            ``int64 [layers, num_gpus, num_replicas // num_gpus]``: ``out[l, g]`` lists the logical
            experts held by GPU ``g`` at layer ``l``, in slot order.
        """
        num_gpus = _positive_int(num_gpus, "num_gpus")
        layers, num_replicas = self.phy2log.shape
        if num_replicas % num_gpus:
            raise PlacementInputError(
                f"num_replicas ({num_replicas}) must be a multiple of num_gpus ({num_gpus})",
                field="num_gpus",
            )
        return self.phy2log.reshape(layers, num_gpus, num_replicas // num_gpus)


def default_redundant(num_experts: int, num_gpus: int) -> int:
    """The fewest redundant experts, at least one per GPU, that make the physical slots divide over the GPUs
    (what ``redundant = -1`` means for the methods that take EPLB's option).

    >>> default_redundant(256, 32), default_redundant(64, 24)
    (32, 32)
    """
    E, G = int(num_experts), int(num_gpus)
    return G + (-(E + G)) % G


def physical_slots(num_experts: int, num_gpus: int, redundant: int) -> tuple[int, int]:
    """``(redundant, P)``: ``redundant`` resolved (``-1``: :func:`default_redundant`) and the physical slots per
    layer ``P = E + redundant``, refused on one line unless ``P`` divides over the GPUs."""
    from ..errors import input_error

    E, G = int(num_experts), int(num_gpus)
    if redundant == -1:
        redundant = default_redundant(E, G)
    P = E + redundant
    if P % G:
        raise input_error(f"{E} experts + {redundant} redundant = {P} slots do not divide over {G} GPUs; choose "
                          f"redundant so that experts + redundant is a multiple of {G}", field="redundant")
    return redundant, P


def rebalance_experts(
    weight,
    num_replicas: int,
    num_groups: int,
    num_nodes: int,
    num_gpus: int,
    *,
    faithful: bool = False,
) -> EplbResult:
    """Replicate and place experts with EPLB's hierarchical or global policy.

    Parameters
    ----------
    weight:
        ``[layers, num_logical_experts]`` non-negative, finite loads (ints or floats, any
        array-like).
    num_replicas:
        Physical expert slots per layer; a multiple of ``num_gpus`` and at least
        ``num_logical_experts``.
    num_groups:
        Number of expert groups (contiguous, equal-sized).  If ``num_groups % num_nodes == 0``
        the hierarchical policy runs and ``num_logical_experts`` must be a multiple of
        ``num_groups``; otherwise the global policy runs and the groups are ignored, as in EPLB.
    num_nodes:
        Number of nodes (GPUs inside a node share the fast interconnect).
    num_gpus:
        Number of GPUs in all; a multiple of ``num_nodes``.
    faithful:
        ``True`` reproduces EPLB exactly, including its placing two replicas of one expert on one
        GPU.  ``False`` (default) never does that unless an expert has more replicas than its node
        has GPUs.

    Returns
    -------
    EplbResult
        ``phy2log [layers, num_replicas]``, ``log2phy [layers, num_logical_experts, max_replicas]``
        and ``logcnt [layers, num_logical_experts]``.

    Raises
    ------
    PlacementInputError
        (a ``ValueError``) naming the argument and the condition that fails.
    """
    w, num_replicas, num_groups, num_nodes, num_gpus, hierarchical = _validate(
        weight, num_replicas, num_groups, num_nodes, num_gpus
    )
    if not hierarchical:
        num_groups, num_nodes = 1, 1
    phy2log, phyrank, logcnt = _rebalance_hierarchical(
        w, num_replicas, num_groups, num_nodes, num_gpus, faithful=faithful
    )
    layers, num_logical = w.shape
    max_cnt = int(logcnt.max())
    log2phy = np.full((layers, num_logical * max_cnt), -1, dtype=np.int64)
    np.put_along_axis(
        log2phy,
        phy2log * max_cnt + phyrank,
        np.broadcast_to(np.arange(num_replicas, dtype=np.int64), phy2log.shape),
        axis=1,
    )
    return EplbResult(
        phy2log=phy2log, log2phy=log2phy.reshape(layers, num_logical, max_cnt), logcnt=logcnt
    )


# --------------------------------------------------------------------------- validation


def _positive_int(value, name: str) -> int:
    """``value`` as a Python ``int >= 1``; anything else (bools included) raises naming ``name``."""
    if isinstance(value, bool | np.bool_):
        raise PlacementInputError(f"{name} must be a positive integer; got {value!r}", field=name)
    try:
        out = operator.index(value)
    except TypeError:
        raise PlacementInputError(
            f"{name} must be a positive integer; got {value!r}", field=name
        ) from None
    if out < 1:
        raise PlacementInputError(f"{name} must be a positive integer; got {out}", field=name)
    return out


def _validate(weight, num_replicas, num_groups, num_nodes, num_gpus):
    """Check and normalise every input of :func:`rebalance_experts` once.

    Returns
    -------
    weight:
        ``float32 [layers, num_logical_experts]`` loads, C-contiguous.
    num_replicas, num_groups, num_nodes, num_gpus:
        The counts as Python ``int``.
    hierarchical:
        ``True`` when ``num_groups % num_nodes == 0`` (the hierarchical policy runs).
    """
    num_replicas = _positive_int(num_replicas, "num_replicas")
    num_groups = _positive_int(num_groups, "num_groups")
    num_nodes = _positive_int(num_nodes, "num_nodes")
    num_gpus = _positive_int(num_gpus, "num_gpus")

    w = np.asarray(weight)
    if w.ndim != 2:
        raise PlacementInputError(
            f"weight must be a 2-D array [layers, num_logical_experts]; got shape {w.shape}",
            field="weight",
        )
    if w.shape[0] == 0 or w.shape[1] == 0:
        raise PlacementInputError(
            f"weight needs at least one layer and one expert; got shape {w.shape}", field="weight"
        )
    if w.dtype.kind not in "biuf":
        raise PlacementInputError(
            f"weight must hold real numbers (loads); got dtype {w.dtype}", field="weight"
        )
    if w.dtype.kind == "f" and not np.isfinite(w).all():
        raise PlacementInputError("weight must be finite; it holds NaN or infinity", field="weight")
    if (w < 0).any():
        raise PlacementInputError("weight must be non-negative (loads)", field="weight")
    with np.errstate(over="ignore"):
        w32 = np.ascontiguousarray(w, dtype=_F32)
    if not np.isfinite(w32).all():
        raise PlacementInputError(
            "weight holds loads too large for float32 (EPLB computes in float32); rescale them",
            field="weight",
        )

    num_logical = w.shape[1]
    if num_replicas % num_gpus:
        raise PlacementInputError(
            f"num_replicas ({num_replicas}) must be a multiple of num_gpus ({num_gpus})",
            field="num_replicas",
        )
    if num_gpus % num_nodes:
        raise PlacementInputError(
            f"num_gpus ({num_gpus}) must be a multiple of num_nodes ({num_nodes})",
            field="num_gpus",
        )
    if num_replicas < num_logical:
        raise PlacementInputError(
            f"num_replicas ({num_replicas}) must be at least num_logical_experts ({num_logical}): "
            "every expert needs a slot",
            field="num_replicas",
        )
    hierarchical = num_groups % num_nodes == 0
    if hierarchical and num_logical % num_groups:
        raise PlacementInputError(
            f"num_logical_experts ({num_logical}) must be a multiple of num_groups ({num_groups}) "
            "for the hierarchical policy",
            field="num_groups",
        )
    return w32, num_replicas, num_groups, num_nodes, num_gpus, hierarchical


# --------------------------------------------------------------------------- the algorithm


def _inverse(perm: np.ndarray) -> np.ndarray:
    """Row-wise inverse of ``int64 [rows, n]`` permutations."""
    inv = np.empty_like(perm)
    np.put_along_axis(inv, perm, np.broadcast_to(np.arange(perm.shape[1]), perm.shape), axis=1)
    return inv


def _balanced_packing(
    weight: np.ndarray, num_packs: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pack ``n`` items per row into ``num_packs`` packs of ``n // num_packs`` items each.

    Items go heaviest first (stable: equal weights in index order) into the lightest pack with
    room (the first such pack on ties).  With ``labels``, a pack already holding an item of the
    same label is skipped while another pack with room exists, then :func:`_repair_colocation`
    removes what the greedy could not avoid.

    Parameters
    ----------
    weight:
        ``float32 [rows, n]`` item weights; ``n`` a multiple of ``num_packs``.
    num_packs:
        Number of packs.
    labels:
        ``int64 [rows, n]`` item labels (logical expert ids), or ``None`` for EPLB's packing.

    Returns
    -------
    pack_index, rank_in_pack:
        ``int64 [rows, n]`` each: the pack of every item and its position inside the pack.
    """
    rows, n = weight.shape
    cap = n // num_packs
    if cap == 1:  # one item per pack: EPLB keeps the items in place
        pack_index = np.broadcast_to(np.arange(n, dtype=np.int64), (rows, n)).copy()
        return pack_index, np.zeros((rows, n), dtype=np.int64)

    order = argsort_descending(weight)  # torch's tie order (see _torch_order)
    r = np.arange(rows)
    pack_w = np.zeros((rows, num_packs), dtype=_F32)
    pack_n = np.zeros((rows, num_packs), dtype=np.int64)
    pack_index = np.empty((rows, n), dtype=np.int64)
    rank_in_pack = np.empty((rows, n), dtype=np.int64)
    if labels is not None:
        holds = np.zeros((rows, num_packs, int(labels.max()) + 1), dtype=bool)
    inf = _F32(np.inf)
    for t in range(n):
        item = order[:, t]
        room = pack_n < cap
        if labels is not None:
            lab = labels[r, item]
            free = room & ~holds[r, :, lab]
            room = np.where(free.any(axis=1, keepdims=True), free, room)
        pack = np.argmin(np.where(room, pack_w, inf), axis=1)
        pack_index[r, item] = pack
        rank_in_pack[r, item] = pack_n[r, pack]
        pack_w[r, pack] += weight[r, item]
        pack_n[r, pack] += 1
        if labels is not None:
            holds[r, pack, lab] = True
    if labels is not None:
        _repair_colocation(weight, labels, pack_index, rank_in_pack, num_packs)
    return pack_index, rank_in_pack


def _repair_colocation(
    weight: np.ndarray,
    labels: np.ndarray,
    pack_index: np.ndarray,
    rank_in_pack: np.ndarray,
    num_packs: int,
) -> None:
    """Swap items between packs, in place, until no avoidable duplicate label remains.

    A duplicate is label ``e`` held twice by pack ``p`` while some pack ``q`` does not hold ``e``.
    Swapping one ``e`` of ``p`` with an item ``y`` (label ``b``) of ``q`` changes the number of
    duplicated (pack, label) pairs by ``-1 + [b in p] - [b twice in q]``; such a swap with a
    negative change always exists: otherwise the ``cap`` items of ``q`` would carry distinct labels
    all found in ``p`` besides ``e``, of which there are at most ``cap - 2``.  So the loop ends,
    and it ends with every label on at most one item per pack wherever the counts allow.
    Only rows the greedy left with a duplicate are visited (rare), one at a time.

    Parameters
    ----------
    weight, labels:
        ``float32 [rows, n]`` item weights and ``int64 [rows, n]`` item labels.
    pack_index, rank_in_pack:
        ``int64 [rows, n]`` the packing to repair; updated in place.
    num_packs:
        Number of packs.
    """
    rows, n = labels.shape
    cap = n // num_packs
    slot_labels = np.empty_like(labels)
    np.put_along_axis(slot_labels, pack_index * cap + rank_in_pack, labels, axis=1)
    per_pack = np.sort(slot_labels.reshape(rows, num_packs, cap), axis=2)
    bad_rows = np.flatnonzero((per_pack[:, :, 1:] == per_pack[:, :, :-1]).any(axis=(1, 2)))
    for row in bad_rows:
        w = weight[row].astype(np.float64)
        lab = labels[row]
        items = [[] for _ in range(num_packs)]  # item ids per pack, in rank order
        for i in np.argsort(pack_index[row] * cap + rank_in_pack[row], kind="stable"):
            items[pack_index[row, i]].append(int(i))
        while True:
            counts = [_label_counts(lab, members) for members in items]
            loads = [float(w[members].sum()) for members in items]
            swap = _best_swap(w, lab, items, counts, loads)
            if swap is None:
                break
            p, i, q, j = swap
            items[p][items[p].index(i)] = j
            items[q][items[q].index(j)] = i
        for p, members in enumerate(items):
            pack_index[row, members] = p
            rank_in_pack[row, members] = np.arange(len(members))


def _label_counts(lab: np.ndarray, members: list[int]) -> dict[int, int]:
    """Label -> number of ``members`` (item ids) carrying it, for labels ``lab: int64 [n]``."""
    out: dict[int, int] = {}
    for i in members:
        out[int(lab[i])] = out.get(int(lab[i]), 0) + 1
    return out


def _best_swap(
    w: np.ndarray,
    lab: np.ndarray,
    items: list[list[int]],
    counts: list[dict[int, int]],
    loads: list[float],
) -> tuple[int, int, int, int] | None:
    """The first duplicated (pack, label) that some pack lacks, and its best improving swap.

    Parameters
    ----------
    w, lab:
        ``float64 [n]`` item weights and ``int64 [n]`` item labels of one row.
    items:
        ``[num_packs][cap]`` item ids per pack, in rank order.
    counts:
        ``[num_packs]`` label -> count per pack (:func:`_label_counts`).
    loads:
        ``[num_packs]`` total weight per pack.

    Returns
    -------
    tuple of int or None
        ``(p, i, q, j)``: swap item ``i`` of pack ``p`` with item ``j`` of pack ``q`` (the swap
        with the smallest resulting peak of the two packs); ``None`` when no avoidable duplicate
        is left.
    """
    for p, cnt_p in enumerate(counts):
        for e, c in sorted(cnt_p.items()):
            if c < 2:
                continue
            i = next(k for k in items[p] if lab[k] == e)
            best = None
            for q, cnt_q in enumerate(counts):
                if q == p or e in cnt_q:
                    continue
                for j in items[q]:
                    b = int(lab[j])
                    if b in cnt_p and cnt_q[b] < 2:
                        continue  # would not reduce the duplicates
                    peak = max(loads[p] - w[i] + w[j], loads[q] - w[j] + w[i])
                    key = (peak, abs(w[i] - w[j]), q, j)
                    if best is None or key < best[0]:
                        best = (key, q, j)
            if best is not None:
                return p, i, best[1], best[2]
    return None


def _replicate_experts(
    weight: np.ndarray, num_phy: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add replicas one at a time to the expert with the highest load per replica.

    Parameters
    ----------
    weight:
        ``float32 [rows, num_log]`` expert loads.
    num_phy:
        Physical experts per row after replication (``>= num_log``).

    Returns
    -------
    phy2log:
        ``int64 [rows, num_phy]``: physical item ``i < num_log`` is the first replica of expert
        ``i``; later items are the extra replicas, in the order they were added.
    rank:
        ``int64 [rows, num_phy]``: the replica rank of each physical item.
    logcnt:
        ``int64 [rows, num_log]``: replicas per expert.
    """
    rows, num_log = weight.shape
    r = np.arange(rows)
    phy2log = np.empty((rows, num_phy), dtype=np.int64)
    phy2log[:, :num_log] = np.arange(num_log)
    rank = np.zeros((rows, num_phy), dtype=np.int64)
    logcnt = np.ones((rows, num_log), dtype=np.int64)
    per_replica = weight.copy()  # float32, as weight / logcnt in EPLB
    for i in range(num_log, num_phy):
        best = np.argmax(per_replica, axis=1)  # first index on ties, like torch.max
        phy2log[:, i] = best
        rank[:, i] = logcnt[r, best]
        logcnt[r, best] += 1
        per_replica[r, best] = weight[r, best] / _F32(logcnt[r, best])
    return phy2log, rank, logcnt


def _rebalance_hierarchical(
    weight: np.ndarray,
    num_replicas: int,
    num_groups: int,
    num_nodes: int,
    num_gpus: int,
    *,
    faithful: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EPLB's hierarchical policy on validated loads (the global policy is ``num_groups = num_nodes = 1``).

    Parameters
    ----------
    weight:
        ``float32 [layers, num_logical]`` loads.
    num_replicas, num_groups, num_nodes, num_gpus:
        Validated counts (see :func:`rebalance_experts`).
    faithful:
        ``True``: EPLB's packing of step 3; ``False``: the packing that avoids co-located replicas.

    Returns
    -------
    phy2log, phyrank:
        ``int64 [layers, num_replicas]``: logical expert and replica rank of every slot.
    logcnt:
        ``int64 [layers, num_logical]``: replicas per logical expert.
    """
    layers, num_logical = weight.shape
    group_size = num_logical // num_groups
    groups_per_node = num_groups // num_nodes
    log_per_node = num_logical // num_nodes
    phy_per_node = num_replicas // num_nodes
    phy_per_gpu = num_replicas // num_gpus

    # 1. groups -> nodes.  "mlog" numbers the logical experts node by node.
    group_load = weight.reshape(layers, num_groups, group_size).sum(axis=2, dtype=np.float64)
    group_pack, group_rank = _balanced_packing(group_load.astype(_F32), num_nodes)
    log2mlog = (
        ((group_pack * groups_per_node + group_rank) * group_size)[:, :, None]
        + np.arange(group_size)
    ).reshape(layers, num_logical)
    mlog2log = _inverse(log2mlog)

    # 2. replicate inside each node: rows are (layer, node)
    mlog_load = np.take_along_axis(weight, mlog2log, axis=1).reshape(-1, log_per_node)
    phy2mlog, phyrank, mlogcnt = _replicate_experts(mlog_load, phy_per_node)

    # 3. physical experts -> GPUs inside each node
    phy_load = np.take_along_axis(mlog_load / mlogcnt.astype(_F32), phy2mlog, axis=1)
    pack_index, rank_in_pack = _balanced_packing(
        phy_load, num_gpus // num_nodes, None if faithful else phy2mlog
    )
    pphy2phy = _inverse(pack_index * phy_per_gpu + rank_in_pack)

    # 4. back to logical ids and global slot numbers
    pphy2mlog = np.take_along_axis(phy2mlog, pphy2phy, axis=1).reshape(layers, num_nodes, -1)
    pphy2mlog = (pphy2mlog + (np.arange(num_nodes) * log_per_node)[:, None]).reshape(layers, -1)
    phy2log = np.take_along_axis(mlog2log, pphy2mlog, axis=1)
    pphyrank = np.take_along_axis(phyrank, pphy2phy, axis=1).reshape(layers, -1)
    logcnt = np.take_along_axis(mlogcnt.reshape(layers, -1), log2mlog, axis=1)
    return phy2log, pphyrank, logcnt
