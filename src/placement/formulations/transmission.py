r"""Topology-aware transmission-minimising placement: the ILP and ILPLoad models of arXiv 2508.09229.

Paper: *Topology-aware expert placement for Mixture-of-Experts inference* (arXiv 2508.09229): place
every expert of every MoE layer on a GPU so that the expected number of network transmissions
(hops) a token makes is minimal.  Registered as two methods:

``transmission``
    the paper's **ILP**: every expert equally popular, ``p[l, e] = k / E``.
``transmission-load``
    the paper's **ILPLoad**: ``p[l, e]`` = probability that expert ``e`` is in a token's top-k at
    layer ``l`` (:attr:`~placement.stats.TraceStats.probability`; count traces work).

Data
    ``d(u, s)``: hops from GPU ``u`` to GPU ``s`` (:attr:`Topology.hops`: a link inside a server is
    free, every other link costs one hop); with ``cost="time"``, seconds per byte along the route
    instead (both :func:`placement.costs.pair_costs`: ``hops`` and ``seconds_per_byte``).
    ``pi(u)``: where tokens are dispatched from: uniform ``1 / G`` (default, the paper), or the
    trace's origin ranks (``origins="trace"``).
    ``h[s] = sum_u pi(u) * (d(u, s) + d(s, u))``: expected cost to send a token to ``s`` and back.
    ``m``: experts of one layer per GPU (``experts_per_gpu``, default ``ceil(E / G)``);
    ``M``: expert slots per GPU over all layers (``memory``, default unlimited), less
    ``L * num_shared_experts`` with ``shared_experts=True`` (shared experts run on every GPU,
    send nothing over the network, and take memory).
Variables
    ``x[l, e, s]`` in {0, 1}: expert ``e`` of layer ``l`` lives on GPU ``s``.
Objective
    ``min sum_{l,e,s} c[l, e, s] * x[l, e, s]`` with ``c[l, e, s] = p[l, e] * h[s]`` (rank one), or,
    for ``transmission-load`` with ``origins="trace"``,
    ``c[l, e, s] = sum_u q[l, e, u] * (d(u, s) + d(s, u))`` where ``q[l, e, u]`` = selections of
    ``(l, e)`` by tokens from rank ``u``, per token (:attr:`TraceStats.load_by_origin`).
Constraints
    ``sum_s x[l, e, s] = 1`` (each expert once); ``sum_e x[l, e, s] <= m`` (per layer);
    ``sum_{l,e} x[l, e, s] <= M`` (memory).

The objective is the evaluator's ``hop_transmissions`` (origin dispatch, no de-duplication) of
the decoded placement: with uniform origins the evaluator's expected hops are
``sum_{l,e} p[l,e] * h[gpu(l,e)]``, with ``origins="trace"`` they are ``sum_{l,e} c[l, e, gpu(l,e)]``
(``transmission-load``; for ``transmission`` only when the trace's loads are uniform, since its
``p`` ignores them).  ``cost="time"`` gives expected seconds per byte of a token's round trips.
Reported objective and bound: hop-transmissions per token (``cost="hops"``) or seconds per byte
(``"time"``); the MILP carries time costs divided by
:attr:`TransmissionInstance.cost_unit`, a power of two (exact), and its bound is multiplied back.

Why it solves in well under a second (each claim is tested)
-----------------------------------------------------------
1. **Aggregation is exact.**  Call GPUs *equivalent* when their cost columns ``c[:, :, s]`` are
   equal: under the hop metric all GPUs of one server are (for any ``u``, ``d(u, s) = d(u, s')``
   because the path to ``s`` continues to ``s'`` over free intra-server links and vice versa), and
   with uniform origins so are symmetric servers.  The classes are found numerically (never
   assumed).  Let class ``C`` have ``n_C`` GPUs; the class model has ``y[l, e, C]`` with per-layer
   cap ``n_C * m`` and memory cap ``n_C * M``.  Any GPU solution sums to a class solution of equal
   cost.  Conversely a class solution is split over the class's GPUs by McNaughton's wrap-around
   rule: walk the layers in order and deal the experts of layer ``l`` in class ``C`` to its GPUs
   cyclically, continuing where layer ``l - 1`` stopped.  A GPU then gets ``floor`` or ``ceil`` of
   ``y_l / n_C <= m`` experts of layer ``l`` and ``floor`` or ``ceil`` of ``sum_l y_l / n_C <= M``
   in total, so the split is feasible and costs the same.  Both optima are equal.
2. **Rank-one costs are solved by sorting.**  Without the memory row the layers decouple.  In one
   layer, class ``C`` offers ``min(n_C * m, E)`` slots of cost ``h_C``.  As ``p >= 0``, some optimum
   uses the ``E`` cheapest slots (moving an expert to a cheaper free slot never costs more), and
   for a fixed set of slots the rearrangement inequality says ``sum_e p_e * h_{slot(e)}`` is
   smallest when the most popular expert takes the cheapest slot, the next the next, and so on.
   General costs (``origins="trace"``) go to :func:`scipy.optimize.linear_sum_assignment` on the
   ``E x slots`` matrix, one layer at a time.
3. **The memory row.**  The decoupled optimum is a lower bound of the coupled problem (a
   relaxation); when it fits in memory it is optimal (gap 0).  Otherwise the coupled problem is a
   min-cost flow (source -> expert ``(l, e)`` -> ``(l, C)`` [cap ``n_C m``] -> ``C`` [cap ``n_C M``]
   -> sink), solved exactly by :func:`placement.backends.flow.min_cost_flow` (OR-Tools, imported
   only in that case) on integer costs: hop costs are rationals with a known denominator, so they
   scale to integers exactly and the bound equals the objective; other costs are scaled by a power
   of two and the bound subtracts the largest possible rounding error (reported, never hidden).
4. **The LP is integral.**  The rows split into two laminar families of column sets (the
   assignment rows partition the columns; each per-layer row lies inside one memory row), so the
   matrix is totally unimodular: every vertex of the LP relaxation is integral and the LP optimum
   is the ILP optimum.  ``solver="lp"`` solves the relaxation and checks the vertex it gets.

Solve paths (option ``solver``): ``structured`` (default, numpy/scipy as above), ``milp`` (the class-
level :class:`~placement.milp.MilpModel` through any backend of :mod:`placement.backends`) and ``lp``
(its relaxation through an LP backend, integrality checked).  Every path reports the objective of
the decoded placement under the same costs and a proven bound; ``aggregate`` picks the model's
columns: ``class`` (equivalent GPUs merged, default), ``server`` (one per server; an error when the
costs differ inside a server) or ``gpu`` (the paper's GPU-level model).

Examples
--------
>>> import numpy as np
>>> from placement.trace import ModelSpec, Trace
>>> from placement.api import solve
>>> ex = np.array([[[0, 1], [2, 3]], [[0, 2], [0, 1]], [[0, 3], [0, 2]]])   # 3 tokens, 2 layers, top-2
>>> t = Trace.from_tokens(ModelSpec("toy", num_layers=2, num_experts=4, top_k=2), ex)
>>> topo = "fat-tree:servers=3,gpus=1,servers_per_leaf=2"   # GPU 2 sits under the other leaf
>>> sol = solve(t, topo, method="transmission-load")
>>> sol.termination.value, sol.objective, sol.gap
('optimal', 16.0, 0.0)
>>> sol.placement.assignment().tolist()   # the far GPU gets nothing: h = [4, 4, 16/3]
[[0, 1, 0, 1], [0, 1, 0, 1]]
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from ..costs import Wire, pair_costs, wire_for
from ..errors import input_error
from ..milp import MilpBuilder, MilpModel
from ..placement import Placement
from ..progress import begin
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

__all__ = ["TransmissionInstance", "StructuredResult", "build_instance", "build_model", "solve_structured",
           "disaggregate", "transmission_method", "transmission_load_method", "VARIANTS", "SOLVERS",
           "ORIGINS", "COSTS", "AGGREGATIONS"]

VARIANTS = ("transmission", "transmission-load")
SOLVERS = ("structured", "milp", "lp")
ORIGINS = ("uniform", "trace")
COSTS = ("hops", "time")
AGGREGATIONS = ("class", "server", "gpu")

#: integer costs handed to the min-cost flow stay below this (OR-Tools scales costs by the node count)
_MAX_INT_COST = float(2**40)
#: an LP value farther than this from 0 or 1 is fractional
_INTEGRALITY_TOL = 1e-6


# ---------------------------------------------------------------------------------------------- instance
@dataclass(frozen=True, eq=False)
class TransmissionInstance:
    """One placement problem at class level (``C`` classes of equivalent GPUs), as arrays.

    Attributes
    ----------
    variant, origins, cost_kind, aggregate:
        What was asked for (see the module docstring).
    num_gpus:
        ``G``.
    class_of:
        ``int64 [G]`` class of each GPU; ``class_size`` ``int64 [C]`` GPUs per class.
    experts_per_gpu:
        ``m``, experts of one layer per GPU.
    memory:
        ``M``, expert slots per GPU for routed experts over all layers, or ``None`` (no limit).
    shared_slots:
        Slots per GPU taken by replicated shared experts (``L * num_shared_experts`` or 0).
    popularity, class_round_trip:
        Rank-one costs ``c[l, e, C] = p[l, e] h[C]``: ``float64 [L, E]`` ``p`` and ``float64 [C]``
        ``h`` (a round trip to a GPU of the class), ``None`` otherwise.
    general_cost:
        ``float64 [L, E, C]`` costs that are not rank one (``None`` for rank one).  Costs are in
        the method's reported units: hop-transmissions per token (``cost_kind="hops"``) or
        seconds per byte of a token's round trips (``"time"``).
    scale:
        A number ``S`` such that ``cost * S`` should be integral (hop costs), or ``None``.
    """

    variant: str
    origins: str
    cost_kind: str
    aggregate: str
    num_gpus: int
    class_of: np.ndarray
    class_size: np.ndarray
    experts_per_gpu: int
    memory: int | None
    shared_slots: int
    popularity: np.ndarray | None
    class_round_trip: np.ndarray | None
    general_cost: np.ndarray | None
    scale: float | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def rank1(self) -> bool:
        return self.general_cost is None

    @property
    def num_layers(self) -> int:
        return int(self.cost.shape[0]) if self.popularity is None else int(self.popularity.shape[0])

    @property
    def num_experts(self) -> int:
        return int(self.cost.shape[1]) if self.popularity is None else int(self.popularity.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.class_size.size)

    @property
    def layer_cap(self) -> np.ndarray:
        """``int64 [C]`` experts of one layer a class can hold (``n_C * m``, at most ``E``)."""
        return np.minimum(self.class_size * self.experts_per_gpu, self.num_experts)

    @property
    def memory_cap(self) -> np.ndarray | None:
        """``int64 [C]`` routed-expert slots of a class over all layers (``n_C * M``), or ``None``."""
        return None if self.memory is None else self.class_size * self.memory

    @cached_property
    def cost(self) -> np.ndarray:
        """``float64 [L, E, C]`` the cost of expert ``(l, e)`` on a GPU of class ``C``."""
        if self.general_cost is not None:
            return self.general_cost
        assert self.popularity is not None and self.class_round_trip is not None
        return self.popularity[:, :, None] * self.class_round_trip[None, None, :]

    @cached_property
    def cost_unit(self) -> float:
        """A power of two near the largest cost (1 for hops): :func:`build_model` divides the costs by it.

        Seconds per byte are ~1e-11; solvers treat such costs as zero, so models carry them in
        this unit (dividing by a power of two is exact in floating point).
        """
        top = float(self.cost.max()) if self.cost.size else 0.0
        return 1.0 if self.cost_kind == "hops" else power_of_two_near(top)

    def objective(self, assign: np.ndarray) -> float:
        """The objective of a class assignment ``int [L, E]``."""
        if self.rank1:
            assert self.popularity is not None and self.class_round_trip is not None
            return float(np.sum(self.popularity * self.class_round_trip[assign]))
        return float(np.take_along_axis(self.cost, assign[:, :, None], axis=2).sum())


def _round_trip_costs(topology: Topology, cost: str, wire: Wire) -> np.ndarray:
    """``float64 [G, G]`` ``D2[u, s] = d(u, s) + d(s, u)``, ``d`` from :func:`placement.costs.pair_costs`:
    ``hops`` (links) for ``cost="hops"``, ``seconds_per_byte`` for ``"time"``."""
    d = pair_costs(topology, wire).of("hops" if cost == "hops" else "seconds_per_byte")
    return d + d.T


def _classes(keys: np.ndarray, topology: Topology, aggregate: str) -> np.ndarray:
    """``int64 [G]`` class of each GPU from ``keys [G, K]`` (equal rows -> equal cost columns)."""
    G = keys.shape[0]
    if aggregate == "gpu":
        return np.arange(G, dtype=np.int64)
    tol = 1e-12 * max(float(np.abs(keys).max()), 1e-300)
    q = np.rint(keys / tol)
    if aggregate == "server":
        server = topology.server_of.astype(np.int64)
        first = np.zeros(topology.num_servers, dtype=np.int64)
        ids, at = np.unique(server, return_index=True)  # first GPU of each server
        first[ids] = at
        bad = np.flatnonzero((q != q[first[server]]).any(axis=1))
        if bad.size:
            g = int(bad[0])
            raise input_error(f"GPUs {topology.gpus[int(first[server[g]])]} and {topology.gpus[g]} of server "
                              f"{topology.servers[int(server[g])]} have different costs, so a server-level "
                              "model is not exact here; use aggregate=class or aggregate=gpu",
                              field="aggregate")
        return server
    _, inverse = np.unique(q, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def build_instance(stats: TraceStats, topology: Topology, *, variant: str = "transmission-load",
                   origins: str = "uniform", cost: str = "hops", experts_per_gpu: int = 0, memory: int = 0,
                   shared_experts: bool = False, aggregate: str = "class") -> TransmissionInstance:
    """Validate the options and compute the class-level costs and capacities (vectorised).

    Parameters are the method options (see the module docstring); errors are
    :class:`~placement.errors.PlacementInputError` naming the option.
    """
    for name, value, allowed in (("variant", variant, VARIANTS), ("origins", origins, ORIGINS),
                                 ("cost", cost, COSTS), ("aggregate", aggregate, AGGREGATIONS)):
        if value not in allowed:
            raise input_error(f"must be one of {list(allowed)}, got {value!r}", field=name)
    trace = stats.trace
    L, E, k, G = trace.num_layers, trace.num_experts, trace.top_k, topology.num_gpus
    m = experts_per_gpu_cap(experts_per_gpu, E, G)
    if memory < 0:
        raise input_error(f"must be >= 0 (0: no limit), got {memory}", field="memory")
    shared = L * int(trace.model.num_shared_experts) if shared_experts else 0
    M: int | None = None
    if memory:
        M = int(memory) - shared
        if M * G < L * E:
            raise input_error(f"memory={memory} slots per GPU ({shared} of them for shared experts) leave "
                              f"{M * G} slots on {G} GPUs for the {L * E} routed experts; use at least "
                              f"{-(-L * E // G) + shared}", field="memory")
    D2 = _round_trip_costs(topology, cost, wire_for(trace.model))
    hops = cost == "hops"

    if origins == "trace":
        by_origin = stats.load_by_origin
        ranks = None if by_origin is None else by_origin.shape[0]
        if by_origin is None or ranks != G:
            have = "no origin ranks" if by_origin is None else f"origins for {ranks} ranks"
            raise input_error(f"origins='trace' needs a trace whose origin ranks are the topology's {G} "
                              f"GPUs; this trace has {have}; use origins='uniform'", field="origins")
    popularity: np.ndarray | None = None
    class_round_trip: np.ndarray | None = None
    general: np.ndarray | None = None
    scale: float | None = None
    if variant == "transmission":
        popularity = np.full((L, E), k / E)
        if origins == "trace":
            counts = np.asarray(stats.origin_counts, dtype=np.float64)
            h = counts @ D2 / counts.sum()
            scale = E * float(counts.sum()) if hops else None
        else:
            h = D2.mean(axis=0)
            scale = float(E * G) if hops else None
        class_of = _classes(h[:, None], topology, aggregate)
    elif origins == "uniform":
        popularity = np.asarray(stats.probability, dtype=np.float64)
        h = D2.mean(axis=0)
        per_layer = stats.load.sum(axis=1)
        if hops and per_layer.size and np.all(per_layer == per_layer[0]):
            scale = float(per_layer[0]) * G
        class_of = _classes(h[:, None], topology, aggregate)
    else:
        assert stats.load_by_origin is not None
        class_of = _classes(D2.T, topology, aggregate)
        h = None
        n = trace.num_tokens
        scale = float(n) if hops else None

    C = int(class_of.max()) + 1
    size = np.bincount(class_of, minlength=C).astype(np.int64)
    rep = np.zeros(C, dtype=np.int64)
    ids, at = np.unique(class_of, return_index=True)  # first GPU of each class
    rep[ids] = at
    if h is not None:
        class_round_trip = h[rep]
    else:
        q = np.transpose(stats.load_by_origin, (1, 2, 0)).astype(np.float64) / trace.num_tokens  # [L, E, U]
        general = (q.reshape(L * E, G) @ D2[:, rep]).reshape(L, E, C)
    return TransmissionInstance(
        variant=variant, origins=origins, cost_kind=cost, aggregate=aggregate, num_gpus=G, class_of=class_of,
        class_size=size, experts_per_gpu=m, memory=M, shared_slots=shared, popularity=popularity,
        class_round_trip=class_round_trip, general_cost=general, scale=scale)


# ---------------------------------------------------------------------------------------------- MILP model
def build_model(instance: TransmissionInstance, *, relax: bool = False) -> MilpModel:
    """The class-level model as a :class:`~placement.milp.MilpModel` (``relax``: continuous ``x``).

    Block ``x [layer, expert, <aggregate>]``; row families ``assign`` (``L*E`` rows ``= 1``),
    ``per_layer`` (``L*C`` rows ``<= n_C * m``) and, with a memory limit, ``memory`` (``C`` rows
    ``<= n_C * M``).  The objective is the placement's expected cost divided by
    :attr:`TransmissionInstance.cost_unit` (1 for hops), no offset.
    """
    L, E, C = instance.num_layers, instance.num_experts, instance.num_classes
    b = MilpBuilder(name=f"{instance.variant}-{instance.aggregate}")
    x = b.add_block("x", (L, E, C), ("layer", "expert", instance.aggregate), integer=not relax, upper=1.0,
                    cost=instance.cost / instance.cost_unit)
    b.add_row_sums("assign", x.reshape(L * E, C), lower=1.0, upper=1.0)
    b.add_row_sums("per_layer", x.transpose(0, 2, 1).reshape(L * C, E), upper=np.tile(instance.layer_cap, L))
    cap = instance.memory_cap
    if cap is not None:
        b.add_row_sums("memory", x.transpose(2, 0, 1).reshape(C, L * E), upper=cap)
    return b.build()


# ---------------------------------------------------------------------------------------------- structured
@dataclass(frozen=True, eq=False)
class StructuredResult:
    """What :func:`solve_structured` proves.

    ``assign`` is ``int64 [L, E]`` (class of each expert); ``objective`` its cost; ``bound`` a
    proven lower bound; ``path`` ``"sort"``, ``"assignment"`` or ``"min-cost-flow"``; ``coupling``
    ``"none"`` (no memory limit), ``"slack"`` (the limit holds at the decoupled optimum) or
    ``"binding"``.
    """

    assign: np.ndarray
    objective: float
    bound: float
    path: str
    coupling: str
    info: dict[str, Any] = field(default_factory=dict)


def _decoupled(instance: TransmissionInstance) -> tuple[np.ndarray, str]:
    """Per-layer optimum without the memory row: ``int64 [L, E]`` classes."""
    L, E = instance.num_layers, instance.num_experts
    cap = instance.layer_cap
    if instance.rank1:
        assert instance.popularity is not None and instance.class_round_trip is not None
        by_cost = np.argsort(instance.class_round_trip, kind="stable")
        slots = np.repeat(by_cost, cap[by_cost])[:E]  # the E cheapest slots, cheapest first
        order = np.argsort(-instance.popularity, axis=1, kind="stable")  # most popular first
        assign = np.empty((L, E), dtype=np.int64)
        np.put_along_axis(assign, order, np.broadcast_to(slots, (L, E)), axis=1)
        return assign, "sort"
    from scipy.optimize import linear_sum_assignment

    cols = np.repeat(np.arange(instance.num_classes), cap)
    assign = np.empty((L, E), dtype=np.int64)
    cost = instance.cost
    for layer in range(L):
        rows, c = linear_sum_assignment(cost[layer][:, cols])
        assign[layer, rows] = cols[c]
    return assign, "assignment"


def _integer_costs(cost: np.ndarray, scale: float | None) -> tuple[np.ndarray, float, bool]:
    """``(int64 costs, S, exact)`` with ``costs ~ cost * S``; exact when ``scale`` makes them integral."""
    top = float(cost.max()) if cost.size else 0.0
    if scale is not None and top * scale <= _MAX_INT_COST:
        scaled = cost * scale
        ints = np.rint(scaled)
        if np.all(np.abs(scaled - ints) <= 1e-6):
            return ints.astype(np.int64), float(scale), True
    s = 2.0 ** math.floor(math.log2(_MAX_INT_COST / top)) if top > 0 else 1.0
    return np.rint(cost * s).astype(np.int64), s, False


def _min_cost_flow(instance: TransmissionInstance) -> tuple[np.ndarray, float, bool]:
    """Exact coupled optimum as a min-cost flow: ``(assign [L, E], integer optimum / S, exact)``."""
    from ..backends.flow import min_cost_flow  # the solver is imported only when memory binds

    L, E, C = instance.num_layers, instance.num_experts, instance.num_classes
    ints, s, exact = _integer_costs(instance.cost, instance.scale)
    LE, LC = L * E, L * C
    sink = LE + LC + C
    layer_of_expert = np.repeat(np.arange(L, dtype=np.int64), E)
    tails = np.concatenate([np.repeat(np.arange(LE, dtype=np.int64), C),
                            LE + np.arange(LC, dtype=np.int64),
                            LE + LC + np.arange(C, dtype=np.int64)])
    classes = np.arange(C, dtype=np.int64)
    heads = np.concatenate([LE + (np.repeat(layer_of_expert, C) * C + np.tile(classes, LE)),
                            LE + LC + np.tile(classes, L),
                            np.full(C, sink, dtype=np.int64)])
    caps = np.concatenate([np.ones(LE * C, dtype=np.int64), np.tile(instance.layer_cap, L),
                           np.asarray(instance.memory_cap, dtype=np.int64)])
    costs = np.concatenate([ints.reshape(-1), np.zeros(LC + C, dtype=np.int64)])
    supplies = np.zeros(sink + 1, dtype=np.int64)
    supplies[:LE] = 1
    supplies[sink] = -LE
    try:
        result = min_cost_flow(tails, heads, caps, costs, supplies)
    except RuntimeError as exc:
        raise SolveFailedError(str(exc)) from exc
    x = result.flows[:LE * C].reshape(L, E, C)
    return assignment_from_x(x.astype(np.float64)), float(result.cost) / s, exact


def solve_structured(instance: TransmissionInstance) -> StructuredResult:
    """Exact optimum by structure: sorting or assignment per layer; min-cost flow if memory binds."""
    assign, path = _decoupled(instance)
    objective = instance.objective(assign)
    cap = instance.memory_cap
    if cap is None:
        return StructuredResult(assign, objective, objective, path, "none")
    used = np.bincount(assign.reshape(-1), minlength=instance.num_classes)
    if np.all(used <= cap):
        return StructuredResult(assign, objective, objective, path, "slack")
    relaxed = objective  # the decoupled optimum bounds the coupled one from below
    assign, flow_opt, exact = _min_cost_flow(instance)
    objective = instance.objective(assign)
    if exact:
        bound = objective  # integral costs: the flow optimum is the optimum
        slack = 0.0
    else:
        # every arc rounds by at most 0.5/S, so true(opt) >= true(found) - 2 * (L*E) * 0.5/S
        _, s, _ = _integer_costs(instance.cost, None)
        slack = instance.num_layers * instance.num_experts / s
        bound = max(relaxed, objective - slack)
    return StructuredResult(assign, objective, bound, "min-cost-flow", "binding",
                            info={"decoupled_bound": relaxed, "flow_integer_costs_exact": exact,
                                  "flow_rounding_slack": slack, "flow_objective": flow_opt})


# ---------------------------------------------------------------------------------------------- decoding
def disaggregate(instance: TransmissionInstance, assign: np.ndarray) -> np.ndarray:
    """``int64 [L, E]`` GPU of each expert from its class (McNaughton's wrap-around, see the docstring)."""
    L, E = assign.shape
    C = instance.num_classes
    size = instance.class_size
    members = np.argsort(instance.class_of, kind="stable")  # GPUs grouped by class, increasing ids
    start = np.cumsum(size) - size
    counts = np.zeros((L, C), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(L), E), assign.reshape(-1)), 1)
    pointer = np.cumsum(counts, axis=0) - counts  # [L, C] items of class C dealt before layer l
    key = (np.arange(L)[:, None] * C + assign).reshape(-1)
    order = np.argsort(key, kind="stable")
    first = np.cumsum(counts.reshape(-1)) - counts.reshape(-1)  # first position of each (l, C) group
    rank = np.empty(L * E, dtype=np.int64)
    rank[order] = np.arange(L * E) - first[key[order]]
    flat_c = assign.reshape(-1)
    pos = (pointer.reshape(-1)[key] + rank) % size[flat_c]
    return members[start[flat_c] + pos].reshape(L, E)


# ---------------------------------------------------------------------------------------------- methods
def _run(variant: str, stats: TraceStats, topology: Topology, *, solver: str, origins: str, cost: str,
         experts_per_gpu: int, memory: int, shared_experts: bool, aggregate: str, backend: str,
         time_limit: float, rel_gap: float, threads: int, verbose: bool) -> Solution:
    run = begin(variant, time_limit, unit="hops/token" if cost == "hops" else "s/byte", verbose=verbose)
    t0 = time.perf_counter()
    if solver not in SOLVERS:
        raise input_error(f"must be one of {list(SOLVERS)}, got {solver!r}", field="solver")
    inst = build_instance(stats, topology, variant=variant, origins=origins, cost=cost,
                          experts_per_gpu=experts_per_gpu, memory=memory, shared_experts=shared_experts,
                          aggregate=aggregate)
    build_s = time.perf_counter() - t0
    info: dict[str, Any] = {"solver": solver, "classes": inst.num_classes, "aggregate": aggregate,
                            "experts_per_gpu": inst.experts_per_gpu, "memory": inst.memory,
                            "shared_slots": inst.shared_slots, "origins": origins, "cost": cost}
    if solver == "structured":
        res = solve_structured(inst)
        assign, objective, bound = res.assign, res.objective, res.bound
        termination = Termination.OPTIMAL
        info.update({"path": res.path, "coupling": res.coupling})
        info.update({k: v for k, v in res.info.items() if isinstance(v, (bool, int, float))})
    else:
        run.update(stage=f"building the {solver} model")
        model = run.bounded(lambda: build_model(inst, relax=solver == "lp"))
        if model is None:
            raise SolveFailedError(f"stopped ({run.limit}) while building the {solver} model, before any solution; "
                                   "raise time_limit or use solver=structured")
        info.update({"backend": backend, "vars": model.num_vars, "rows": model.num_rows,
                     "model_build_s": time.perf_counter() - t0 - build_s})
        unit = inst.cost_unit
        run.update(stage=f"{solver.upper()} ({model.num_vars} columns)")
        params = run_params(run, rel_gap=rel_gap, threads=threads,
                            convert=lambda inc, bnd: (inc * unit, bnd * unit))
        if params is None:
            raise SolveFailedError(f"no time left for the {solver} solve after building the model "
                                   f"({time.perf_counter() - t0:.3g} s of time_limit={time_limit:g}); raise "
                                   "time_limit or use solver=structured")
        # one solve: a first Ctrl-C stops the solver, which returns its best point (or none: an error)
        result = solve_model(model, backend, params, run)
        run.note(result.limit)
        x = model.block_values(result.solution, "x")
        info.update({"limit": str(result.limit), "raw_status": result.raw_status, "nodes": result.nodes,
                     "solver_s": result.wall_time, "scaling_error": result.scaling_error})
        termination = result.termination
        if solver == "lp":
            frac = float(np.abs(x - np.rint(x)).max()) if x.size else 0.0
            info["lp_max_fractionality"] = frac
            if frac > _INTEGRALITY_TOL:
                raise SolveFailedError(f"the LP relaxation returned a fractional point (max distance "
                                       f"{frac:.3g} from an integer), not a vertex; use solver=milp or "
                                       "solver=structured")
            # an LP optimum bounds the ILP from below; the integral vertex attains it
            bound = float(result.objective) if termination is Termination.OPTIMAL else -math.inf
        else:
            bound = float(result.bound)
        bound *= inst.cost_unit
        assign = assignment_from_x(x)
        objective = inst.objective(assign)
    gpus = disaggregate(inst, assign)
    placement = Placement.from_assignment(gpus, inst.num_gpus, slots_per_gpu=inst.experts_per_gpu,
                                          metadata={"method": variant, "paper": "arXiv 2508.09229"})
    info["build_s"] = build_s
    return make_solution(placement, variant, termination=termination, objective=objective, bound=bound,
                         wall_time=time.perf_counter() - t0, info=info,
                         limit="none" if termination is Termination.OPTIMAL else run.limit)


def transmission_method(stats: TraceStats, topology: Topology, **options: Any) -> Solution:
    """The paper's ILP: ``p[l, e] = k / E`` (see the module docstring for the options)."""
    return _run("transmission", stats, topology, **options)


def transmission_load_method(stats: TraceStats, topology: Topology, **options: Any) -> Solution:
    """The paper's ILPLoad: ``p[l, e]`` from the trace's expert loads."""
    return _run("transmission-load", stats, topology, **options)


_OPTIONS: tuple[Option, ...] = (
    Option("solver", str, "structured", "structured (exact by sorting / assignment / min-cost flow), milp "
           "(the model through `backend`) or lp (its relaxation, integrality checked)", choices=SOLVERS),
    Option("origins", str, "uniform", "where tokens start: uniform over GPUs (the paper) or trace (per-token "
           "origin ranks; the trace's ranks must be the topology's GPUs)", choices=ORIGINS),
    Option("cost", str, "hops", "hops (the paper) or time (seconds per byte along each route)",
           choices=COSTS),
    Option("experts_per_gpu", int, 0, "at most this many experts of one layer per GPU (0: ceil(E/G))", minimum=0),
    Option("memory", int, 0, "expert slots per GPU over all layers, shared experts included (0: no limit)",
           minimum=0),
    Option("shared_experts", bool, False, "replicate the model's shared experts on every GPU: they take "
           "memory slots and send nothing"),
    Option("aggregate", str, "class", "model columns for milp/lp and the structured path: class (GPUs with "
           "equal costs merged, exact), server, or gpu", choices=AGGREGATIONS),
    *used_only_with(SOLVER_OPTIONS, ("backend", "threads", "rel_gap"), "solver", ("milp", "lp")),
)

register(Method("transmission", "arXiv 2508.09229 ILP: fewest expected hops, experts equally popular (k/E)",
                "placement.formulations.transmission:transmission_method", needs="nothing",
                kind="formulation", options=_OPTIONS, paper="arXiv 2508.09229 (ILP)",
                objective="uniform_load_hops"))
register(Method("transmission-load", "arXiv 2508.09229 ILPLoad: fewest expected hops weighted by expert load",
                "placement.formulations.transmission:transmission_load_method", needs="load",
                kind="formulation", options=_OPTIONS, paper="arXiv 2508.09229 (ILPLoad)",
                objective="expected_hops"))
