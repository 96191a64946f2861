r"""MoETuner's ILP2 (arXiv 2502.06643): ILP1's clusters to GPUs, minimising each boundary's largest
weighted GPU-pair traffic.

Data
    clusters fixed by ILP1; ``W[l][q, r] = sum_{i in q, j in r} T[l][i, j] / k`` tokens from
    cluster ``q`` of layer ``l`` to cluster ``r`` of layer ``l + 1`` (:func:`cluster_traffic`);
    pair weights ``D[u, v]`` in model units (:mod:`.problem`: ``1 - I``, hops or seconds per
    token, over a power of two); ``M_lq = max_r W[l][q, r]``.
Variables
    ``p[l, q, u]`` binary (cluster ``q`` of layer ``l`` on GPU ``u``); ``r[l, q, u, v] >= 0``
    (traffic of cluster ``q`` on ``u`` to GPU ``v``); ``z[l]`` (boundary ``l``'s bottleneck).
Objective
    ``min sum_l z[l]`` (model units; times ``cost_unit`` it is tokens, token-hops or seconds).
Constraints
    ``sum_u p[l, q, u] = 1``; ``sum_q p[l, q, u] = 1`` (a permutation per layer);
    ``r[l, q, u, v] >= sum_s W[l][q, s] p[l+1, s, v] - M_lq (1 - p[l, q, u])`` (the product
    ``p[l, q, u] * traffic(q -> v)`` linearised); ``z[l] >= D[u, v] sum_q r[l, q, u, v]`` for
    ``u != v`` with ``D[u, v] > 0``; with interchangeable GPUs ``p[0] = I``.

Decomposition (:func:`ilp2_decomposition`): every boundary's term is at least ``d_min`` times
its own optimum, and with interchangeable GPUs those per-boundary optima chain into a placement,
so ILP2 is then solved exactly; a boundary's optimum is found greedily
(:func:`bottleneck_matching`).  The product and bottleneck rows are shared with the joint model
(:mod:`.joint`), whose rows are experts instead of clusters.
"""

from __future__ import annotations

import numpy as np

from ...milp import MilpBuilder, MilpModel
from .problem import TunerProblem, gpu_traffic

__all__ = ["add_bottleneck_rows", "add_product_rows", "bottleneck_matching", "bottleneck_warm_start", "build_ilp2",
           "cluster_traffic", "ilp2_decomposition"]


def cluster_traffic(problem: TunerProblem, clusters: np.ndarray) -> np.ndarray:
    """``W float64 [L-1, G, G]`` tokens from cluster ``q`` of layer ``l`` to cluster ``r`` of layer ``l+1``
    (``clusters int64 [L, E]``)."""
    return gpu_traffic(problem, clusters)


def add_product_rows(b: MilpBuilder, p: np.ndarray, W: np.ndarray, M: np.ndarray,
                     num_gpus: int) -> tuple[np.ndarray, np.ndarray]:
    """Add blocks ``r [layer, row, gpu_from, gpu_to]`` and ``z [boundary]`` and the rows
    ``r[l, q, u, v] >= sum_s W[l, q, s] p[l+1, s, v] - M[l, q] (1 - p[l, q, u])`` (family ``r_link``).

    Parameters
    ----------
    b:
        The builder.
    p:
        ``int [L, Q, G]`` column indices of the placement block (clusters or experts on GPUs).
    W:
        ``float64 [L-1, Q, Q]`` tokens from row ``q`` of layer ``l`` to row ``s`` of layer ``l+1``.
    M:
        ``float64 [L-1, Q]`` big-M: an upper bound of the traffic of row ``q`` to one GPU.
    num_gpus:
        ``G``.

    Returns
    -------
    tuple of numpy.ndarray
        The column indices of ``r`` and ``z``.
    """
    G = num_gpus
    Lm1, Q, _ = W.shape
    r = b.add_block("r", (Lm1, Q, G, G), ("layer", "row", "gpu_from", "gpu_to"))
    z = b.add_block("z", Lm1, "boundary", cost=1.0)
    # r rows: one per (l, q, u, v)
    ll, qq, uu, vv = np.meshgrid(np.arange(Lm1), np.arange(Q), np.arange(G), np.arange(G), indexing="ij")
    ll, qq, uu, vv = ll.ravel(), qq.ravel(), uu.ravel(), vv.ravel()
    nrow = ll.size
    rid = np.arange(nrow)
    nz_l, nz_q, nz_s = np.nonzero(W)  # the traffic terms
    # for each row (l, q, u, v), the terms W[l, q, s] p[l+1, s, v]; group terms by (l, q)
    key = nz_l * Q + nz_q
    order = np.argsort(key, kind="stable")
    key, nz_s_o, nz_l_o, nz_q_o = key[order], nz_s[order], nz_l[order], nz_q[order]
    counts = np.bincount(key, minlength=Lm1 * Q)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    row_key = ll * Q + qq
    reps = counts[row_key]
    term_row = np.repeat(rid, reps)
    offs = np.arange(term_row.size) - np.repeat(np.cumsum(reps) - reps, reps)
    term_idx = np.repeat(starts[row_key], reps) + offs
    term_col = p[nz_l_o[term_idx] + 1, nz_s_o[term_idx], np.repeat(vv, reps)]
    term_coef = -W[nz_l_o[term_idx], nz_q_o[term_idx], nz_s_o[term_idx]]
    Mrow = M[ll, qq]
    b.add_rows("r_link", nrow,
               np.concatenate([rid, rid, term_row]),
               np.concatenate([r[ll, qq, uu, vv], p[ll, qq, uu], term_col]),
               np.concatenate([np.ones(nrow), -Mrow, term_coef]), lower=-Mrow)
    return r, z


def add_bottleneck_rows(b: MilpBuilder, r: np.ndarray, z: np.ndarray, pair_weight: np.ndarray) -> None:
    """Add ``z[l] >= D[u, v] sum_q r[l, q, u, v]`` for every pair with ``D[u, v] > 0`` (family ``bottleneck``).

    ``r`` and ``z`` are the column indices of :func:`add_product_rows`; ``pair_weight`` is
    ``float64 [G, G]`` ``D`` in model units.
    """
    Lm1, Q, G, _ = r.shape
    pairs_u, pairs_v = np.nonzero(pair_weight > 0)
    npairs = pairs_u.size
    nrow = Lm1 * npairs
    lrow = np.repeat(np.arange(Lm1), npairs)
    ur = np.tile(pairs_u, Lm1)
    vr = np.tile(pairs_v, Lm1)
    rid = np.arange(nrow)
    cols_r = r[lrow[:, None], np.arange(Q)[None, :], ur[:, None], vr[:, None]]  # [nrow, Q]
    coef_r = -np.repeat(pair_weight[ur, vr][:, None], Q, axis=1)
    b.add_rows("bottleneck", nrow, np.concatenate([rid, np.repeat(rid, Q)]),
               np.concatenate([z[lrow], cols_r.ravel()]), np.concatenate([np.ones(nrow), coef_r.ravel()]),
               lower=0.0)


def build_ilp2(problem: TunerProblem, W: np.ndarray) -> MilpModel:
    """ILP2 of the module docstring for cluster traffic ``W float64 [L-1, G, G]``.

    Blocks ``p [layer, cluster, gpu]``, ``r`` and ``z``; row families ``cluster_gpu``,
    ``gpu_cluster``, ``r_link`` and ``bottleneck``.
    """
    L, G = problem.num_layers, problem.num_gpus
    b = MilpBuilder(name="moetuner-ilp2")
    upper = np.ones((L, G, G))
    lower = np.zeros((L, G, G))
    if problem.interchangeable_gpus:
        lower[0] = np.eye(G)
        upper[0] = np.eye(G)
    p = b.add_block("p", (L, G, G), ("layer", "cluster", "gpu"), integer=True, lower=lower, upper=upper)
    b.add_row_sums("cluster_gpu", p.reshape(L * G, G), lower=1, upper=1)
    b.add_row_sums("gpu_cluster", p.transpose(0, 2, 1).reshape(L * G, G), lower=1, upper=1)
    r, z = add_product_rows(b, p, W, W.max(axis=2), G)
    add_bottleneck_rows(b, r, z, problem.pair_weight)
    return b.build()


def bottleneck_warm_start(problem: TunerProblem, model: MilpModel, onehot: np.ndarray, W: np.ndarray,
                          M: np.ndarray, block: str) -> np.ndarray:
    """``float64 [num_vars]``: the column vector of :func:`build_ilp2` (``block="p"``) or
    :func:`~.joint.build_joint` (``block="x"``) for the placement ``onehot float64 [L, Q, G]``,
    with the traffic ``W [L-1, Q, Q]`` and big-M ``M [L-1, Q]`` the model was built with."""
    v = np.zeros(model.num_vars)
    xb = model.block(block)
    v[xb.start:xb.stop] = onehot.ravel()
    s = np.einsum("lqs,lsv->lqv", W, onehot[1:])  # [L-1, Q, G] traffic of row q to GPU v
    r = np.maximum(0.0, s[:, :, None, :] - M[:, :, None, None] * (1.0 - onehot[:-1, :, :, None]))
    rb, zb = model.block("r"), model.block("z")
    v[rb.start:rb.stop] = r.ravel()
    v[zb.start:zb.stop] = (r.sum(axis=1) * problem.pair_weight[None]).max(axis=(1, 2))
    return v


def bottleneck_matching(W: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact ``min over permutations s of max_{(q, r): r != s(q)} W[q, r]`` (greedy, see below).

    To keep every entry above a threshold off the objective, all of them must lie on ``s``,
    which is possible exactly when they form a matching; so walk the entries in decreasing
    order, keep each whose row and column are free, and stop at the first that conflicts: its
    value is the optimum.

    Parameters
    ----------
    W:
        ``float64 [Q, Q]`` tokens between the clusters of one boundary.

    Returns
    -------
    tuple
        ``s int64 [Q]`` and the optimum (tokens).
    """
    Q = W.shape[0]
    order = np.argsort(-W, axis=None, kind="stable")
    row_used = np.zeros(Q, dtype=bool)
    col_used = np.zeros(Q, dtype=bool)
    s = -np.ones(Q, dtype=np.int64)
    value = 0.0
    for flat in order:
        q, r = divmod(int(flat), Q)
        if s[q] == r:
            continue
        if row_used[q] or col_used[r]:
            value = float(W[q, r])
            break
        s[q] = r
        row_used[q] = col_used[r] = True
    free_r = iter(np.flatnonzero(~col_used))
    for q in np.flatnonzero(s < 0):
        s[q] = next(free_r)
    return s, value


def ilp2_decomposition(problem: TunerProblem, W: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-boundary optimum of ILP2 with every off-diagonal weight at its minimum.

    Returns the chained placement ``int64 [L, G]`` (GPU of each cluster: cluster ``q`` of layer
    ``l+1`` placed where its matched cluster of layer ``l`` is) and ``d_min * sum_l opt_l``, a
    lower bound of ILP2 in model units (each boundary's term is at least its own optimum;
    ``D[u, v] >= d_min`` off the diagonal).  With interchangeable GPUs the placement attains it:
    then ILP2 is solved exactly.
    """
    L, G = problem.num_layers, problem.num_gpus
    d_min = float(problem.pair_weight[~np.eye(G, dtype=bool)].min()) if G > 1 else 0.0
    perm = np.empty((L, G), dtype=np.int64)  # GPU of each cluster
    perm[0] = np.arange(G)
    total = 0.0
    for layer in range(L - 1):
        s, value = bottleneck_matching(W[layer])
        perm[layer + 1, s] = perm[layer]
        total += value
    return perm, d_min * total
