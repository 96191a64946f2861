r"""MoETuner's ILP1 (arXiv 2502.06643): balanced clusters of ``m`` experts, one per GPU, per layer.

Data
    ``n[l, e]`` token-expert selections of expert ``e`` at layer ``l``; ``G`` clusters of
    ``m = E / G`` experts; ``mean_l = sum_e n[l, e] / G``.
Variables
    ``c[l, e, q]`` binary (expert ``e`` of layer ``l`` in cluster ``q``); ``d[l, q] >= 0``.
Objective
    ``min sum_{l, q} d[l, q]`` (selections), which equals ``sum_{l, g} |gpu_load[l, g] - mean_l|``
    of the evaluator once cluster ``q`` is placed on a GPU.
Constraints
    ``sum_q c[l, e, q] = 1``; ``sum_e c[l, e, q] = m``;
    ``d[l, q] >= sum_e n[l, e] c[l, e, q] - mean_l`` and ``d[l, q] >= mean_l - sum_e n[l, e] c[l, e, q]``;
    ``c[l, e, q] = 0`` for ``q > e`` (clusters labelled by their first expert:
    :func:`~placement.formulations._labels.relabel_by_first_appearance`).

The layers are independent and are solved one by one, each warm-started from greedy clusters
(:func:`~.heuristics.lpt_clusters`).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from ...milp import MilpBuilder, MilpModel, Termination
from ...progress import Run
from .._common import MIN_SOLVE_S, assignment_from_x, run_params, solve_model
from .._labels import relabel_by_first_appearance
from .heuristics import lpt_clusters
from .problem import TunerProblem, load_deviation

__all__ = ["build_ilp1", "ilp1_warm_start", "solve_ilp1"]


def build_ilp1(load: np.ndarray, num_gpus: int) -> MilpModel:
    """ILP1 for the layers of ``load float64 [L, E]`` (independent blocks; one layer per solve in practice).

    Blocks ``c [layer, expert, cluster]`` and ``d [layer, cluster]``; row families ``one_cluster``,
    ``cluster_size``, ``dev_up`` and ``dev_down``.
    """
    L, E = load.shape
    G = num_gpus
    m = E // G
    b = MilpBuilder(name="moetuner-ilp1")
    upper = np.ones((L, E, G))
    upper[:, np.arange(G)[None, :] > np.arange(E)[:, None]] = 0.0  # cluster labels by first expert
    c = b.add_block("c", (L, E, G), ("layer", "expert", "cluster"), integer=True, upper=upper)
    d = b.add_block("d", (L, G), ("layer", "cluster"), cost=1.0)
    b.add_row_sums("one_cluster", c.reshape(L * E, G), lower=1, upper=1)
    b.add_row_sums("cluster_size", c.transpose(0, 2, 1).reshape(L * G, E), lower=m, upper=m)
    mean = load.sum(axis=1) / G  # [L]
    cols = c.transpose(0, 2, 1).reshape(L * G, E)
    coef = np.repeat(load, G, axis=0)  # [L*G, E] load of each expert
    rows = np.repeat(np.arange(L * G), E + 1)
    allc = np.concatenate([cols, d.reshape(L * G, 1)], axis=1).ravel()
    mean_rows = np.repeat(mean, G)
    # d >= sum n c - mean  and  d >= mean - sum n c
    b.add_rows("dev_up", L * G, rows, allc, np.concatenate([-coef, np.ones((L * G, 1))], axis=1).ravel(),
               lower=-mean_rows)
    b.add_rows("dev_down", L * G, rows, allc, np.concatenate([coef, np.ones((L * G, 1))], axis=1).ravel(),
               lower=mean_rows)
    return b.build()


def ilp1_warm_start(load: np.ndarray, num_gpus: int, model: MilpModel, clusters: np.ndarray) -> np.ndarray:
    """``float64 [num_vars]``: the column vector of :func:`build_ilp1` for ``clusters int64 [L, E]``
    (canonically labelled)."""
    L, E = load.shape
    v = np.zeros(model.num_vars)
    cb, db = model.block("c"), model.block("d")
    x = np.zeros((L, E, num_gpus))
    x[np.arange(L)[:, None], np.arange(E)[None, :], clusters] = 1.0
    v[cb.start:cb.stop] = x.ravel()
    loads = np.einsum("le,leg->lg", load, x)
    v[db.start:db.stop] = np.abs(loads - loads.mean(axis=1, keepdims=True)).ravel()
    return v


def _deviation(load: np.ndarray, clusters: np.ndarray, num_gpus: int) -> float:
    """``sum_q |cluster load - mean|`` of one layer (``load float64 [E]``, ``clusters int [E]``)."""
    return float(np.abs(np.bincount(clusters, weights=load, minlength=num_gpus) - load.sum() / num_gpus).sum())


def solve_ilp1(problem: TunerProblem, backend: str, time_limit: float, rel_gap_target: float, threads: int,
               verbose: bool = False, run: Run | None = None) -> tuple[np.ndarray, float, float, Termination]:
    """ILP1 layer by layer, each warm-started from greedy clusters.

    ``time_limit`` (seconds, 0: none) is this stage's share; with ``run``
    (:class:`placement.progress.Run`) each solve is also capped by the run's deadline, reports
    the stage, and the stage stops when the run is stopped (layers not solved keep their greedy
    clusters; their bound is 0).

    Returns the clusters ``int64 [L, E]``, their objective and a proven bound (selections), and
    ``OPTIMAL`` when every layer was solved to optimality, else ``FEASIBLE``.
    """
    run = run if run is not None else Run("moetuner", None, verbose=verbose)
    t0 = time.perf_counter()
    L, G = problem.num_layers, problem.num_gpus
    start = relabel_by_first_appearance(lpt_clusters(problem))
    cl = start.copy()
    bound = 0.0
    terms = set()
    for layer in range(L):
        n = problem.load[layer:layer + 1]
        res = None
        with run.interruptible():
            model = build_ilp1(n, G)
            left = (time_limit - (time.perf_counter() - t0)) / (L - layer) if time_limit else math.inf
            run.update(stage=f"ILP1 (balanced clusters) layer {layer + 1}/{L}")
            params = run_params(run, rel_gap=rel_gap_target, threads=threads, parts=L - layer,
                                warm_start=ilp1_warm_start(n, G, model, start[layer:layer + 1]))
            if params is not None and left >= MIN_SOLVE_S:
                params = dataclasses.replace(params, time_limit=min(params.time_limit or math.inf, left))
                res = solve_model(model, backend, params, run)
        if res is None:  # out of time or Ctrl-C: the remaining layers keep the greedy clusters
            terms.add(Termination.FEASIBLE)
            if run.stopped:
                break
            continue
        run.note(res.limit)
        got = assignment_from_x(model.block_values(res.solution, "c"))
        if _deviation(n[0], got[0], G) <= _deviation(n[0], start[layer], G):
            cl[layer] = got[0]
        bound += min(float(res.bound) if math.isfinite(res.bound) else 0.0, _deviation(n[0], cl[layer], G))
        terms.add(res.termination)
    obj = load_deviation(problem, cl)
    return cl, obj, min(bound, obj), Termination.OPTIMAL if terms == {Termination.OPTIMAL} else Termination.FEASIBLE
