r"""A lower bound of the whole ExFlow problem from independent per-boundary relaxations.

``min sum_l f_l >= sum_l min f_l``: for pair costs ``C >= sum_k w_k [group_k differ]``
(:attr:`~placement.formulations.exflow.problem.AffinityProblem.levels`), boundary ``l`` costs
at least ``sum_k w_k (W_l - A_lk)`` model units, where ``W_l = sum T_l`` and ``A_lk`` is the
largest agreement any placement can reach: expert ``i`` shares a group of level ``k`` with at
most ``b_k = m * (largest group)`` experts of the next layer, and vice versa, so the agreement
is at most the maximum-weight bipartite ``b_k``-matching of ``T_l``.  The layer-0 term is at
least its own optimal balanced assignment.  Bounds are in model units.

The b-matching LP (one boundary, one level)
-------------------------------------------
Data
    ``T [E, E]`` transition counts of the boundary (non-zero pairs ``p = (i, j)``); ``b``.
Variables
    ``z[p] in [0, 1]`` (integral for CP-SAT, which takes integer columns only).
Objective
    ``max sum_p T_p z[p]``.
Constraints
    ``sum_{j} z[i, j] <= b`` for every ``i``; ``sum_{i} z[i, j] <= b`` for every ``j``.

The matrix is a bipartite incidence matrix, totally unimodular, so the LP optimum is the
b-matching.  Its dual gives a bound in milliseconds (:func:`dual_bmatching`), the LP refines it.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ...milp import MilpBuilder, MilpModel, Termination
from .._common import SolveFailedError, solve_model, solver_params
from .problem import AffinityProblem

if TYPE_CHECKING:  # pragma: no cover
    from ...progress import Run

__all__ = ["boundary_bound", "build_bmatching_model", "dual_bmatching"]


def boundary_bound(problem: AffinityProblem, backend: str, deadline: float,
                   run: Run | None = None) -> tuple[float, dict[str, Any]]:
    """The decomposition bound of the module docstring, in model units, and info counters.

    Every boundary first gets the cheap dual bound (:func:`dual_bmatching`); exact LPs
    (:func:`build_bmatching_model`) refine them while ``deadline`` (``time.perf_counter()``) allows
    and, with ``run`` (:class:`placement.progress.Run`), until the run is stopped (a Ctrl-C during
    the refinement stops it and marks the run interrupted; every partial refinement is valid).
    """
    from scipy.optimize import linear_sum_assignment

    m, E = problem.experts_per_gpu, problem.num_experts
    bound = 0.0
    info: dict[str, Any] = {}
    if problem.first_layer_cost is not None:
        wide = np.repeat(problem.first_layer_cost, m, axis=1)
        r, c = linear_sum_assignment(wide)
        bound += float(wide[r, c].sum())
    terms = []
    for w, grp in problem.levels:
        b = m * int(np.bincount(grp).max())
        if b >= E:
            continue  # everything can agree: no bound from this level
        for t in problem.transitions:
            # past the deadline a boundary keeps the trivial agreement sum T (a valid, weak bound)
            agree = dual_bmatching(t.toarray(), b) if time.perf_counter() < deadline else float(t.sum())
            terms.append([w, float(t.sum()), agree, t, b])
            if run is not None:
                run.tick()
    refined = 0
    with run.interruptible() if run is not None else contextlib.nullcontext():
        for term in terms:
            if time.perf_counter() >= deadline or (run is not None and run.stopped):
                break
            agree, exact = _bmatching(term[3], term[4], backend, deadline, run)
            term[2] = min(term[2], agree)
            refined += int(exact)
            if run is not None:
                run.tick()
    for w, total, agree, _, _ in terms:
        bound += w * max(0.0, total - agree)
    info["bound_lps_exact"] = f"{refined}/{len(terms)}"
    return bound, info


def dual_bmatching(T: np.ndarray, b: int, iters: int = 60) -> float:
    """A valid upper bound on the ``b``-matching of ``T float64 [E, E]`` from a feasible dual solution.

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


def build_bmatching_model(t: sp.csr_matrix, b: int, *, integer: bool = False) -> MilpModel:
    """The b-matching LP of the module docstring (block ``z [pair]``, rows ``row_degree``/``col_degree``)."""
    c = t.tocoo()
    E = t.shape[0]
    bld = MilpBuilder(sense="max", name="bmatching")
    z = bld.add_block("z", c.nnz, "pair", upper=1.0, integer=integer, cost=c.data)
    bld.add_rows("row_degree", E, c.row, z, upper=b)
    bld.add_rows("col_degree", E, c.col, z, upper=b)
    return bld.build()


def _bmatching(t: sp.csr_matrix, b: int, backend: str, deadline: float,
               run: Run | None = None) -> tuple[float, bool]:
    """Upper bound on the ``b``-matching of ``t`` by its LP, and whether it is the exact optimum.

    A solve stopped early counts only through its proven dual bound.  Without time or a
    solution: ``sum T``.
    """
    left = deadline - time.perf_counter()
    if left <= 0.05 or t.nnz == 0:
        return float(t.sum()), False
    # totally unimodular: the LP optimum is integral; CP-SAT only takes integer columns
    model = build_bmatching_model(t, b, integer=backend == "cpsat")
    try:
        res = solve_model(model, backend, solver_params(time_limit=left, rel_gap=1e-9, deadline=deadline), run)
    except SolveFailedError:
        return float(t.sum()), False
    optimal = res.termination is Termination.OPTIMAL
    # an optimal LP value is the bound; otherwise only a proven dual bound counts
    bnd = float(res.objective) if optimal and not model.is_mip else float(res.bound)
    if not math.isfinite(bnd):
        return float(t.sum()), False
    return bnd, optimal
