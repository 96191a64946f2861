"""The ``moetuner`` and ``moetuner-joint`` solves, and their :class:`~placement.solution.Solution`.

``moetuner``: ILP1 (:mod:`.ilp1`), then ILP2 (:mod:`.ilp2`) given ILP1's clusters: solved exactly
by the decomposition when GPUs are interchangeable, else by the MILP warm-started from the
decomposition's chain improved by cluster swaps; the bound is ILP2's given the clusters.

``moetuner-joint``: the joint model (:mod:`.joint`), warm-started from the sequential solution
improved by load-feasible expert swaps; ``eps < 0`` takes the sequential solution's own max/mean
load ratio, so the two compare at equal balance.

Objectives and bounds are reported in :data:`~.problem.REPORTED_UNITS` (model values times
:attr:`~.problem.TunerProblem.cost_unit`): the sum over layer boundaries of the largest weighted
GPU-pair traffic, in tokens (``cross``), token-hops (``hops``) or seconds (``time``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

from ...errors import SolveFailedError, input_error
from ...milp import Termination
from ...progress import Run
from ...solution import Solution, make_solution
from .._common import MIN_SOLVE_S, assignment_from_x, proven_gap, run_params, solve_model
from .._labels import relabel_by_first_appearance
from .heuristics import swap_descent
from .ilp1 import solve_ilp1
from .ilp2 import bottleneck_warm_start, build_ilp2, cluster_traffic, ilp2_decomposition
from .joint import build_joint, joint_traffic
from .problem import TunerProblem, bottleneck_objective, build_problem, load_deviation, max_load_ratio

__all__ = ["run_joint", "run_sequential"]


def _solution(problem: TunerProblem, topology: Any, method: str, a: np.ndarray, obj: float, bound: float | None,
              termination: Termination, wall: float, info: dict[str, Any], limit: str = "none") -> Solution:
    """The method's solution; ``obj`` and ``bound`` in model units, reported times ``cost_unit``."""
    from ...placement import Placement

    placement = Placement.from_assignment(a, topology.num_gpus, metadata={"method": method, "cost": problem.cost})
    info = dict(info)
    info.update(max_load_ratio=max_load_ratio(problem, a), load_deviation=load_deviation(problem, a),
                cost=problem.cost)
    unit = problem.cost_unit
    return make_solution(placement, method, termination=termination, objective=obj * unit,
                         bound=None if bound is None else bound * unit, wall_time=wall, info=info, limit=limit)


def _termination(obj: float, bound: float | None, target: float) -> Termination:
    g = proven_gap(obj, bound)
    return Termination.OPTIMAL if g is not None and g <= max(target, 1e-9) else Termination.FEASIBLE


def _canonical(problem: TunerProblem, a: np.ndarray) -> np.ndarray:
    """``a`` with interchangeable GPUs relabelled as the joint model's symmetry bounds demand."""
    if not problem.interchangeable_gpus:
        return a
    return relabel_by_first_appearance(a, problem.num_gpus, by_first_row=True)


def _stage_end(run: Run, seconds: float | None) -> float:
    """The clock value a stage of ``seconds`` (``None``: the rest of the run) must stop at."""
    end = run.deadline.until()
    return end if seconds is None else min(end, time.perf_counter() + seconds)


def run_sequential(stats: Any, topology: Any, *, cost: str, backend: str, time_limit: float, rel_gap: float,
                   threads: int, verbose: bool, run: Run | None = None, budget: float | None = None) -> Solution:
    """MoETuner's ILP1 then ILP2 (module docstring); options are the method's.

    ``run`` (:class:`placement.progress.Run`) holds the deadline shared with the caller (a run
    with ``time_limit`` starts here without one); ``budget`` caps the seconds this solve may use
    within it (``None``: the rest).  The stages take 30 % (ILP1), 10 % (cluster swaps) and the
    rest (ILP2) of the time; after Ctrl-C or at the deadline the stages left are skipped, and
    ILP1's unsolved layers keep their greedy clusters.
    """
    run = run if run is not None else Run("moetuner", time_limit, verbose=verbose)
    t0 = time.perf_counter()
    end = _stage_end(run, budget)
    total = end - t0 if math.isfinite(end) else 0.0
    P = build_problem(stats, topology, cost)
    L, G = P.num_layers, P.num_gpus
    unit = P.cost_unit
    cl, obj1, bound1, term1 = solve_ilp1(P, backend, 0.3 * total if total else 0.0, rel_gap, threads, run=run)
    W = cluster_traffic(P, cl)
    perm0, dec_bound = ilp2_decomposition(P, W)
    a0 = np.take_along_axis(perm0, cl, axis=1)
    obj0 = bottleneck_objective(P, a0)
    ilp2_term = "decomposition"
    a, obj, bound = a0, obj0, min(dec_bound, obj0)
    run.update(incumbent=obj * unit, stage="ILP2 (clusters to GPUs): decomposition")
    gap0 = proven_gap(obj0, bound)
    if gap0 is not None and gap0 > rel_gap and not run.stopped:
        run.update(stage="ILP2: cluster swaps")
        a_sw = swap_descent(P, a0, min(time.perf_counter() + (0.1 * total if total else 10.0), end),
                            experts=False, run=run)
        if bottleneck_objective(P, a_sw) < obj:
            a, obj = a_sw, bottleneck_objective(P, a_sw)
            perm0 = np.empty((L, G), dtype=np.int64)
            perm0[np.arange(L)[:, None], cl] = a  # GPU of each cluster
            run.update(incumbent=obj * unit)
        res = None
        run.update(stage="ILP2 MILP (building)")
        model = run.bounded(lambda: build_ilp2(P, W), until=end)
        if model is not None:  # else the deadline or Ctrl-C came first
            with run.interruptible():
                onehot = np.zeros((L, G, G))
                onehot[np.arange(L)[:, None], np.arange(G)[None, :], perm0] = 1.0
                ws = bottleneck_warm_start(P, model, onehot, W, W.max(axis=2), "p")
                if P.interchangeable_gpus and not np.array_equal(perm0[0], np.arange(G)):
                    ws = None
                run.update(stage=f"ILP2 MILP ({model.num_vars} columns)")
                best = obj
                params = run_params(run, rel_gap=rel_gap, threads=threads, warm_start=ws,
                                    convert=lambda inc, bnd: (min(best, inc) * unit if not math.isnan(inc) else None,
                                                              None))
                if params is not None:
                    left = end - time.perf_counter()
                    params = dataclasses.replace(params, time_limit=min(params.time_limit or math.inf, left)
                                                 if math.isfinite(left) else params.time_limit)
                    if left >= MIN_SOLVE_S:
                        try:
                            res = solve_model(model, backend, params, run)
                        except SolveFailedError:
                            res = None
        if res is not None:
            run.note(res.limit)
            perm = assignment_from_x(model.block_values(res.solution, "p"))  # [L, G] GPU of each cluster
            a1 = np.take_along_axis(perm, cl, axis=1)
            if bottleneck_objective(P, a1) < obj:
                a, obj = a1, bottleneck_objective(P, a1)
                run.update(incumbent=obj * unit)
            if math.isfinite(res.bound):
                bound = max(bound, float(res.bound))
            bound = min(bound, obj)
            ilp2_term = res.termination.value
    # The bound and ILP2's optimality hold for ILP2 given the clusters ILP1 returned; another clustering
    # tied for ILP1's optimum can communicate less (tests/test_contract.py, instance pair-top1), so the
    # two-stage method proves nothing about its reported objective: no optimality claim, no bound.
    info = {"ilp1_objective": obj1, "ilp1_bound": bound1, "ilp1_gap": proven_gap(obj1, bound1),
            "ilp1_termination": term1.value, "ilp2_termination": ilp2_term, "backend": backend,
            "ilp2_bound_given_clusters": bound * P.cost_unit if bound is not None else None,
            "ilp2_optimal_given_clusters": _termination(obj, bound, rel_gap) is Termination.OPTIMAL}
    return _solution(P, topology, "moetuner", a, obj, None, Termination.HEURISTIC, time.perf_counter() - t0, info,
                     limit=run.limit)


def run_joint(stats: Any, topology: Any, *, cost: str, eps: float, warm: bool, backend: str,
              time_limit: float, rel_gap: float, threads: int, verbose: bool,
              max_columns: int = 4_000_000, run: Run | None = None) -> Solution:
    """The joint model (module docstring); ``eps < 0`` takes the sequential solution's own load ratio.

    A model of more than ``max_columns`` columns (``x [L, E, G]`` plus ``r [L - 1, E, G, G]``) is refused
    before anything is built: its memory, not the solver, is the limit (58 x 256 experts on 32 GPUs would
    need 15 M columns and more than 20 GiB).  ``run`` as in :func:`run_sequential`: the sequential warm
    start takes 30 % of the time, the swaps 20 % of the rest, the joint MILP what is left.
    """
    run = run if run is not None else Run("moetuner-joint", time_limit, verbose=verbose)
    t0 = time.perf_counter()
    L, E, G = stats.trace.num_layers, stats.trace.num_experts, topology.num_gpus
    columns = L * E * G + max(L - 1, 0) * E * G * G + max(L - 1, 0)
    if columns > max_columns:
        raise input_error(f"the joint model would have {columns:,} columns ({L} layers x {E} experts x {G}^2 GPU "
                          f"pairs), more than max_columns={max_columns:,}; use moetuner (sequential), fewer GPUs, "
                          "or raise max_columns if the machine has the memory", field="max_columns")
    P = build_problem(stats, topology, cost)
    unit = P.cost_unit
    timed = run.deadline.limit is not None
    info: dict[str, Any] = {}
    a0 = None
    if warm or eps < 0:
        seq = run_sequential(stats, topology, cost=cost, backend=backend, time_limit=0.0, rel_gap=rel_gap,
                             threads=threads, verbose=False, run=run,
                             budget=0.3 * run.deadline.budget() if timed else None)
        a0 = _canonical(P, seq.placement.assignment())
        info["sequential_objective"] = bottleneck_objective(P, a0) * unit
        info["sequential_max_load_ratio"] = max_load_ratio(P, a0)
        if eps < 0:
            eps = max_load_ratio(P, a0) - 1.0 + 1e-9
    cap = (1.0 + eps) * P.load.sum(axis=1) / G
    hot = P.load.max(axis=1)
    if np.any(hot > cap + 1e-9):
        layer = int(np.argmax(hot - cap))
        need = hot[layer] / (P.load[layer].sum() / G) - 1.0
        raise input_error(f"eps={eps} is infeasible: expert {int(np.argmax(P.load[layer]))} of layer {layer} "
                          f"alone exceeds (1 + eps) x the mean GPU load; use eps >= {need:.3g}", field="eps")
    feasible_start = a0 is not None and max_load_ratio(P, a0) <= 1.0 + eps + 1e-12
    if feasible_start and not run.stopped:
        run.update(incumbent=bottleneck_objective(P, a0) * unit, stage="expert swaps")
        a0 = _canonical(P, swap_descent(P, a0, run.deadline.until(0.2) if timed else time.perf_counter() + 10.0,
                                        experts=True, cap=cap, run=run))
        run.update(incumbent=bottleneck_objective(P, a0) * unit)
    res = None
    model = None
    with run.interruptible():
        if not run.stopped:
            run.update(stage="joint MILP (building)")
            model = run.bounded(lambda: build_joint(P, eps))
        if model is not None:
            W, M = joint_traffic(P)
            info.update(eps=eps, model_vars=model.num_vars, model_rows=model.num_rows)
            ws = None
            if warm and feasible_start:
                onehot = np.zeros((L, E, G))
                onehot[np.arange(L)[:, None], np.arange(E)[None, :], a0] = 1.0
                ws = bottleneck_warm_start(P, model, onehot, W, M, "x")
            best = bottleneck_objective(P, a0) if feasible_start else math.inf

            def convert(inc: float, bnd: float) -> tuple[float | None, float | None]:
                o = min(best, inc) if not math.isnan(inc) else best
                return (o * unit if math.isfinite(o) else None), (min(bnd, o) * unit if math.isfinite(bnd) else None)

            run.update(stage=f"joint MILP ({model.num_vars} columns, {model.num_rows} rows)")
            params = run_params(run, rel_gap=rel_gap, threads=threads, warm_start=ws, convert=convert)
            if params is not None:
                try:
                    res = solve_model(model, backend, params, run)
                except SolveFailedError as exc:
                    if not (run.stopped and feasible_start):
                        raise SolveFailedError(f"moetuner-joint with eps={eps}: {exc}") from exc
    if res is None:  # out of time or Ctrl-C before the joint MILP gave an answer: the warm start stands
        if not feasible_start or a0 is None:
            raise SolveFailedError(f"moetuner-joint stopped ({run.limit}) before any placement within eps={eps} "
                                   "was found; raise time_limit")
        obj = bottleneck_objective(P, a0)
        info.update(solver_termination="not run", backend=backend)
        return _solution(P, topology, "moetuner-joint", a0, obj, None, Termination.FEASIBLE,
                         time.perf_counter() - t0, info, limit=run.limit)
    run.note(res.limit)
    a = assignment_from_x(model.block_values(res.solution, "x"))
    obj = bottleneck_objective(P, a)
    if a0 is not None and feasible_start and bottleneck_objective(P, a0) < obj:
        a, obj = a0, bottleneck_objective(P, a0)
    bound = float(res.bound) if math.isfinite(res.bound) else None
    bound = None if bound is None else min(bound, obj)
    info.update(solver_termination=res.termination.value, backend=res.backend)
    if info.get("sequential_objective"):
        info["gain_vs_sequential"] = 1.0 - obj * P.cost_unit / info["sequential_objective"]
    termination = _termination(obj, bound, rel_gap)
    return _solution(P, topology, "moetuner-joint", a, obj, bound, termination, time.perf_counter() - t0, info,
                     limit="none" if termination is Termination.OPTIMAL else run.limit)
