"""Units, stated once: what a token weighs on the wire and what moving it between two GPUs costs.

Every formulation and the evaluator take their units from here, so a figure means the same thing
everywhere it is printed.

Units
-----
* bytes per element: :data:`DTYPE_BYTES` (``"bf16"`` -> 2, ``"fp8"`` -> 1, ...);
* bytes per token sent: ``hidden_size * DTYPE_BYTES[dtype]``, plus for ``fp8`` one float32 scale per
  128 elements (the block scaling DeepEP and DeepGEMM send with FP8 activations) (:class:`Wire`);
* pair costs (:class:`PairCosts`), ``float64 [gpus, gpus]``, source GPU first:
  ``hops`` (links traversed), ``seconds_per_byte`` (``1 /`` the route's bottleneck
  bandwidth, :attr:`~placement.topology.Topology.seconds_per_byte`), ``seconds_per_token``
  (``seconds_per_byte * bytes per token``) and ``cross_gpu`` (1 between distinct GPUs, 0 on the diagonal);
* times are seconds; token counts are tokens (or expected tokens, as floats).

Scaling a model's costs to numbers a solver handles well is a formulation's business (a power of
two, so the division is exact); the figures it reports are in the units above.

>>> from placement.costs import Wire, bytes_per_token
>>> Wire(hidden_size=7168, dtype="fp8").bytes_per_token     # 7168 + 56 scales x 4 bytes
7392
>>> bytes_per_token(4096, "bf16")
8192
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import input_error

if TYPE_CHECKING:  # pragma: no cover
    from .topology import Topology
    from .trace import ModelSpec

__all__ = ["DTYPE_BYTES", "DEFAULT_HIDDEN_SIZE", "PAIR_COST_KINDS", "PairCosts", "Wire", "bytes_per_token",
           "pair_costs", "wire_for"]

#: Bytes per element of each wire/weight dtype name (aliases included).
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2,
                               "fp8": 1, "int8": 1}
#: Elements per token when neither the option nor the trace's model gives a hidden size.
DEFAULT_HIDDEN_SIZE = 4096
#: The pair-cost kinds of :class:`PairCosts` and their units.
PAIR_COST_KINDS: dict[str, str] = {"hops": "links", "seconds_per_byte": "s/byte", "seconds_per_token": "s/token",
                                   "cross_gpu": "sends"}


def _check_dtype(dtype: str, field: str = "dtype") -> int:
    if dtype not in DTYPE_BYTES:
        raise input_error(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPE_BYTES)}", field=field)
    return DTYPE_BYTES[dtype]


#: Elements per float32 scale of block-scaled FP8 activations.
FP8_BLOCK = 128


def bytes_per_token(hidden_size: int, dtype: str = "bf16") -> int:
    """Bytes of one token's activation: ``hidden_size * DTYPE_BYTES[dtype]``, plus one float32 scale
    per :data:`FP8_BLOCK` elements for ``fp8`` (block-scaled FP8, as DeepEP sends it)."""
    if isinstance(hidden_size, bool) or int(hidden_size) != hidden_size or int(hidden_size) <= 0:
        raise input_error(f"must be a positive integer, got {hidden_size!r}", field="hidden_size")
    size = int(hidden_size) * _check_dtype(dtype)
    if dtype == "fp8":
        size += 4 * (-(-int(hidden_size) // FP8_BLOCK))
    return size


@dataclass(frozen=True)
class Wire:
    """What one token carries: ``hidden_size`` elements of ``dtype``.

    Attributes
    ----------
    hidden_size:
        Elements per token.
    dtype:
        A key of :data:`DTYPE_BYTES`.
    """

    hidden_size: int
    dtype: str = "bf16"

    def __post_init__(self) -> None:
        bytes_per_token(self.hidden_size, self.dtype)  # validates both

    @property
    def bytes_per_token(self) -> int:
        """Bytes of one token on the wire."""
        return bytes_per_token(self.hidden_size, self.dtype)


def wire_for(model: ModelSpec | None, hidden_size: int = 0, dtype: str = "bf16") -> Wire:
    """The :class:`Wire` of ``model``: ``hidden_size`` when given (> 0), else the model's, else
    :data:`DEFAULT_HIDDEN_SIZE`.

    >>> wire_for(None).bytes_per_token
    8192
    """
    if isinstance(hidden_size, bool) or int(hidden_size) != hidden_size or hidden_size < 0:
        raise input_error(f"must be >= 0 (0: the model's, else {DEFAULT_HIDDEN_SIZE}), got {hidden_size!r}",
                          field="hidden_size")
    size = int(hidden_size) or (getattr(model, "hidden_size", None) or DEFAULT_HIDDEN_SIZE)
    return Wire(int(size), dtype)


@dataclass(frozen=True, eq=False)
class PairCosts:
    """GPU-to-GPU costs of one topology in stated units (all ``float64 [gpus, gpus]``, read-only).

    Attributes
    ----------
    hops:
        Links on the route from the source GPU (row) to the destination GPU (column).
    seconds_per_byte:
        ``1 /`` the bottleneck bandwidth of the route (s/byte).
    seconds_per_token:
        ``seconds_per_byte * wire.bytes_per_token`` (s/token).
    cross_gpu:
        1 between distinct GPUs, 0 on the diagonal (sends that leave a GPU).
    wire:
        The :class:`Wire` that converts bytes to tokens.
    """

    hops: np.ndarray
    seconds_per_byte: np.ndarray
    seconds_per_token: np.ndarray
    cross_gpu: np.ndarray
    wire: Wire

    def of(self, kind: str) -> np.ndarray:
        """The matrix called ``kind`` (a key of :data:`PAIR_COST_KINDS`)."""
        if kind not in PAIR_COST_KINDS:
            raise input_error(f"unknown pair cost {kind!r}; choose one of {list(PAIR_COST_KINDS)}", field="cost")
        return getattr(self, kind)


def pair_costs(topology: Topology, wire: Wire) -> PairCosts:
    """The :class:`PairCosts` of ``topology`` for tokens of ``wire``.

    >>> from placement.topology import preset
    >>> costs = pair_costs(preset("fat-tree:2x4"), Wire(4096, "bf16"))
    >>> costs.seconds_per_token.shape, float(costs.cross_gpu.sum())
    ((8, 8), 56.0)
    """
    G = topology.num_gpus
    spb = np.asarray(topology.seconds_per_byte, dtype=np.float64)
    out = {"hops": np.asarray(topology.hops, dtype=np.float64), "seconds_per_byte": spb,
           "seconds_per_token": spb * float(wire.bytes_per_token),
           "cross_gpu": 1.0 - np.eye(G)}
    frozen = {}
    for name, array in out.items():
        array = np.array(array, dtype=np.float64, copy=True)
        array.setflags(write=False)
        frozen[name] = array
    return PairCosts(wire=wire, **frozen)
