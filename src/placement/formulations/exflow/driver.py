"""The ``exflow`` solve: exact shortcuts, local search, the decomposition bound, then the MILP.

``strategy="auto"``: with one expert per GPU and interchangeable GPUs the boundaries decouple
into assignment problems chained together (exact, :func:`~.exact.solve_chain`); when a layer has
at most ``dp_states`` assignments (to classes of GPUs no cost can tell apart) an exact dynamic
programme over layers (:func:`~.exact.solve_dp`); otherwise local search (:mod:`.heuristics`)
warm-starts the MILP (:mod:`.model`; skipped beyond ``max_rows`` rows).  The reported bound is the
larger of the MILP's and the decomposition bound (:mod:`.bounds`), both valid for the full
problem.  Objectives and bounds here are in model units (:mod:`.problem`); the method divides
them by :attr:`~.problem.AffinityProblem.scale`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import SolveFailedError, input_error
from ...milp import Termination
from ...progress import Run
from .._common import proven_gap, run_params, solve_model
from .bounds import boundary_bound
from .exact import dp_state_count, gpu_classes, solve_chain, solve_dp
from .heuristics import local_search
from .model import build_model, canonical_gpus, decode, warm_start
from .problem import AffinityProblem, check_balanced, objective

__all__ = ["AffinityResult", "run_exflow"]


@dataclass
class AffinityResult:
    """What a driver found, in model units.

    Attributes
    ----------
    assignment:
        ``int64 [L, E]`` GPU of each expert.
    objective:
        Its model-unit objective.
    bound:
        A proven lower bound (model units), or ``None``.
    termination:
        Why the driver stopped.
    info:
        Counters for the solution's ``info`` (``wall_time`` in seconds included).
    """

    assignment: np.ndarray
    objective: float
    bound: float | None
    termination: Termination
    info: dict[str, Any]


def run_exflow(problem: AffinityProblem, *, strategy: str = "auto", backend: str = "highs",
               time_limit: float = 60.0, rel_gap_target: float = 1e-6, threads: int = 0, verbose: bool = False,
               dp_states: int = 5000, max_rows: int = 2_000_000, local_time: float = -1.0, seed: int = 0,
               starts: list[np.ndarray] | None = None, run: Run | None = None) -> AffinityResult:
    """Solve the ExFlow placement (module docstring); the options are the method's.

    ``run`` (:class:`placement.progress.Run`) carries the deadline shared by every stage (counted
    from before the problem was built when the catalogue opened it) and receives progress in
    reported units (model units over :attr:`~.problem.AffinityProblem.scale`); without one, a run
    with ``time_limit`` starts here.  After Ctrl-C or at the deadline the stages still to come are
    skipped and the best assignment so far is returned with the best bound so far.
    """
    run = run if run is not None else Run("exflow", time_limit, verbose=verbose)
    t0 = time.perf_counter()
    scale = problem.scale
    info: dict[str, Any] = {"cost": problem.cost, "exact_cost_model": problem.exact_levels}

    def done(a: np.ndarray, bound: float | None, how: str) -> AffinityResult:
        check_balanced(problem, a)
        v = objective(problem, a)
        g = proven_gap(v, bound)
        term = Termination.OPTIMAL if g is not None and g <= max(rel_gap_target, 1e-9) else (
            Termination.FEASIBLE if bound is not None else Termination.HEURISTIC)
        info.update(solver=how, wall_time=time.perf_counter() - t0)
        if term is not Termination.OPTIMAL and run.limit != "none":
            info["limit"] = run.limit
        return AffinityResult(a, v, bound if bound is None else min(bound, v), term, info)

    if strategy in ("auto", "dp"):
        run.update(stage="exact shortcuts (chain, DP)")
        a = solve_chain(problem)
        if a is not None:
            return done(a, objective(problem, a), "chain")  # each boundary at its own optimum
        a = solve_dp(problem, dp_states)
        if a is not None:
            return done(a, objective(problem, a), "dp")
        if strategy == "dp":
            classes = gpu_classes(problem)
            S = dp_state_count(problem.num_experts, [problem.experts_per_gpu * len(c) for c in classes])
            raise input_error(f"strategy 'dp' needs {S} states per layer, more than dp_states={dp_states}; "
                              "raise dp_states or use strategy 'auto'", field="strategy")
    n_pairs = sum(int(t.nnz) for t in problem.transitions)
    rows = n_pairs * sum(int(g.max()) + 1 for _, g in problem.levels)
    use_milp = strategy == "milp" or (strategy == "auto" and rows <= max_rows)
    info.update(pairs=n_pairs, milp_rows=rows)
    deadline = run.deadline
    # Shares of the time left: local search then bound (with the MILP after them), or bound then search.
    if local_time >= 0:
        ls_until = min(time.perf_counter() + local_time, deadline.until())
    elif use_milp:
        ls_until = min(deadline.until(0.1), time.perf_counter() + 5.0)
    else:
        ls_until = None  # after the bound: what is left

    def on_improve(v: float) -> None:
        run.update(incumbent=v / scale)

    def bound_until() -> float:
        return min(deadline.until(0.2 if use_milp else 0.1), time.perf_counter() + 60.0)

    def search(until: float, target: float = -math.inf) -> tuple[np.ndarray, float]:
        run.update(stage="local search")
        a, v, ls_info = local_search(problem, max(until - time.perf_counter(), 0.0), seed, starts, target=target,
                                     on_improve=on_improve, run=run)
        info.update(ls_info)
        return a, v

    def decomposition_bound() -> float:
        run.update(stage="decomposition bound")
        b, b_info = boundary_bound(problem, backend, bound_until(), run=run)
        info.update(b_info)
        run.update(bound=b / scale)
        return b

    if ls_until is not None:
        a, v = search(ls_until)
        bound = decomposition_bound()
    else:
        bound = decomposition_bound()
        a, v = search(deadline.until() if deadline.limit is not None else time.perf_counter() + 30.0, target=bound)
    info.update(decomposition_bound=bound / scale)
    gap = proven_gap(v, bound)
    if (gap is not None and gap <= rel_gap_target) or not use_milp or run.stopped:
        return done(a, bound, "local+bound")
    res = None
    run.update(stage="MILP (building)")
    model = run.bounded(lambda: build_model(problem))
    if model is None:  # the deadline or Ctrl-C came first
        return done(a, bound, "local+bound")
    with run.interruptible():
        info.update(model_vars=model.num_vars, model_rows=model.num_rows)
        ws = warm_start(problem, model, canonical_gpus(problem, a))
        best, proven = v, bound

        def convert(inc: float, bnd: float) -> tuple[float | None, float | None]:
            # the MILP's value is the objective only when the levels are exact; its bound always holds
            o = min(best, inc) if problem.exact_levels and not math.isnan(inc) else best
            b = max(proven, bnd) if math.isfinite(bnd) else proven
            return o / scale, min(b, o) / scale

        run.update(stage=f"MILP ({model.num_vars} columns, {model.num_rows} rows)")
        params = run_params(run, rel_gap=rel_gap_target, threads=threads, warm_start=ws, convert=convert)
        if params is not None:
            try:
                res = solve_model(model, backend, params, run)
            except SolveFailedError:
                res = None  # stopped before any solution: the search's answer stands
    if res is None:  # no time left after building, Ctrl-C, or no MILP solution
        return done(a, bound, "local+bound")
    run.note(res.limit)
    a2 = decode(model, res.solution)
    v2 = objective(problem, a2)
    info.update(milp_termination=res.termination.value, milp_limit=res.limit.value, backend=res.backend,
                nodes=res.nodes)
    if v2 < v:
        a, v = a2, v2
    milp_bound = float(res.bound) if math.isfinite(res.bound) else -math.inf
    info["milp_bound"] = milp_bound / scale
    return done(a, max(bound, milp_bound), "milp")
