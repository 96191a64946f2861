"""The expert-parallel MoE layer, its single-process reference and the byte counter.

An expert is a small FFN ``y = act(x @ w1) @ w2`` with ``w1 [hidden, ffn]`` and ``w2 [ffn, hidden]``.
Its weights come from :func:`expert_weights` (seeded by ``(seed, layer, expert)``, so every rank
and the reference build the same tensors) or from a full state dict sharded by the placement
(keys ``experts.<e>.w1`` / ``experts.<e>.w2``, the keys of :class:`ReferenceMoE`).

:class:`ExpertParallelMoE` is one MoE layer on one rank.  The replica of each selection is the
evaluator's rule (:class:`~placement_runtime.plan.Router`), the tokens travel as the transport says:

* ``nccl``: one exchange; a row is one (token, expert) selection, or with ``dedup`` one (token,
  destination GPU) pair carrying every selection of the token on that GPU;
* ``deepep-ll``: one exchange of (token, expert) rows (DeepEP's low-latency mode);
* ``deepep``: DeepEP's normal mode as two exchanges: the RDMA leg sends a token once to the rail
  peer (same local index) of each *other* node holding one of its selections, then the NVLink leg
  sends each token a rank holds (its own, or forwarded to it) once to each GPU of its node that
  serves one of its selections; the combine runs the two legs backwards.

An exchange is three ``all_to_all_single`` calls: split sizes, a ``float64`` metadata block (expert
ids and gate weights of each row, plus the serving GPU of each selection on the RDMA leg), then
the hidden states ``[rows, hidden]``; the combine sends each row's gate-weighted sum back.  Only
the hidden-state payload is counted as traffic (the evaluator's bytes), per leg; the split sizes
and metadata are counted apart (:attr:`TrafficCounter.meta_bytes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from placement.errors import input_error
from placement.placement import Placement
from placement.topology import Topology

from .plan import RUNTIME_TRANSPORTS, DispatchPlan, Router, check_transport, expert_seed, plan_dispatch, rdma_targets

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
    """Bytes each rank sent, per layer, phase and leg, and the selections each rank computed.

    ``sent[l, p, u, v]`` (``int64 [layers, 2, G, G]``, phase 0 = dispatch, 1 = combine): hidden-state
    bytes rank ``u`` handed to ``all_to_all_single`` for rank ``v`` (``u == v``: the rows a rank keeps
    for its own experts, which the evaluator also counts on its diagonal), summed over legs.
    ``leg_sent[l, p, i, u, v]`` (``int64 [layers, 2, num_legs, G, G]``) splits it by leg: leg ``i`` of
    the transport (``TRANSPORTS[name].legs`` order) in the dispatch, and the same leg run backwards in
    the combine (so ``leg_sent[:, 1, i]`` is ``leg_sent[:, 0, i]`` transposed).  ``received`` and
    ``leg_received`` are the same seen from the receiver; after :meth:`all_reduce` both are complete
    and must be equal.  ``computed[l, g]`` (``int64 [layers, G]``): expert selections rank ``g``
    computed (the evaluator's ``gpu_load``).  ``meta_bytes`` counts split sizes and row metadata (not
    in the evaluator's model).
    """

    num_layers: int
    world: int
    num_legs: int = 1
    sent: np.ndarray = field(init=False)
    received: np.ndarray = field(init=False)
    leg_sent: np.ndarray = field(init=False)
    leg_received: np.ndarray = field(init=False)
    computed: np.ndarray = field(init=False)
    meta_bytes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.num_layers, 2, self.world, self.world)
        self.sent = np.zeros(shape, dtype=np.int64)
        self.received = np.zeros(shape, dtype=np.int64)
        legs = (self.num_layers, 2, self.num_legs, self.world, self.world)
        self.leg_sent = np.zeros(legs, dtype=np.int64)
        self.leg_received = np.zeros(legs, dtype=np.int64)
        self.computed = np.zeros((self.num_layers, self.world), dtype=np.int64)
        self.meta_bytes = np.zeros((self.world, self.world), dtype=np.int64)

    def record(self, layer: int, phase: int, rank: int, send_bytes: np.ndarray, recv_bytes: np.ndarray,
               leg: int = 0) -> None:
        if not 0 <= leg < self.num_legs:
            raise ValueError(f"leg {leg} of a counter with {self.num_legs} leg(s); build the TrafficCounter with "
                             f"num_legs={leg + 1} for this transport")
        self.sent[layer, phase, rank, :] += send_bytes
        self.received[layer, phase, :, rank] += recv_bytes
        self.leg_sent[layer, phase, leg, rank, :] += send_bytes
        self.leg_received[layer, phase, leg, :, rank] += recv_bytes

    def _arrays(self) -> list[str]:
        return ["sent", "received", "leg_sent", "leg_received", "computed", "meta_bytes"]

    def all_reduce(self, group=None, device: torch.device | str = "cpu") -> TrafficCounter:
        """Sum every rank's rows (a rank only fills its own); returns a new, complete counter."""
        out = TrafficCounter(self.num_layers, self.world, self.num_legs)
        parts = [getattr(self, name) for name in self._arrays()]
        buf = torch.from_numpy(np.concatenate([a.ravel() for a in parts])).to(device)
        dist.all_reduce(buf, group=group)
        arr = buf.cpu().numpy()
        at = 0
        for name, a in zip(self._arrays(), parts, strict=True):
            setattr(out, name, arr[at:at + a.size].reshape(a.shape).copy())
            at += a.size
        return out

    def total(self) -> np.ndarray:
        """``int64 [G, G]`` hidden-state bytes summed over layers, phases and legs."""
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
    router:
        The replica rule (:meth:`Router.build <placement_runtime.plan.Router.build>` of the same placement
        and topology; one router serves every layer).
    hidden_size, ffn_size:
        Expert FFN sizes.
    seed:
        Weight seed (see :func:`expert_weights`); ignored for experts given in ``weights``.
    weights:
        ``{expert: ExpertFFN}`` or a full state dict (``experts.<e>.w1``...) to take this rank's experts from.
    dedup:
        ``nccl`` only: send a token once to each GPU holding one or more of its experts.
    transport:
        ``"nccl"``, ``"deepep-ll"`` or ``"deepep"`` (:data:`~placement_runtime.plan.RUNTIME_TRANSPORTS`).
    group, device, dtype:
        Process group (``None`` = default), device of the tensors, wire/compute dtype.
    counter:
        A :class:`TrafficCounter` to record bytes in (optional; ``num_legs`` at least the transport's legs).
    """

    def __init__(self, placement: Placement, layer: int, rank: int, router: Router, *,
                 hidden_size: int, ffn_size: int, seed: int = 0,
                 weights: Mapping[int, ExpertFFN] | Mapping[str, torch.Tensor] | None = None,
                 dedup: bool = False, transport: str = "nccl", group=None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, counter: TrafficCounter | None = None):
        super().__init__()
        check_transport(transport, dedup)
        if not isinstance(router, Router):
            raise input_error(f"expected a placement_runtime.plan.Router, got {type(router).__name__}; build one "
                              "with Router.build(placement, topology, replica)", field="router")
        if router.ctx.placement is not placement and not np.array_equal(router.ctx.placement.slots,
                                                                        placement.slots):
            raise input_error("the router was built for another placement", field="router")
        if counter is not None and counter.num_legs < RUNTIME_TRANSPORTS[transport]:
            raise input_error(f"transport {transport!r} has {RUNTIME_TRANSPORTS[transport]} legs but the counter "
                              f"{counter.num_legs}", field="counter")
        self.layer = int(layer)
        self.rank = int(rank)
        self.world = placement.num_gpus
        self.num_experts = placement.num_experts
        self.hidden_size, self.ffn_size = int(hidden_size), int(ffn_size)
        self.router = router
        self.server_of = np.asarray(router.ctx.topology.server_of, dtype=np.int64)
        self.dedup = bool(dedup)
        self.transport = transport
        self.group = group
        self.device = torch.device(device)
        self.dtype = dtype
        self.counter = counter
        held = sorted({int(e) for e in placement.slots[self.layer, self.rank] if e >= 0})
        modules: dict[str, ExpertFFN] = {}
        for e in held:
            if weights is not None and e in weights:  # {expert: ExpertFFN}
                m = weights[e]
                if not isinstance(m, ExpertFFN):
                    raise input_error(f"expert {e}: expected an ExpertFFN, got {type(m).__name__}", field="weights")
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

    def _dispatch(self, plan: DispatchPlan, x: torch.Tensor, leg: int,
                  extra: np.ndarray | None = None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """One dispatch exchange of ``plan``'s rows of ``x [items, hidden]`` (already in ``self.dtype``).

        Returns ``(recv_counts int64 [G], meta float64 [R, 2k (+k)], hidden [R, hidden])``; ``extra``
        ``[rows, k]`` is sent as more metadata columns.
        """
        G, H, dev = self.world, self.hidden_size, self.device
        send_counts = plan.send_counts
        recv = torch.empty(G, dtype=torch.int64, device=dev)
        self._a2a(recv, torch.from_numpy(send_counts).to(dev), [1] * G, [1] * G)
        recv_counts = recv.cpu().numpy().astype(np.int64)
        s_split, r_split = send_counts.tolist(), recv_counts.tolist()
        R = int(recv_counts.sum())
        cols = [plan.row_experts.astype(np.float64), plan.row_gates]
        if extra is not None:
            cols.append(extra.astype(np.float64))
        meta = torch.from_numpy(np.concatenate(cols, axis=1))  # float64 holds ids and gates exactly
        meta_in = torch.empty((R, meta.shape[1]), dtype=torch.float64, device=dev)
        self._a2a(meta_in, meta.to(dev), r_split, s_split)
        send_x = x.index_select(0, torch.from_numpy(plan.row_token).to(dev)).contiguous()
        recv_x = torch.empty((R, H), dtype=self.dtype, device=dev)
        self._a2a(recv_x, send_x, r_split, s_split)
        if self.counter is not None:
            b = H * send_x.element_size()
            self.counter.record(self.layer, 0, self.rank, send_counts * b, recv_counts * b, leg)
            self.counter.meta_bytes[self.rank] += 8 + send_counts * (meta.shape[1] * 8)
        return recv_counts, meta_in, recv_x

    def _combine(self, plan: DispatchPlan, recv_counts: np.ndarray, y: torch.Tensor, items: int,
                 leg: int) -> torch.Tensor:
        """Send the results ``y [R, hidden]`` of the rows received by :meth:`_dispatch` back; returns
        ``[items, hidden]``, each item's rows summed."""
        H, dev = self.hidden_size, self.device
        back = torch.empty((int(plan.send_counts.sum()), H), dtype=self.dtype, device=dev)
        self._a2a(back, y.contiguous(), plan.send_counts.tolist(), recv_counts.tolist())
        out = torch.zeros((items, H), dtype=self.dtype, device=dev)
        out.index_add_(0, torch.from_numpy(plan.row_token).to(dev), back)
        if self.counter is not None:
            b = H * back.element_size()
            self.counter.record(self.layer, 1, self.rank, recv_counts * b, plan.send_counts * b, leg)
        return out

    def _compute(self, meta: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
        """Every selection the received rows ask of this rank, weighted by its gate, summed per row."""
        row_experts = meta[:, :k].to(torch.int64)
        row_gates = meta[:, k:2 * k]
        y, done = _mix(x, row_experts, row_gates, {int(e): m for e, m in self.experts.items()})
        wanted = int((row_experts >= 0).sum())
        if done != wanted:
            raise RuntimeError(f"layer {self.layer}, rank {self.rank}: received {wanted} expert selections "
                               f"but holds the experts of only {done} (held: {self.held_experts}); the ranks "
                               "disagree on the placement or the replica rule")
        if self.counter is not None:
            self.counter.computed[self.layer, self.rank] += done
        return y

    def forward(self, x: torch.Tensor, experts: torch.Tensor | np.ndarray,
                gates: torch.Tensor | np.ndarray, step: int = 0) -> torch.Tensor:
        """MoE output of this rank's tokens: one serving step of this rank's batch.

        Parameters
        ----------
        x:
            ``[tokens_local, hidden]`` hidden states of the tokens that live on this rank,
            in global token order (their positions are the local indices the replica rule reads).
        experts:
            ``int [tokens_local, k]`` top-k expert ids (the router's, or a trace's).
        gates:
            ``float [tokens_local, k]`` their gate weights.
        step:
            Serving step number: keys the draws of random replica rules (see
            :meth:`~placement_runtime.plan.Router.route`).

        Returns
        -------
        ``[tokens_local, hidden]``: ``sum_j gates[:, j] * expert_{experts[:, j]}(x)``, summed at this rank.
        """
        ex = experts.cpu().numpy() if isinstance(experts, torch.Tensor) else np.asarray(experts)
        gt = gates.detach().cpu().double().numpy() if isinstance(gates, torch.Tensor) else np.asarray(gates)
        ex = ex.astype(np.int64)
        N, k = ex.shape
        dest, _ = self.router.route(self.layer, ex, np.full(N, self.rank, dtype=np.int64),
                                    np.full(N, int(step), dtype=np.int64))
        xs = x.to(self.dtype)
        if self.transport != "deepep":
            plan = plan_dispatch(ex, gt, dest, self.world, self.dedup)
            counts, meta, rx = self._dispatch(plan, xs, leg=0)
            out = self._combine(plan, counts, self._compute(meta, rx, k), N, leg=0)
            return out.to(x.dtype)
        # DeepEP normal mode.  Leg 0 (RDMA): once per (token, other node) to the rail peer there, carrying
        # the selections served in that node and their GPUs.
        rdma, local = rdma_targets(dest, self.rank, self.server_of)
        p0 = plan_dispatch(ex, gt, rdma, self.world, dedup=True)
        c0, m0, x0 = self._dispatch(p0, xs, leg=0, extra=np.where(p0.covered, dest[p0.row_token], -1))
        # Leg 1 (NVLink): the items this rank holds (its own tokens for its node, then the forwarded
        # rows) go once to each GPU of this node serving one of their selections.
        items_ex = np.concatenate([ex, m0[:, :k].cpu().numpy().astype(np.int64)])
        items_gt = np.concatenate([gt, m0[:, k:2 * k].cpu().numpy()])
        items_dest = np.concatenate([local, m0[:, 2 * k:].cpu().numpy().astype(np.int64)])
        p1 = plan_dispatch(items_ex, items_gt, items_dest, self.world, dedup=True)
        c1, m1, x1 = self._dispatch(p1, torch.cat([xs, x0]), leg=1)
        item_out = self._combine(p1, c1, self._compute(m1, x1, k), N + x0.shape[0], leg=1)
        out = item_out[:N] + self._combine(p0, c0, item_out[N:], N, leg=0)
        return out.to(x.dtype)


def build_layers(placement: Placement, topology: Topology, rank: int, *, hidden_size: int, ffn_size: int,
                 seed: int = 0, weights: list[Mapping] | None = None, dedup: bool = False, replica: str = "nearest",
                 transport: str = "nccl", group=None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, counter: TrafficCounter | None = None) -> nn.ModuleList:
    """One :class:`ExpertParallelMoE` per layer of ``placement``, sharing one router of rule ``replica``.

    ``weights[l]`` (optional) is layer ``l``'s ``{expert: ExpertFFN}`` or full state dict; ``seed`` seeds
    the weights and the draws of random replica rules.
    """
    router = Router.build(placement, topology, replica, seed)
    return nn.ModuleList(
        ExpertParallelMoE(placement, layer, rank, router, hidden_size=hidden_size, ffn_size=ffn_size, seed=seed,
                          weights=None if weights is None else weights[layer], dedup=dedup, transport=transport,
                          group=group, device=device, dtype=dtype, counter=counter)
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

