"""ExFlow inter-layer affinity placement (arXiv 2401.08383): data, exact model, heuristics and bounds.

Private to :mod:`placement.formulations.affinity`, which documents the model and registers the
methods.  Everything here is numpy/scipy; MILPs go through
:func:`placement.formulations._common.solve_model`.

Units
-----
The model works in *count units*: transition counts ``T[l][i, j]`` (all ``k x k`` pairs of a
token, weight 1 each, as :attr:`placement.stats.TraceStats.transitions` counts them) times a
crossing cost ``C[g, h]``.  :attr:`AffinityProblem.scale` divides count units into the
evaluator's units (``boundary_cross_fraction`` for ``cost="cross"``, ``hop_transmissions``
under coherent dispatch for ``cost="hops"``).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import input_error
from ..evaluate import DEFAULT_HIDDEN_SIZE, DTYPE_BYTES
from ..milp import MilpBuilder, MilpModel, Termination, relative_gap
from ._common import SolveFailedError, assignment_from_x, solve_model, solver_params

COSTS = ("cross", "hops", "time")


# ---------------------------------------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class AffinityProblem:
    """Everything the affinity models read, in count units.

    Attributes
    ----------
    L, E, G, k, N, m:
        Layers, experts per layer, GPUs, top-k, tokens, experts per GPU per layer (``E / G``).
    T:
        ``L - 1`` sparse ``float64 [E, E]`` transition counts.
    C:
        ``float64 [G, G]`` cost of one counted pair whose experts sit on GPUs ``g`` and ``h``.
    first:
        ``float64 [E, G]`` layer-0 cost of expert ``e`` on GPU ``g`` (dispatch from the token
        origins), or ``None``.
    scale:
        Count units per evaluator unit.
    levels:
        ``[(weight, group_of_gpu int [G])]``, fine to coarse: ``C >= sum_w w * [group(g) != group(h)]``.
    exact_levels:
        True when the levels reproduce ``C`` exactly (then the MILP objective is the true objective).
    cost:
        ``"cross"``, ``"hops"`` or ``"time"``.
    """

    L: int
    E: int
    G: int
    k: int
    N: int
    m: int
    T: tuple[sp.csr_matrix, ...]
    C: np.ndarray
    first: np.ndarray | None
    scale: float
    levels: tuple[tuple[float, np.ndarray], ...]
    exact_levels: bool
    cost: str

    @property
    def uniform(self) -> bool:
        """True when every GPU is interchangeable (``C = c * (1 - I)``, no layer-0 term)."""
        off = self.C[~np.eye(self.G, dtype=bool)]
        return self.first is None and (off.size == 0 or bool(np.all(off == off[0])))


def cost_levels(C: np.ndarray, groupings: list[np.ndarray]) -> tuple[tuple[tuple[float, np.ndarray], ...], bool]:
    """Largest hierarchical under-estimator of ``C``: weights per grouping (fine to coarse).

    ``C[g, h] >= sum_k w_k * [grouping_k(g) != grouping_k(h)]`` with ``w_k >= 0``; the second
    value says whether it is an equality.
    """
    R = np.array(C, dtype=np.float64, copy=True)
    out = []
    for grp in groupings:
        differ = grp[:, None] != grp[None, :]
        if not differ.any():
            continue
        w = float(R[differ].min())
        if w > 0:
            out.append((w, grp.astype(np.int64)))
            R[differ] -= w
    exact = bool(np.allclose(R, 0.0, atol=1e-12 * max(1.0, float(np.abs(C).max()))))
    return tuple(out), exact


def build_problem(stats: Any, topology: Any, cost: str = "cross", *, experts_per_gpu_check: bool = True,
                  transitions: tuple[sp.csr_matrix, ...] | None = None) -> AffinityProblem:
    """An :class:`AffinityProblem` from trace statistics and a topology."""
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
    first = None
    if cost == "cross":
        C = 1.0 - np.eye(G)
        scale = float(k * k * N * (L - 1))
    else:
        H = np.asarray(topology.hops if cost == "hops" else topology.seconds_per_byte, dtype=np.float64)
        if cost == "time":
            hidden = trace.model.hidden_size or DEFAULT_HIDDEN_SIZE
            H = H * hidden * DTYPE_BYTES["bf16"] * 1e6  # microseconds per token sent
        # boundary pair weight 1/k, layer-0 dispatch from the origins (the evaluator's coherent model)
        C = H.copy()
        scale = float(k * N)
        by_origin = stats.load_by_origin
        if by_origin is not None and by_origin.shape[0] == G:
            first = k * np.einsum("ue,ug->eg", by_origin[:, 0, :].astype(np.float64), H)
        else:
            first = k * np.outer(stats.load[0].astype(np.float64), H.mean(axis=0))
    groupings = [np.arange(G), np.asarray(topology.server_of), np.asarray(topology.rack_of)]
    levels, exact = cost_levels(C, groupings)
    return AffinityProblem(L=L, E=E, G=G, k=k, N=N, m=E // G, T=T, C=C, first=first, scale=scale,
                           levels=levels, exact_levels=exact, cost=cost)


def objective(P: AffinityProblem, a: np.ndarray) -> float:
    """Count-unit objective of assignment ``a int [L, E]``."""
    tot = 0.0
    if P.first is not None:
        tot += float(P.first[np.arange(P.E), a[0]].sum())
    for layer, t in enumerate(P.T):
        c = t.tocoo()
        tot += float((c.data * P.C[a[layer][c.row], a[layer + 1][c.col]]).sum())
    return tot


def check_balanced(P: AffinityProblem, a: np.ndarray) -> None:
    counts = np.stack([np.bincount(row, minlength=P.G) for row in a])
    if not np.all(counts == P.m):
        raise SolveFailedError("internal error: a decoded assignment is not balanced")


# ---------------------------------------------------------------------------------------------- heuristics
def contiguous(P: AffinityProblem) -> np.ndarray:
    return np.broadcast_to(np.arange(P.E) // P.m, (P.L, P.E)).copy()


def _lsa_layer(cost: np.ndarray, m: int) -> np.ndarray:
    """Balanced assignment of ``cost float [E, G]``: each GPU takes exactly ``m`` rows (exact, by LSA)."""
    from scipy.optimize import linear_sum_assignment

    E, G = cost.shape
    wide = np.repeat(cost, m, axis=1)  # column g*m + r is slot r of GPU g
    rows, cols = linear_sum_assignment(wide)
    out = np.empty(E, dtype=np.int64)
    out[rows] = cols // m
    return out


def layer_cost(P: AffinityProblem, a: np.ndarray, layer: int, use_prev: bool = True,
               use_next: bool = True) -> np.ndarray:
    """``float [E, G]``: cost of expert ``j`` of ``layer`` on GPU ``g`` given the other layers of ``a``."""
    out = np.zeros((P.E, P.G))
    if layer == 0 and P.first is not None:
        out += P.first
    if use_prev and layer > 0:
        out += np.asarray(P.T[layer - 1].T @ P.C[a[layer - 1]])
    if use_next and layer < P.L - 1:
        out += np.asarray(P.T[layer] @ P.C[:, a[layer + 1]].T)
    return out


def descend(P: AffinityProblem, a: np.ndarray, deadline: float, max_sweeps: int = 50) -> tuple[np.ndarray, float]:
    """Block-coordinate descent: re-place one layer at a time optimally (LSA) given its neighbours.

    Forward and backward sweeps until a sweep gains nothing; never increases the objective.
    """
    a = a.copy()
    best = objective(P, a)
    for sweep in range(max_sweeps):
        order = range(P.L) if sweep % 2 == 0 else range(P.L - 1, -1, -1)
        for layer in order:
            cost = layer_cost(P, a, layer)
            new = _lsa_layer(cost, P.m)
            if cost[np.arange(P.E), new].sum() < cost[np.arange(P.E), a[layer]].sum() - 1e-9:
                a[layer] = new
            if time.perf_counter() > deadline:
                break
        value = objective(P, a)
        if value >= best - 1e-9 * max(1.0, abs(best)) or time.perf_counter() > deadline:
            best = min(best, value)
            break
        best = value
    return a, best


def greedy_chain(P: AffinityProblem, a0: np.ndarray) -> np.ndarray:
    """Layer 0 from ``a0``, then each layer placed optimally given only the previous one."""
    a = np.empty((P.L, P.E), dtype=np.int64)
    a[0] = a0
    for layer in range(1, P.L):
        a[layer] = _lsa_layer(layer_cost(P, a, layer, use_next=False), P.m)
    return a


def relabel_suffixes(P: AffinityProblem, a: np.ndarray) -> tuple[np.ndarray, bool]:
    """For interchangeable GPUs: at each boundary, permute the GPU labels of all later layers so
    that the boundary's agreement is largest (an assignment problem); later boundaries keep
    their cost, so the objective never increases.  A move no single-layer step can make.
    """
    from scipy.optimize import linear_sum_assignment

    if not P.uniform:
        return a, False
    a = a.copy()
    changed = False
    for layer, t in enumerate(P.T):
        oh_l = np.zeros((P.E, P.G))
        oh_l[np.arange(P.E), a[layer]] = 1.0
        oh_n = np.zeros((P.E, P.G))
        oh_n[np.arange(P.E), a[layer + 1]] = 1.0
        agree = oh_l.T @ np.asarray(t @ oh_n)  # [G(l), G(l+1)]
        rows, cols = linear_sum_assignment(agree, maximize=True)
        if agree[rows, cols].sum() > np.trace(agree) + 1e-9:
            perm = np.empty(P.G, dtype=np.int64)
            perm[cols] = rows  # label h of layer l+1 becomes rows[...] of layer l
            a[layer + 1:] = perm[a[layer + 1:]]
            changed = True
    return a, changed


def improve(P: AffinityProblem, a: np.ndarray, deadline: float) -> tuple[np.ndarray, float]:
    """Alternate :func:`descend` and :func:`relabel_suffixes` until neither gains."""
    a, v = descend(P, a, deadline)
    while time.perf_counter() < deadline:
        b, changed = relabel_suffixes(P, a)
        if not changed:
            break
        b, w = descend(P, b, deadline)
        if w >= v - 1e-9 * max(1.0, abs(v)):
            break
        a, v = b, w
    return a, v


def local_search(P: AffinityProblem, time_budget: float, seed: int = 0, starts: list[np.ndarray] | None = None,
                 target: float = -math.inf) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Multi-start improvement plus perturbation, within ``time_budget`` seconds.

    Starts: contiguous, ``starts`` (e.g. a bisection), a greedy chain from contiguous layer 0;
    then, alternately, greedy chains from random layer-0 placements and perturbations of the
    incumbent (a window of layers re-drawn), each improved by :func:`improve`.  Stops early
    at ``target`` (a proven bound).
    """
    t0 = time.perf_counter()
    deadline = t0 + max(time_budget, 0.0)
    rng = np.random.default_rng(seed)
    base = contiguous(P)
    cand = [greedy_chain(P, base[0])] + list(starts or []) + [base]
    best_a, best = base, objective(P, base)
    for a in cand:
        a2, v = improve(P, a, deadline)
        if v < best:
            best_a, best = a2, v
    tries = improved = 0
    assert best_a is not None
    while time.perf_counter() < deadline and best > target + 1e-9 * max(1.0, abs(target)):
        tries += 1
        if tries % 2:
            a = greedy_chain(P, rng.permutation(np.arange(P.E) // P.m))
        else:
            a = best_a.copy()
            width = int(rng.integers(1, max(2, P.L // 4) + 1))
            lo = int(rng.integers(0, P.L - width + 1))
            for layer in range(lo, lo + width):
                a[layer] = rng.permutation(np.arange(P.E) // P.m)
        a, v = improve(P, a, deadline)
        if v < best - 1e-9 * max(1.0, best):
            best_a, best, improved = a, v, improved + 1
    return best_a, best, {"restarts": tries, "improvements": improved,
                          "local_search_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------- exact: DP and chains
def gpu_classes(P: AffinityProblem) -> list[np.ndarray]:
    """GPUs that no objective term can tell apart (same cost rows, free between them), grouped."""
    classes: list[list[int]] = []
    for g in range(P.G):
        for cl in classes:
            h = cl[0]
            same = (np.array_equal(P.C[g], P.C[h]) and np.array_equal(P.C[:, g], P.C[:, h])
                    and P.C[g, h] == 0 and P.C[h, g] == 0
                    and (P.first is None or np.array_equal(P.first[:, g], P.first[:, h])))
            if same:
                cl.append(g)
                break
        else:
            classes.append([g])
    return [np.array(c) for c in classes]


def dp_state_count(E: int, caps: list[int]) -> int:
    out = math.factorial(E)
    for c in caps:
        out //= math.factorial(c)
    return out


def _enumerate_states(E: int, caps: list[int]) -> np.ndarray:
    """``int [S, E]``: every assignment of E items to classes with the given capacities."""
    states = []

    def rec(rest: tuple[int, ...], cls: int, cur: np.ndarray) -> None:
        if cls == len(caps):
            states.append(cur.copy())
            return
        for chosen in itertools.combinations(rest, caps[cls]):
            cur[list(chosen)] = cls
            left = tuple(x for x in rest if x not in chosen)
            rec(left, cls + 1, cur)

    rec(tuple(range(E)), 0, np.zeros(E, dtype=np.int64))
    return np.array(states, dtype=np.int64)


def _canonical_labels(state: np.ndarray) -> np.ndarray:
    """``state`` with its labels renamed 0, 1, ... in order of first appearance."""
    _, idx = np.unique(state, return_index=True)
    order = state[np.sort(idx)]
    ren = np.empty(int(state.max()) + 1, dtype=np.int64)
    ren[order] = np.arange(order.size)
    return ren[state]


def solve_dp(P: AffinityProblem, max_states: int) -> np.ndarray | None:
    """Exact dynamic programme over whole-layer states (``None`` when there are too many states).

    A state is a layer's assignment of experts to GPU classes (:func:`gpu_classes`); the chain
    of layers is a shortest path through the state graph, so the result is a proven optimum.
    """
    classes = gpu_classes(P)
    caps = [P.m * len(c) for c in classes]
    S = dp_state_count(P.E, caps)
    if S > max_states:
        return None
    states = _enumerate_states(P.E, caps)  # [S, E]
    K = len(classes)
    rep = np.array([c[0] for c in classes])
    Cc = P.C[np.ix_(rep, rep)]
    onehot = np.zeros((S, P.E, K))
    onehot[np.arange(S)[:, None], np.arange(P.E)[None, :], states] = 1.0
    D = Cc[states].reshape(S, P.E * K)  # D[P, (i, k')] = Cc[P_i, k']
    value = np.zeros(S)
    if P.first is not None:
        fc = P.first[:, rep]
        value = fc[np.arange(P.E)[None, :], states].sum(axis=1)
    # With interchangeable classes the value function is invariant under relabelling, so only
    # canonical successor states (labels in order of first appearance) need a column.
    symmetric = P.uniform and len(set(caps)) == 1
    if symmetric:
        relabelled = [_canonical_labels(s) for s in states]
        canon = np.flatnonzero([np.array_equal(r, s) for r, s in zip(relabelled, states, strict=True)])
        position = {tuple(states[c]): n for n, c in enumerate(canon)}
        orbit = np.array([position[tuple(r)] for r in relabelled])  # canonical column of each state
    else:
        canon = np.arange(S)
    back = []
    for t in P.T:
        TQ = np.einsum("ij,sjk->sik", t.toarray(), onehot[canon]).reshape(canon.size, P.E * K)  # [Q, (i, k')]
        tot = TQ @ D.T + value[None, :]  # [Q, P]
        arg = np.argmin(tot, axis=1)
        value = tot[np.arange(canon.size), arg]
        if symmetric:
            value = value[orbit]
        back.append(arg)
    s = int(np.argmin(value))
    cur = states[s]
    path_states = [cur]
    for arg in reversed(back):
        if symmetric:
            # cur = perm[canonical], and the best predecessor of perm[Q] is perm[best predecessor of Q]
            r = _canonical_labels(cur)
            perm = np.empty(K, dtype=np.int64)
            perm[r] = cur
            cur = perm[states[arg[position[tuple(r)]]]]
        else:
            cur = states[arg[int(np.flatnonzero((states == cur).all(axis=1))[0])]]
        path_states.append(cur)
    path_states.reverse()
    cls_assign = np.array(path_states)  # [L, E] class ids
    a = np.empty((P.L, P.E), dtype=np.int64)
    for layer in range(P.L):
        for c, members in enumerate(classes):
            exp = np.flatnonzero(cls_assign[layer] == c)
            a[layer, exp] = np.repeat(members, P.m)
    return a


def solve_chain(P: AffinityProblem) -> np.ndarray | None:
    """Exact for one expert per GPU and interchangeable GPUs: per-boundary matchings chain up."""
    if P.m != 1 or not P.uniform:
        return None
    from scipy.optimize import linear_sum_assignment

    a = np.empty((P.L, P.E), dtype=np.int64)
    a[0] = np.arange(P.E)
    for layer, t in enumerate(P.T):
        rows, cols = linear_sum_assignment(t.toarray(), maximize=True)
        a[layer + 1, cols] = a[layer, rows]
    return a


# ---------------------------------------------------------------------------------------------- bound
def boundary_bound(P: AffinityProblem, backend: str, deadline: float) -> tuple[float, dict[str, Any]]:
    """A valid lower bound for the whole problem from independent per-boundary relaxations.

    For cost ``C >= sum_k w_k [group_k differ]`` (:attr:`AffinityProblem.levels`), boundary
    ``l``'s cost is at least ``sum_k w_k (W_l - A_lk)``, where ``W_l = sum T_l`` and ``A_lk``
    is the largest agreement any placement can reach: expert ``i`` shares a group with at
    most ``b_k = m * (largest group)`` experts of the next layer, and vice versa, so the
    agreement is at most the maximum-weight bipartite ``b_k``-matching of ``T_l`` (a totally
    unimodular LP).  The layer-0 term is at least its own optimal balanced assignment.  The sum
    over boundaries of lower bounds of separate terms bounds the sum.
    """
    from scipy.optimize import linear_sum_assignment

    bound = 0.0
    info: dict[str, Any] = {}
    if P.first is not None:
        wide = np.repeat(P.first, P.m, axis=1)
        r, c = linear_sum_assignment(wide)
        bound += float(wide[r, c].sum())
    # every boundary first gets the cheap dual bound, then exact LPs refine them while time lasts
    terms = []
    for w, grp in P.levels:
        b = P.m * int(np.bincount(grp).max())
        if b >= P.E:
            continue  # everything can agree: no bound from this level
        for t in P.T:
            terms.append([w, float(t.sum()), dual_bmatching(t.toarray(), b), t, b])
    refined = 0
    for term in terms:
        if time.perf_counter() >= deadline:
            break
        agree, exact = _bmatching(term[3], term[4], backend, deadline)
        term[2] = min(term[2], agree)
        refined += int(exact)
    for w, total, agree, _, _ in terms:
        bound += w * max(0.0, total - agree)
    info["bound_lps_exact"] = f"{refined}/{len(terms)}"
    return bound, info


def dual_bmatching(T: np.ndarray, b: int, iters: int = 60) -> float:
    """A valid upper bound on the ``b``-matching of ``T [E, E]`` from a feasible dual solution.

    LP dual: ``min b sum_i alpha_i + b sum_j beta_j + sum_ij gamma_ij`` with
    ``alpha_i + beta_j + gamma_ij >= T_ij`` and all ``>= 0``.  Given ``beta`` the best
    ``alpha_i`` is the ``(b+1)``-th largest ``T_ij - beta_j`` (clipped at 0), ``gamma`` the
    remainder; alternating rows and columns (block-coordinate descent) never leaves the dual
    feasible set, so every iterate's value is an upper bound.
    """
    E = T.shape[0]
    if b >= E:
        return float(T.sum())
    beta = np.zeros(E)
    alpha = np.zeros(E)

    def kth(M: np.ndarray) -> np.ndarray:  # (b+1)-th largest per row, >= 0
        return np.maximum(0.0, -np.partition(-M, b, axis=1)[:, b])

    best = math.inf
    for _ in range(iters):
        alpha = kth(T - beta[None, :])
        beta = kth((T - alpha[:, None]).T)
        value = b * (alpha.sum() + beta.sum()) + np.maximum(0.0, T - alpha[:, None] - beta[None, :]).sum()
        if value >= best - 1e-12 * max(1.0, best):
            best = min(best, value)
            break
        best = value
    return float(best)


def _bmatching(t: sp.csr_matrix, b: int, backend: str, deadline: float) -> tuple[float, bool]:
    """Upper bound on ``max sum T_ij z_ij`` with degrees <= ``b``, ``0 <= z <= 1``, by the LP.

    The LP is totally unimodular, so its optimum is the b-matching; a solve stopped early
    counts only through its proven dual bound.  Without time or a solution: ``sum T``.
    """
    c = t.tocoo()
    E = t.shape[0]
    left = deadline - time.perf_counter()
    if left <= 0.05 or c.nnz == 0:
        return float(t.sum()), False
    bld = MilpBuilder(sense="max", name="bmatching")
    # totally unimodular: the LP optimum is integral; CP-SAT only takes integer columns
    z = bld.add_block("z", c.nnz, "pair", upper=1.0, integer=backend == "cpsat", cost=c.data)
    bld.add_rows("row_degree", E, c.row, z, upper=b)
    bld.add_rows("col_degree", E, c.col, z, upper=b)
    model = bld.build()
    try:
        res = solve_model(model, backend, solver_params(time_limit=left, rel_gap=1e-9))
    except SolveFailedError:
        return float(t.sum()), False
    optimal = res.termination is Termination.OPTIMAL
    # an optimal LP value is the bound; otherwise only a proven dual bound counts
    bnd = float(res.objective) if optimal and not model.is_mip else float(res.bound)
    if not math.isfinite(bnd):
        return float(t.sum()), False
    return bnd, optimal


# ---------------------------------------------------------------------------------------------- the MILP
def build_model(P: AffinityProblem, *, symmetry: bool = True, cuts: bool = True) -> MilpModel:
    """The compact exact ExFlow MILP (see :mod:`placement.formulations.affinity`)."""
    L, E, G, m = P.L, P.E, P.G, P.m
    b = MilpBuilder(name=f"exflow-{P.cost}")
    xcost = np.zeros((L, E, G))
    if P.first is not None:
        xcost[0] = P.first
    xupper = np.ones((L, E, G))
    if symmetry and P.uniform:
        # relabel GPUs by their first layer-0 expert: expert e of layer 0 sits on a GPU <= e
        xupper[0][np.arange(G)[None, :] > np.arange(E)[:, None]] = 0.0
    x = b.add_block("x", (L, E, G), ("layer", "expert", "gpu"), integer=True, upper=xupper, cost=xcost)
    b.add_row_sums("one_gpu", x.reshape(L * E, G), lower=1, upper=1)
    b.add_row_sums("per_gpu", x.transpose(0, 2, 1).reshape(L * G, E), lower=m, upper=m)
    pl, pi, pj, pw = pairs(P)
    n = pl.size
    for lev, (w, grp) in enumerate(P.levels):
        H = int(grp.max()) + 1
        y = b.add_block(f"y{lev}", n, "pair", upper=1.0, cost=w * pw)
        # y[p] >= sum_{g in h} x[l, i, g] - sum_{g in h} x[l+1, j, g] for every group h
        row_y = np.repeat(np.arange(n) * H, H) + np.tile(np.arange(H), n)
        row_x = (np.arange(n)[:, None] * H + grp[None, :]).ravel()
        xi = x[pl, pi].ravel()  # [n*G]
        xj = x[pl + 1, pj].ravel()
        b.add_rows(f"cross{lev}", n * H, np.concatenate([row_y, row_x, row_x]),
                   np.concatenate([np.repeat(y, H), xi, xj]),
                   np.concatenate([np.ones(n * H), -np.ones(n * G), np.ones(n * G)]), lower=0.0)
        if cuts:
            cap = m * int(np.bincount(grp).max())
            for side, key in (("out", pl * E + pi), ("in", pl * E + pj)):
                deg = np.bincount(key, minlength=(L - 1) * E)
                keep = deg > cap
                if not keep.any():
                    continue
                rid = -np.ones(deg.size, dtype=np.int64)
                rid[keep] = np.arange(int(keep.sum()))
                sel = keep[key]
                b.add_rows(f"degree_{side}{lev}", int(keep.sum()), rid[key[sel]], y[sel],
                           lower=(deg[keep] - cap).astype(np.float64))
    return b.build()


def pairs(P: AffinityProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero transitions as arrays: layer, expert at ``l``, expert at ``l + 1``, count."""
    ls, is_, js, ws = [], [], [], []
    for layer, t in enumerate(P.T):
        c = t.tocoo()
        keep = c.data != 0
        ls.append(np.full(int(keep.sum()), layer, dtype=np.int64))
        is_.append(c.row[keep].astype(np.int64))
        js.append(c.col[keep].astype(np.int64))
        ws.append(c.data[keep].astype(np.float64))
    return np.concatenate(ls), np.concatenate(is_), np.concatenate(js), np.concatenate(ws)


def warm_start(P: AffinityProblem, model: MilpModel, a: np.ndarray) -> np.ndarray:
    """The full column vector of :func:`build_model` for assignment ``a``."""
    v = np.zeros(model.num_vars)
    xb = model.block("x")
    x = np.zeros((P.L, P.E, P.G))
    x[np.arange(P.L)[:, None], np.arange(P.E)[None, :], a] = 1.0
    v[xb.start:xb.stop] = x.ravel()
    pl, pi, pj, _ = pairs(P)
    for lev, (_, grp) in enumerate(P.levels):
        yb = model.block(f"y{lev}")
        v[yb.start:yb.stop] = (grp[a[pl, pi]] != grp[a[pl + 1, pj]]).astype(np.float64)
    return v


def decode(model: MilpModel, solution: np.ndarray) -> np.ndarray:
    return assignment_from_x(model.block_values(solution, "x"))


def canonical(P: Any, a: np.ndarray) -> np.ndarray:
    """Relabel interchangeable GPUs by first appearance in layer 0 (what the symmetry rows demand).

    ``P`` is any problem with ``G`` and ``uniform`` (ExFlow's and MoETuner's joint model share it).
    """
    if not P.uniform:
        return a
    _, idx = np.unique(a[0], return_index=True)
    order = a[0][np.sort(idx)]
    perm = np.empty(P.G, dtype=np.int64)
    perm[order] = np.arange(P.G)
    return perm[a]


# ---------------------------------------------------------------------------------------------- driver
@dataclass
class AffinityResult:
    assignment: np.ndarray
    objective: float  # count units
    bound: float | None  # count units
    termination: Termination
    info: dict[str, Any]


def rel_gap(obj: float, bound: float | None) -> float | None:
    """:func:`~placement.milp.relative_gap` of ``obj`` and ``bound`` (a bound above ``obj`` is rounding and
    counts as ``obj``); ``None`` without a finite bound."""
    if bound is None or not math.isfinite(bound):
        return None
    return relative_gap(obj, min(bound, obj))


def run_exflow(P: AffinityProblem, *, strategy: str = "auto", backend: str = "highs", time_limit: float = 60.0,
               rel_gap_target: float = 1e-6, threads: int = 0, verbose: bool = False, dp_states: int = 5000,
               max_rows: int = 2_000_000, local_time: float = -1.0, seed: int = 0,
               starts: list[np.ndarray] | None = None) -> AffinityResult:
    """Solve the ExFlow placement: exact shortcuts, local search, a decomposition bound, then the MILP."""
    t0 = time.perf_counter()
    limit = time_limit if time_limit and time_limit > 0 else math.inf
    deadline = t0 + limit
    info: dict[str, Any] = {"cost": P.cost, "exact_cost_model": P.exact_levels}

    def done(a: np.ndarray, bound: float | None, how: str) -> AffinityResult:
        check_balanced(P, a)
        v = objective(P, a)
        g = rel_gap(v, bound)
        term = Termination.OPTIMAL if g is not None and g <= max(rel_gap_target, 1e-9) else (
            Termination.FEASIBLE if bound is not None else Termination.HEURISTIC)
        info.update(solver=how, wall_time=time.perf_counter() - t0)
        return AffinityResult(a, v, bound if bound is None else min(bound, v), term, info)

    if strategy in ("auto", "dp"):
        a = solve_chain(P)
        if a is not None:
            v = objective(P, a)
            return done(a, v, "chain")  # per-boundary matchings: each boundary at its own optimum
        a = solve_dp(P, dp_states)
        if a is not None:
            return done(a, objective(P, a), "dp")
        if strategy == "dp":
            classes = gpu_classes(P)
            S = dp_state_count(P.E, [P.m * len(c) for c in classes])
            raise input_error(f"strategy 'dp' needs {S} states per layer, more than dp_states={dp_states}; "
                              "raise dp_states or use strategy 'auto'", field="strategy")
    n_pairs = sum(int(t.nnz) for t in P.T)
    rows = n_pairs * sum(int(g.max()) + 1 for _, g in P.levels)
    use_milp = strategy == "milp" or (strategy == "auto" and rows <= max_rows)
    info.update(pairs=n_pairs, milp_rows=rows)
    if local_time >= 0:
        ls_budget = local_time
    elif use_milp:
        ls_budget = min(0.1 * limit, 5.0)
    else:
        ls_budget = None  # after the bound: what is left
    bound_deadline = t0 + (min((0.2 if use_milp else 0.1) * limit, 60.0) if math.isfinite(limit) else 60.0)
    if ls_budget is not None:
        a, v, ls_info = local_search(P, ls_budget, seed, starts)
        info.update(ls_info)
        bound, b_info = boundary_bound(P, backend, bound_deadline)
    else:
        bound, b_info = boundary_bound(P, backend, bound_deadline)
        left = deadline - time.perf_counter() - 0.5
        a, v, ls_info = local_search(P, max(left, 0.0) if math.isfinite(left) else 30.0, seed, starts,
                                     target=bound)
        info.update(ls_info)
    info.update(b_info, decomposition_bound=bound)
    if rel_gap(v, bound) is not None and rel_gap(v, bound) <= rel_gap_target:
        return done(a, bound, "local+bound")
    if not use_milp:
        return done(a, bound, "local+bound")
    model = build_model(P)
    info.update(model_vars=model.num_vars, model_rows=model.num_rows)
    left = deadline - time.perf_counter()
    params = solver_params(time_limit=max(left, 1.0) if math.isfinite(left) else 0.0, rel_gap=rel_gap_target,
                           threads=threads, verbose=verbose, warm_start=warm_start(P, model, canonical(P, a)))
    res = solve_model(model, backend, params)
    a2 = decode(model, res.solution)
    v2 = objective(P, a2)
    info.update(milp_termination=res.termination.value, milp_limit=res.limit.value, backend=res.backend,
                nodes=res.nodes)
    if v2 < v:
        a, v = a2, v2
    milp_bound = float(res.bound) if math.isfinite(res.bound) else -math.inf
    info["milp_bound"] = milp_bound
    return done(a, max(bound, milp_bound), "milp")


# ---------------------------------------------------------------------------------------------- ExFlow bisection
def run_bisect(stats: Any, P: AffinityProblem, *, prefixes: int = 4, solve_cap: float = 60.0,
               time_limit: float = 0.0, backend: str = "highs", threads: int = 0) -> AffinityResult:
    """ExFlow's own scaling recipe: recursive bisection of the GPU set, each split an exact 0/1 MILP
    on growing token prefixes (each warm-started from the last), every solve capped at ``solve_cap``.
    """
    from ..stats import transition_counts

    t0 = time.perf_counter()
    experts = stats.trace.require_tokens("exflow-bisect")
    N = experts.shape[0]
    sizes = sorted({max(1, N >> s) for s in range(max(1, prefixes))})
    Ts = [tuple(sp.csr_matrix(t, dtype=np.float64) for t in transition_counts(experts[:n], P.E)) for n in sizes]
    solves = (P.G - 1) * len(sizes)
    cap = solve_cap if solve_cap > 0 else math.inf
    deadline = math.inf
    if time_limit and time_limit > 0:
        cap = min(cap, time_limit / max(solves, 1))
        deadline = t0 + time_limit
    a = np.zeros((P.L, P.E), dtype=np.int64)
    stats_out = {"solves": 0, "capped": 0, "prefix_tokens": sizes, "solve_cap_s": cap}

    def split(sets: list[np.ndarray], gpus: np.ndarray) -> None:
        if gpus.size == 1:
            for layer, s in enumerate(sets):
                a[layer, s] = gpus[0]
            return
        g1 = gpus.size // 2
        n = sets[0].size
        n1 = P.m * g1
        side = np.zeros((P.L, n))
        side[:, :n1] = 1.0  # first solution: id order
        for T in Ts:
            if time.perf_counter() >= deadline:  # out of time: keep the last split (ExFlow under a budget)
                stats_out["skipped"] = stats_out.get("skipped", 0) + 1
                continue
            side = _bisect_solve(T, sets, n1, side, cap, backend, threads, stats_out)
        for_first = [s[side[layer] > 0.5] for layer, s in enumerate(sets)]
        rest = [s[side[layer] < 0.5] for layer, s in enumerate(sets)]
        split(for_first, gpus[:g1])
        split(rest, gpus[g1:])

    split([np.arange(P.E) for _ in range(P.L)], np.arange(P.G))
    v = objective(P, a)
    check_balanced(P, a)
    stats_out["wall_time"] = time.perf_counter() - t0
    return AffinityResult(a, v, None, Termination.HEURISTIC, stats_out)


def _bisect_solve(T: tuple[sp.csr_matrix, ...], sets: list[np.ndarray], n1: int, start: np.ndarray, cap: float,
                  backend: str, threads: int, out: dict[str, Any]) -> np.ndarray:
    """One ExFlow split: x[l, e] = 1 puts expert ``sets[l][e]`` in the first half; 0/1 crossing cost."""
    L, n = start.shape
    b = MilpBuilder(name="exflow-bisect")
    upper = np.ones((L, n))
    if 2 * n1 == n:
        upper_lo = np.zeros((L, n))
        upper_lo[0, 0] = 1.0  # halves are interchangeable: the first expert of layer 0 goes first
    else:
        upper_lo = np.zeros((L, n))
    x = b.add_block("x", (L, n), ("layer", "expert"), integer=True, lower=upper_lo, upper=upper)
    b.add_row_sums("half", x, lower=n1, upper=n1)
    pl, pi, pj, pw = [], [], [], []
    for layer, t in enumerate(T):
        sub = t[sets[layer]][:, sets[layer + 1]].tocoo()
        keep = sub.data != 0
        pl.append(np.full(int(keep.sum()), layer))
        pi.append(sub.row[keep])
        pj.append(sub.col[keep])
        pw.append(sub.data[keep])
    pl_, pi_, pj_, pw_ = (np.concatenate(v) for v in (pl, pi, pj, pw))
    k = pl_.size
    y = b.add_block("y", k, "pair", upper=1.0, cost=pw_)
    xi, xj = x[pl_, pi_], x[pl_ + 1, pj_]
    r = np.arange(k)
    b.add_rows("cross", 2 * k, np.concatenate([r, r, r, k + r, k + r, k + r]),
               np.concatenate([y, xi, xj, y, xi, xj]),
               np.concatenate([np.ones(k), -np.ones(k), np.ones(k), np.ones(k), np.ones(k), -np.ones(k)]),
               lower=0.0)
    model = b.build()
    ws = np.zeros(model.num_vars)
    if 2 * n1 == n and start[0, 0] < 0.5:
        start = 1.0 - start
    ws[:L * n] = start.ravel()
    ws[L * n:] = np.abs(start[pl_, pi_] - start[pl_ + 1, pj_])
    out["solves"] += 1
    params = solver_params(time_limit=cap if math.isfinite(cap) else 0.0, rel_gap=1e-6, threads=threads,
                           warm_start=ws)
    try:
        res = solve_model(model, backend, params)
    except SolveFailedError:
        out["capped"] += 1
        return start
    if res.termination is not Termination.OPTIMAL:
        out["capped"] += 1
    sol = np.rint(model.block_values(res.solution, "x"))
    if not np.all(sol.sum(axis=1) == n1):
        return start
    return sol
