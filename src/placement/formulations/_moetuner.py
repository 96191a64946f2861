"""MoETuner (arXiv 2502.06643): ILP1 (balanced clusters), ILP2 (clusters to GPUs) and the joint model.

Private to :mod:`placement.formulations.affinity`, which writes the models out and registers
the methods.  Numpy/scipy only; MILPs go through :func:`placement.formulations._common.solve_model`.

Units: loads are token-expert selections (``stats.load``); traffic is tokens (transition counts
divided by ``k``: a token's ``k x k`` boundary pairs each carry ``1/k`` token, as in the
evaluator's coherent dispatch) times a pair weight ``D[u, v]`` normalised to a largest
off-diagonal value of 1.  Reported communication objectives multiply back: tokens for
``cost="cross"``, token-hops for ``"hops"``, milliseconds for ``"time"`` (bytes per token
``hidden_size * 2``, over each pair's bottleneck bandwidth).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import input_error
from ..evaluate import DEFAULT_HIDDEN_SIZE, DTYPE_BYTES
from ..milp import MilpBuilder, MilpModel, Termination
from ..solution import Solution, make_solution
from ._common import SolveFailedError, assignment_from_x, solve_model, solver_params
from ._exflow import canonical
from ._exflow import rel_gap as _gap


@dataclass(frozen=True, eq=False)
class TunerProblem:
    """What the MoETuner models read: ``n [L, E]`` loads, ``T`` transitions, ``D [G, G]`` weights."""

    L: int
    E: int
    G: int
    k: int
    m: int
    n: np.ndarray
    T: tuple[sp.csr_matrix, ...]
    D: np.ndarray
    unit: float  # reported units per model unit
    cost: str

    @property
    def uniform(self) -> bool:
        off = self.D[~np.eye(self.G, dtype=bool)]
        return off.size == 0 or bool(np.all(off == off[0]))


def build_problem(stats: Any, topology: Any, cost: str) -> TunerProblem:
    trace = stats.trace
    L, E, G, k = trace.num_layers, trace.num_experts, topology.num_gpus, trace.top_k
    if E % G:
        raise input_error(f"the model has {E} experts per layer, which does not divide over {G} GPUs; MoETuner "
                          "puts one cluster of E/G experts per GPU", field="topology")
    if L < 2:
        raise input_error("affinity placement needs at least two MoE layers", field="trace")
    if cost == "cross":
        D = 1.0 - np.eye(G)
        unit = 1.0
    elif cost == "hops":
        D = np.asarray(topology.hops, dtype=np.float64).copy()
        unit = 1.0
    elif cost == "time":
        D = np.asarray(topology.seconds_per_byte, dtype=np.float64).copy()
        hidden = trace.model.hidden_size or DEFAULT_HIDDEN_SIZE
        unit = hidden * DTYPE_BYTES["bf16"] * 1e3  # ms per token per (second per byte)
    else:
        raise input_error(f"cost must be one of ['cross', 'hops', 'time'], got {cost!r}", field="cost")
    np.fill_diagonal(D, 0.0)
    top = float(D.max())
    if top > 0:
        D /= top
        unit *= top
    T = tuple(sp.csr_matrix(t, dtype=np.float64) / k for t in stats.transitions)
    return TunerProblem(L=L, E=E, G=G, k=k, m=E // G, n=stats.load.astype(np.float64), T=T, D=D, unit=unit,
                        cost=cost)


# ---------------------------------------------------------------------------------------------- objectives
def imbalance(P: TunerProblem, a: np.ndarray) -> float:
    """ILP1's objective for assignment (or clustering) ``a [L, E]``: ``sum_l sum_g |load - mean|``."""
    loads = np.stack([np.bincount(a[layer], weights=P.n[layer], minlength=P.G) for layer in range(P.L)])
    return float(np.abs(loads - loads.mean(axis=1, keepdims=True)).sum())


def max_ratio(P: TunerProblem, a: np.ndarray) -> float:
    """Largest max/mean GPU load over layers."""
    loads = np.stack([np.bincount(a[layer], weights=P.n[layer], minlength=P.G) for layer in range(P.L)])
    mean = loads.mean(axis=1)
    return float(np.max(np.divide(loads.max(axis=1), mean, out=np.ones(P.L), where=mean > 0)))


def traffic(P: TunerProblem, a: np.ndarray) -> np.ndarray:
    """``float [L-1, G, G]`` tokens sent from GPU ``u`` (layer ``l``) to GPU ``v`` (layer ``l+1``)."""
    out = np.zeros((P.L - 1, P.G, P.G))
    for layer, t in enumerate(P.T):
        c = t.tocoo()
        np.add.at(out[layer], (a[layer][c.row], a[layer + 1][c.col]), c.data)
    return out


def comm(P: TunerProblem, a: np.ndarray) -> float:
    """ILP2's objective in model units: ``sum_l max_{u != v} D[u, v] traffic_l(u, v)``."""
    return float((traffic(P, a) * P.D[None]).max(axis=(1, 2)).sum())


def _boundary_value(P: TunerProblem, a: np.ndarray, layer: int) -> float:
    c = P.T[layer].tocoo()
    t = np.zeros((P.G, P.G))
    np.add.at(t, (a[layer][c.row], a[layer + 1][c.col]), c.data)
    return float((t * P.D).max())


def swap_descent(P: TunerProblem, a: np.ndarray, deadline: float, *, experts: bool,
                 cap: np.ndarray | None = None) -> np.ndarray:
    """First-improvement swaps within a layer until none gains (or the deadline).

    ``experts=False``: swap the GPUs of two whole clusters (ILP2's move: loads unchanged);
    ``experts=True``: swap two experts between GPUs, keeping GPU load <= ``cap[l]`` (the joint move).
    """
    a = a.copy()
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for layer in range(P.L):
            near = [b for b in (layer - 1, layer) if 0 <= b < P.L - 1]
            base = sum(_boundary_value(P, a, b) for b in near)
            if experts:
                cand = [(i, j) for i in range(P.E) for j in range(i + 1, P.E) if a[layer, i] != a[layer, j]]
            else:
                cand = [(u, v) for u in range(P.G) for v in range(u + 1, P.G)]
            for i, j in cand:
                row = a[layer].copy()
                if experts:
                    row[i], row[j] = row[j], row[i]
                    if cap is not None:
                        load = np.bincount(row, weights=P.n[layer], minlength=P.G)
                        if load.max() > cap[layer] + 1e-9:
                            continue
                else:
                    row = np.where(a[layer] == i, j, np.where(a[layer] == j, i, a[layer]))
                old = a[layer].copy()
                a[layer] = row
                new = sum(_boundary_value(P, a, b) for b in near)
                if new < base - 1e-12 * max(1.0, base):
                    base = new
                    improved = True
                else:
                    a[layer] = old
            if time.perf_counter() > deadline:
                break
    return a


# ---------------------------------------------------------------------------------------------- ILP1
def lpt_clusters(P: TunerProblem) -> np.ndarray:
    """Balanced greedy clusters (heaviest expert to the lightest cluster with room): ``int [L, E]``."""
    out = np.empty((P.L, P.E), dtype=np.int64)
    for layer in range(P.L):
        load = np.zeros(P.G)
        room = np.full(P.G, P.m)
        for e in np.argsort(-P.n[layer], kind="stable"):
            q = int(np.argmin(np.where(room > 0, load, np.inf)))
            out[layer, e] = q
            load[q] += P.n[layer, e]
            room[q] -= 1
    return out


def canonical_clusters(a: np.ndarray) -> np.ndarray:
    """Relabel each layer's clusters by first appearance (what the symmetry rows of ILP1 demand)."""
    out = np.empty_like(a)
    for layer, row in enumerate(a):
        _, idx = np.unique(row, return_index=True)
        order = row[np.sort(idx)]
        ren = np.empty(int(row.max()) + 1, dtype=np.int64)
        ren[order] = np.arange(order.size)
        out[layer] = ren[row]
    return out


def build_ilp1(n: np.ndarray, G: int) -> MilpModel:
    """ILP1 for the layers of ``n float [L, E]`` (independent blocks; one layer per solve in practice)."""
    L, E = n.shape
    m = E // G
    b = MilpBuilder(name="moetuner-ilp1")
    upper = np.ones((L, E, G))
    upper[:, np.arange(G)[None, :] > np.arange(E)[:, None]] = 0.0  # cluster labels by first expert
    c = b.add_block("c", (L, E, G), ("layer", "expert", "cluster"), integer=True, upper=upper)
    d = b.add_block("d", (L, G), ("layer", "cluster"), cost=1.0)
    b.add_row_sums("one_cluster", c.reshape(L * E, G), lower=1, upper=1)
    b.add_row_sums("cluster_size", c.transpose(0, 2, 1).reshape(L * G, E), lower=m, upper=m)
    mean = n.sum(axis=1) / G  # [L]
    cols = c.transpose(0, 2, 1).reshape(L * G, E)
    coef = np.repeat(n, G, axis=0)  # [L*G, E] load of each expert
    rows = np.repeat(np.arange(L * G), E + 1)
    allc = np.concatenate([cols, d.reshape(L * G, 1)], axis=1).ravel()
    mean_rows = np.repeat(mean, G)
    # d >= sum n c - mean  and  d >= mean - sum n c
    b.add_rows("dev_up", L * G, rows, allc, np.concatenate([-coef, np.ones((L * G, 1))], axis=1).ravel(),
               lower=-mean_rows)
    b.add_rows("dev_down", L * G, rows, allc, np.concatenate([coef, np.ones((L * G, 1))], axis=1).ravel(),
               lower=mean_rows)
    return b.build()


def ilp1_warm(n: np.ndarray, G: int, model: MilpModel, cl: np.ndarray) -> np.ndarray:
    L, E = n.shape
    v = np.zeros(model.num_vars)
    cb, db = model.block("c"), model.block("d")
    x = np.zeros((L, E, G))
    x[np.arange(L)[:, None], np.arange(E)[None, :], cl] = 1.0
    v[cb.start:cb.stop] = x.ravel()
    loads = np.einsum("le,leg->lg", n, x)
    v[db.start:db.stop] = np.abs(loads - loads.mean(axis=1, keepdims=True)).ravel()
    return v


# ---------------------------------------------------------------------------------------------- ILP2
def cluster_traffic(P: TunerProblem, cl: np.ndarray) -> np.ndarray:
    """``W [L-1, G, G]`` tokens from cluster ``q`` of layer ``l`` to cluster ``r`` of layer ``l+1``."""
    return traffic(P, cl)



def _product_rows(b: MilpBuilder, p: np.ndarray, W: np.ndarray, M: np.ndarray, G: int,
                  name: str) -> tuple[np.ndarray, np.ndarray]:
    """``r[l, q, u, v] >= sum_s W[l, q, s] p[l+1, s, v] - M[l, q] (1 - p[l, q, u])``, ``z[l] >= D r``.

    ``p`` is ``[L, Q, G]`` (clusters or experts on GPUs), ``W [L-1, Q, Q']`` dense or sparse rows.
    """
    Lm1, Q, _ = W.shape
    r = b.add_block(name, (Lm1, Q, G, G), ("layer", "row", "gpu_from", "gpu_to"))
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
    b.add_rows(f"{name}_link", nrow,
               np.concatenate([rid, rid, term_row]),
               np.concatenate([r[ll, qq, uu, vv], p[ll, qq, uu], term_col]),
               np.concatenate([np.ones(nrow), -Mrow, term_coef]), lower=-Mrow)
    return r, z


def _max_rows(b: MilpBuilder, r: np.ndarray, z: np.ndarray, D: np.ndarray) -> None:
    """``z[l] >= D[u, v] sum_q r[l, q, u, v]`` for every pair ``u != v`` with ``D > 0``."""
    Lm1, Q, G, _ = r.shape
    pairs_u, pairs_v = np.nonzero(D > 0)
    npairs = pairs_u.size
    nrow = Lm1 * npairs
    lrow = np.repeat(np.arange(Lm1), npairs)
    ur = np.tile(pairs_u, Lm1)
    vr = np.tile(pairs_v, Lm1)
    rid = np.arange(nrow)
    cols_r = r[lrow[:, None], np.arange(Q)[None, :], ur[:, None], vr[:, None]]  # [nrow, Q]
    coef_r = -np.repeat(D[ur, vr][:, None], Q, axis=1)
    b.add_rows("bottleneck", nrow, np.concatenate([rid, np.repeat(rid, Q)]),
               np.concatenate([z[lrow], cols_r.ravel()]), np.concatenate([np.ones(nrow), coef_r.ravel()]),
               lower=0.0)


def ilp2_model(P: TunerProblem, W: np.ndarray) -> MilpModel:
    L, G = P.L, P.G
    b = MilpBuilder(name="moetuner-ilp2")
    upper = np.ones((L, G, G))
    lower = np.zeros((L, G, G))
    if P.uniform:
        lower[0] = np.eye(G)
        upper[0] = np.eye(G)
    p = b.add_block("p", (L, G, G), ("layer", "cluster", "gpu"), integer=True, lower=lower, upper=upper)
    b.add_row_sums("cluster_gpu", p.reshape(L * G, G), lower=1, upper=1)
    b.add_row_sums("gpu_cluster", p.transpose(0, 2, 1).reshape(L * G, G), lower=1, upper=1)
    r, z = _product_rows(b, p, W, W.max(axis=2), G, "r")
    _max_rows(b, r, z, P.D)
    return b.build()


def joint_model(P: TunerProblem, eps: float) -> MilpModel:
    L, E, G, m = P.L, P.E, P.G, P.m
    b = MilpBuilder(name="moetuner-joint")
    upper = np.ones((L, E, G))
    if P.uniform:
        upper[0][np.arange(G)[None, :] > np.arange(E)[:, None]] = 0.0
    x = b.add_block("x", (L, E, G), ("layer", "expert", "gpu"), integer=True, upper=upper)
    b.add_row_sums("one_gpu", x.reshape(L * E, G), lower=1, upper=1)
    b.add_row_sums("per_gpu", x.transpose(0, 2, 1).reshape(L * G, E), lower=m, upper=m)
    cap = (1.0 + eps) * P.n.sum(axis=1) / G
    b.add_row_sums("load", x.transpose(0, 2, 1).reshape(L * G, E), np.repeat(P.n, G, axis=0),
                   upper=np.repeat(cap, G))
    W = np.stack([t.toarray() for t in P.T])  # [L-1, E, E] tokens
    M = -np.sort(-W, axis=2)[:, :, :m].sum(axis=2)  # GPU v holds m experts of layer l+1
    r, z = _product_rows(b, x, W, M, G, "r")
    _max_rows(b, r, z, P.D)
    return b.build()


def product_warm(P: TunerProblem, model: MilpModel, onehot: np.ndarray, W: np.ndarray, M: np.ndarray,
                 xname: str) -> np.ndarray:
    """Full column vector for :func:`ilp2_model` / :func:`joint_model` from ``onehot [L, Q, G]``."""
    v = np.zeros(model.num_vars)
    xb = model.block(xname)
    v[xb.start:xb.stop] = onehot.ravel()
    s = np.einsum("lqs,lsv->lqv", W, onehot[1:])  # [L-1, Q, G] traffic of row q to GPU v
    r = np.maximum(0.0, s[:, :, None, :] - M[:, :, None, None] * (1.0 - onehot[:-1, :, :, None]))
    rb, zb = model.block("r"), model.block("z")
    v[rb.start:rb.stop] = r.ravel()
    v[zb.start:zb.stop] = (r.sum(axis=1) * P.D[None]).max(axis=(1, 2))
    return v


# ---------------------------------------------------------------------------------------------- drivers
def _solution(P: TunerProblem, topology: Any, method: str, a: np.ndarray, obj: float, bound: float | None,
              termination: Termination, wall: float, info: dict[str, Any]) -> Solution:
    from ..placement import Placement

    placement = Placement.from_assignment(a, topology.num_gpus, metadata={"method": method, "cost": P.cost})
    info = dict(info)
    info.update(max_load_ratio=max_ratio(P, a), load_deviation=imbalance(P, a), cost=P.cost)
    return make_solution(placement, method, termination=termination, objective=obj * P.unit,
                         bound=None if bound is None else bound * P.unit, wall_time=wall, info=info)


def _term(obj: float, bound: float | None, target: float) -> str:
    g = _gap(obj, bound)
    return Termination.OPTIMAL if g is not None and g <= max(target, 1e-9) else Termination.FEASIBLE


def _dev(load: np.ndarray, clusters: np.ndarray, G: int) -> float:
    """``sum_q |cluster load - mean|`` of one layer."""
    return float(np.abs(np.bincount(clusters, weights=load, minlength=G) - load.sum() / G).sum())


def solve_ilp1(P: TunerProblem, backend: str, time_limit: float, rel_gap_target: float, threads: int,
               verbose: bool) -> tuple[np.ndarray, float, float, str]:
    """ILP1 layer by layer (the layers are independent), each warm-started from greedy clusters."""
    t0 = time.perf_counter()
    start = canonical_clusters(lpt_clusters(P))
    cl = start.copy()
    bound = 0.0
    terms = set()
    for layer in range(P.L):
        n = P.n[layer:layer + 1]
        model = build_ilp1(n, P.G)
        left = (time_limit - (time.perf_counter() - t0)) / (P.L - layer) if time_limit else 0.0
        params = solver_params(time_limit=max(left, 0.05) if time_limit else 0.0, rel_gap=rel_gap_target,
                               threads=threads, verbose=verbose,
                               warm_start=ilp1_warm(n, P.G, model, start[layer:layer + 1]))
        res = solve_model(model, backend, params)
        got = assignment_from_x(model.block_values(res.solution, "c"))
        if _dev(n[0], got[0], P.G) <= _dev(n[0], start[layer], P.G):
            cl[layer] = got[0]
        bound += min(float(res.bound) if math.isfinite(res.bound) else 0.0, _dev(n[0], cl[layer], P.G))
        terms.add(res.termination)
    obj = imbalance(P, cl)
    return cl, obj, min(bound, obj), Termination.OPTIMAL if terms == {Termination.OPTIMAL} else Termination.FEASIBLE


def bottleneck_matching(W: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact ``min over permutations s of max_{(q, r): r != s(q)} W[q, r]`` (greedy, see below).

    To keep every entry above a threshold off the objective, all of them must lie on ``s``,
    which is possible exactly when they form a matching; so walk the entries in decreasing
    order, keep each whose row and column are free, and stop at the first that conflicts: its
    value is the optimum.  Returns ``s int [Q]`` and the optimum.
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


def ilp2_decomposition(P: TunerProblem, W: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-boundary optimum of ILP2 with every off-diagonal weight at its minimum.

    Returns the chained placement (cluster ``q`` of layer ``l+1`` placed where its matched
    cluster of layer ``l`` is) and ``d_min * sum_l opt_l``, a lower bound of ILP2 (each
    boundary's term is at least its own optimum; ``D[u, v] >= d_min`` off the diagonal).  With
    interchangeable GPUs the placement attains it: then ILP2 is solved exactly.
    """
    d_min = float(P.D[~np.eye(P.G, dtype=bool)].min()) if P.G > 1 else 0.0
    perm = np.empty((P.L, P.G), dtype=np.int64)  # GPU of each cluster
    perm[0] = np.arange(P.G)
    total = 0.0
    for layer in range(P.L - 1):
        s, value = bottleneck_matching(W[layer])
        perm[layer + 1, s] = perm[layer]
        total += value
    return perm, d_min * total


def run_sequential(stats: Any, topology: Any, *, cost: str, backend: str, time_limit: float, rel_gap: float,
                   threads: int, verbose: bool) -> Solution:
    t0 = time.perf_counter()
    P = build_problem(stats, topology, cost)
    total = time_limit if time_limit and time_limit > 0 else 0.0
    cl, obj1, bound1, term1 = solve_ilp1(P, backend, 0.3 * total if total else 0.0, rel_gap, threads, verbose)
    W = cluster_traffic(P, cl)
    perm0, dec_bound = ilp2_decomposition(P, W)
    a0 = np.take_along_axis(perm0, cl, axis=1)
    obj0 = comm(P, a0)
    ilp2_term = "decomposition"
    a, obj, bound = a0, obj0, min(dec_bound, obj0)
    gap0 = _gap(obj0, bound)
    if gap0 is not None and gap0 > rel_gap:
        budget = 0.1 * total if total else 10.0
        a_sw = swap_descent(P, a0, time.perf_counter() + budget, experts=False)
        if comm(P, a_sw) < obj:
            a, obj = a_sw, comm(P, a_sw)
            perm0 = np.empty((P.L, P.G), dtype=np.int64)
            perm0[np.arange(P.L)[:, None], cl] = a  # GPU of each cluster
        model = ilp2_model(P, W)
        onehot = np.zeros((P.L, P.G, P.G))
        onehot[np.arange(P.L)[:, None], np.arange(P.G)[None, :], perm0] = 1.0
        left = total - (time.perf_counter() - t0) if total else 0.0
        ws = product_warm(P, model, onehot, W, W.max(axis=2), "p")
        if P.uniform and not np.array_equal(perm0[0], np.arange(P.G)):
            ws = None
        params = solver_params(time_limit=max(left, 1.0) if total else 0.0, rel_gap=rel_gap, threads=threads,
                               verbose=verbose, warm_start=ws)
        res = solve_model(model, backend, params)
        perm = assignment_from_x(model.block_values(res.solution, "p"))  # [L, G] GPU of each cluster
        a1 = np.take_along_axis(perm, cl, axis=1)
        if comm(P, a1) < obj:
            a, obj = a1, comm(P, a1)
        if math.isfinite(res.bound):
            bound = max(bound, float(res.bound))
        bound = min(bound, obj)
        ilp2_term = res.termination.value
    info = {"ilp1_objective": obj1, "ilp1_bound": bound1, "ilp1_gap": _gap(obj1, bound1),
            "ilp1_termination": term1.value, "ilp2_termination": ilp2_term, "backend": backend,
            "bound_scope": "ILP2 given the ILP1 clusters"}
    return _solution(P, topology, "moetuner", a, obj, bound, _term(obj, bound, rel_gap), time.perf_counter() - t0,
                     info)


def run_joint(stats: Any, topology: Any, *, cost: str, eps: float, warm: bool, backend: str,
              time_limit: float, rel_gap: float, threads: int, verbose: bool) -> Solution:
    """The joint model; ``eps < 0`` takes the sequential solution's own load ratio (same balance)."""
    t0 = time.perf_counter()
    P = build_problem(stats, topology, cost)
    total = time_limit if time_limit and time_limit > 0 else 0.0
    info: dict[str, Any] = {}
    a0 = None
    if warm or eps < 0:
        seq = run_sequential(stats, topology, cost=cost, backend=backend,
                             time_limit=0.3 * total if total else 0.0, rel_gap=rel_gap, threads=threads,
                             verbose=False)
        a0 = canonical(P, seq.placement.assignment())
        info["sequential_objective"] = comm(P, a0) * P.unit
        info["sequential_max_load_ratio"] = max_ratio(P, a0)
        if eps < 0:
            eps = max_ratio(P, a0) - 1.0 + 1e-9
    cap = (1.0 + eps) * P.n.sum(axis=1) / P.G
    hot = P.n.max(axis=1)
    if np.any(hot > cap + 1e-9):
        layer = int(np.argmax(hot - cap))
        need = hot[layer] / (P.n[layer].sum() / P.G) - 1.0
        raise input_error(f"eps={eps} is infeasible: expert {int(np.argmax(P.n[layer]))} of layer {layer} "
                          f"alone exceeds (1 + eps) x the mean GPU load; use eps >= {need:.3g}", field="eps")
    model = joint_model(P, eps)
    W = np.stack([t.toarray() for t in P.T])
    M = -np.sort(-W, axis=2)[:, :, :P.m].sum(axis=2)
    info.update(eps=eps, model_vars=model.num_vars, model_rows=model.num_rows)
    ws = None
    if a0 is not None and max_ratio(P, a0) <= 1.0 + eps + 1e-12:
        budget = 0.2 * (total - (time.perf_counter() - t0)) if total else 10.0
        a0 = canonical(P, swap_descent(P, a0, time.perf_counter() + budget, experts=True, cap=cap))
    if warm and a0 is not None and max_ratio(P, a0) <= 1.0 + eps + 1e-12:
        onehot = np.zeros((P.L, P.E, P.G))
        onehot[np.arange(P.L)[:, None], np.arange(P.E)[None, :], a0] = 1.0
        ws = product_warm(P, model, onehot, W, M, "x")
    left = total - (time.perf_counter() - t0) if total else 0.0
    params = solver_params(time_limit=max(left, 1.0) if total else 0.0, rel_gap=rel_gap, threads=threads,
                           verbose=verbose, warm_start=ws)
    try:
        res = solve_model(model, backend, params)
    except SolveFailedError as exc:
        raise SolveFailedError(f"moetuner-joint with eps={eps}: {exc}") from exc
    a = assignment_from_x(model.block_values(res.solution, "x"))
    obj = comm(P, a)
    if a0 is not None and ws is not None and comm(P, a0) < obj:
        a, obj = a0, comm(P, a0)
    bound = float(res.bound) if math.isfinite(res.bound) else None
    bound = None if bound is None else min(bound, obj)
    info.update(solver_termination=res.termination.value, limit=res.limit.value, backend=res.backend)
    if info.get("sequential_objective"):
        info["gain_vs_sequential"] = 1.0 - obj * P.unit / info["sequential_objective"]
    return _solution(P, topology, "moetuner-joint", a, obj, bound, _term(obj, bound, rel_gap),
                     time.perf_counter() - t0, info)
