"""Trace replay: force a trace's routing through every MoE layer on W ranks.

Token ``t`` lives on rank :func:`~placement_runtime.plan.token_ranks` ``[t]`` for the whole run
(the evaluator's ``origin`` dispatch model).  Its hidden state starts as a seeded random vector
and passes through the layers with a residual connection, ``h <- h + moe_l(h)``, the experts
and gates of layer ``l`` taken from the trace (gates seeded when the trace has none).
:func:`reference_replay` does the same in one process with every expert, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from placement.trace._trace import Trace

from .moe import ReferenceMoE
from .plan import token_ranks

__all__ = ["replay_inputs", "reference_replay", "replay_rank", "RankReplay"]


def replay_inputs(trace: Trace, hidden_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs of a replay: ``x float64 [tokens, hidden]`` and ``gates float64 [tokens, layers, k]``.

    Gates are the trace's weights when it has them, else a seeded softmax over the k choices.
    """
    experts = trace.require_tokens("trace replay")
    N, L, k = experts.shape
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    x = rng.standard_normal((N, int(hidden_size)))
    if trace.weights is not None:
        gates = trace.weights.astype(np.float64)
    else:
        logits = rng.standard_normal((N, L, k))
        gates = np.exp(logits - logits.max(axis=2, keepdims=True))
        gates /= gates.sum(axis=2, keepdims=True)
    return x, gates


def reference_replay(trace: Trace, *, hidden_size: int, ffn_size: int, seed: int = 0,
                     tokens: np.ndarray | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Single-process replay of ``tokens`` (``int [n]``, default all): ``[n, hidden]`` final states.

    Every expert of every layer is built (:class:`~placement_runtime.moe.ReferenceMoE`); tokens
    are independent, so a rank may replay only its own.
    """
    experts = trace.require_tokens("trace replay")
    x, gates = replay_inputs(trace, hidden_size, seed)
    idx = np.arange(experts.shape[0]) if tokens is None else np.asarray(tokens)
    h = torch.from_numpy(x[idx]).to(dtype)
    for layer in range(trace.num_layers):
        ref = ReferenceMoE(trace.num_experts, layer, hidden_size=hidden_size, ffn_size=ffn_size, seed=seed,
                           dtype=dtype)
        ex = torch.from_numpy(experts[idx, layer].astype(np.int64))
        h = h + ref(h, ex, torch.from_numpy(gates[idx, layer]).to(dtype))
    return h


@dataclass(frozen=True, eq=False)
class RankReplay:
    """What one rank computed: its ``tokens int64 [n]`` (global ids) and ``output [n, hidden]``."""

    tokens: np.ndarray
    output: torch.Tensor


def replay_rank(trace: Trace, layers: nn.ModuleList, rank: int, world: int, *, hidden_size: int,
                seed: int = 0, origins: str = "round_robin", device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> RankReplay:
    """Replay this rank's tokens through ``layers`` (one :class:`ExpertParallelMoE` per layer).

    Collective: every rank of the group must call it with the same trace.
    """
    experts = trace.require_tokens("trace replay")
    x, gates = replay_inputs(trace, hidden_size, seed)
    mine = np.nonzero(token_ranks(trace, world, origins) == rank)[0]
    h = torch.from_numpy(x[mine]).to(device=device, dtype=dtype)
    for layer, moe in enumerate(layers):
        h = h + moe(h, experts[mine, layer].astype(np.int64), gates[mine, layer])
    return RankReplay(tokens=mine, output=h)
