"""Placement baselines that ignore the trace: contiguous, round-robin and seeded random.

Each returns a :class:`~placement.Placement` with one replica per expert.  ``E`` experts on
``G`` GPUs: when ``G`` divides ``E`` every GPU holds ``E / G`` experts of each layer; otherwise
the counts differ by at most one; when ``E < G`` some GPUs hold none.
"""

from __future__ import annotations

import numpy as np

from ..errors import input_error
from ..placement import Placement

__all__ = ["contiguous", "round_robin", "random_placement"]


def _check(num_layers: int, num_experts: int, num_gpus: int) -> None:
    for name, value in (("num_layers", num_layers), ("num_experts", num_experts), ("num_gpus", num_gpus)):
        if int(value) < 1:
            raise input_error(f"must be positive, got {value}", field=name)


def contiguous(num_layers: int, num_experts: int, num_gpus: int) -> Placement:
    """Megatron's default expert-parallel sharding: expert ``e`` on GPU ``floor(e * G / E)``.

    >>> contiguous(1, 8, 4).slots[0].tolist()
    [[0, 1], [2, 3], [4, 5], [6, 7]]
    """
    _check(num_layers, num_experts, num_gpus)
    gpu = (np.arange(num_experts) * num_gpus) // num_experts
    return Placement.from_assignment(np.tile(gpu, (num_layers, 1)), num_gpus, metadata={"method": "contiguous"})


def round_robin(num_layers: int, num_experts: int, num_gpus: int) -> Placement:
    """Expert ``e`` on GPU ``e mod G``.

    >>> round_robin(1, 8, 4).slots[0].tolist()
    [[0, 4], [1, 5], [2, 6], [3, 7]]
    """
    _check(num_layers, num_experts, num_gpus)
    gpu = np.arange(num_experts) % num_gpus
    return Placement.from_assignment(np.tile(gpu, (num_layers, 1)), num_gpus, metadata={"method": "round_robin"})


def random_placement(num_layers: int, num_experts: int, num_gpus: int, seed: int = 0) -> Placement:
    """A uniformly random balanced placement per layer (contiguous sharding of a random permutation)."""
    _check(num_layers, num_experts, num_gpus)
    rng = np.random.default_rng(seed)
    block = (np.arange(num_experts) * num_gpus) // num_experts
    assign = np.empty((num_layers, num_experts), dtype=np.int64)
    for layer in range(num_layers):
        assign[layer, rng.permutation(num_experts)] = block
    return Placement.from_assignment(assign, num_gpus, metadata={"method": "random", "seed": int(seed)})
