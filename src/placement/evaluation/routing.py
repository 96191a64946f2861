"""Replica routing: which replica of an expert a token uses.

The replica choice rule of the evaluator, and of the runtime (``placement_runtime.plan`` and
``placement_runtime.moe`` import it from here, so the bytes the runtime moves are the bytes the
evaluator predicts):

* :func:`replica_tables` ranks the replicas of every (layer, expert) by distance from each
  sender GPU (hops first, then seconds per byte) and keeps the replicas tied for nearest;
* :func:`route_layer` sends each selection to its nearest replica and deals the selections of
  each (source GPU, expert) group round-robin over the tied replicas in token order;
* :func:`deal_ranks` is that dealing: the rank of each selection within its group;
* :func:`first_of_each` is the de-duplication rule (once per distinct destination GPU).

Shapes: ``L`` layers, ``G`` GPUs, ``E`` experts per layer, ``R`` the most replicas of any
expert, ``N`` tokens, ``k`` experts per token.  GPU and expert ids are integers; ``-1`` pads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import input_error
from ..placement import Placement

if TYPE_CHECKING:  # pragma: no cover
    from ..topology import Topology

__all__ = ["replica_tables", "route_layer", "deal_ranks", "first_of_each", "route_independent"]


def replica_tables(placement: Placement, topology: Topology) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-replica tables.

    Parameters
    ----------
    placement:
        A placement for ``topology.num_gpus`` GPUs.
    topology:
        The cluster; its ``hops`` and ``seconds_per_byte`` (``float64 [G, G]``) rank replicas.

    Returns
    -------
    tied:
        ``int32 [layers, gpus, experts, R]``: for a token sent from GPU ``u``, the GPUs of the
        replicas of expert ``e`` tied for nearest, in increasing GPU order, then ``-1``.
    ntied:
        ``int32 [layers, gpus, experts]``: how many replicas are tied (>= 1).
    """
    G = placement.num_gpus
    if G != topology.num_gpus:
        raise input_error(f"placement is for {G} GPUs but the topology has {topology.num_gpus}",
                          placement.source, "num_gpus")
    counts = placement.replica_counts()  # [L, E, G]
    holds = counts > 0
    nholds = holds.sum(axis=2)  # [L, E]
    R = int(nholds.max())
    from ..limits import check_limit  # the tables below take ~40 bytes per [L, G, E, R] entry

    check_limit("max_replica_table_entries", placement.num_layers * G * placement.num_experts * R,
                None if placement.source == "<memory>" else placement.source, "slots")
    # replica GPUs of each (layer, expert) in increasing GPU order, -1 padded: [L, E, R]
    rep = np.argsort(~holds, axis=2, kind="stable")[..., :R]
    valid = np.arange(R)[None, None, :] < nholds[..., None]
    # rank replicas by distance from the sender u: hops first, then seconds per byte
    spb = topology.seconds_per_byte
    finite = spb[np.isfinite(spb)]
    scale = (finite.max() if finite.size else 0.0) + 1.0
    dist = topology.hops + spb / scale * 0.5  # the time term stays below one hop
    d = np.transpose(dist[:, rep], (1, 0, 2, 3))  # [L, G(u), E, R]
    d = np.where(valid[:, None], d, np.inf)
    best = d.min(axis=3, keepdims=True)
    tie = (np.abs(d - best) <= 1e-12) & valid[:, None]
    ntied = tie.sum(axis=3).astype(np.int32)
    # tied replicas first, each group in increasing GPU order (rep is already increasing)
    order = np.argsort(~tie, axis=3, kind="stable")
    tied = np.take_along_axis(np.broadcast_to(rep[:, None], tie.shape), order, axis=3)
    tied = np.where(np.arange(R)[None, None, None, :] < ntied[..., None], tied, -1).astype(np.int32)
    return tied, ntied


def deal_ranks(key: np.ndarray) -> np.ndarray:
    """Rank of each entry among the entries with the same key, in order of appearance.

    The tie rule: the selections of one group (same key) are dealt round-robin over its tied
    replicas, the ``i``-th selection of the group to replica ``i mod ntied``.

    Parameters
    ----------
    key:
        ``int64 [n]`` group of each entry (entries in token order).

    Returns
    -------
    ``int64 [n]``: 0 for the first entry of each group, 1 for the second, ...

    >>> deal_ranks(np.array([3, 1, 3, 3, 1])).tolist()
    [0, 0, 1, 2, 1]
    """
    order = np.argsort(key, kind="stable")
    sk = key[order]
    start = np.ones(sk.size, dtype=bool)
    start[1:] = sk[1:] != sk[:-1]
    idx = np.arange(sk.size)
    rank = np.empty(sk.size, dtype=np.int64)
    rank[order] = idx - np.maximum.accumulate(np.where(start, idx, 0))
    return rank


def route_layer(experts: np.ndarray, src: np.ndarray, tied: np.ndarray, ntied: np.ndarray,
                replay: np.ndarray | None = None) -> np.ndarray:
    """Destination GPU of each selection of one layer.

    Parameters
    ----------
    experts:
        ``int [tokens, k]`` expert ids of the layer.
    src:
        ``int [tokens]`` GPU each token is sent from.
    tied, ntied:
        One layer of :func:`replica_tables` (``int32 [gpus, experts, R]`` and ``int32 [gpus, experts]``).
    replay:
        ``int [tokens]`` optional: tokens of different replays are dealt independently (the
        evaluator replays a trace once per origin GPU in one batch).

    Returns
    -------
    ``int64 [tokens, k]`` the GPU of the replica each selection uses.
    """
    e = experts.astype(np.int64)
    s = np.broadcast_to(src.astype(np.int64)[:, None], e.shape)
    c = ntied[s, e]
    out = tied[s, e, 0].astype(np.int64)
    tiedsel = c > 1
    if not tiedsel.any():
        return out
    # Only selections with tied replicas are dealt; a (source, expert) group is tied as a whole,
    # and boolean masking keeps token order.
    G, E = tied.shape[0], tied.shape[1]
    st, et, ct = s[tiedsel], e[tiedsel], c[tiedsel]
    key = st * E + et
    if replay is not None:
        key = key + np.broadcast_to(replay.astype(np.int64)[:, None], e.shape)[tiedsel] * (G * E)
    out[tiedsel] = tied[st, et, deal_ranks(key) % ct]
    return out


def first_of_each(rows: np.ndarray) -> np.ndarray:
    """``bool [n, k]``: True at the first occurrence of each value within its row.

    The de-duplication rule: a token goes once to each distinct destination GPU.

    Parameters
    ----------
    rows:
        ``int [n, k]`` values (destination GPUs) per row.

    >>> first_of_each(np.array([[2, 2, 1], [0, 1, 0]])).tolist()
    [[True, False, True], [True, True, False]]
    """
    k = rows.shape[1]
    if k == 1:
        return np.ones(rows.shape, dtype=bool)
    eq = rows[:, :, None] == rows[:, None, :]  # [n, k, k]
    earlier = np.tril(np.ones((k, k), dtype=bool), -1)  # j' < j
    return ~(eq & earlier[None]).any(axis=2)


def route_independent(tied: np.ndarray) -> bool:
    """True when every (layer, expert) has the same nearest replica from every source GPU.

    Parameters
    ----------
    tied:
        ``int32 [layers, gpus, experts, R]`` from :func:`replica_tables`.
    """
    return bool((tied[:, :1, :, 0] == tied[:, :, :, 0]).all())
