"""Trace statistics, computed once and vectorised: what every formulation reads.

:class:`TraceStats` is the only thing formulations see of a trace.  Load-based
quantities work for both trace kinds; per-token quantities (co-activation,
transitions) need a token trace and raise
:class:`~placement.errors.NeedsTokenTraceError` on a count trace.

The counting itself is done by :mod:`placement.trace.counting` (this module imports the
trace package, never the reverse).  Counting conventions (shared with the evaluator):

* ``load[l, e]`` counts selections: a token that picks expert ``e`` at layer ``l``
  adds 1, whatever its top-k position.  ``load[l].sum() == tokens * k``.
* ``transitions[l][i, j]`` counts, over tokens, the pairs (expert ``i`` at layer ``l``,
  expert ``j`` at layer ``l + 1``): all ``k * k`` pairs of a token, each weight 1.
  A formulation that wants "probability a token moves from ``i`` to ``j``" divides by
  ``tokens * k * k``.
* ``coactivation[l][i, j]`` (``i != j``) counts tokens whose top-k at layer ``l`` holds
  both ``i`` and ``j``; symmetric, zero diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from .trace._trace import Trace
from .trace.counting import (
    _coactivation,
    _load_counts,
    _transitions,
    coactivation_counts,
    expert_load,
    transition_counts,
)

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp

# the counting kernels live in :mod:`placement.trace.counting`; re-exported here for existing callers
__all__ = ["TraceStats", "expert_load", "transition_counts", "coactivation_counts"]


@dataclass(frozen=True, eq=False)
class TraceStats:
    """Statistics of one :class:`~placement.trace.Trace`, each computed on first use and cached.

    Attributes (all read-only)
    --------------------------
    load:
        ``int64 [layers, experts]`` selections per expert (both trace kinds).
    load_by_origin:
        ``int64 [ranks, layers, experts]`` selections per origin rank (token traces with
        origins, or count traces recorded per rank); ``None`` otherwise.
    origin_counts:
        ``int64 [ranks]`` tokens per origin rank, or ``None``.
    transitions:
        ``layers - 1`` sparse ``int64 [E, E]`` (token traces only).
    coactivation:
        ``layers`` sparse ``int64 [E, E]`` (token traces only).

    Examples
    --------
    >>> import numpy as np
    >>> from placement.trace import ModelSpec, Trace
    >>> t = Trace.from_tokens(ModelSpec("m", 2, 4, 1), np.array([[[0], [1]], [[0], [2]]]))
    >>> s = TraceStats(t)
    >>> s.load.tolist()
    [[2, 0, 0, 0], [0, 1, 1, 0]]
    >>> s.probability[0].tolist()
    [1.0, 0.0, 0.0, 0.0]
    """

    trace: Trace

    @property
    def kind(self) -> str:
        return self.trace.kind

    @cached_property
    def load(self) -> np.ndarray:
        return self.trace.layer_counts()

    @cached_property
    def probability(self) -> np.ndarray:
        """``float64 [layers, experts]``: probability that expert ``e`` is in a token's top-k at layer ``l``.

        ``load / tokens``; rows sum to ``k``.  For a count trace, tokens per layer are the
        layer's selections divided by ``k``.
        """
        load = self.load.astype(np.float64)
        per_layer = load.sum(axis=1, keepdims=True) / self.trace.top_k
        return np.divide(load, per_layer, out=np.zeros_like(load), where=per_layer > 0)

    @cached_property
    def load_by_origin(self) -> np.ndarray | None:
        t = self.trace
        if t.counts is not None:
            return t.counts if t.counts.ndim == 3 else None
        if t.origin is None or t.num_ranks is None or t.experts is None:
            return None
        return _load_counts(t.experts, t.num_experts, t.origin, t.num_ranks)

    @cached_property
    def origin_counts(self) -> np.ndarray | None:
        t = self.trace
        if t.origin is not None and t.num_ranks is not None:
            return np.bincount(t.origin, minlength=t.num_ranks).astype(np.int64)
        if t.counts is not None and t.counts.ndim == 3:
            # tokens per rank implied by the counts of layer 0
            return t.counts[:, 0, :].sum(axis=1) // t.top_k
        return None

    @cached_property
    def transitions(self) -> tuple[sp.csr_matrix, ...]:
        experts = self.trace.require_tokens("inter-layer transition statistics")
        return _transitions(experts, self.trace.num_experts)

    @cached_property
    def coactivation(self) -> tuple[sp.csr_matrix, ...]:
        experts = self.trace.require_tokens("co-activation statistics")
        return _coactivation(experts, self.trace.num_experts)
