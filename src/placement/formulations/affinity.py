r"""Inter-layer affinity placement: ExFlow (arXiv 2401.08383) and MoETuner (arXiv 2502.06643).

Tokens routed to expert ``i`` at layer ``l`` tend to go to a few experts at layer ``l + 1``;
placing those on one GPU keeps the token local under *context-coherent* dispatch (the
evaluator's ``dispatch="coherent"``: every GPU holds the context, a token only crosses GPUs
at a layer boundary whose two experts sit on different GPUs).  This module registers the four
methods; each model is written out (Data / Variables / Objective / Constraints) next to the code
that builds it:

``exflow``
    ExFlow's model in a compact exact form (:mod:`placement.formulations.exflow.model`), solved
    exactly when possible (:mod:`~placement.formulations.exflow.exact`) and bounded always
    (:mod:`~placement.formulations.exflow.bounds`); the solve is
    :mod:`~placement.formulations.exflow.driver`.
``exflow-bisect``
    ExFlow's own scaling recipe (recursive bisection of the GPU set on growing token
    prefixes, a capped MILP per split, :mod:`placement.formulations.exflow.bisection`): the
    baseline ``exflow`` must beat.
``moetuner``
    MoETuner's two ILPs in sequence: ILP1 (balanced clusters per layer,
    :mod:`placement.formulations.moetuner.ilp1`), ILP2 (clusters to GPUs, minimising each
    boundary's largest weighted GPU-pair traffic, :mod:`placement.formulations.moetuner.ilp2`).
``moetuner-joint``
    One model (:mod:`placement.formulations.moetuner.joint`): ILP2's objective over expert
    placements directly, with load balance as a constraint (max GPU load <= (1 + eps) mean).

Pair costs and bytes per token come from :mod:`placement.costs` (tokens of the trace's model in
bf16: these methods have no dtype option).  Reported units:

* ``exflow``/``exflow-bisect``: ``cost="cross"`` the evaluator's ``boundary_cross_fraction``;
  ``"hops"`` hop-transmissions per token (the evaluator's coherent ``hop_transmissions``);
  ``"time"`` seconds per token (each send at its route's ``seconds_per_token``);
* ``moetuner``/``moetuner-joint``: the sum over layer boundaries of the largest weighted GPU-pair
  traffic, in tokens (``cross``), token-hops (``hops``) or seconds (``time``).

The gap is the project's :func:`~placement.milp.relative_gap`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..progress import begin
from ..registry import Method, Option, register, used_only_with
from ..solution import Solution, make_solution
from ._common import SOLVER_OPTIONS

if TYPE_CHECKING:  # pragma: no cover
    from ..stats import TraceStats
    from ..topology import Topology
    from .exflow import AffinityProblem, AffinityResult

__all__ = ["exflow_method", "exflow_bisect_method", "moetuner_method", "moetuner_joint_method"]

_COST_CHOICES = ("cross", "hops", "time")
#: Units of the progress reports (the reported objective of each cost, module docstring).
_UNITS = {"cross": "fraction", "hops": "hops/token", "time": "s/token"}
_TUNER_UNITS = {"cross": "tokens", "hops": "token-hops", "time": "s"}


def _solution(res: AffinityResult, problem: AffinityProblem, method: str, topology: Topology,
              extra: dict[str, Any] | None = None) -> Solution:
    """The solution of an ExFlow driver result; model units divided into reported units."""
    from ..placement import Placement

    info = dict(res.info)
    info.update(extra or {})
    wall = float(info.pop("wall_time", 0.0))
    limit = str(info.pop("limit", "none"))
    obj = res.objective / problem.scale
    bound = None if res.bound is None else res.bound / problem.scale
    placement = Placement.from_assignment(res.assignment, topology.num_gpus,
                                          metadata={"method": method, "cost": problem.cost})
    return make_solution(placement, method, termination=res.termination, objective=obj, bound=bound,
                         wall_time=wall, info=info, limit=limit)


# ---------------------------------------------------------------------------------------------- ExFlow
def exflow_method(stats: TraceStats, topology: Topology, cost: str = "cross", strategy: str = "auto",
                  dp_states: int = 5000, max_rows: int = 2_000_000, local_time: float = -1.0, seed: int = 0,
                  backend: str = "highs", time_limit: float = 60.0, rel_gap: float = 1e-6, threads: int = 0,
                  verbose: bool = False) -> Solution:
    """ExFlow's placement, exact where possible, with a proven bound everywhere.

    Objective and bound: ``boundary_cross_fraction`` (``cost="cross"``), hop-transmissions per
    token (``"hops"``) or seconds per token (``"time"``), coherent dispatch (module docstring).
    """
    from .exflow import build_problem, run_exflow

    run = begin("exflow", time_limit, unit=_UNITS[cost], verbose=verbose)
    run.update(stage="building the problem")
    problem = build_problem(stats, topology, cost)
    res = run_exflow(problem, strategy=strategy, backend=backend, time_limit=time_limit, rel_gap_target=rel_gap,
                     threads=threads, verbose=verbose, dp_states=dp_states, max_rows=max_rows,
                     local_time=local_time, seed=seed, run=run)
    return _solution(res, problem, "exflow", topology)


def exflow_bisect_method(stats: TraceStats, topology: Topology, prefixes: int = 4, solve_cap: float = 60.0,
                         backend: str = "highs", time_limit: float = 0.0, threads: int = 0) -> Solution:
    """ExFlow's recursive bisection on growing token prefixes (the paper's code), a baseline.

    Objective: the evaluator's ``boundary_cross_fraction``; no bound.
    """
    from .exflow import build_problem, run_bisect

    run = begin("exflow-bisect", time_limit, unit="fraction")
    problem = build_problem(stats, topology, "cross")
    res = run_bisect(stats, problem, prefixes=prefixes, solve_cap=solve_cap, time_limit=time_limit,
                     backend=backend, threads=threads, run=run)
    if run.limit != "none":
        res.info["limit"] = run.limit
    return _solution(res, problem, "exflow-bisect", topology)


# ---------------------------------------------------------------------------------------------- MoETuner
def moetuner_method(stats: TraceStats, topology: Topology, cost: str = "time", backend: str = "highs",
                    time_limit: float = 60.0, rel_gap: float = 1e-6, threads: int = 0,
                    verbose: bool = False) -> Solution:
    """MoETuner's ILP1 (balanced clusters) then ILP2 (clusters to GPUs).

    Objective and bound (ILP2's given ILP1's clusters): the sum over boundaries of the largest
    weighted GPU-pair traffic, in tokens (``cost="cross"``), token-hops or seconds (``"time"``).
    """
    from .moetuner import run_sequential

    run = begin("moetuner", time_limit, unit=_TUNER_UNITS[cost], verbose=verbose)
    return run_sequential(stats, topology, cost=cost, backend=backend, time_limit=time_limit, rel_gap=rel_gap,
                          threads=threads, verbose=verbose, run=run)


def moetuner_joint_method(stats: TraceStats, topology: Topology, cost: str = "time", eps: float = -1.0,
                          warm: bool = True, max_columns: int = 4_000_000, backend: str = "highs",
                          time_limit: float = 60.0, rel_gap: float = 1e-6, threads: int = 0,
                          verbose: bool = False) -> Solution:
    """MoETuner's communication objective with load balance as a constraint, in one model.

    Objective and bound in the units of :func:`moetuner_method`.
    """
    from .moetuner import run_joint

    run = begin("moetuner-joint", time_limit, unit=_TUNER_UNITS[cost], verbose=verbose)
    return run_joint(stats, topology, cost=cost, eps=eps, warm=warm, backend=backend, time_limit=time_limit,
                     rel_gap=rel_gap, threads=threads, verbose=verbose, max_columns=max_columns, run=run)


# ---------------------------------------------------------------------------------------------- registry
_PAPER_EXFLOW = "ExFlow, arXiv 2401.08383"
_PAPER_MOETUNER = "MoETuner, arXiv 2502.06643"

register(Method(
    "exflow", "ExFlow inter-layer affinity (compact exact MILP, DP/chain exact cases, local search + bound)",
    "placement.formulations.affinity:exflow_method", needs="tokens", kind="formulation", paper=_PAPER_EXFLOW,
    objective="coherent_cost",
    options=(Option("cost", str, "cross", "crossing cost: cross (0/1, the paper), hops, time", _COST_CHOICES),
             Option("strategy", str, "auto", "auto, milp, dp (exact, small layers) or local (search + bound)",
                    ("auto", "milp", "dp", "local")),
             Option("dp_states", int, 5000, "largest per-layer state count for the exact DP", minimum=1),
             Option("max_rows", int, 2_000_000, "auto skips the MILP beyond this many linking rows", minimum=0),
             Option("local_time", float, -1.0, "seconds of local search (-1: automatic share of time_limit)",
                    minimum=0.0, auto=-1.0),
             Option("seed", int, 0, "seed of the local search perturbations", minimum=0))
    + used_only_with(used_only_with(SOLVER_OPTIONS, ("backend",), "strategy", ("auto", "milp", "local")),
                     ("threads",), "strategy", ("auto", "milp"))))

register(Method(
    "exflow-bisect", "ExFlow's own recipe: recursive GPU bisection, growing token prefixes, capped MILPs",
    "placement.formulations.affinity:exflow_bisect_method", needs="tokens", kind="baseline",
    paper=_PAPER_EXFLOW, objective="coherent_cost",
    options=(Option("prefixes", int, 4, "growing token prefixes per split (N/2^(p-1) ... N)", minimum=1),
             Option("solve_cap", float, 60.0, "seconds per MILP solve (the paper's 60 s)", minimum=0.0),
             Option("backend", str, "highs", "solver backend (see placement.backends.BACKENDS)"),
             Option("time_limit", float, 0.0, "total seconds, shared evenly by the solves (0: only solve_cap)",
                    minimum=0.0),
             Option("threads", int, 0, "solver threads (0: the solver's default)", minimum=0))))

register(Method(
    "moetuner", "MoETuner ILP1 (balanced clusters per layer) then ILP2 (clusters to GPUs, min-max traffic)",
    "placement.formulations.affinity:moetuner_method", needs="tokens", kind="formulation", paper=_PAPER_MOETUNER,
    objective="boundary_bottleneck",
    options=(Option("cost", str, "time", "pair weight: time (seconds per byte), hops, cross", _COST_CHOICES),)
    + SOLVER_OPTIONS))

register(Method(
    "moetuner-joint", "MoETuner's objective and load balance (max <= (1+eps) mean) in one joint MILP",
    "placement.formulations.affinity:moetuner_joint_method", needs="tokens", kind="formulation",
    paper=_PAPER_MOETUNER, objective="boundary_bottleneck",
    options=(Option("cost", str, "time", "pair weight: time (seconds per byte), hops, cross", _COST_CHOICES),
             Option("eps", float, -1.0, "load tolerance: max GPU load <= (1 + eps) * mean in every layer "
                    "(-1: the sequential moetuner's own ratio, so the two compare at equal balance)", minimum=0.0,
                    auto=-1.0),
             Option("warm", bool, True, "warm-start from the sequential ILP1 -> ILP2 solution when feasible"),
             Option("max_columns", int, 4_000_000, "refuse, before building it, a joint model with more columns "
                    "(its memory grows with layers x experts x GPUs^2; 58 x 256 on 32 GPUs would need 15 M)",
                    minimum=1))
    + SOLVER_OPTIONS))
