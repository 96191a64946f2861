"""How tokens travel: the legs each transport sends a token over, as GPU-to-GPU token flows.

A transport turns the replica choice of every selection of a layer into *legs*: GPU-to-GPU token
counts per serving step whose routes over the topology carry the bytes.  Combine sends the same
legs back (transposed, at the combine dtype).  The legs of one phase run pipelined, so a phase
takes as long as its busiest link (plus the largest latency among communicating pairs).

``nccl``
    ``torch.distributed.all_to_all`` over NCCL: one copy of a token per destination GPU when the
    caller de-duplicates (``dedup=True``), one per (token, expert) otherwise; each copy follows the
    route from the sending GPU to the destination GPU.
``deepep``
    DeepEP's normal (high-throughput) kernels: a token is sent once over RDMA to each destination
    *node* it needs, to the GPU with the same local index as the sender there (rail-aligned), which
    forwards it over NVLink to each destination GPU of that node; destinations in the sender's own
    node are reached over NVLink directly (DeepEP ``csrc/kernels/internode.cu``, ``intranode.cu``).
``deepep-ll``
    DeepEP's low-latency kernels: one message per (token, expert) sent straight to the GPU of the
    expert's replica, no de-duplication (DeepEP ``csrc/kernels/internode_ll.cu``).

Probabilities: a rule that picks a replica at random (``sglang-dynamic``) or by fractions
(``split``) gives each selection a distribution ``q[n, j, v]`` over destination GPUs; choices are
independent across a token's selections, so a token reaches GPU ``v`` with probability
``1 - prod_j (1 - q[n, j, v])`` and node ``m`` with ``1 - prod_j (1 - sum_{v in m} q[n, j, v])``;
for the deterministic rules these are 0 or 1 and the counts are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["TRANSPORTS", "Transport", "destination_probability", "rail_peer"]


def rail_peer(server_of: np.ndarray) -> np.ndarray:
    """``int64 [gpus, servers]``: the GPU of server ``m`` with the same local index as GPU ``u``.

    The local index of a GPU is its position among its server's GPUs (in GPU order); a server with
    fewer GPUs takes the index modulo its size.

    >>> rail_peer(np.array([0, 0, 1, 1])).tolist()
    [[0, 2], [1, 3], [0, 2], [1, 3]]
    """
    server_of = np.asarray(server_of, dtype=np.int64)
    M = int(server_of.max()) + 1
    members = [np.flatnonzero(server_of == m) for m in range(M)]
    local = np.empty(server_of.size, dtype=np.int64)
    for m in range(M):
        local[members[m]] = np.arange(members[m].size)
    return np.stack([members[m][local % members[m].size] for m in range(M)], axis=1)


def destination_probability(slots: np.ndarray, weights: np.ndarray, S: int, G: int) -> np.ndarray:
    """``float64 [n, k, G]``: the probability each selection is served on each GPU.

    ``slots int64 [n, k, C]`` candidate physical slots (``-1`` = none) and ``weights float64 [n, k, C]``
    their probabilities, as a replica rule returns them; ``S`` slots per GPU, ``G`` GPUs.
    """
    n, k, C = slots.shape
    gpu = np.where(slots >= 0, slots // S, 0)
    codes = (np.arange(n * k).reshape(n, k, 1) * G + gpu).ravel()
    return np.bincount(codes, weights=np.where(slots >= 0, weights, 0.0).ravel(),
                       minlength=n * k * G).reshape(n, k, G)


def _by_token(src: np.ndarray, step: np.ndarray, values: np.ndarray, S: int, G: int) -> np.ndarray:
    """``float64 [S, G, G]``: ``values [n, G]`` (per token and destination) summed per (step, source GPU)."""
    rows = step.astype(np.int64) * G + src.astype(np.int64)  # [n]
    codes = (rows[:, None] * G + np.arange(G)[None, :]).ravel()
    return np.bincount(codes, weights=values.ravel(), minlength=S * G * G).reshape(S, G, G)


def _gpu_probability(q: np.ndarray) -> np.ndarray:
    """``float64 [n, G]``: probability a token reaches each GPU, from ``q [n, k, G]``."""
    return 1.0 - np.prod(1.0 - np.clip(q, 0.0, 1.0), axis=1)


def _nccl(q: np.ndarray, src: np.ndarray, step: np.ndarray, S: int, server_of: np.ndarray,
          dedup: bool) -> list[np.ndarray]:
    G = q.shape[2]
    per_gpu = _gpu_probability(q) if dedup else q.sum(axis=1)
    return [_by_token(src, step, per_gpu, S, G)]


def _deepep(q: np.ndarray, src: np.ndarray, step: np.ndarray, S: int, server_of: np.ndarray,
            dedup: bool) -> list[np.ndarray]:
    n, k, G = q.shape
    server_of = np.asarray(server_of, dtype=np.int64)
    M = int(server_of.max()) + 1
    member = np.zeros((G, M))
    member[np.arange(G), server_of] = 1.0
    reach_gpu = _gpu_probability(q)  # [n, G]
    reach_node = 1.0 - np.prod(1.0 - np.clip(q @ member, 0.0, 1.0), axis=1)  # [n, M]
    peer = rail_peer(server_of)  # [G, M]
    own = server_of[src]  # [n]
    # RDMA leg: sender -> its rail peer in every other destination node, once per node
    rdma_to = peer[src]  # [n, M]
    remote = np.arange(M)[None, :] != own[:, None]
    rdma = np.zeros((n, G))
    rows = np.repeat(np.arange(n), M)
    np.add.at(rdma, (rows, rdma_to.ravel()), (reach_node * remote).ravel())
    # NVLink leg: forwarder (sender itself in its own node, else its rail peer) -> each destination GPU
    forwarder = peer[src][:, server_of]  # [n, G]: the GPU that forwards to v inside v's node
    forwarder = np.where(server_of[None, :] == own[:, None], src[:, None], forwarder)
    codes = (step.astype(np.int64)[:, None] * G + forwarder) * G + np.arange(G)[None, :]
    nvlink = np.bincount(codes.ravel(), weights=reach_gpu.ravel(), minlength=S * G * G).reshape(S, G, G)
    return [_by_token(src, step, rdma, S, G), nvlink]


def _deepep_ll(q: np.ndarray, src: np.ndarray, step: np.ndarray, S: int, server_of: np.ndarray,
               dedup: bool) -> list[np.ndarray]:
    return _nccl(q, src, step, S, server_of, dedup=False)


@dataclass(frozen=True)
class Transport:
    """A transport: ``legs(q, src, step, num_steps, server_of, dedup) -> [float64 [steps, G, G], ...]``.

    ``q`` is ``float64 [tokens, k, G]``, the probability that selection ``j`` of token ``n`` is
    served on GPU ``v``; ``src`` ``int [tokens]`` the sending GPU; ``step`` ``int [tokens]`` the
    serving step.  Each returned leg counts tokens from GPU ``u`` (row) to GPU ``v`` (column).
    ``needs_tokens``: the transport de-duplicates per token, so count traces cannot say its bytes.
    """

    name: str
    summary: str
    legs: Callable[..., list[np.ndarray]]
    dedup_choice: bool  #: whether ``dedup`` changes anything
    needs_tokens: bool


#: Transports by name.
TRANSPORTS: dict[str, Transport] = {t.name: t for t in (
    Transport("nccl", "NCCL all-to-all: one copy per (token, GPU) with dedup, per (token, expert) without",
              _nccl, dedup_choice=True, needs_tokens=False),
    Transport("deepep", "DeepEP normal mode: RDMA once per (token, node) to the rail peer, then NVLink fan-out",
              _deepep, dedup_choice=False, needs_tokens=True),
    Transport("deepep-ll", "DeepEP low-latency mode: one message per (token, expert), no de-duplication",
              _deepep_ll, dedup_choice=False, needs_tokens=False),
)}
