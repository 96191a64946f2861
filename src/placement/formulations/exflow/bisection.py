r"""ExFlow's own scaling recipe (method ``exflow-bisect``): recursive bisection of the GPU set.

Each split divides the experts of every layer still in play between two halves of the GPU set
(``G1 = floor(G / 2)`` GPUs take ``m G1`` experts of each layer, the rest the others), then
recurses into each half.  A split is solved on growing token prefixes (``N / 2^(p-1), ..., N``
tokens), each solve warm-started from the previous one and capped at ``solve_cap`` seconds (the
paper's 60 s); ``time_limit`` shares a total over the solves and, once spent, keeps the last
split.  No bound is claimed (termination ``heuristic``).

One split (:func:`build_split_model`)
-------------------------------------
Data
    the experts ``S_l`` of each layer in play (``n`` per layer), the prefix's transition counts
    restricted to them, ``T[l][i, j]`` for ``i in S_l``, ``j in S_{l+1}``; ``n1 = m G1``.
Variables
    ``x[l, e]`` binary (expert ``e`` of ``S_l`` in the first half); ``y[p] in [0, 1]`` per
    non-zero pair ``p = (l, i, j)``.
Objective
    ``min sum_p T_p y[p]`` (pairs that cross the split, counted with weight 1 each).
Constraints
    ``sum_e x[l, e] = n1`` per layer; ``y[p] >= x[l, i] - x[l+1, j]`` and
    ``y[p] >= x[l+1, j] - x[l, i]``; with equal halves ``x[0, 0] = 1`` (the halves are
    interchangeable: the first expert of layer 0 goes first).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from ...milp import MilpBuilder, MilpModel, SolveParams, Termination
from ...progress import Run
from .._common import SolveFailedError, run_params, solve_model
from .driver import AffinityResult
from .problem import AffinityProblem, check_balanced, objective

__all__ = ["build_split_model", "run_bisect"]


def run_bisect(stats: Any, problem: AffinityProblem, *, prefixes: int = 4, solve_cap: float = 60.0,
               time_limit: float = 0.0, backend: str = "highs", threads: int = 0,
               run: Run | None = None) -> AffinityResult:
    """ExFlow's recursive bisection (module docstring); the result's objective is in model units.

    ``run`` (:class:`placement.progress.Run`) holds the deadline (a run with ``time_limit`` starts
    here without one): each solve gets at most ``solve_cap`` seconds and its share of the time
    left; after the deadline or a Ctrl-C the splits still to come keep their first (id-order)
    split, as when ``time_limit`` runs out.
    """
    from ...stats import transition_counts

    run = run if run is not None else Run("exflow-bisect", time_limit)
    t0 = time.perf_counter()
    L, E, G, m = problem.num_layers, problem.num_experts, problem.num_gpus, problem.experts_per_gpu
    experts = stats.trace.require_tokens("exflow-bisect")
    N = experts.shape[0]
    sizes = sorted({max(1, N >> s) for s in range(max(1, prefixes))})
    prefix_transitions = [tuple(sp.csr_matrix(t, dtype=np.float64) for t in transition_counts(experts[:n], E))
                          for n in sizes]
    solves = (G - 1) * len(sizes)
    cap = solve_cap if solve_cap > 0 else math.inf
    a = np.zeros((L, E), dtype=np.int64)
    counters: dict[str, Any] = {"solves": 0, "capped": 0, "prefix_tokens": sizes, "solve_cap_s": cap}

    def split(sets: list[np.ndarray], gpus: np.ndarray) -> None:
        if gpus.size == 1:
            for layer, s in enumerate(sets):
                a[layer, s] = gpus[0]
            return
        g1 = gpus.size // 2
        n = sets[0].size
        n1 = m * g1
        side = np.zeros((L, n))
        side[:, :n1] = 1.0  # first solution: id order
        for transitions in prefix_transitions:
            run.update(stage=f"split {counters['solves'] + 1}/{solves}")
            params = run_params(run, rel_gap=1e-6, threads=threads, parts=max(solves - counters["solves"], 1))
            if params is None:  # out of time or Ctrl-C: keep the last split (ExFlow under a budget)
                counters["skipped"] = counters.get("skipped", 0) + 1
                continue
            params = dataclasses.replace(params, time_limit=min(params.time_limit or math.inf, cap)
                                         if math.isfinite(cap) or params.time_limit else None)
            with run.interruptible():
                side = _solve_split(transitions, sets, n1, side, params, backend, counters, run)
        first_half = [s[side[layer] > 0.5] for layer, s in enumerate(sets)]
        rest = [s[side[layer] < 0.5] for layer, s in enumerate(sets)]
        split(first_half, gpus[:g1])
        split(rest, gpus[g1:])

    split([np.arange(E) for _ in range(L)], np.arange(G))
    v = objective(problem, a)
    check_balanced(problem, a)
    counters["wall_time"] = time.perf_counter() - t0
    return AffinityResult(a, v, None, Termination.HEURISTIC, counters)


def build_split_model(transitions: tuple[sp.csr_matrix, ...], sets: list[np.ndarray],
                      n1: int) -> tuple[MilpModel, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One split's model (module docstring) and its pairs ``(layer, i, j)`` (``int64 [P]`` each).

    Parameters
    ----------
    transitions:
        ``L - 1`` sparse ``float64 [E, E]`` transition counts of a token prefix.
    sets:
        ``L`` arrays of the ``n`` expert ids of each layer in play.
    n1:
        Experts of each layer that go to the first half.
    """
    L, n = len(sets), sets[0].size
    b = MilpBuilder(name="exflow-bisect")
    lower = np.zeros((L, n))
    if 2 * n1 == n:
        lower[0, 0] = 1.0  # halves are interchangeable: the first expert of layer 0 goes first
    x = b.add_block("x", (L, n), ("layer", "expert"), integer=True, lower=lower, upper=np.ones((L, n)))
    b.add_row_sums("half", x, lower=n1, upper=n1)
    pl, pi, pj, pw = [], [], [], []
    for layer, t in enumerate(transitions):
        sub = t[sets[layer]][:, sets[layer + 1]].tocoo()
        keep = sub.data != 0
        pl.append(np.full(int(keep.sum()), layer))
        pi.append(sub.row[keep])
        pj.append(sub.col[keep])
        pw.append(sub.data[keep])
    pl_, pi_, pj_, pw_ = (np.concatenate(v) for v in (pl, pi, pj, pw))
    P = pl_.size
    y = b.add_block("y", P, "pair", upper=1.0, cost=pw_)
    xi, xj = x[pl_, pi_], x[pl_ + 1, pj_]
    r = np.arange(P)
    b.add_rows("cross", 2 * P, np.concatenate([r, r, r, P + r, P + r, P + r]),
               np.concatenate([y, xi, xj, y, xi, xj]),
               np.concatenate([np.ones(P), -np.ones(P), np.ones(P), np.ones(P), np.ones(P), -np.ones(P)]),
               lower=0.0)
    return b.build(), (pl_, pi_, pj_)


def _solve_split(transitions: tuple[sp.csr_matrix, ...], sets: list[np.ndarray], n1: int, start: np.ndarray,
                 params: SolveParams, backend: str, counters: dict[str, Any], run: Run) -> np.ndarray:
    """One split solved from ``start`` (``float64 [L, n]``, 1 = first half) with ``params`` (the warm
    start is set here); the start when it fails."""
    L, n = start.shape
    model, (pl, pi, pj) = build_split_model(transitions, sets, n1)
    ws = np.zeros(model.num_vars)
    if 2 * n1 == n and start[0, 0] < 0.5:
        start = 1.0 - start
    ws[:L * n] = start.ravel()
    ws[L * n:] = np.abs(start[pl, pi] - start[pl + 1, pj])
    counters["solves"] += 1
    try:
        res = solve_model(model, backend, dataclasses.replace(params, warm_start=ws), run)
    except SolveFailedError:
        counters["capped"] += 1
        return start
    run.note(res.limit)
    if res.termination is not Termination.OPTIMAL:
        counters["capped"] += 1
    sol = np.rint(model.block_values(res.solution, "x"))
    if not np.all(sol.sum(axis=1) == n1):
        return start
    return sol
