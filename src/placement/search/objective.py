"""The objective the ``layer-time`` search minimises: the serving-step model's time of each MoE layer.

:class:`StepObjective` wraps the evaluator's step model (:func:`placement.evaluation.serving.step_times`)
for one trace, topology and serving setup, so that a search can score many candidate placements
with *exactly* the figure :func:`placement.evaluate` reports (no surrogate decides what is kept).
Layers are independent in that model (a step's time is the sum of its layers' times), so a search
can change every layer at once and keep, per layer, whichever candidate is faster.

It also keeps what guides the search (cheap, approximate, never used to decide): per layer and
sender GPU the selections of each expert (``sent float64 [L, G, E]``, per serving step) and which
GPU pairs each link carries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation import serving_setup
from ..evaluation.replica_rules import sending_gpus
from ..evaluation.serving import ServingSetup, StepTimes, step_times
from ..placement import Placement

if TYPE_CHECKING:  # pragma: no cover
    from ..topology import Topology
    from ..trace import Trace

__all__ = ["StepObjective", "SERVING_OPTIONS"]

#: The serving options a step objective takes (names and meanings as in :func:`placement.evaluate`).
SERVING_OPTIONS = ("replica", "transport", "tokens_per_step", "tokens_per_gpu", "dispatch_dtype", "combine_dtype",
                   "gpu", "overlap")


@dataclass(frozen=True, eq=False)
class StepObjective:
    """Seconds per layer of one serving step of ``trace`` on ``topology`` under ``setup``.

    Attributes
    ----------
    trace, topology, setup:
        What is evaluated; ``setup`` as :func:`placement.evaluation.serving_setup` builds it.
    senders:
        ``"trace"`` (origin ranks) or ``"round_robin"``, as the evaluator resolves them.
    sent:
        ``float64 [layers, gpus, experts]`` selections of each expert sent from each GPU in one
        serving step (guidance only).
    """

    trace: Trace
    topology: Topology
    setup: ServingSetup
    senders: str
    sent: np.ndarray = field(repr=False)
    evaluations: list[int] = field(default_factory=lambda: [0], repr=False)
    #: [seconds, calls] of the evaluator calls so far (what the next one will roughly take)
    timing: list[float] = field(default_factory=lambda: [0.0, 0.0], repr=False)

    @classmethod
    def build(cls, trace: Trace, topology: Topology, *, replica: str = "vllm", transport: str = "nccl",
              tokens_per_step: int | None = None, tokens_per_gpu: int | None = None,
              dispatch_dtype: str = "bf16", combine_dtype: str = "bf16", gpu: str | None = None,
              overlap: bool = False) -> StepObjective:
        """The objective :func:`placement.evaluate` reports as ``step_time`` for these options (its default
        origins ``"auto"``, ``dedup`` as the transport fixes it)."""
        G = topology.num_gpus
        dedup = transport == "deepep"
        setup = serving_setup(trace, topology, replica=replica, transport=transport, dedup=dedup,
                              tokens_per_step=tokens_per_step, tokens_per_gpu=tokens_per_gpu,
                              dispatch_dtype=dispatch_dtype, combine_dtype=combine_dtype, gpu=gpu, overlap=overlap)
        L, E = trace.num_layers, trace.num_experts
        if trace.kind == "tokens":
            has = trace.origin is not None and trace.num_ranks == G
            senders = "trace" if has else "round_robin"
            src = sending_gpus(trace, G, senders)
            ex = trace.experts.astype(np.int64)  # [n, L, k]
            n, _, k = ex.shape
            idx = (np.arange(L)[None, :, None] * G + src[:, None, None]) * E + ex
            sent = np.bincount(idx.ravel(), minlength=L * G * E).reshape(L, G, E).astype(np.float64)
            sent *= setup.tokens_per_step / max(n, 1)
        else:
            counts = trace.counts.astype(np.float64)
            if counts.ndim == 3 and trace.num_ranks == G:
                senders = "trace"
                sent = np.transpose(counts, (1, 0, 2)).copy()
            else:
                senders = "uniform"
                sent = np.broadcast_to(trace.layer_counts()[:, None, :] / G, (L, G, E)).copy()
            per_layer = sent.sum(axis=(1, 2)).max() / trace.top_k
            sent *= setup.tokens_per_step / max(per_layer, 1e-300)
        return cls(trace=trace, topology=topology, setup=setup, senders=senders, sent=sent)

    def times(self, slots: np.ndarray, routing: np.ndarray | None = None) -> StepTimes:
        """The evaluator's :class:`StepTimes` of ``slots int [L, G, S]`` (all layers)."""
        t0 = time.perf_counter()
        placement = Placement(np.asarray(slots), num_experts=self.trace.num_experts, routing=routing)
        self.evaluations[0] += 1
        senders = self.senders if self.senders != "uniform" else "round_robin"
        out = step_times(placement, self.trace, self.topology, self.setup, senders=senders)
        self.timing[0] += time.perf_counter() - t0
        self.timing[1] += 1
        return out

    def eval_seconds(self) -> float:
        """Mean seconds of one evaluator call so far (0 before the first)."""
        return self.timing[0] / self.timing[1] if self.timing[1] else 0.0

    def layer_times(self, slots: np.ndarray, routing: np.ndarray | None = None) -> np.ndarray:
        """``float64 [L]`` seconds per layer of one serving step."""
        return self.times(slots, routing).layer_time

    def assess(self, slots: np.ndarray) -> tuple[StepTimes, np.ndarray]:
        """``(step times that guide the search, float64 [L] the objective per layer)``."""
        st = self.times(slots)
        return st, st.layer_time.copy()
