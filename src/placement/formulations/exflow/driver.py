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

from ...errors import input_error
from ...milp import Termination
from .._common import proven_gap, solve_model, solver_params
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
               starts: list[np.ndarray] | None = None) -> AffinityResult:
    """Solve the ExFlow placement (module docstring); the options are the method's."""
    t0 = time.perf_counter()
    limit = time_limit if time_limit and time_limit > 0 else math.inf
    deadline = t0 + limit
    info: dict[str, Any] = {"cost": problem.cost, "exact_cost_model": problem.exact_levels}

    def done(a: np.ndarray, bound: float | None, how: str) -> AffinityResult:
        check_balanced(problem, a)
        v = objective(problem, a)
        g = proven_gap(v, bound)
        term = Termination.OPTIMAL if g is not None and g <= max(rel_gap_target, 1e-9) else (
            Termination.FEASIBLE if bound is not None else Termination.HEURISTIC)
        info.update(solver=how, wall_time=time.perf_counter() - t0)
        return AffinityResult(a, v, bound if bound is None else min(bound, v), term, info)

    if strategy in ("auto", "dp"):
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
    if local_time >= 0:
        ls_budget = local_time
    elif use_milp:
        ls_budget = min(0.1 * limit, 5.0)
    else:
        ls_budget = None  # after the bound: what is left
    bound_deadline = t0 + (min((0.2 if use_milp else 0.1) * limit, 60.0) if math.isfinite(limit) else 60.0)
    if ls_budget is not None:
        a, v, ls_info = local_search(problem, ls_budget, seed, starts)
        info.update(ls_info)
        bound, b_info = boundary_bound(problem, backend, bound_deadline)
    else:
        bound, b_info = boundary_bound(problem, backend, bound_deadline)
        left = deadline - time.perf_counter() - 0.5
        a, v, ls_info = local_search(problem, max(left, 0.0) if math.isfinite(left) else 30.0, seed, starts,
                                     target=bound)
        info.update(ls_info)
    info.update(b_info, decomposition_bound=bound / problem.scale)
    gap = proven_gap(v, bound)
    if (gap is not None and gap <= rel_gap_target) or not use_milp:
        return done(a, bound, "local+bound")
    model = build_model(problem)
    info.update(model_vars=model.num_vars, model_rows=model.num_rows)
    left = deadline - time.perf_counter()
    params = solver_params(time_limit=max(left, 1.0) if math.isfinite(left) else 0.0, rel_gap=rel_gap_target,
                           threads=threads, verbose=verbose,
                           warm_start=warm_start(problem, model, canonical_gpus(problem, a)))
    res = solve_model(model, backend, params)
    a2 = decode(model, res.solution)
    v2 = objective(problem, a2)
    info.update(milp_termination=res.termination.value, milp_limit=res.limit.value, backend=res.backend,
                nodes=res.nodes)
    if v2 < v:
        a, v = a2, v2
    milp_bound = float(res.bound) if math.isfinite(res.bound) else -math.inf
    info["milp_bound"] = milp_bound / problem.scale
    return done(a, max(bound, milp_bound), "milp")
