r"""Congestion-aware placement: minimise the evaluator's modelled all-to-all time directly.

Registered as method ``alltoall-time``.  Fewest hops is not fastest: the transmission ILP
(:mod:`placement.formulations.transmission`) puts the hottest experts on the GPUs that are
cheapest *on average*, which concentrates their traffic on the few links into those GPUs.  The
evaluator (:func:`placement.evaluate.evaluate`) times a layer's all-to-all, per phase, as the
busiest link's bytes over its bandwidth plus a latency; this method minimises exactly that.

Data (per layer ``l``; uniform origins, origin dispatch, no de-duplication)
    ``w[e]``: selections of expert ``e`` in the trace (:attr:`TraceStats.load`).
    ``R[(u, v), a]``: 1 when the route from GPU ``u`` to GPU ``v`` uses directed arc ``a``
    (:attr:`Topology.route_matrix`); ``bw[a]``: its bandwidth; ``b``: bytes per token,
    :func:`placement.costs.wire_for` the trace's model with the ``hidden_size`` and ``dtype``
    options (``hidden_size * DTYPE_BYTES[dtype]``, the evaluator's defaults).
    ``Kd[g, a] = b / (G * bw[a]) * sum_u R[(u, g), a]``: seconds arc ``a`` spends in the dispatch
    phase per token of an expert on GPU ``g`` (tokens start on every GPU with probability
    ``1 / G``); ``Kc[g, a] = b / (G * bw[a]) * sum_u R[(g, u), a]`` the same for the combine phase
    (the transposed traffic).  Only arcs with a non-zero column are kept (others carry nothing).
    ``m``: experts of one layer per GPU (``experts_per_gpu``, default ``ceil(E / G)``).
Variables
    ``x[e, g]`` in {0, 1}: expert ``e`` lives on GPU ``g``; ``t_d, t_c >= 0``: phase times.
Objective
    ``min t_d + t_c`` seconds (summed over layers: the layers decouple).  The reported objective
    and bound are seconds; each layer's MILP carries its times divided by a power of two near
    the layer's heuristic objective (:func:`~placement.formulations._common.power_of_two_near`,
    exact), and its bound is multiplied back.
Constraints
    ``sum_g x[e, g] = 1``; ``sum_e x[e, g] <= m``;
    ``sum_{e, g} w[e] Kd[g, a] x[e, g] <= t_d`` for every kept dispatch arc, likewise combine.

The objective of a placement is the evaluator's ``alltoall_time`` (``origins="uniform"``,
``dispatch="origin"``, ``dedup=False``, same ``hidden_size`` and ``dtype``) minus its latency
terms; the tests check it to 1e-9.  **Latency assumption**: the evaluator adds, per layer and
phase, the largest route latency among GPU pairs that exchange tokens.  With uniform origins
every GPU sends to every GPU that holds a used expert, so when every GPU receives tokens (the
usual case: ``E >= G`` and no GPU holds only unused experts) that term is the topology's largest
GPU-to-GPU latency, a constant that no placement changes; it is left out of the objective and
reported as ``info["latency_s"]`` (``2 * L * max latency``, an upper bound of the term).

Aggregation.  GPUs whose ``(Kd, Kc)`` columns are identical could be merged exactly, but every GPU
has its own link(s), which only routes to and from it use, so in the bundled topologies no two
columns agree; the model stays at GPU level and ``info["distinct_columns"]`` reports the count.

Solve (per layer, each step keeps the best placement found)
    1. **Greedy**: experts from hottest to coldest, each to the GPU with a free slot that minimises
       the resulting ``max_a Ld[a] + max_a Lc[a]`` (ties: the smaller sum of squared arc times).
    2. **Local search**: moves to GPUs with a free slot and pairwise swaps, accepted when they
       lower ``(objective, sum of squared arc times)`` lexicographically, until none does or the
       search budget (three quarters of the time left with ``solver="milp"``, all of it with
       ``solver="heuristic"``, split over the layers still to search) runs out, or the layer is
       proven optimal.
    3. **Bound**: per arc, the least time any placement can give it (hottest experts on the
       GPUs whose tokens load it least: rearrangement, exact for one arc), maximised over arcs,
       per phase; with ``solver="milp"`` also the per-layer MILP above through ``backend``
       (warm-started from the search, time limit = the time left split over the layers not yet
       proven; every stage shares one deadline counted from the start, model building included),
       whose incumbent replaces the search's when better and whose bound is used when larger.
       The reported bound is the sum of the per-layer bounds, each valid, and ``gap`` the
       relative gap to the objective.

Examples
--------
>>> import numpy as np
>>> from placement.trace import ModelSpec, Trace
>>> from placement.api import solve
>>> ex = np.array([[[0], [1]], [[2], [3]], [[0], [0]]])   # 3 tokens, 2 layers, top-1
>>> t = Trace.from_tokens(ModelSpec("toy", num_layers=2, num_experts=4, top_k=1), ex)
>>> sol = solve(t, "fat-tree:2x4", method="alltoall-time")
>>> sol.termination.value, sol.gap
('optimal', 0.0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ..costs import DTYPE_BYTES, wire_for
from ..errors import input_error
from ..milp import MilpBuilder, MilpModel, relative_gap
from ..placement import Placement
from ..progress import Run, begin
from ..registry import Method, Option, register, used_only_with
from ..solution import Solution, Termination, make_solution
from ._common import (
    SOLVER_OPTIONS,
    SolveFailedError,
    assignment_from_x,
    experts_per_gpu_cap,
    power_of_two_near,
    run_params,
    solve_model,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..stats import TraceStats
    from ..topology import Topology

__all__ = ["AlltoallInstance", "build_instance", "arc_times", "layer_time", "layer_times", "greedy", "local_search",
           "arc_bound", "build_layer_model", "build_load_lp", "alltoall_time_method", "SOLVERS"]

SOLVERS = ("milp", "heuristic")
#: relative tolerance under which two objective values count as equal in the local search
_REL_TOL = 1e-12


@dataclass(frozen=True, eq=False)
class AlltoallInstance:
    """The per-layer data of the model (see the module docstring).

    Attributes
    ----------
    load:
        ``float64 [L, E]`` ``w``: selections of each expert in the trace.
    dispatch_seconds:
        ``float64 [G, Ad]`` ``Kd``: seconds each kept dispatch arc spends per token of an expert
        on GPU ``g``.
    combine_seconds:
        ``float64 [G, Ac]`` ``Kc``: the same for the combine phase.
    dispatch_arcs, combine_arcs:
        ``int64 [Ad]``, ``int64 [Ac]``: the kept arcs' indices in :attr:`Topology.arc_bandwidth`.
    experts_per_gpu:
        ``m``: at most this many experts of one layer per GPU.
    bytes_per_token:
        ``b`` (:class:`placement.costs.Wire`).
    latency_s:
        The left-out latency term, seconds (an upper bound).
    """

    load: np.ndarray
    dispatch_seconds: np.ndarray
    combine_seconds: np.ndarray
    dispatch_arcs: np.ndarray
    combine_arcs: np.ndarray
    experts_per_gpu: int
    bytes_per_token: int
    latency_s: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.load.shape[0])

    @property
    def num_experts(self) -> int:
        return int(self.load.shape[1])

    @property
    def num_gpus(self) -> int:
        return int(self.dispatch_seconds.shape[0])


def build_instance(stats: TraceStats, topology: Topology, *, experts_per_gpu: int = 0,
                   hidden_size: int = 0, dtype: str = "bf16") -> AlltoallInstance:
    """Validate the options and compute ``w``, ``Kd`` and ``Kc`` (vectorised, sparse routes).

    Bytes per token are :func:`placement.costs.wire_for` ``(trace.model, hidden_size, dtype)``,
    which also validates both options.
    """
    trace = stats.trace
    L, E, G = trace.num_layers, trace.num_experts, topology.num_gpus
    m = experts_per_gpu_cap(experts_per_gpu, E, G)
    wire = wire_for(trace.model, hidden_size, dtype)
    bpt = wire.bytes_per_token
    route = sp.csr_matrix(topology.route_matrix)
    bw = np.asarray(topology.arc_bandwidth, dtype=np.float64)
    rows = np.arange(G * G)
    u, v = rows // G, rows % G
    ones = np.ones(G * G)
    # S_d[g, a] = sum_u R[(u, g), a] (routes into g); S_c[g, a] = sum_u R[(g, u), a] (routes out of g)
    sd = np.asarray((sp.csr_matrix((ones, (v, rows)), shape=(G, G * G)) @ route).todense(), dtype=np.float64)
    sc = np.asarray((sp.csr_matrix((ones, (u, rows)), shape=(G, G * G)) @ route).todense(), dtype=np.float64)
    arcs_d = np.flatnonzero(sd.any(axis=0))
    arcs_c = np.flatnonzero(sc.any(axis=0))
    # the evaluator: tokens on a = sum_v y_v / G * S[v, a]; seconds = tokens * b / bw[a]
    kd = sd[:, arcs_d] / G * bpt / bw[arcs_d]
    kc = sc[:, arcs_c] / G * bpt / bw[arcs_c]
    cols = np.concatenate([kd, kc], axis=1)
    distinct = int(np.unique(cols, axis=0).shape[0]) if G else 0
    lat = float(np.max(topology.latency)) if G > 1 else 0.0
    return AlltoallInstance(load=stats.load.astype(np.float64), dispatch_seconds=kd, combine_seconds=kc,
                            dispatch_arcs=arcs_d, combine_arcs=arcs_c, experts_per_gpu=m, bytes_per_token=bpt,
                            latency_s=2.0 * L * lat,
                            info={"distinct_columns": distinct, "hidden_size": wire.hidden_size})


# ---------------------------------------------------------------------------------------------- evaluation
def arc_times(inst: AlltoallInstance, w: np.ndarray, assign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seconds on each kept dispatch arc (``float64 [Ad]``) and combine arc (``float64 [Ac]``) of one
    layer's assignment ``int [E]`` with loads ``w float64 [E]``."""
    y = np.bincount(assign, weights=w, minlength=inst.num_gpus)
    return y @ inst.dispatch_seconds, y @ inst.combine_seconds


def _max(a: np.ndarray) -> float:
    return float(a.max()) if a.size else 0.0


def layer_time(inst: AlltoallInstance, w: np.ndarray, assign: np.ndarray) -> float:
    """``t_d + t_c`` (seconds) of one layer's assignment ``int [E]`` with loads ``w float64 [E]``."""
    ld, lc = arc_times(inst, w, assign)
    return _max(ld) + _max(lc)


def layer_times(inst: AlltoallInstance, assign: np.ndarray) -> np.ndarray:
    """``float64 [L]`` ``t_d + t_c`` (seconds) of each layer of a GPU assignment ``int [L, E]``."""
    return np.array([layer_time(inst, inst.load[layer], assign[layer]) for layer in range(inst.num_layers)])


# ---------------------------------------------------------------------------------------------- heuristic
def greedy(inst: AlltoallInstance, w: np.ndarray) -> np.ndarray:
    """``int64 [E]``: hottest expert first, each to the free GPU minimising the phase-time sum."""
    G, E, m = inst.num_gpus, w.size, inst.experts_per_gpu
    kd, kc = inst.dispatch_seconds, inst.combine_seconds
    ld, lc = np.zeros(kd.shape[1]), np.zeros(kc.shape[1])
    free = np.full(G, m, dtype=np.int64)
    assign = np.empty(E, dtype=np.int64)
    for e in np.argsort(-w, kind="stable"):
        nd = ld[None, :] + w[e] * kd  # [G, Ad]
        nc = lc[None, :] + w[e] * kc
        obj = (nd.max(axis=1) if nd.shape[1] else np.zeros(G)) + (nc.max(axis=1) if nc.shape[1] else np.zeros(G))
        ss = (nd * nd).sum(axis=1) + (nc * nc).sum(axis=1)
        obj = np.where(free > 0, obj, np.inf)
        best = obj.min()
        cand = np.flatnonzero(obj <= best + _REL_TOL * abs(best))
        g = int(cand[np.argmin(ss[cand])])
        assign[e] = g
        free[g] -= 1
        ld, lc = nd[g], nc[g]
    return assign


def _better(obj: np.ndarray, ss: np.ndarray, cur: float, cur_ss: float) -> np.ndarray:
    """Candidates lexicographically better than ``(cur, cur_ss)`` with a relative tolerance."""
    tol = _REL_TOL * max(abs(cur), 1e-300)
    return (obj < cur - tol) | ((obj <= cur + tol) & (ss < cur_ss - _REL_TOL * max(cur_ss, 1e-300)))


def local_search(inst: AlltoallInstance, w: np.ndarray, assign: np.ndarray, deadline: float,
                 max_passes: int = 50, target: float = 0.0,
                 tick: Callable[[], None] | None = None) -> tuple[np.ndarray, int]:
    """Moves and pairwise swaps until no lexicographic improvement; ``(assign, passes)``.

    Stops early at ``deadline`` (``time.perf_counter()``) or once the objective is ``<= target``;
    ``tick()`` is called once per expert visited (a progress report when one is due).
    """
    G, m = inst.num_gpus, inst.experts_per_gpu
    kd, kc = inst.dispatch_seconds, inst.combine_seconds
    assign = assign.copy()
    ld, lc = arc_times(inst, w, assign)
    count = np.bincount(assign, minlength=G)

    def score(nd: np.ndarray, nc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = nd.shape[0]
        obj = (nd.max(axis=1) if nd.shape[1] else np.zeros(n)) + (nc.max(axis=1) if nc.shape[1] else np.zeros(n))
        return obj, (nd * nd).sum(axis=1) + (nc * nc).sum(axis=1)

    cur, cur_ss = _max(ld) + _max(lc), float((ld * ld).sum() + (lc * lc).sum())
    passes = 0
    order = np.argsort(-w, kind="stable")
    while passes < max_passes and time.perf_counter() < deadline and cur > target:
        passes += 1
        improved = False
        for e in order:
            if time.perf_counter() >= deadline or cur <= target:
                break
            if tick is not None:
                tick()
            g = int(assign[e])
            # moves of e to a GPU with a free slot
            targets = np.flatnonzero((count < m) & (np.arange(G) != g))
            if targets.size and w[e] > 0:
                nd = ld[None, :] + w[e] * (kd[targets] - kd[g])
                nc = lc[None, :] + w[e] * (kc[targets] - kc[g])
                obj, ss = score(nd, nc)
                ok = np.flatnonzero(_better(obj, ss, cur, cur_ss))
                if ok.size:
                    i = int(ok[np.lexsort((ss[ok], obj[ok]))[0]])
                    h = int(targets[i])
                    assign[e] = h
                    count[g] -= 1
                    count[h] += 1
                    ld, lc = nd[i], nc[i]
                    cur, cur_ss = float(obj[i]), float(ss[i])
                    improved = True
                    continue
            # swaps of e with experts on other GPUs whose load differs
            others = np.flatnonzero((assign != g) & (w != w[e]))
            if not others.size:
                continue
            dw = (w[others] - w[e])[:, None]  # e goes to h = assign[f], f comes to g
            hs = assign[others]
            nd = ld[None, :] + dw * (kd[g][None, :] - kd[hs])
            nc = lc[None, :] + dw * (kc[g][None, :] - kc[hs])
            obj, ss = score(nd, nc)
            ok = np.flatnonzero(_better(obj, ss, cur, cur_ss))
            if ok.size:
                i = int(ok[np.lexsort((ss[ok], obj[ok]))[0]])
                f = int(others[i])
                assign[e], assign[f] = assign[f], g
                ld, lc = nd[i], nc[i]
                cur, cur_ss = float(obj[i]), float(ss[i])
                improved = True
        if not improved:
            break
    return assign, passes  # the caller re-evaluates the objective from scratch


def arc_bound(inst: AlltoallInstance, w: np.ndarray) -> float:
    """A valid lower bound of ``t_d + t_c`` for one layer.

    For one arc the least load any placement gives it puts the hottest experts on the GPUs with
    the smallest coefficient, ``m`` per GPU (rearrangement inequality); the phase time is at
    least the largest such minimum over its arcs.
    """
    E, m = w.size, inst.experts_per_gpu
    ws = np.sort(w)[::-1]

    def phase(k: np.ndarray) -> float:
        if not k.shape[1]:
            return 0.0
        slots = np.sort(np.repeat(k, m, axis=0), axis=0)[:E]  # [E, A] cheapest E slots per arc, ascending
        return float((ws[:, None] * slots).sum(axis=0).max())

    return phase(inst.dispatch_seconds) + phase(inst.combine_seconds)


# ---------------------------------------------------------------------------------------------- MILP
def build_layer_model(inst: AlltoallInstance, w: np.ndarray, unit: float = 1.0) -> MilpModel:
    """One layer's model; block ``x [expert, gpu]`` and ``t [phase]``, times in ``unit`` seconds."""
    E, G = w.size, inst.num_gpus
    b = MilpBuilder(name="alltoall-time")
    x = b.add_block("x", (E, G), ("expert", "gpu"), integer=True, upper=1.0)
    t = b.add_block("t", 2, "phase", cost=1.0)
    b.add_row_sums("assign", x, lower=1.0, upper=1.0)
    b.add_row_sums("per_layer", x.T, upper=float(inst.experts_per_gpu))
    for p, (name, k) in enumerate((("dispatch", inst.dispatch_seconds), ("combine", inst.combine_seconds))):
        A = k.shape[1]
        if not A:
            continue
        coef = (w[:, None, None] * k[None, :, :] / unit)  # [E, G, A]
        nz = coef != 0
        e_i, g_i, a_i = np.nonzero(nz)
        row = np.concatenate([a_i, np.arange(A)])
        col = np.concatenate([x[e_i, g_i], np.full(A, t[p])])
        val = np.concatenate([coef[nz], -np.ones(A)])
        b.add_rows(name, A, row, col, val, upper=0.0)
    return b.build()


def build_load_lp(inst: AlltoallInstance, w: np.ndarray, unit: float = 1.0) -> MilpModel:
    """The GPU-load relaxation of one layer as an LP (block ``y [gpu]``: share of the layer's tokens).

    Any placement gives GPU loads ``y_g = sum_{e on g} w[e]`` with ``sum_g y_g = W`` and, since
    ``k`` GPUs hold at most ``k m`` experts, the ``k`` largest loads sum to at most the ``k m``
    largest ``w`` (``c_k``).  The sum of the ``k`` largest ``y`` is written as ``k s_k + sum_g z_kg``
    with ``z_kg >= y_g - s_k``, ``z >= 0``.  Arc times are linear in ``y``, so
    ``min t_d + t_c`` over this polytope is a lower bound of the layer's optimum.
    """
    G, m = inst.num_gpus, inst.experts_per_gpu
    W = float(w.sum())
    top = np.concatenate([[0.0], np.cumsum(np.sort(w)[::-1])])
    b = MilpBuilder(name="alltoall-load-lp")
    y = b.add_block("y", G, "gpu", upper=top[min(m, w.size)] / W)
    t = b.add_block("t", 2, "phase", cost=1.0)
    b.add_row_sums("total", y[None, :], lower=1.0, upper=1.0)
    for p, (name, k) in enumerate((("dispatch", inst.dispatch_seconds), ("combine", inst.combine_seconds))):
        A = k.shape[1]
        if not A:
            continue
        cols = np.concatenate([np.broadcast_to(y[:, None], (G, A)), t[p] * np.ones((1, A), dtype=np.int64)])
        coef = np.concatenate([k * (W / unit), -np.ones((1, A))])
        b.add_row_sums(name, cols.T, coef.T, upper=0.0)
    K = np.arange(1, G)
    caps = top[np.minimum(K * m, w.size)] / W
    keep = caps < 1.0  # a cap of the whole layer constrains nothing
    K, caps = K[keep], caps[keep]
    if K.size:
        n = K.size
        s_ = b.add_block("s", n, "k", lower=-np.inf)
        z = b.add_block("z", (n, G), ("k", "gpu"))
        b.add_row_sums("top_k", np.concatenate([s_[:, None], z], axis=1),
                       np.concatenate([K[:, None].astype(np.float64), np.ones((n, G))], axis=1), upper=caps)
        # z[k, g] - y[g] + s[k] >= 0
        cols = np.stack([z, np.broadcast_to(y[None, :], (n, G)), np.broadcast_to(s_[:, None], (n, G))], axis=2)
        coef = np.broadcast_to(np.array([1.0, -1.0, 1.0]), (n, G, 3))
        b.add_row_sums("excess", cols.reshape(n * G, 3), coef.reshape(n * G, 3), lower=0.0)
    return b.build()


#: the LP bound is scaled down by this to absorb the LP solver's feasibility tolerances
_LP_SAFETY = 1e-7


# ---------------------------------------------------------------------------------------------- method
def _load_lp_bound(inst: AlltoallInstance, w: np.ndarray, backend: str, threads: int, scale: float, run: Run,
                   parts: int) -> float:
    """:func:`build_load_lp`'s optimum in seconds (0 when the LP does not finish optimal or no time is left)."""
    if w.sum() <= 0 or scale <= 0:
        return 0.0
    unit = power_of_two_near(scale)
    params = run_params(run, rel_gap=0.0, threads=threads, parts=parts)
    if params is None:
        return 0.0
    try:
        res = solve_model(build_load_lp(inst, w, unit), backend, params, run)
    except SolveFailedError:
        return 0.0
    run.note(res.limit)
    if res.termination is not Termination.OPTIMAL:
        return 0.0
    return max(float(res.objective) * unit * (1 - _LP_SAFETY), 0.0)


def alltoall_time_method(stats: TraceStats, topology: Topology, *, solver: str = "milp", experts_per_gpu: int = 0,
                         hidden_size: int = 0, dtype: str = "bf16", backend: str = "highs",
                         time_limit: float = 60.0, rel_gap: float = 1e-6, threads: int = 0,
                         verbose: bool = False) -> Solution:
    """Minimise the modelled all-to-all time (see the module docstring).

    Every stage shares the run's deadline (:mod:`placement.progress`) and reports the whole
    problem's objective and bound in seconds (sums over layers).  A complete answer exists from
    the first stage on: layers the time limit or Ctrl-C leaves without a greedy placement are
    dealt round robin (``e mod G``, within the cap); later stages only improve layers.
    """
    run = begin("alltoall-time", time_limit, unit="s", verbose=verbose)
    t0 = time.perf_counter()
    if solver not in SOLVERS:
        raise input_error(f"must be one of {list(SOLVERS)}, got {solver!r}", field="solver")
    inst = build_instance(stats, topology, experts_per_gpu=experts_per_gpu, hidden_size=hidden_size, dtype=dtype)
    L, E, G = inst.num_layers, inst.num_experts, inst.num_gpus
    search_share = 0.75 if solver == "milp" else 1.0
    assign = np.broadcast_to(np.arange(E) % G, (L, E)).copy()  # round robin until greedy reaches the layer
    arc_bounds = np.zeros(L)
    lp_bounds = np.zeros(L)
    greedy_layers = 0
    # 1. greedy placement and arc bound of every layer: a complete answer and a bound, early
    with run.interruptible():
        for layer in range(L):
            if run.stopped:
                break
            w = inst.load[layer]
            assign[layer] = greedy(inst, w)
            arc_bounds[layer] = arc_bound(inst, w)
            greedy_layers = layer + 1
            run.update(stage=f"layer {layer + 1}/{L}: greedy")
    objs = layer_times(inst, assign)
    bounds = np.minimum(arc_bounds, objs)
    run.update(incumbent=float(objs.sum()), bound=float(bounds.sum()))
    # 2. per layer: the load LP bound (milp) and local search, three quarters of the time (milp)
    passes = 0
    for layer in range(L):
        if run.stopped:
            break
        w = inst.load[layer]
        with run.interruptible():
            if solver == "milp":
                lp_bounds[layer] = _load_lp_bound(inst, w, backend, threads, objs[layer], run, L - layer)
                bounds[layer] = min(max(bounds[layer], lp_bounds[layer]), objs[layer])
            run.update(bound=float(bounds.sum()), stage=f"layer {layer + 1}/{L}: local search")
            a, p = local_search(inst, w, assign[layer], run.deadline.until(search_share, L - layer),
                                target=bounds[layer] * (1 + rel_gap), tick=run.tick)
            passes += p
            value = layer_time(inst, w, a)
            if value < objs[layer]:
                assign[layer] = a
        objs[layer] = layer_time(inst, w, assign[layer])
        run.update(incumbent=float(objs.sum()))
    info: dict[str, Any] = {"solver": solver, "experts_per_gpu": inst.experts_per_gpu, "bytes_per_token":
                            inst.bytes_per_token, "arcs_dispatch": int(inst.dispatch_arcs.size),
                            "arcs_combine": int(inst.combine_arcs.size), "latency_s": inst.latency_s,
                            "search_passes": passes, "heuristic_objective": float(objs.sum()),
                            "arc_bound": float(arc_bounds.sum()), "greedy_layers": greedy_layers, **inst.info}
    termination = Termination.HEURISTIC
    if solver == "milp":
        improved = solved = 0
        limits: list[str] = []
        proven = objs <= bounds * (1 + rel_gap)
        info["load_lp_bound"] = float(lp_bounds.sum())
        # 3. the per-layer MILP of every layer not yet proven, warm-started, the time left split over them
        for layer in range(L):
            if proven[layer] or objs[layer] <= 0:
                proven[layer] = True
                continue  # already proven optimal (within rel_gap) by the bounds
            w = inst.load[layer]
            unit = power_of_two_near(float(objs[layer]))
            result, failed = None, False
            with run.interruptible():
                model = build_layer_model(inst, w, unit)
                start = np.zeros(model.num_vars)
                xcols = model.block("x").indices().reshape(E, G)
                start[xcols[np.arange(E), assign[layer]]] = 1.0
                ld, lc = arc_times(inst, w, assign[layer])
                start[model.block("t").indices()] = [_max(ld) / unit, _max(lc) / unit]
                rest_obj, rest_bnd = float(objs.sum() - objs[layer]), float(bounds.sum() - bounds[layer])
                here_obj, here_bnd = float(objs[layer]), float(bounds[layer])

                def convert(inc: float, bnd: float, rest_obj: float = rest_obj, rest_bnd: float = rest_bnd,
                            here_obj: float = here_obj, here_bnd: float = here_bnd,
                            unit: float = unit) -> tuple[float, float]:
                    o = here_obj if math.isnan(inc) else min(here_obj, inc * unit)
                    b = here_bnd if not math.isfinite(bnd) else min(max(here_bnd, bnd * unit), o)
                    return rest_obj + o, rest_bnd + b

                run.update(stage=f"layer {layer + 1}/{L}: MILP")
                params = run_params(run, rel_gap=rel_gap, threads=threads, parts=int((~proven[layer:]).sum()),
                                    warm_start=start, convert=convert)
                if params is None:
                    break
                try:
                    result = solve_model(model, backend, params, run)
                except SolveFailedError:
                    failed = True
            if failed:
                limits.append("no-solution")
                continue
            if result is None:  # out of time, or Ctrl-C while building or solving
                break
            run.note(result.limit)
            solved += 1
            if result.termination is Termination.OPTIMAL:
                proven[layer] = True
            else:
                limits.append(str(result.limit))
            if math.isfinite(result.bound):
                bounds[layer] = max(bounds[layer], float(result.bound) * unit)
            x = model.block_values(result.solution, "x")
            try:
                cand = assignment_from_x(x)
            except SolveFailedError:
                continue
            if np.bincount(cand, minlength=G).max() <= inst.experts_per_gpu:
                value = layer_time(inst, w, cand)
                if value < objs[layer]:
                    objs[layer], assign[layer] = value, cand
                    improved += 1
            bounds[layer] = min(bounds[layer], objs[layer])
            run.update(incumbent=float(objs.sum()), bound=float(bounds.sum()))
        if not proven.all():
            limits.append(run.limit if run.limit != "none" else "no-solution")
        termination = Termination.OPTIMAL if proven.all() else Termination.FEASIBLE
        info.update({"backend": backend, "milp_layers": solved, "milp_improved_layers": improved,
                     "limits": ",".join(sorted(set(limits))) or "none"})
    objs = layer_times(inst, assign)  # the answer's objective, recomputed
    bounds = np.minimum(bounds, objs)  # a bound above the objective is rounding only
    objective = float(objs.sum())
    bound = float(bounds.sum())
    gap = relative_gap(objective, bound)
    if solver == "milp" and termination is not Termination.OPTIMAL and gap <= max(rel_gap, 10 * _LP_SAFETY):
        termination = Termination.OPTIMAL
    placement = Placement.from_assignment(assign, G, slots_per_gpu=inst.experts_per_gpu,
                                          metadata={"method": "alltoall-time"})
    return make_solution(placement, "alltoall-time", termination=termination, objective=objective, bound=bound,
                         wall_time=time.perf_counter() - t0, info=info,
                         limit="none" if termination is Termination.OPTIMAL else run.limit)


_OPTIONS: tuple[Option, ...] = (
    Option("solver", str, "milp", "milp (heuristic, then the per-layer MILP through `backend` for a bound and "
           "a better placement) or heuristic (greedy + local search, arc bound only)", choices=SOLVERS),
    Option("experts_per_gpu", int, 0, "at most this many experts of one layer per GPU (0: ceil(E/G))", minimum=0),
    Option("hidden_size", int, 0, "elements per token on the wire (0: the model's, else the evaluator's 4096)",
           minimum=0),
    Option("dtype", str, "bf16", "element type on the wire, as the evaluator's dtype", choices=tuple(DTYPE_BYTES)),
    *used_only_with(SOLVER_OPTIONS, ("backend", "threads"), "solver", ("milp",)),
)

register(Method("alltoall-time", "congestion-aware: least modelled all-to-all time (busiest link per phase)",
                "placement.formulations.alltoall:alltoall_time_method", needs="load", kind="formulation",
                options=_OPTIONS, objective="alltoall_bandwidth_time"))
