"""Trace statistics, computed once and vectorised: what every formulation reads.

:class:`TraceStats` is the only thing formulations see of a trace.  Load-based
quantities work for both trace kinds; per-token quantities (co-activation,
transitions) need a token trace and raise
:class:`~placement.errors.NeedsTokenTraceError` on a count trace.

Counting conventions (shared with the evaluator):

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

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp

__all__ = ["TraceStats", "expert_load", "transition_counts", "coactivation_counts"]

#: tokens per block when counting pairs: a block's pair codes stay in cache (2**11-2**13 measured best)
_CHUNK = 1 << 13
#: selections per block when counting load
_LOAD_BLOCK = 1 << 20


def expert_load(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """``int64 [layers, experts]`` selections per expert from ``experts [tokens, layers, k]``.

    >>> import numpy as np
    >>> expert_load(np.array([[[0, 1]], [[1, 2]]]), 3)
    array([[1, 2, 1]])
    """
    tokens, layers, k = experts.shape
    # code = layer * E + expert, one bincount per block of tokens (a bounded int64 buffer)
    offs = (np.arange(layers, dtype=np.int64) * num_experts)[None, :, None]
    out = np.zeros(layers * num_experts, dtype=np.int64)
    step = max(1, _LOAD_BLOCK // max(1, layers * k))
    buf = np.empty((min(step, tokens), layers, k), dtype=np.int64)
    for start in range(0, tokens, step):
        chunk = experts[start:start + step]
        codes = buf[:chunk.shape[0]]
        np.add(chunk, offs, out=codes, casting="unsafe")
        out += np.bincount(codes.ravel(), minlength=layers * num_experts)
    return out.reshape(layers, num_experts)


def _pair_counts(a: np.ndarray, b: np.ndarray, num_experts: int) -> np.ndarray:
    """``int64 [E*E]`` counts of all pairs (a[t, i], b[t, j]) over tokens; a, b are ``[tokens, k]``.

    Codes ``a * E + b`` are built directly in ``intp`` (what ``np.bincount`` reads, so it
    does not convert them again) in blocks of ``_CHUNK`` tokens that stay in cache.
    """
    E = num_experts
    out = np.zeros(E * E, dtype=np.int64)
    ka, kb = a.shape[1], b.shape[1]
    rows = min(_CHUNK, a.shape[0])
    left = np.empty((rows, ka), dtype=np.intp)
    codes = np.empty((rows, ka, kb), dtype=np.intp)
    for start in range(0, a.shape[0], _CHUNK):
        m = min(_CHUNK, a.shape[0] - start)
        np.copyto(left[:m], a[start:start + m], casting="unsafe")
        left[:m] *= E
        np.add(left[:m, :, None], b[start:start + m, None, :], out=codes[:m], casting="unsafe")
        out += np.bincount(codes[:m].ravel(), minlength=E * E)
    return out


def transition_counts(experts: np.ndarray, num_experts: int) -> tuple[sp.csr_matrix, ...]:
    """Consecutive-layer transition counts: ``layers - 1`` sparse ``int64 [E, E]`` matrices.

    Entry ``[i, j]`` of matrix ``l`` counts token pairs (``i`` at layer ``l``, ``j`` at ``l + 1``),
    all ``k * k`` pairs of each token counted once.

    >>> import numpy as np
    >>> T = transition_counts(np.array([[[0], [1]], [[0], [1]], [[1], [0]]]), 2)
    >>> T[0].toarray()
    array([[0, 2],
           [1, 0]])
    """
    import scipy.sparse as sp

    E = num_experts
    mats = []
    for layer in range(experts.shape[1] - 1):
        counts = _pair_counts(experts[:, layer, :], experts[:, layer + 1, :], E)
        mats.append(sp.csr_matrix(counts.reshape(E, E)))
    return tuple(mats)


def coactivation_counts(experts: np.ndarray, num_experts: int) -> tuple[sp.csr_matrix, ...]:
    """Within-layer co-activation: ``layers`` sparse symmetric ``int64 [E, E]``, zero diagonal."""
    import scipy.sparse as sp

    E = num_experts
    mats = []
    for layer in range(experts.shape[1]):
        ids = experts[:, layer, :]
        counts = _pair_counts(ids, ids, E).reshape(E, E)
        np.fill_diagonal(counts, 0)  # a token's top-k ids are distinct: the diagonal is self-pairs
        mats.append(sp.csr_matrix(counts))
    return tuple(mats)


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
        if t.origin is None or t.num_ranks is None:
            return None
        assert t.experts is not None
        R, L, E = t.num_ranks, t.num_layers, t.num_experts
        # code = (origin * L + layer) * E + expert, counted per block of tokens (bounded memory)
        offs = (np.arange(L, dtype=np.int64) * E)[None, :, None]
        out = np.zeros(R * L * E, dtype=np.int64)
        tokens, _, k = t.experts.shape
        step = max(1, _LOAD_BLOCK // max(1, L * k))
        buf = np.empty((min(step, tokens), L, k), dtype=np.int64)
        for start in range(0, tokens, step):
            chunk = t.experts[start:start + step]
            codes = buf[:chunk.shape[0]]
            np.add(chunk, offs, out=codes, casting="unsafe")
            codes += (t.origin[start:start + step].astype(np.int64) * (L * E))[:, None, None]
            out += np.bincount(codes.ravel(), minlength=R * L * E)
        return out.reshape(R, L, E)

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
        return transition_counts(experts, self.trace.num_experts)

    @cached_property
    def coactivation(self) -> tuple[sp.csr_matrix, ...]:
        experts = self.trace.require_tokens("co-activation statistics")
        return coactivation_counts(experts, self.trace.num_experts)
