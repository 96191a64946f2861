"""Counting kernels over token traces: every per-token count the library takes, in one place.

All kernels read ``experts: int [tokens, layers, k]`` (expert ids in ``[0, num_experts)``)
and return exact ``int64`` counts.  :class:`~placement.trace.Trace` and
:class:`~placement.stats.TraceStats` both count through this module; it imports nothing
from :mod:`placement.stats`.

Counting conventions (shared with the evaluator):

* load: a token that picks expert ``e`` at layer ``l`` adds 1 to ``[l, e]``, whatever its
  top-k slot, so each layer's load sums to ``tokens * k``;
* transitions ``[l][i, j]``: over tokens, the pairs (expert ``i`` at layer ``l``, expert ``j``
  at layer ``l + 1``), all ``k * k`` pairs of a token, each weight 1;
* co-activation ``[l][i, j]`` (``i != j``): tokens whose top-k at layer ``l`` holds both ``i``
  and ``j``; symmetric, zero diagonal.

How the pair counters are fast (one thread, numpy only): a pair is coded as ``a * E + b``
in the smallest unsigned dtype that holds ``E * E - 1`` (``uint16`` for 256 experts); the
codes of a block of tokens are laid out slot-pair-major (``[pairs, tokens]``) so every
numpy inner loop runs over a whole block rather than over ``k`` slots; and the codes are
counted with ``np.add.at`` on an ``int64 [E * E]`` histogram, which takes the narrow codes
directly (``np.bincount`` would first convert them to ``intp``; ``ufunc.at`` has had its fast
indexed loop since numpy 1.25).  Co-activation counts only the ``k * (k - 1) / 2`` slot
pairs ``s < s'`` and adds the transpose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import input_error

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp

__all__ = ["coactivation_counts", "expert_load", "load_by_origin", "transition_counts"]

#: pair codes per block in the pair counters (1 MiB as ``uint16``; 2**17-2**21 measured, 2**19 best)
_PAIR_BLOCK = 1 << 19
#: selections per block when counting load (bounds the ``intp`` code buffer at 8 MiB)
_LOAD_BLOCK = 1 << 20


# ---------------------------------------------------------------------------- public, checked
def expert_load(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """``int64 [layers, experts]`` selections per expert from ``experts int [tokens, layers, k]``.

    >>> import numpy as np
    >>> expert_load(np.array([[[0, 1]], [[1, 2]]]), 3)
    array([[1, 2, 1]])
    """
    experts = _checked(experts, num_experts)
    return _load_counts(experts, num_experts)


def load_by_origin(experts: np.ndarray, origin: np.ndarray, num_ranks: int, num_experts: int) -> np.ndarray:
    """``int64 [ranks, layers, experts]`` selections per expert, split by each token's origin rank.

    ``origin`` is ``int [tokens]`` with values in ``[0, num_ranks)``.

    >>> import numpy as np
    >>> load_by_origin(np.array([[[0, 1]], [[1, 2]]]), np.array([1, 0]), 2, 3).tolist()
    [[[0, 1, 1]], [[1, 1, 0]]]
    """
    experts = _checked(experts, num_experts)
    origin = np.asarray(origin)
    if origin.dtype.kind not in "iu" or origin.shape != experts.shape[:1]:
        raise input_error(f"expected integer origin ranks of shape [tokens]=({experts.shape[0]},), got dtype "
                          f"{origin.dtype} and shape {origin.shape}", field="origin")
    if num_ranks < 1 or (origin.size and (origin.min() < 0 or origin.max() >= num_ranks)):
        raise input_error(f"origin ranks must lie in [0, num_ranks={num_ranks})", field="origin")
    return _load_counts(experts, num_experts, origin, num_ranks)


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
    return _transitions(_checked(experts, num_experts), num_experts)


def coactivation_counts(experts: np.ndarray, num_experts: int) -> tuple[sp.csr_matrix, ...]:
    """Within-layer co-activation: ``layers`` sparse symmetric ``int64 [E, E]``, zero diagonal.

    Entry ``[i, j]`` of matrix ``l`` counts the ordered slot pairs ``s != s'`` of a token's
    top-k at layer ``l`` holding ``(i, j)``: the tokens that chose both ``i`` and ``j``.

    >>> import numpy as np
    >>> coactivation_counts(np.array([[[0, 1]], [[1, 2]]]), 3)[0].toarray()
    array([[0, 1, 0],
           [1, 0, 1],
           [0, 1, 0]])
    """
    return _coactivation(_checked(experts, num_experts), num_experts)


def _checked(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """``experts`` as an integer ``[tokens, layers, k]`` array with ids in ``[0, num_experts)``, or raise."""
    experts = np.asarray(experts)
    if experts.ndim != 3 or experts.dtype.kind not in "iu":
        raise input_error(f"expected integer expert ids of shape [tokens, layers, k], got dtype {experts.dtype} "
                          f"and shape {experts.shape}", field="experts")
    if not isinstance(num_experts, (int, np.integer)) or num_experts < 1:
        raise input_error(f"must be a positive integer, got {num_experts!r}", field="num_experts")
    if experts.size and (experts.min() < 0 or experts.max() >= num_experts):
        raise input_error(f"expert ids must lie in [0, {num_experts}), got [{int(experts.min())}, "
                          f"{int(experts.max())}]", field="experts")
    return experts


# ---------------------------------------------------------------------------- kernels (no checks)
def _load_counts(experts: np.ndarray, num_experts: int, origin: np.ndarray | None = None,
                 num_ranks: int = 1) -> np.ndarray:
    """``int64 [layers, E]`` (no ``origin``) or ``[num_ranks, layers, E]`` selections per expert.

    Codes ``(origin * layers + layer) * E + expert`` are built in ``intp`` (what
    ``np.bincount`` reads) in blocks of ``_LOAD_BLOCK`` selections and counted per block.
    ``experts`` must already be valid (ids in range, origins in ``[0, num_ranks)``).
    """
    tokens, layers, k = experts.shape
    E = num_experts
    offsets = (np.arange(layers, dtype=np.intp) * E)[None, :, None]
    out = np.zeros(num_ranks * layers * E, dtype=np.int64)
    step = max(1, _LOAD_BLOCK // max(1, layers * k))
    codes_buffer = np.empty((min(step, tokens), layers, k), dtype=np.intp)
    for start in range(0, tokens, step):
        block = experts[start:start + step]
        codes = codes_buffer[:block.shape[0]]
        np.add(block, offsets, out=codes, casting="unsafe")
        if origin is not None:
            codes += (origin[start:start + step].astype(np.intp) * (layers * E))[:, None, None]
        out += np.bincount(codes.ravel(), minlength=out.size)
    return out.reshape(layers, E) if origin is None else out.reshape(num_ranks, layers, E)


def _pair_code_dtype(num_experts: int) -> np.dtype:
    """The smallest unsigned dtype holding every pair code ``a * E + b`` (``uint16`` for E <= 256)."""
    return np.min_scalar_type(num_experts * num_experts - 1)


def _pair_histogram(experts: np.ndarray, layer_a: int, layer_b: int, num_experts: int,
                    out: np.ndarray) -> None:
    """Add to ``out int64 [E * E]`` the code ``a * E + b`` of every counted slot pair of every token.

    ``a`` runs over a token's ids at ``layer_a`` and ``b`` over its ids at ``layer_b``.  Between
    two layers every one of the ``k * k`` slot pairs counts; within one layer
    (``layer_a == layer_b``) only the slot pairs ``s < s'`` count, so the caller adds the
    transpose.  Tokens go in blocks of about ``_PAIR_BLOCK`` codes.
    """
    tokens, _, k = experts.shape
    E = num_experts
    within = layer_a == layer_b
    pairs = k * (k - 1) // 2 if within else k * k
    if pairs == 0:  # k == 1 within a layer
        return
    dtype = _pair_code_dtype(E)
    rows = max(1, min(tokens, _PAIR_BLOCK // pairs))
    # flat buffers, viewed as C-contiguous [.., m] blocks so a short last block needs no copy
    high_buffer = np.empty(k * rows, dtype=dtype)  # a * E, slot-major
    low_buffer = np.empty(k * rows, dtype=dtype)  # b, slot-major
    codes_buffer = np.empty(pairs * rows, dtype=dtype)
    scale = dtype.type(E)
    one = np.int64(1)
    for start in range(0, tokens, rows):
        m = min(rows, tokens - start)
        high = high_buffer[:k * m].reshape(k, m)
        low = low_buffer[:k * m].reshape(k, m)
        codes = codes_buffer[:pairs * m]
        np.copyto(low, experts[start:start + m, layer_b, :].T, casting="unsafe")
        if within:
            np.multiply(low, scale, out=high)
        else:
            np.copyto(high, experts[start:start + m, layer_a, :].T, casting="unsafe")
            high *= scale
        if within:  # codes of the pairs (s, t > s): high[s] + low[t], one add per s
            row = 0
            for s in range(k - 1):
                np.add(high[s, None, :], low[s + 1:, :], out=codes[row * m:(row + k - 1 - s) * m].reshape(-1, m))
                row += k - 1 - s
        else:  # codes[s, t] = high[s] + low[t]
            np.add(high[:, None, :], low[None, :, :], out=codes.reshape(k, k, m))
        np.add.at(out, codes, one)


def _transitions(experts: np.ndarray, num_experts: int) -> tuple[sp.csr_matrix, ...]:
    """:func:`transition_counts` without the input checks."""
    import scipy.sparse as sp

    E = num_experts
    mats = []
    counts = np.empty(E * E, dtype=np.int64)
    for layer in range(experts.shape[1] - 1):
        counts[:] = 0
        _pair_histogram(experts, layer, layer + 1, E, counts)
        mats.append(sp.csr_matrix(counts.reshape(E, E)))
    return tuple(mats)


def _coactivation(experts: np.ndarray, num_experts: int) -> tuple[sp.csr_matrix, ...]:
    """:func:`coactivation_counts` without the input checks."""
    import scipy.sparse as sp

    E = num_experts
    mats = []
    counts = np.empty(E * E, dtype=np.int64)
    for layer in range(experts.shape[1]):
        counts[:] = 0
        _pair_histogram(experts, layer, layer, E, counts)
        square = counts.reshape(E, E)
        square = square + square.T
        np.fill_diagonal(square, 0)  # a token's top-k ids are distinct: the diagonal can only hold repeats
        mats.append(sp.csr_matrix(square))
    return tuple(mats)
