"""The expert-parallel MoE layer, its single-process reference and the byte counter.

An expert is a small FFN ``y = act(x @ w1) @ w2`` with ``w1 [hidden, ffn]`` and ``w2 [ffn, hidden]``.
Its weights come from :func:`expert_weights` (seeded by ``(seed, layer, expert)``, so every rank
and the reference build the same tensors) or from a full state dict sharded by the placement
(keys ``experts.<e>.w1`` / ``experts.<e>.w2``, the keys of :class:`ReferenceMoE`).

:class:`ExpertParallelMoE` is one MoE layer on one rank.  ``forward`` runs three
``all_to_all_single`` exchanges per phase: split sizes, then a ``float64 [rows, 2k]``
metadata block (expert ids and gate weights of each row), then the hidden states
``[rows, hidden]``; the combine sends each row's gate-weighted sum back.  Only the hidden-state
payload is counted as traffic (the evaluator's bytes), the split sizes and metadata are
counted apart (:attr:`TrafficCounter.meta_bytes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from placement.evaluation.routing import replica_tables
from placement.placement import Placement
from placement.topology import Topology

from .plan import expert_seed, plan_dispatch

__all__ = ["ExpertFFN", "expert_weights", "ExpertParallelMoE", "ReferenceMoE", "TrafficCounter",
           "build_layers", "torch_dtype", "PHASES"]

PHASES = ("dispatch", "combine")
_TORCH_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
                 "fp64": torch.float64, "float64": torch.float64}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a wire dtype name (``fp32``, ``bf16``, ``fp16``; ``fp64`` for references)."""
    try:
        return _TORCH_DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(_TORCH_DTYPES)}") from None


def expert_weights(seed: int, layer: int, expert: int, hidden_size: int, ffn_size: int,
                   dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Deterministic weights of expert ``(layer, expert)``: ``{"w1": [hidden, ffn], "w2": [ffn, hidden]}``.

    Drawn in float64 on the CPU from a generator seeded by :func:`~placement_runtime.plan.expert_seed`
    and then cast, so every process, device and dtype starts from the same numbers.
    """
    g = torch.Generator().manual_seed(expert_seed(seed, layer, expert))
    w1 = torch.randn(hidden_size, ffn_size, generator=g, dtype=torch.float64) / hidden_size ** 0.5
    w2 = torch.randn(ffn_size, hidden_size, generator=g, dtype=torch.float64) * (0.5 / ffn_size ** 0.5)
    return {"w1": w1.to(dtype), "w2": w2.to(dtype)}


class ExpertFFN(nn.Module):
    """``y = silu(x @ w1) @ w2``; ``w1 [hidden, ffn]``, ``w2 [ffn, hidden]``."""

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor):
        super().__init__()
        if w1.ndim != 2 or w2.shape != (w1.shape[1], w1.shape[0]):
            raise ValueError(f"expected w1 [hidden, ffn] and w2 [ffn, hidden], got {tuple(w1.shape)} and "
                             f"{tuple(w2.shape)}")
        self.w1 = nn.Parameter(w1, requires_grad=False)
        self.w2 = nn.Parameter(w2, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x @ self.w1) @ self.w2

    def flat(self) -> torch.Tensor:
        """``[hidden * ffn * 2]`` both weights, flattened (what a re-placement sends)."""
        return torch.cat([self.w1.reshape(-1), self.w2.reshape(-1)])

    @classmethod
    def from_flat(cls, flat: torch.Tensor, hidden_size: int, ffn_size: int) -> ExpertFFN:
        n = hidden_size * ffn_size
        return cls(flat[:n].reshape(hidden_size, ffn_size).clone(),
                   flat[n:2 * n].reshape(ffn_size, hidden_size).clone())


def _mix(x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor,
         modules: Mapping[int, nn.Module]) -> tuple[torch.Tensor, int]:
    """``sum_j gates[:, j] * module[experts[:, j]](x)`` over the experts in ``modules``.

    ``experts [rows, k]`` (``-1`` = skip), ``gates [rows, k]``.  Returns the output and how
    many selections were computed.
    """
    out = torch.zeros_like(x)
    done = 0
    for e, module in modules.items():
        hit = experts == e  # [rows, k]
        rows = hit.any(dim=1).nonzero().flatten()
        if rows.numel() == 0:
            continue
        done += int(hit.sum())
        g = (gates * hit).sum(dim=1)[rows].to(x.dtype)
        out.index_add_(0, rows, module(x[rows]) * g[:, None])
    return out, done


@dataclass
class TrafficCounter:
    """Bytes each rank sent, per layer and phase.

    ``sent[l, p, u, v]`` (``int64 [layers, 2, G, G]``, phase 0 = dispatch, 1 = combine): hidden-state
    bytes rank ``u`` handed to ``all_to_all_single`` for rank ``v`` (``u == v``: the rows a rank keeps
    for its own experts, which the evaluator also counts on its diagonal).  ``received`` is the
    same seen from the receiver; after :meth:`all_reduce` both are complete and must be equal.
    ``meta_bytes`` counts split sizes and row metadata (not in the evaluator's model).
    """

    num_layers: int
    world: int
    sent: np.ndarray = field(init=False)
    received: np.ndarray = field(init=False)
    meta_bytes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.num_layers, 2, self.world, self.world)
        self.sent = np.zeros(shape, dtype=np.int64)
        self.received = np.zeros(shape, dtype=np.int64)
        self.meta_bytes = np.zeros((self.world, self.world), dtype=np.int64)

    def record(self, layer: int, phase: int, rank: int, send_bytes: np.ndarray,
               recv_bytes: np.ndarray) -> None:
        self.sent[layer, phase, rank, :] += send_bytes
        self.received[layer, phase, :, rank] += recv_bytes

    def all_reduce(self, group=None, device: torch.device | str = "cpu") -> TrafficCounter:
        """Sum every rank's rows (a rank only fills its own); returns a new, complete counter."""
        out = TrafficCounter(self.num_layers, self.world)
        n1, n2 = self.sent.size, self.received.size
        buf = torch.from_numpy(np.concatenate([self.sent.ravel(), self.received.ravel(),
                                               self.meta_bytes.ravel()])).to(device)
        dist.all_reduce(buf, group=group)
        arr = buf.cpu().numpy()
        out.sent = arr[:n1].reshape(self.sent.shape).copy()
        out.received = arr[n1:n1 + n2].reshape(self.received.shape).copy()
        out.meta_bytes = arr[n1 + n2:].reshape(self.meta_bytes.shape).copy()
        return out

    def total(self) -> np.ndarray:
        """``int64 [G, G]`` hidden-state bytes summed over layers and phases."""
        return self.sent.sum(axis=(0, 1))


class ExpertParallelMoE(nn.Module):
    """One expert-parallel MoE layer on one rank: it holds only the experts the placement gives it.

    Parameters
    ----------
    placement:
        The placement (``G`` GPUs = the world size of ``group``).
    layer:
        Which MoE layer of the placement this module is.
    rank:
        This rank (= GPU index in the placement).
    tables:
        ``(tied [G, E, R], ntied [G, E])``: this layer of :func:`placement.evaluation.routing.replica_tables`.
    hidden_size, ffn_size:
        Expert FFN sizes.
    seed:
        Weight seed (see :func:`expert_weights`); ignored for experts given in ``weights``.
    weights:
        ``{expert: ExpertFFN}`` or a full state dict (``experts.<e>.w1``...) to take this rank's experts from.
    dedup:
        Send a token once to each GPU holding one or more of its experts.
    group, device, dtype:
        Process group (``None`` = default), device of the tensors, wire/compute dtype.
    counter:
        A :class:`TrafficCounter` to record bytes in (optional).
    """

    def __init__(self, placement: Placement, layer: int, rank: int, tables: tuple[np.ndarray, np.ndarray], *,
                 hidden_size: int, ffn_size: int, seed: int = 0,
                 weights: Mapping[int, ExpertFFN] | Mapping[str, torch.Tensor] | None = None,
                 dedup: bool = False, group=None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, counter: TrafficCounter | None = None):
        super().__init__()
        self.layer = int(layer)
        self.rank = int(rank)
        self.world = placement.num_gpus
        self.num_experts = placement.num_experts
        self.hidden_size, self.ffn_size = int(hidden_size), int(ffn_size)
        self.tied, self.ntied = tables
        self.dedup = bool(dedup)
        self.group = group
        self.device = torch.device(device)
        self.dtype = dtype
        self.counter = counter
        held = sorted({int(e) for e in placement.slots[self.layer, self.rank] if e >= 0})
        modules: dict[str, ExpertFFN] = {}
        for e in held:
            if weights is not None and e in weights:  # {expert: ExpertFFN}
                m = weights[e]
                assert isinstance(m, ExpertFFN)
                modules[str(e)] = ExpertFFN(m.w1.detach().clone(), m.w2.detach().clone())
            elif weights is not None and f"experts.{e}.w1" in weights:  # full state dict
                modules[str(e)] = ExpertFFN(weights[f"experts.{e}.w1"].detach().clone(),
                                            weights[f"experts.{e}.w2"].detach().clone())
            else:
                w = expert_weights(seed, self.layer, e, self.hidden_size, self.ffn_size)
                modules[str(e)] = ExpertFFN(w["w1"], w["w2"])
        self.experts = nn.ModuleDict(modules).to(device=self.device, dtype=dtype)

    @property
    def held_experts(self) -> list[int]:
        """Expert ids this rank holds for this layer (one module even if the placement gives two slots)."""
        return [int(e) for e in self.experts.keys()]

    def _a2a(self, out: torch.Tensor, inp: torch.Tensor, out_splits: list[int], in_splits: list[int]) -> None:
        dist.all_to_all_single(out, inp, output_split_sizes=out_splits, input_split_sizes=in_splits,
                               group=self.group)

    def forward(self, x: torch.Tensor, experts: torch.Tensor | np.ndarray,
                gates: torch.Tensor | np.ndarray) -> torch.Tensor:
        """MoE output of this rank's tokens.

        Parameters
        ----------
        x:
            ``[tokens_local, hidden]`` hidden states of the tokens that live on this rank,
            in global token order (the replica rule deals ties in that order).
        experts:
            ``int [tokens_local, k]`` top-k expert ids (the router's, or a trace's).
        gates:
            ``float [tokens_local, k]`` their gate weights.

        Returns
        -------
        ``[tokens_local, hidden]``: ``sum_j gates[:, j] * expert_{experts[:, j]}(x)``, summed at this rank.
        """
        G, H = self.world, self.hidden_size
        ex = experts.cpu().numpy() if isinstance(experts, torch.Tensor) else np.asarray(experts)
        gt = gates.detach().cpu().double().numpy() if isinstance(gates, torch.Tensor) else np.asarray(gates)
        plan = plan_dispatch(ex, gt, self.rank, self.tied, self.ntied, G, self.dedup)
        dev = self.device
        send_counts = plan.send_counts
        recv = torch.empty(G, dtype=torch.int64, device=dev)
        self._a2a(recv, torch.from_numpy(send_counts).to(dev), [1] * G, [1] * G)
        recv_counts = recv.cpu().numpy().astype(np.int64)
        s_split, r_split = send_counts.tolist(), recv_counts.tolist()
        R = int(recv_counts.sum())
        k = ex.shape[1]
        # metadata: expert ids and gates of each row (float64 holds both exactly)
        meta = torch.from_numpy(np.concatenate([plan.row_experts.astype(np.float64), plan.row_gates], axis=1))
        meta_in = torch.empty((R, 2 * k), dtype=torch.float64, device=dev)
        self._a2a(meta_in, meta.to(dev), r_split, s_split)
        # dispatch the hidden states
        idx = torch.from_numpy(plan.row_token).to(dev)
        send_x = x.to(self.dtype).index_select(0, idx).contiguous()
        recv_x = torch.empty((R, H), dtype=self.dtype, device=dev)
        self._a2a(recv_x, send_x, r_split, s_split)
        # compute every selection routed here, weighted by its gate
        row_experts = meta_in[:, :k].to(torch.int64)
        row_gates = meta_in[:, k:]
        y_recv, done = _mix(recv_x, row_experts, row_gates, {int(e): m for e, m in self.experts.items()})
        wanted = int((row_experts >= 0).sum())
        if done != wanted:
            raise RuntimeError(f"layer {self.layer}, rank {self.rank}: received {wanted} expert selections "
                               f"but holds the experts of only {done} (held: {self.held_experts}); the ranks "
                               "disagree on the placement or the replica rule")
        # combine: each row's weighted sum goes back to its home rank
        back = torch.empty((send_x.shape[0], H), dtype=self.dtype, device=dev)
        self._a2a(back, y_recv.contiguous(), s_split, r_split)
        out = torch.zeros((ex.shape[0], H), dtype=self.dtype, device=dev)
        out.index_add_(0, idx, back)
        if self.counter is not None:
            b = H * send_x.element_size()
            self.counter.record(self.layer, 0, self.rank, send_counts * b, recv_counts * b)
            self.counter.record(self.layer, 1, self.rank, recv_counts * b, send_counts * b)
            self.counter.meta_bytes[self.rank] += 8 + send_counts * (2 * k * 8)
        return out.to(x.dtype)


def build_layers(placement: Placement, topology: Topology, rank: int, *, hidden_size: int, ffn_size: int,
                 seed: int = 0, weights: list[Mapping] | None = None, dedup: bool = False, group=None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 counter: TrafficCounter | None = None) -> nn.ModuleList:
    """One :class:`ExpertParallelMoE` per layer of ``placement`` (replica tables computed once).

    ``weights[l]`` (optional) is layer ``l``'s ``{expert: ExpertFFN}`` or full state dict.
    """
    tied, ntied = replica_tables(placement, topology)
    return nn.ModuleList(
        ExpertParallelMoE(placement, layer, rank, (tied[layer], ntied[layer]), hidden_size=hidden_size,
                          ffn_size=ffn_size, seed=seed, weights=None if weights is None else weights[layer],
                          dedup=dedup, group=group, device=device, dtype=dtype, counter=counter)
        for layer in range(placement.num_layers))


class ReferenceMoE(nn.Module):
    """Single-process MoE layer holding every expert: ``y = sum_j gates[:, j] * expert_{experts[:, j]}(x)``.

    Its ``state_dict()`` (``experts.<e>.w1`` / ``w2``) is the full state dict that
    :class:`ExpertParallelMoE` shards.
    """

    def __init__(self, num_experts: int, layer: int, *, hidden_size: int, ffn_size: int, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        mods = {}
        for e in range(num_experts):
            w = expert_weights(seed, layer, e, hidden_size, ffn_size, dtype)
            mods[str(e)] = ExpertFFN(w["w1"], w["w2"])
        self.experts = nn.ModuleDict(mods)

    def forward(self, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        modules = {int(e): m for e, m in self.experts.items()}
        y, _ = _mix(x, experts.to(torch.int64), gates.to(x.dtype), modules)
        return y

