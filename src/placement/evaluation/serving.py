"""The serving-step model: the time of each MoE layer in one serving step of a real stack.

Per layer and serving step, ``dispatch + the slowest GPU's expert time + combine`` (or, with two
micro-batches overlapping communication and compute, ``max(dispatch + combine, compute)``), where

* **which replica** serves each selection follows the stack's rule
  (:mod:`placement.evaluation.replica_rules`: ``vllm``, ``trtllm``, ``sglang-static``, ...);
* **what moves** follows the transport (:mod:`placement.evaluation.transports`: NCCL with or
  without de-duplication, DeepEP normal mode, DeepEP low-latency mode); a phase takes as long as
  its busiest link (bytes / bandwidth, the legs of the phase pipelined) plus the largest latency
  of each leg; dispatch and combine carry their own dtype (e.g. fp8 dispatch, bf16 combine);
* **expert time** is the compute model of :mod:`placement.hardware`: a GPU runs each of its slots
  that received tokens, ``max(weight read, FLOPs / achieved grouped-GEMM throughput)``, and its
  shared experts on the tokens it holds.

Serving steps
    A step is ``tokens_per_step`` tokens over all GPUs.  A token trace is cut into consecutive
    steps of that many tokens (a remainder shorter than a step is left out); each step is
    evaluated on its own and the times are averaged over steps, so an expert that receives no
    token in a step costs nothing in that step.  A trace shorter than one step is one step with
    its counts scaled up (expected counts: the stated approximation), as is a count trace.
Senders
    The trace's origin ranks when it has them for every GPU, else token ``t`` is sent from GPU
    ``t mod G`` (each GPU sends ``tokens_per_step / G`` tokens per step).  Count traces use the
    per-origin counts, else an even share per GPU.
Count traces
    Replica choice in expectation (:attr:`ReplicaRule.expectation`); transports that de-duplicate
    per token (``nccl`` with ``dedup``, ``deepep``) need a token trace and are refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..costs import Wire
from ..errors import input_error
from ..hardware import ExpertShape, GpuSpec
from .replica_rules import RoutingContext, expected_flows, get_rule, sending_gpus
from .transports import TRANSPORTS, destination_probability

if TYPE_CHECKING:  # pragma: no cover
    from ..placement import Placement
    from ..topology import Topology
    from ..trace import Trace

__all__ = ["ServingSetup", "StepTimes", "step_times", "PHASES"]

#: The phases of a layer, in order.
PHASES = ("dispatch", "compute", "combine")
#: selections x GPUs per chunk of the dense per-selection destination array (bounds memory)
_CHUNK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class ServingSetup:
    """How the serving stack runs a step.

    Attributes
    ----------
    replica:
        A replica rule name (:data:`~placement.evaluation.replica_rules.REPLICA_RULES`).
    transport:
        A transport name (:data:`~placement.evaluation.transports.TRANSPORTS`).
    dedup:
        For ``nccl``: one copy per (token, GPU) instead of per (token, expert).
    tokens_per_step:
        Tokens of one serving step over all GPUs.
    dispatch_wire, combine_wire:
        Bytes per token of each phase (hidden size and dtype).
    gpu:
        The GPU model of every GPU.
    expert:
        The routed expert's shape (shared experts are taken to have the same shape); ``None`` when
        unknown: expert compute is then not modelled (0 s) and :attr:`StepTimes.notes` says so.
    num_shared_experts:
        Shared experts every GPU runs on the tokens it holds.
    overlap:
        Two micro-batches overlap communication with compute.
    """

    replica: str
    transport: str
    dedup: bool
    tokens_per_step: int
    dispatch_wire: Wire
    combine_wire: Wire
    gpu: GpuSpec
    expert: ExpertShape | None
    num_shared_experts: int = 0
    overlap: bool = False

    def expert_time(self, tokens: np.ndarray) -> np.ndarray:
        """Seconds per expert for ``tokens`` (0 everywhere when the expert shape is unknown)."""
        if self.expert is None:
            return np.zeros(np.shape(tokens))
        return np.asarray(self.gpu.expert_time(self.expert, tokens))

    def __post_init__(self) -> None:
        get_rule(self.replica)
        if self.transport not in TRANSPORTS:
            raise input_error(f"unknown transport {self.transport!r}; choose one of {list(TRANSPORTS)}",
                              field="transport")
        n = self.tokens_per_step
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise input_error(f"must be a positive integer, got {n!r}", field="tokens_per_step")


@dataclass(frozen=True, eq=False)
class StepTimes:
    """Times of one serving step (means over the evaluated steps), in seconds.

    Attributes
    ----------
    setup:
        The :class:`ServingSetup` evaluated.
    num_steps:
        Steps evaluated (token traces) or 1 (an expected step).
    scale:
        Factor applied to the counts (> 1 when the trace holds fewer tokens than a step).
    phase_time:
        ``float64 [layers, 3]`` dispatch, compute and combine seconds per layer.
    layer_time:
        ``float64 [layers]`` seconds per layer (sum of phases, or with overlap
        ``max(dispatch + combine, compute)``), mean over steps.
    step_time:
        Seconds per serving step, all MoE layers (``layer_time.sum()``).
    critical:
        ``[layers][3]`` what bounds each phase: the busiest link's name for dispatch and combine,
        the slowest GPU's name for compute (the most frequent over steps).
    gpu_compute:
        ``float64 [layers, gpus]`` expert seconds per GPU.
    gpu_tokens:
        ``float64 [layers, gpus]`` token-expert computations per GPU per step (routed experts).
    tier_bytes:
        Bytes per step over the links of each tier, dispatch and combine together.
    notes:
        What the figures leave out or approximate (scaled counts, unknown expert shape...).
    """

    setup: ServingSetup
    num_steps: int
    scale: float
    phase_time: np.ndarray
    layer_time: np.ndarray
    step_time: float
    critical: list[list[str]] = field(repr=False)
    gpu_compute: np.ndarray = field(repr=False)
    gpu_tokens: np.ndarray = field(repr=False)
    tier_bytes: dict[str, float] = field(repr=False)
    notes: tuple[str, ...] = ()

    @property
    def phase_totals(self) -> dict[str, float]:
        """Seconds per step of each phase summed over layers."""
        return {p: float(self.phase_time[:, i].sum()) for i, p in enumerate(PHASES)}

    @property
    def bound_by(self) -> str:
        """The phase with the largest share of the step, and its most frequent critical element."""
        i = int(np.argmax(self.phase_time.sum(axis=0)))
        names = [row[i] for row in self.critical]
        top = max(dict.fromkeys(names), key=names.count) if names else "-"  # ties: the first layer's, not set order
        return f"{PHASES[i]} ({top})"


# ------------------------------------------------------------------------------------ senders and steps
def _steps_and_senders(trace: Trace, G: int, tokens_per_step: int,
                       senders: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]:
    """``(keep, step, src, num_steps, scale)``: the tokens used, their step and sending GPU (``senders``:
    ``"trace"`` for the trace's origin ranks, else token ``t`` on GPU ``t mod G``)."""
    N = trace.num_tokens
    if N >= tokens_per_step:
        S = N // tokens_per_step
        keep = S * tokens_per_step
        scale = 1.0
    else:
        S, keep, scale = 1, N, tokens_per_step / max(N, 1)
    idx = np.arange(keep)
    step = (idx // tokens_per_step).astype(np.int64) if scale == 1.0 else np.zeros(keep, dtype=np.int64)
    return np.asarray(keep), step, sending_gpus(trace, G, senders)[:keep], S, scale


# ------------------------------------------------------------------------------------ link times
def _phase_time(legs: list[np.ndarray], topology: Topology, bytes_per_token: int) -> tuple[np.ndarray, np.ndarray]:
    """``(seconds float64 [steps], critical arc int64 [steps])`` of one phase from its legs ``[steps, G, G]``."""
    route = topology.route_matrix  # csr [G*G, A]
    bw = topology.arc_bandwidth
    S, G, _ = legs[0].shape
    A = route.shape[1]
    arc = np.zeros((S, A))
    latency = np.zeros(S)
    off = ~np.eye(G, dtype=bool)
    for leg in legs:
        flat = leg.reshape(S, G * G)
        if A:
            arc += np.asarray((route.T @ flat.T).T)
        sends = (leg > 1e-12) & off[None]
        latency += np.where(sends, topology.latency[None], 0.0).max(axis=(1, 2))
    if not A:
        return latency, np.full(S, -1, dtype=np.int64)
    busy = arc * bytes_per_token / bw[None, :]
    critical = np.argmax(busy, axis=1)
    seconds = busy.max(axis=1)
    return np.where(seconds > 0, seconds + latency, latency), np.where(seconds > 0, critical, -1)


def _arc_bytes_by_tier(legs: list[np.ndarray], topology: Topology, bytes_per_token: int) -> dict[str, float]:
    route = topology.route_matrix
    S, G, _ = legs[0].shape
    total = sum(leg.sum(axis=0) for leg in legs).reshape(G * G)
    per_arc = (route.T @ total) * bytes_per_token / S if route.shape[1] else np.zeros(0)
    tiers = np.asarray(topology.arc_tier, dtype=object)
    return {t: float(per_arc[tiers == t].sum()) for t in topology.tiers}


# ------------------------------------------------------------------------------------ the model
def step_times(placement: Placement, trace: Trace, topology: Topology, setup: ServingSetup,
               senders: str = "auto") -> StepTimes:
    """The :class:`StepTimes` of ``placement`` serving ``trace``'s tokens on ``topology`` (module docstring).

    ``senders``: ``"trace"`` (the trace's origin ranks, which must be the topology's GPUs), ``"round_robin"``
    (token ``t`` on GPU ``t mod G``) or ``"auto"`` (the trace's when it has origins of every GPU).
    """
    G = topology.num_gpus
    has = trace.origin is not None or (trace.counts is not None and trace.counts.ndim == 3)
    if senders == "auto":
        senders = "trace" if has and trace.num_ranks == G else "round_robin"
    if senders == "trace" and not (has and trace.num_ranks == G):
        raise input_error(f"the trace has no origins of {G} GPUs; use senders 'round_robin'", trace.source, "origin")
    rule = get_rule(setup.replica)
    transport = TRANSPORTS[setup.transport]
    ctx = RoutingContext.build(placement, topology)
    L, G = trace.num_layers, topology.num_gpus
    Sg = placement.slots_per_gpu
    P = G * Sg
    if trace.kind == "counts":
        if transport.needs_tokens or (setup.transport == "nccl" and setup.dedup):
            trace.require_tokens(f"transport '{setup.transport}'" + (" with de-duplication" if setup.dedup and
                                                                      setup.transport == "nccl" else ""))
        return _count_step(placement, trace, topology, setup, ctx, rule, senders)
    experts = trace.require_tokens("the serving-step model")
    keep, step, src, S, scale = _steps_and_senders(trace, G, setup.tokens_per_step, senders)
    experts = experts[: int(keep)]
    n, _, k = experts.shape
    chunk = max(1, _CHUNK_ENTRIES // max(1, k * G))
    held = np.bincount(step * G + src, minlength=S * G).reshape(S, G) * scale  # tokens each GPU holds
    acc = _StepAccumulator(setup, topology, S, L, held)
    for layer in range(L):
        slot_tokens = np.zeros(S * P)
        legs: list[np.ndarray] | None = None
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            slots, weights = rule.route(ctx, layer, experts[a:b, layer, :], src[a:b], step[a:b])
            ok = slots >= 0
            slot_tokens += np.bincount((step[a:b, None, None] * P + np.where(ok, slots, 0)).ravel(),
                                       weights=np.where(ok, weights, 0.0).ravel(), minlength=S * P)
            q = destination_probability(slots, weights, Sg, G)
            part = transport.legs(q, src[a:b], step[a:b], S, topology.server_of, setup.dedup)
            legs = part if legs is None else [x + y for x, y in zip(legs, part, strict=True)]
        assert legs is not None  # n >= 1 (a trace holds at least one token)
        acc.add(layer, [leg * scale for leg in legs], slot_tokens.reshape(S, G, Sg) * scale)
    return acc.finish(scale)


def _count_step(placement: Placement, trace: Trace, topology: Topology, setup: ServingSetup, ctx: RoutingContext,
                rule, senders: str) -> StepTimes:
    from ..stats import TraceStats

    L, G, E = trace.num_layers, topology.num_gpus, trace.num_experts
    Sg = placement.slots_per_gpu
    stats = TraceStats(trace)
    if senders == "trace":
        by_origin = stats.load_by_origin.astype(np.float64)  # [G, L, E]
    else:
        by_origin = np.broadcast_to(stats.load.astype(np.float64) / G, (G, L, E))
    tokens_in_trace = stats.load.sum(axis=1).max() / trace.top_k  # tokens of the busiest layer
    scale = setup.tokens_per_step / max(tokens_in_trace, 1e-300)
    acc = _StepAccumulator(setup, topology, 1, L, np.full((1, G), setup.tokens_per_step / G))
    for layer in range(L):
        slot_tokens, traffic = expected_flows(ctx, rule, layer, by_origin[:, layer, :] * scale)
        acc.add(layer, [traffic.reshape(1, G, G)], slot_tokens.reshape(1, G, Sg))
    out = acc.finish(1.0)
    note = (f"count trace: one expected step ({setup.tokens_per_step} tokens, replica shares in expectation, "
            "an expert runs whenever its expected count is positive)")
    return dataclasses.replace(out, scale=float(scale), notes=(note, *out.notes))


class _StepAccumulator:
    """Per-layer figures of every evaluated step, gathered layer by layer, then turned into :class:`StepTimes`.

    ``held float64 [steps, G]``: tokens each GPU holds in each step (its shared experts run on them).
    """

    def __init__(self, setup: ServingSetup, topology: Topology, num_steps: int, num_layers: int,
                 held: np.ndarray) -> None:
        G = topology.num_gpus
        self.setup, self.topology, self.num_steps = setup, topology, num_steps
        self.phase = np.zeros((num_steps, num_layers, 3))
        self.crit_arc = np.full((num_steps, num_layers, 2), -1, dtype=np.int64)
        self.crit_gpu = np.zeros((num_steps, num_layers), dtype=np.int64)
        self.gpu_compute = np.zeros((num_layers, G))
        self.gpu_tokens = np.zeros((num_layers, G))
        self.tiers: dict[str, float] = dict.fromkeys(topology.tiers, 0.0)
        self.shared = setup.num_shared_experts * setup.expert_time(held)  # [steps, G]

    def add(self, layer: int, legs: list[np.ndarray], tokens: np.ndarray) -> None:
        """One layer: its dispatch ``legs`` (``float64 [steps, G, G]`` each; combine sends them back) and
        ``tokens float64 [steps, G, slots_per_gpu]`` served per slot."""
        setup, topology = self.setup, self.topology
        compute = setup.expert_time(tokens).sum(axis=2) + self.shared  # [steps, G]
        back = [np.transpose(leg, (0, 2, 1)) for leg in legs[::-1]]
        d, dc = _phase_time(legs, topology, setup.dispatch_wire.bytes_per_token)
        c, cc = _phase_time(back, topology, setup.combine_wire.bytes_per_token)
        self.phase[:, layer] = np.stack([d, compute.max(axis=1), c], axis=1)
        self.crit_arc[:, layer] = np.stack([dc, cc], axis=1)
        self.crit_gpu[:, layer] = np.argmax(compute, axis=1)
        self.gpu_compute[layer] = compute.mean(axis=0)
        self.gpu_tokens[layer] = tokens.sum(axis=2).mean(axis=0)
        for phase_legs, wire in ((legs, setup.dispatch_wire), (back, setup.combine_wire)):
            for tier, value in _arc_bytes_by_tier(phase_legs, topology, wire.bytes_per_token).items():
                self.tiers[tier] += value

    def finish(self, scale: float) -> StepTimes:
        """The :class:`StepTimes` of the gathered layers (``scale``: the factor the counts were scaled by)."""
        return _finish(self.setup, self.topology, self.phase, self.crit_arc, self.crit_gpu, self.gpu_compute,
                       self.gpu_tokens, self.tiers, self.num_steps, scale)


def _finish(setup: ServingSetup, topology: Topology, phase: np.ndarray, crit_arc: np.ndarray, crit_gpu: np.ndarray,
            gpu_compute: np.ndarray, gpu_tokens: np.ndarray, tiers: dict[str, float], S: int,
            scale: float) -> StepTimes:
    d, comp, c = phase[..., 0], phase[..., 1], phase[..., 2]
    per_step = np.maximum(d + c, comp) if setup.overlap else d + comp + c  # [S, L]
    layer_time = per_step.mean(axis=0)
    names = topology.arc_names
    L = phase.shape[1]

    def most_frequent(values: np.ndarray) -> int:
        vals, counts = np.unique(values, return_counts=True)
        return int(vals[np.argmax(counts)])

    notes = []
    if scale != 1.0:
        notes.append(f"the trace holds fewer tokens than one step: counts scaled by {scale:.4g} (expected counts)")
    if setup.expert is None:
        notes.append("expert shape unknown (model has no intermediate_size): expert compute not modelled")
    critical = []
    for layer in range(L):
        row = []
        for i, col in ((0, crit_arc[:, layer, 0]), (None, crit_gpu[:, layer]), (1, crit_arc[:, layer, 1])):
            top = most_frequent(col)
            if i is None:
                row.append(topology.gpus[top])
            else:
                row.append(names[top] if top >= 0 else "-")
        critical.append(row)
    return StepTimes(setup=setup, num_steps=int(S), scale=float(scale), phase_time=phase.mean(axis=0),
                     layer_time=layer_time, step_time=float(layer_time.sum()), critical=critical,
                     gpu_compute=gpu_compute, gpu_tokens=gpu_tokens, tier_bytes=tiers, notes=tuple(notes))
