r"""Inter-layer affinity placement: ExFlow (arXiv 2401.08383) and MoETuner (arXiv 2502.06643).

Tokens routed to expert ``i`` at layer ``l`` tend to go to a few experts at layer ``l + 1``;
placing those on one GPU keeps the token local under *context-coherent* dispatch (the
evaluator's ``dispatch="coherent"``: every GPU holds the context, a token only crosses GPUs
at a layer boundary whose two experts sit on different GPUs).  Registered methods:

``exflow``
    ExFlow's model in a compact exact form, solved exactly when possible and bounded always.
``exflow-bisect``
    ExFlow's own scaling recipe (recursive bisection of the GPU set on growing token
    prefixes, a capped MILP per split): the baseline ``exflow`` must beat.
``moetuner``
    MoETuner's two ILPs in sequence: ILP1 (balanced clusters per layer), ILP2 (clusters to
    GPUs, minimising each boundary's largest bandwidth-weighted GPU-pair traffic).
``moetuner-joint``
    One model: ILP2's objective over expert placements directly, with load balance as a
    constraint (max GPU load <= (1 + eps) mean).

ExFlow (compact exact form)
---------------------------
Data
    ``T[l][i, j]`` transition counts (:attr:`placement.stats.TraceStats.transitions`: every
    one of a token's ``k x k`` (layer ``l``, layer ``l + 1``) expert pairs counted once);
    ``m = E / G``; a crossing cost ``C[g, h]`` (``cost="cross"``: ``1 - I``; ``"hops"``:
    topology hops; ``"time"``: microseconds per token sent) written as a hierarchy
    ``C >= sum_k w_k [group_k(g) != group_k(h)]`` over the levels GPU, server, rack
    (exact for the presets: GPUs first, then servers, as the paper stages it); for
    ``hops``/``time`` a layer-0 term ``F[e, g]`` (dispatch from the token origins).
Variables
    ``x[l, e, g]`` binary (expert ``e`` of layer ``l`` on GPU ``g``); one continuous
    ``y_k[p] in [0, 1]`` per level and per *non-zero* transition ``p = (l, i, j)``, instead
    of the paper's one indicator per token.
Objective
    ``min sum_k w_k sum_p T_p y_k[p] + sum_{e, g} F[e, g] x[0, e, g]``
Constraints
    ``sum_g x[l, e, g] = 1``; ``sum_e x[l, e, g] = m``;
    ``y_k[p] >= sum_{g in h} x[l, i, g] - sum_{g in h} x[l+1, j, g]`` for every group ``h``
    of level ``k`` (so ``y_k[p] = 1`` exactly when the pair's groups differ);
    valid degree cuts ``sum_{j: T_lij > 0} y_k[l, i, j] >= deg(i) - m * |group|`` (and the
    same over ``i`` for each ``j``): a group holds ``m |group|`` experts of the next layer;
    with interchangeable GPUs, ``x[0, e, g] = 0`` for ``g > e`` (relabel GPUs by their
    first layer-0 expert).

For ``cost="cross"`` the objective divided by ``k^2 N (L - 1)`` is the evaluator's
``boundary_cross_fraction``; for ``cost="hops"`` divided by ``k N`` it is the coherent
``hop_transmissions`` (pairs weigh ``1/k``, layer 0 from the origins, no dedup).

Solving (``strategy="auto"``): with one expert per GPU and interchangeable GPUs the
boundaries decouple into assignment problems chained together (exact); when a layer has at
most ``dp_states`` assignments (to classes of GPUs no cost can tell apart) an exact
dynamic programme over layers; otherwise local search (each layer re-placed optimally by
an assignment problem given its neighbours, forward/backward sweeps, perturbation of layer
windows) warm-starts the MILP above (skipped beyond ``max_rows`` rows).  The reported bound
is the larger of the MILP's and a decomposition bound valid for the full problem: the sum
over boundaries of ``w_k (sum T_l - max b-matching of T_l)`` with ``b = m |group|``, plus
the layer-0 term's own optimum (see :func:`~placement.formulations._exflow.boundary_bound`).

MoETuner
--------
ILP1 (per layer ``l``; data ``n[l, e]`` expert token load)
    ``c[l, e, q]`` binary (expert in cluster ``q``), ``d[l, q] >= |sum_e n[l, e] c[l, e, q] - mean_l|``;
    ``sum_q c = 1``, ``sum_e c = m``; ``c[l, e, q] = 0`` for ``q > e``;
    ``min sum_{l, q} d[l, q]`` (equals ``sum_{l, g} |gpu_load[l, g] - mean_l|`` of the evaluator).
ILP2 (clusters fixed; ``W[l][q, r] = sum_{i in q, j in r} T[l][i, j] / k`` tokens)
    ``p[l, q, u]`` binary (cluster ``q`` of layer ``l`` on GPU ``u``, a permutation per layer);
    ``r[l, q, u, v] >= sum_r W[l][q, r] p[l+1, r, v] - M_lq (1 - p[l, q, u])``, ``r >= 0``
    (the product ``p[l, q, u] * traffic(q -> v)`` linearised, ``M_lq = max_r W[l][q, r]``);
    ``z[l] >= D[u, v] sum_q r[l, q, u, v]`` for ``u != v``;  ``min sum_l z[l]``.
    ``D`` is the bandwidth weight: ``cost="time"`` seconds per byte (normalised to max 1),
    ``"hops"`` hop counts, ``"cross"`` ``1 - I``.
Joint (``moetuner-joint``)
    ILP2 over experts instead of clusters: ``x[l, e, g]`` binary, ``sum_g x = 1``,
    ``sum_e x = m``, ``sum_e n[l, e] x[l, e, g] <= (1 + eps) mean_l``,
    ``r[l, i, u, v] >= sum_j T[l][i, j] / k x[l+1, j, v] - M_li (1 - x[l, i, u])``,
    ``z[l] >= D[u, v] sum_i r[l, i, u, v]``; ``min sum_l z[l]``.

Objectives are reported in the evaluator's units (fractions, hop-transmissions per token,
tokens x weight); the gap is the project's :func:`~placement.milp.relative_gap`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..registry import Method, Option, register
from ..solution import Solution, make_solution
from ._common import SOLVER_OPTIONS

if TYPE_CHECKING:  # pragma: no cover
    from ..stats import TraceStats
    from ..topology import Topology

__all__ = ["exflow_method", "exflow_bisect_method", "moetuner_method", "moetuner_joint_method"]

_COST_CHOICES = ("cross", "hops", "time")


def _solution(res: Any, P: Any, method: str, topology: Topology, extra: dict[str, Any] | None = None) -> Solution:
    from ..placement import Placement

    info = dict(res.info)
    info.update(extra or {})
    wall = float(info.pop("wall_time", 0.0))
    obj = res.objective / P.scale
    bound = None if res.bound is None else res.bound / P.scale
    placement = Placement.from_assignment(res.assignment, topology.num_gpus,
                                          metadata={"method": method, "cost": P.cost})
    return make_solution(placement, method, termination=res.termination, objective=obj, bound=bound,
                         wall_time=wall, info=info)


# ---------------------------------------------------------------------------------------------- ExFlow
def exflow_method(stats: TraceStats, topology: Topology, cost: str = "cross", strategy: str = "auto",
                  dp_states: int = 5000, max_rows: int = 2_000_000, local_time: float = -1.0, seed: int = 0,
                  backend: str = "highs", time_limit: float = 60.0, rel_gap: float = 1e-6, threads: int = 0,
                  verbose: bool = False) -> Solution:
    """ExFlow's placement, exact where possible, with a proven bound everywhere (module docstring)."""
    from ._exflow import build_problem, run_exflow

    P = build_problem(stats, topology, cost)
    res = run_exflow(P, strategy=strategy, backend=backend, time_limit=time_limit, rel_gap_target=rel_gap,
                     threads=threads, verbose=verbose, dp_states=dp_states, max_rows=max_rows,
                     local_time=local_time, seed=seed)
    return _solution(res, P, "exflow", topology)


def exflow_bisect_method(stats: TraceStats, topology: Topology, prefixes: int = 4, solve_cap: float = 60.0,
                         backend: str = "highs", time_limit: float = 0.0, threads: int = 0) -> Solution:
    """ExFlow's recursive bisection on growing token prefixes (the paper's code), a baseline."""
    from ._exflow import build_problem, run_bisect

    P = build_problem(stats, topology, "cross")
    res = run_bisect(stats, P, prefixes=prefixes, solve_cap=solve_cap, time_limit=time_limit, backend=backend,
                     threads=threads)
    return _solution(res, P, "exflow-bisect", topology)


# ---------------------------------------------------------------------------------------------- MoETuner
def moetuner_method(stats: TraceStats, topology: Topology, cost: str = "time", backend: str = "highs",
                    time_limit: float = 60.0, rel_gap: float = 1e-6, threads: int = 0,
                    verbose: bool = False) -> Solution:
    """MoETuner's ILP1 (balanced clusters) then ILP2 (clusters to GPUs), module docstring."""
    from ._moetuner import run_sequential

    return run_sequential(stats, topology, cost=cost, backend=backend, time_limit=time_limit, rel_gap=rel_gap,
                          threads=threads, verbose=verbose)


def moetuner_joint_method(stats: TraceStats, topology: Topology, cost: str = "time", eps: float = -1.0,
                          warm: bool = True, backend: str = "highs", time_limit: float = 60.0,
                          rel_gap: float = 1e-6, threads: int = 0, verbose: bool = False) -> Solution:
    """MoETuner's communication objective with load balance as a constraint, in one model."""
    from ._moetuner import run_joint

    return run_joint(stats, topology, cost=cost, eps=eps, warm=warm, backend=backend, time_limit=time_limit,
                     rel_gap=rel_gap, threads=threads, verbose=verbose)


# ---------------------------------------------------------------------------------------------- registry
_PAPER_EXFLOW = "ExFlow, arXiv 2401.08383"
_PAPER_MOETUNER = "MoETuner, arXiv 2502.06643"

register(Method(
    "exflow", "ExFlow inter-layer affinity (compact exact MILP, DP/chain exact cases, local search + bound)",
    "placement.formulations.affinity:exflow_method", needs="tokens", kind="formulation", paper=_PAPER_EXFLOW,
    options=(Option("cost", str, "cross", "crossing cost: cross (0/1, the paper), hops, time", _COST_CHOICES),
             Option("strategy", str, "auto", "auto, milp, dp (exact, small layers) or local (search + bound)",
                    ("auto", "milp", "dp", "local")),
             Option("dp_states", int, 5000, "largest per-layer state count for the exact DP"),
             Option("max_rows", int, 2_000_000, "auto skips the MILP beyond this many linking rows"),
             Option("local_time", float, -1.0, "seconds of local search (-1: automatic share of time_limit)"),
             Option("seed", int, 0, "seed of the local search perturbations"))
    + SOLVER_OPTIONS))

register(Method(
    "exflow-bisect", "ExFlow's own recipe: recursive GPU bisection, growing token prefixes, capped MILPs",
    "placement.formulations.affinity:exflow_bisect_method", needs="tokens", kind="baseline",
    paper=_PAPER_EXFLOW,
    options=(Option("prefixes", int, 4, "growing token prefixes per split (N/2^(p-1) ... N)"),
             Option("solve_cap", float, 60.0, "seconds per MILP solve (the paper's 60 s)", minimum=0.0),
             Option("backend", str, "highs", "solver backend (see placement.backends.BACKENDS)"),
             Option("time_limit", float, 0.0, "total seconds, shared evenly by the solves (0: only solve_cap)",
                    minimum=0.0),
             Option("threads", int, 0, "solver threads (0: the solver's default)", minimum=0))))

register(Method(
    "moetuner", "MoETuner ILP1 (balanced clusters per layer) then ILP2 (clusters to GPUs, min-max traffic)",
    "placement.formulations.affinity:moetuner_method", needs="tokens", kind="formulation", paper=_PAPER_MOETUNER,
    options=(Option("cost", str, "time", "pair weight: time (seconds per byte), hops, cross", _COST_CHOICES),)
    + SOLVER_OPTIONS))

register(Method(
    "moetuner-joint", "MoETuner's objective and load balance (max <= (1+eps) mean) in one joint MILP",
    "placement.formulations.affinity:moetuner_joint_method", needs="tokens", kind="formulation",
    paper=_PAPER_MOETUNER,
    options=(Option("cost", str, "time", "pair weight: time (seconds per byte), hops, cross", _COST_CHOICES),
             Option("eps", float, -1.0, "load tolerance: max GPU load <= (1 + eps) * mean in every layer "
                    "(-1: the sequential moetuner's own ratio, so the two compare at equal balance)"),
             Option("warm", bool, True, "warm-start from the sequential ILP1 -> ILP2 solution when feasible"))
    + SOLVER_OPTIONS))
