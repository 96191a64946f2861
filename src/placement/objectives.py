r"""What each method's reported objective is, recomputed from the evaluator.

A registered :class:`~placement.registry.Method` names its objective (``Method.objective``, a key
of :data:`OBJECTIVES`, or ``None`` for a method that reports none).  The function of that name
recomputes, for *any* placement, the figure the method reports as
:attr:`~placement.solution.Solution.objective`, from :func:`placement.evaluate.evaluate`'s
:class:`~placement.evaluate.Metrics` and the method's options, never from a formulation's
internals.  Every objective is minimised.  Tests compare a method's reported objective and bound
with it (the evaluator is the oracle) and brute-force it over every placement of tiny instances.

Objectives (``options`` are the method's parsed options; defaults in brackets)
    ``expected_hops``
        ``hop_transmissions`` of the origin dispatch model, no de-duplication, origins
        ``options["origins"]`` [``uniform``]; with ``cost="time"`` the expected seconds per byte of
        a token's sends instead, ``sum_{u,v} traffic[u, v] * seconds_per_byte[u, v] / tokens``.
    ``uniform_load_hops``
        ``expected_hops`` of the trace's model under *equal expert loads* (every expert in a
        token's top-k with probability ``k / E``; with ``origins="trace"`` the trace's share of
        tokens per origin rank is kept): the evaluator run on :func:`uniform_load_trace`.
    ``alltoall_bandwidth_time``
        ``alltoall_time`` (seconds; uniform origins, origin dispatch, no de-duplication,
        ``hidden_size`` [0: the model's] and ``dtype`` [``bf16``]) minus its latency terms (per
        layer and phase, the largest latency among GPU pairs that exchange tokens):
        :func:`latency_time`.
    ``coherent_cost``
        The context-coherent dispatch model (``dispatch="coherent"``, origins ``auto``), by
        ``options["cost"]`` [``cross``]: ``boundary_cross_fraction`` (``cross``),
        ``hop_transmissions`` (``hops``), or seconds per token,
        ``sum traffic * seconds_per_byte * bytes_per_token / tokens`` with bf16 tokens of the
        model's hidden size (``time``).
    ``max_gpu_load``
        Sum over layers of the largest GPU load in selections, every replica of an expert serving an
        even share of its selections (EPLB's model of load; computed from the trace's counts).
    ``step_time``
        The serving-step model's seconds per step over all MoE layers, ``evaluate(...).step_time``
        with the method's ``replica`` [``vllm``], ``transport`` [``nccl``], ``tokens_per_step`` /
        ``tokens_per_gpu`` [0: the evaluator's default], ``dispatch_dtype`` / ``combine_dtype``
        [``bf16``], ``gpu`` [the topology's] and ``overlap`` [off]; origins ``auto``.
    ``boundary_bottleneck``
        MoETuner's communication cost: the sum over layer boundaries ``l = 1 .. L-1`` of
        ``max_{u != v} W[u, v] * layer_traffic[l, u, v]`` (coherent dispatch, whole-trace tokens),
        with ``W`` by ``options["cost"]`` [``time``]: ``1`` (``cross``, tokens), hops (``hops``,
        token-hops) or ``seconds_per_byte * bytes_per_token`` (``time``, seconds; bf16 tokens of
        the model's hidden size).

>>> import numpy as np
>>> from placement import Placement
>>> from placement.topology import preset
>>> from placement.trace import ModelSpec, Trace
>>> t = Trace.from_tokens(ModelSpec("toy", 2, 2, 1), np.array([[[0], [1]], [[1], [1]]]))
>>> p = Placement.from_assignment(np.array([[0, 1], [0, 1]]), num_gpus=2)
>>> objective_value("coherent_cost", p, t, preset("fat-tree:1x2"), {"cost": "cross"})  # 1 of 2 boundaries
0.5
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .evaluate import Metrics, evaluate
from .trace import Trace

if TYPE_CHECKING:  # pragma: no cover
    from .placement import Placement
    from .topology import Topology

__all__ = ["OBJECTIVES", "Objective", "objective_value", "uniform_load_trace", "latency_time"]


def _pair_cost(metrics: Metrics, cost: np.ndarray) -> float:
    """``sum_{u,v} traffic[u, v] * cost[u, v]`` over the whole trace (all layers and phases)."""
    return float((metrics.traffic * cost).sum())


def uniform_load_trace(trace: Trace, origins: str = "uniform") -> Trace:
    """A count trace of ``trace``'s model in which every expert of every layer is equally loaded.

    Each expert gets ``k`` selections per layer (``E`` tokens); with ``origins="trace"``, rank ``u``
    contributes ``n_u * k`` selections of every expert, ``n_u`` = the trace's tokens from ``u``
    (``counts [ranks, layers, experts]``), so the origin distribution is the trace's.
    """
    L, E, k = trace.num_layers, trace.num_experts, trace.top_k
    if origins == "trace":
        from .stats import TraceStats

        per_rank = np.asarray(TraceStats(trace).origin_counts, dtype=np.int64)  # [ranks]
        counts = np.broadcast_to(per_rank[:, None, None] * k, (per_rank.size, L, E)).copy()
    else:
        counts = np.full((L, E), k, dtype=np.int64)
    return Trace.from_counts(trace.model, counts, source=f"uniform loads of {trace.source}")


def latency_time(metrics: Metrics, topology: Topology) -> float:
    """The latency part of ``metrics.alltoall_time``: per layer and phase, the largest route latency
    among GPU pairs ``u != v`` that exchange tokens (dispatch, and its transpose with a combine)."""
    T = metrics.layer_traffic  # [L, G, G]
    off = ~np.eye(T.shape[1], dtype=bool)
    phases = [T, np.transpose(T, (0, 2, 1))] if metrics.dispatch == "origin" else [T]
    total = 0.0
    for X in phases:
        sends = (X > 0) & off[None]
        worst = np.where(sends, topology.latency[None], 0.0).max(axis=(1, 2))
        total += float(worst[sends.any(axis=(1, 2))].sum())
    return total


def expected_hops(placement: Placement, trace: Trace, topology: Topology, options: Mapping[str, Any]) -> float:
    m = evaluate(placement, trace, topology, dispatch="origin", dedup=False,
                 origins=options.get("origins", "uniform"))
    if options.get("cost", "hops") == "hops":
        return m.hop_transmissions
    return _pair_cost(m, topology.seconds_per_byte) / max(m.num_tokens, 1)


def uniform_load_hops(placement: Placement, trace: Trace, topology: Topology,
                      options: Mapping[str, Any]) -> float:
    origins = options.get("origins", "uniform")
    return expected_hops(placement, uniform_load_trace(trace, origins), topology, options)


def alltoall_bandwidth_time(placement: Placement, trace: Trace, topology: Topology,
                            options: Mapping[str, Any]) -> float:
    m = evaluate(placement, trace, topology, dispatch="origin", dedup=False, origins="uniform",
                 hidden_size=options.get("hidden_size") or None, dtype=options.get("dtype", "bf16"))
    return m.alltoall_time - latency_time(m, topology)


def coherent_cost(placement: Placement, trace: Trace, topology: Topology, options: Mapping[str, Any]) -> float:
    m = evaluate(placement, trace, topology, dispatch="coherent", dedup=False, origins="auto")
    cost = options.get("cost", "cross")
    if cost == "cross":
        return m.boundary_cross_fraction
    if cost == "hops":
        return m.hop_transmissions
    return _pair_cost(m, topology.seconds_per_byte) * m.bytes_per_token / max(m.num_tokens, 1)


def max_gpu_load(placement: Placement, trace: Trace, topology: Topology, options: Mapping[str, Any]) -> float:
    """Sum over layers of the busiest GPU's selections, every replica of an expert serving an even share."""
    load = trace.layer_counts().astype(np.float64)  # [L, E]
    slots = placement.slots
    L = slots.shape[0]
    count = np.maximum(placement.num_replicas(), 1)  # [L, E]
    share = load / count
    per = np.take_along_axis(share, np.maximum(slots, 0).reshape(L, -1), axis=1).reshape(slots.shape)
    return float(np.where(slots >= 0, per, 0.0).sum(axis=2).max(axis=1).sum())


def step_metrics(placement: Placement, trace: Trace, topology: Topology, options: Mapping[str, Any]) -> Metrics:
    """The evaluator's :class:`Metrics` under a ``layer-time`` method's serving options (0 / empty = default)."""
    return evaluate(placement, trace, topology, replica=options.get("replica", "vllm"),
                    transport=options.get("transport", "nccl"),
                    tokens_per_step=options.get("tokens_per_step") or None,
                    tokens_per_gpu=options.get("tokens_per_gpu") or None,
                    dispatch_dtype=options.get("dispatch_dtype", "bf16"),
                    combine_dtype=options.get("combine_dtype", "bf16"),
                    gpu=options.get("gpu") or None, overlap=bool(options.get("overlap", False)))


def step_time(placement: Placement, trace: Trace, topology: Topology, options: Mapping[str, Any]) -> float:
    return step_metrics(placement, trace, topology, options).step_time


def boundary_bottleneck(placement: Placement, trace: Trace, topology: Topology,
                        options: Mapping[str, Any]) -> float:
    m = evaluate(placement, trace, topology, dispatch="coherent", dedup=False, origins="auto")
    cost = options.get("cost", "time")
    G = topology.num_gpus
    if cost == "cross":
        W = 1.0 - np.eye(G)
    elif cost == "hops":
        W = np.asarray(topology.hops, dtype=np.float64)
    else:
        W = np.asarray(topology.seconds_per_byte, dtype=np.float64) * m.bytes_per_token
    W = W * (1.0 - np.eye(G))  # pairs u != v only
    boundaries = m.layer_traffic[1:]  # [L-1, G, G] tokens into layers 1 .. L-1
    return float((boundaries * W[None]).max(axis=(1, 2)).sum()) if boundaries.size else 0.0


@dataclass(frozen=True)
class Objective:
    """A named objective: ``function(placement, trace, topology, options) -> float`` (minimised).

    ``reads`` names the method options the value depends on (each with the default the function
    assumes when the method has no such option); other options (solver, backend, limits) never
    change it.
    """

    name: str
    function: Callable[[Placement, Trace, Topology, Mapping[str, Any]], float]
    reads: tuple[str, ...]
    summary: str

    def __call__(self, placement: Placement, trace: Trace, topology: Topology,
                 options: Mapping[str, Any] | None = None) -> float:
        opts = {k: v for k, v in dict(options or {}).items() if k in self.reads}
        return float(self.function(placement, trace, topology, opts))


#: Objective name -> :class:`Objective`, the names :attr:`Method.objective <placement.registry.Method>` uses.
OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("expected_hops", expected_hops, ("origins", "cost"),
              "hop-transmissions per token, origin dispatch (seconds per byte with cost=time)"),
    Objective("uniform_load_hops", uniform_load_hops, ("origins", "cost"),
              "expected_hops with every expert equally loaded (k/E)"),
    Objective("alltoall_bandwidth_time", alltoall_bandwidth_time, ("hidden_size", "dtype"),
              "modelled all-to-all seconds without the latency terms, uniform origins"),
    Objective("coherent_cost", coherent_cost, ("cost",),
              "coherent dispatch: boundary_cross_fraction, hop_transmissions or seconds per token"),
    Objective("boundary_bottleneck", boundary_bottleneck, ("cost",),
              "sum over layer boundaries of the busiest weighted GPU pair (coherent dispatch)"),
    Objective("max_gpu_load", max_gpu_load, (),
              "sum over layers of the busiest GPU's selections, even split over replicas (EPLB's model)"),
    Objective("step_time", step_time, ("replica", "transport", "tokens_per_step", "tokens_per_gpu", "dispatch_dtype",
                                       "combine_dtype", "gpu", "overlap"),
              "the serving-step model's seconds per step over all MoE layers (evaluate(...).step_time)"),
)}


def objective_value(name: str, placement: Placement, trace: Trace, topology: Topology,
                    options: Mapping[str, Any] | None = None) -> float:
    """Objective ``name`` (a key of :data:`OBJECTIVES`) of ``placement`` under the method's ``options``."""
    try:
        objective = OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}") from None
    return objective(placement, trace, topology, options)
