"""What a placement costs: :class:`Metrics`, and :func:`flows_to_metrics`, which turns the token
flows of :mod:`placement.evaluation.flows` into bytes per link and per tier, modelled all-to-all
times, per-GPU loads and the boundary-crossing fraction over a topology.

Units: bytes (a token sent weighs ``wire.bytes_per_token``, :class:`~placement.costs.Wire`),
seconds, tokens (expected tokens, as floats); scalars are per token unless named otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..costs import Wire
    from ..placement import Placement
    from ..topology import Topology
    from .flows import Flows
    from .serving import StepTimes

__all__ = ["Metrics", "flows_to_metrics"]


@dataclass(frozen=True, eq=False)
class Metrics:
    """What a placement costs.  Scalars are per token unless named otherwise.

    Attributes
    ----------
    dispatch, dedup, origins:
        The rules used (``origins`` is the resolved mode, never ``"auto"``).
    num_tokens, num_layers, num_gpus, bytes_per_token:
        The evaluated sizes; ``bytes_per_token = hidden_size * bytes(dtype)``.
    hop_transmissions:
        Expected hop-transmissions per token, summed over layers and phases.
    layer_hops:
        ``float64 [layers]`` the same per layer.
    gpu_transmissions:
        Sends per token that leave their GPU (all layers and phases).
    server_crossings:
        Sends per token that leave their server.
    tier_bytes:
        Bytes over all links of each tier, whole trace (``{tier: bytes}``).
    arc_bytes:
        ``float64 [arcs]`` bytes per directed link (``topology.arc_names``), whole trace.
    busiest_link, busiest_link_bytes:
        The directed link with the most bytes, and its bytes.
    alltoall_time:
        Modelled seconds of all all-to-all phases of all layers for the trace's tokens.
    layer_time:
        ``float64 [layers]`` the same per layer (dispatch + combine).
    gpu_load:
        ``float64 [layers, gpus]`` expert computations (token-expert pairs) per GPU.
    load_imbalance:
        Mean over layers of max/mean GPU load; ``max_load_imbalance`` is the worst layer.
    boundary_cross_fraction:
        Fraction of (token, layer boundary, expert pair) whose two experts ran on different
        GPUs (``nan`` for count traces or one layer).
    slots_used:
        ``int64 [gpus]`` occupied expert slots summed over layers.
    traffic:
        ``float64 [gpus, gpus]`` tokens sent from GPU u to GPU v, all layers and phases.
    layer_traffic:
        ``float64 [layers, gpus, gpus]`` tokens sent per layer in the dispatch phase (origin
        model; the combine phase is its transpose) or across the boundary into the layer
        (coherent model; layer 0 is the dispatch from the origins).
    replica, transport:
        The replica rule and the step model's transport.
    step:
        The serving-step model's :class:`~placement.evaluation.serving.StepTimes` (origin dispatch;
        ``None`` for the coherent model): seconds per serving step, per layer and per phase.
    """

    dispatch: str
    dedup: bool
    origins: str
    num_tokens: int
    num_layers: int
    num_gpus: int
    bytes_per_token: int
    hop_transmissions: float
    layer_hops: np.ndarray
    gpu_transmissions: float
    server_crossings: float
    tier_bytes: dict[str, float]
    arc_bytes: np.ndarray
    busiest_link: str
    busiest_link_bytes: float
    alltoall_time: float
    layer_time: np.ndarray
    gpu_load: np.ndarray
    load_imbalance: float
    max_load_imbalance: float
    boundary_cross_fraction: float
    slots_used: np.ndarray
    traffic: np.ndarray = field(repr=False)
    layer_traffic: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0, 0)))
    replica: str = "nearest"
    transport: str = "nccl"
    step: StepTimes | None = field(repr=False, default=None)

    @property
    def step_time(self) -> float:
        """Seconds per serving step over all MoE layers (``nan`` without the step model)."""
        return self.step.step_time if self.step is not None else float("nan")

    @property
    def local_boundary_fraction(self) -> float:
        """ExFlow's "layer boundaries that stay on one GPU": ``1 - boundary_cross_fraction``."""
        return 1.0 - self.boundary_cross_fraction

    def as_dict(self) -> dict[str, Any]:
        """The scalar metrics as a flat dict (bytes per tier as ``MB_<tier>``, in MB)."""
        out: dict[str, Any] = {}
        if self.step is not None:
            phases = self.step.phase_totals
            out.update({"step_time_ms": self.step.step_time * 1e3, "dispatch_ms": phases["dispatch"] * 1e3,
                        "compute_ms": phases["compute"] * 1e3, "combine_ms": phases["combine"] * 1e3,
                        "bound_by": self.step.bound_by, "replica": self.replica, "transport": self.transport,
                        "tokens_per_step": self.step.setup.tokens_per_step})
        out.update({
            "dispatch": self.dispatch,
            "dedup": self.dedup,
            "origins": self.origins,
            "tokens": self.num_tokens,
            "hop_transmissions": self.hop_transmissions,
            "gpu_transmissions": self.gpu_transmissions,
            "server_crossings": self.server_crossings,
            "alltoall_time_ms": self.alltoall_time * 1e3,
            "busiest_link": self.busiest_link,
            "busiest_link_MB": self.busiest_link_bytes / 1e6,
            "load_imbalance": self.load_imbalance,
            "max_load_imbalance": self.max_load_imbalance,
            "local_boundary_fraction": self.local_boundary_fraction,
            "max_slots_used": int(self.slots_used.max()),
        })
        for tier, b in self.tier_bytes.items():
            out[f"MB_{tier}"] = b / 1e6
        return out

    def to_frame(self, name: str | None = None) -> pd.DataFrame:
        """One-row :class:`pandas.DataFrame` of :meth:`as_dict` (index = ``name``)."""
        import pandas as pd

        return pd.DataFrame([self.as_dict()], index=[name if name is not None else "placement"])


def flows_to_metrics(flows: Flows, topology: Topology, placement: Placement, wire: Wire, *, dispatch: str,
                     dedup: bool, origins: str, num_tokens: int) -> Metrics:
    """The :class:`Metrics` of ``flows`` over ``topology``.

    Parameters
    ----------
    flows:
        Token flows (``traffic float64 [L, G, G]``, ``load float64 [L, G]``,
        ``cross float64 [L - 1]``), in tokens for the whole trace.
    topology:
        The cluster: ``hops`` and ``latency`` (s) ``[G, G]``, ``route_matrix`` (sparse
        ``[G*G, arcs]``), ``arc_bandwidth`` (bytes/s, ``[arcs]``), ``arc_tier``, ``server_of``.
    placement:
        The placement (its slots used per GPU).
    wire:
        Bytes per token sent.
    dispatch, dedup, origins:
        The rules used (``origins`` resolved); ``dispatch="origin"`` adds the combine phase,
        the transpose of each layer's dispatch.
    num_tokens:
        Tokens of the trace (the per-token scalars divide by it).
    """
    bytes_per_token = wire.bytes_per_token
    T = flows.traffic  # [L, G, G]
    L, G, _ = T.shape
    combine = dispatch == "origin"
    H = topology.hops
    layer_hops = (T * H[None]).sum(axis=(1, 2))
    off = ~np.eye(G, dtype=bool)
    other_server = topology.server_of[:, None] != topology.server_of[None, :]
    cross_gpu = T[:, off].sum()
    cross_server = T[:, other_server].sum()
    phases = [T]
    if combine:
        Tt = np.transpose(T, (0, 2, 1))
        layer_hops = layer_hops + (Tt * H[None]).sum(axis=(1, 2))
        cross_gpu *= 2
        cross_server *= 2
        phases.append(Tt)
    route = topology.route_matrix  # csr [G*G, A]
    bw = topology.arc_bandwidth
    lat = topology.latency
    A = route.shape[1]
    arc_tokens = np.zeros(A)
    layer_time = np.zeros(L)
    for X in phases:
        flat = X.reshape(L, G * G)
        per_arc = np.asarray((route.T @ flat.T).T) if A else np.zeros((L, 0))  # [L, A] tokens
        arc_tokens += per_arc.sum(axis=0)
        busy = (per_arc * bytes_per_token / bw[None, :]).max(axis=1) if A else np.zeros(L)
        sends = (X > 0) & off[None]
        latency = np.where(sends, lat[None], 0.0).max(axis=(1, 2))
        layer_time += np.where(sends.any(axis=(1, 2)), busy + latency, 0.0)
    arc_bytes = arc_tokens * bytes_per_token
    tier_bytes = {tier: 0.0 for tier in topology.tiers}
    tiers = np.asarray(topology.arc_tier, dtype=object)
    for tier in topology.tiers:
        tier_bytes[tier] = float(arc_bytes[tiers == tier].sum()) if A else 0.0
    if A and arc_bytes.max() > 0:
        busiest = int(np.argmax(arc_bytes))
        busiest_name, busiest_bytes = topology.arc_names[busiest], float(arc_bytes[busiest])
    else:
        busiest_name, busiest_bytes = "-", 0.0
    load = flows.load
    mean = load.mean(axis=1)
    ratio = np.divide(load.max(axis=1), mean, out=np.ones(L), where=mean > 0)
    n = max(num_tokens, 1)
    cross = flows.cross
    boundary = float(cross.sum() / (n * (L - 1))) if L > 1 and np.isfinite(cross).all() else float("nan")
    traffic_total = T.sum(axis=0)
    if combine:
        traffic_total = traffic_total + traffic_total.T
    return Metrics(
        dispatch=dispatch,
        dedup=dedup,
        origins=origins,
        num_tokens=int(num_tokens),
        num_layers=L,
        num_gpus=G,
        bytes_per_token=bytes_per_token,
        hop_transmissions=float(layer_hops.sum() / n),
        layer_hops=layer_hops / n,
        gpu_transmissions=float(cross_gpu / n),
        server_crossings=float(cross_server / n),
        tier_bytes=tier_bytes,
        arc_bytes=arc_bytes,
        busiest_link=busiest_name,
        busiest_link_bytes=busiest_bytes,
        alltoall_time=float(layer_time.sum()),
        layer_time=layer_time,
        gpu_load=load,
        load_imbalance=float(ratio.mean()),
        max_load_imbalance=float(ratio.max()),
        boundary_cross_fraction=boundary,
        slots_used=placement.slots_used(),
        traffic=traffic_total,
        layer_traffic=T,
    )
