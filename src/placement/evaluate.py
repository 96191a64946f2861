"""The independent evaluator: what any placement costs on a trace and a topology.

It recomputes everything from the raw trace (never from a formulation's internals) and is
the oracle of every test.  Its rules, stated once:

Origins (where a token starts)
    ``"trace"``: the trace's origin rank ``r`` is GPU ``r`` (needs ``num_ranks == gpus``).
    ``"uniform"``: the token is equally likely to start on every GPU; every metric is the
    exact expectation over that choice (the ``pi(u) = 1/G`` of arXiv 2508.09229).
    ``"round_robin"``: token ``t`` starts on GPU ``t mod G`` (a realisable uniform spread,
    what the runtime replays).  ``"auto"``: ``"trace"`` when the trace has origins for as
    many ranks as the topology has GPUs, else ``"uniform"``; the metrics say which was used.

Replica choice
    A token needing expert ``e`` uses the replica nearest (lowest hop count, then lowest
    seconds-per-byte) to the GPU it is sent from.  Replicas tied on both are shared evenly:
    the tokens of each (layer, expert, source GPU) group are dealt round-robin over the tied
    replicas in token order (the least-loaded rule among them).  Count traces split such
    ties fractionally.  :func:`route_layer` is this rule; the runtime calls it too.

Dispatch models
    ``"origin"``: at every layer the token is sent from its origin GPU to the GPUs of its k
    experts (dispatch) and the results come back (combine, the transposed traffic).
    ``"coherent"`` (ExFlow, arXiv 2401.08383): the context is on every GPU, so after layer
    ``l - 1`` the token continues from the GPUs that ran its layer ``l - 1`` experts.  Layer 0
    is dispatched from the origin; there is no combine.  For top-k the k x k pairs
    (previous GPU ``i``, next expert ``j``) each carry ``1/k`` of a token, so a token still
    makes ``k`` sends per layer; a replica is chosen nearest to the GPU of the token's
    first (top-1) expert of the previous layer.
De-duplication
    ``dedup=True``: a token goes once to each distinct destination GPU instead of once per
    expert.  Coherent with dedup: a destination GPU already holding the token (it ran one
    of its previous experts) receives nothing; any other destination receives one copy,
    drawn equally from the distinct previous GPUs.

Metrics (:class:`Metrics`)
    Expected hop-transmissions per token (sum over layers and phases of hops between
    sender and receiver, the metric of arXiv 2508.09229), sends leaving a GPU and crossing
    servers per token, bytes per link and per link tier (``hidden_size * bytes(dtype)`` per
    token sent), the busiest link, a modelled all-to-all time (per layer and phase: the
    largest bytes/bandwidth over links plus the largest latency among communicating
    pairs), per-GPU token load and its max/mean imbalance, the fraction of layer
    boundaries whose two experts sit on different GPUs (ExFlow's metric, pairs weighted
    ``1/k**2``), and memory slots used per GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .costs import DEFAULT_HIDDEN_SIZE, DTYPE_BYTES
from .errors import input_error
from .placement import Placement
from .stats import TraceStats
from .trace._trace import Trace

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .topology import Topology

__all__ = ["evaluate", "Metrics", "route_layer", "replica_tables", "first_of_each", "DISPATCH_MODELS",
           "ORIGIN_MODES", "DTYPE_BYTES"]

DISPATCH_MODELS = ("origin", "coherent")
ORIGIN_MODES = ("auto", "trace", "uniform", "round_robin")
#: expert selections replayed at once when averaging over origins (bounds temporary memory)
_VIRTUAL_SELECTIONS = 1 << 24


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

    @property
    def local_boundary_fraction(self) -> float:
        """ExFlow's "layer boundaries that stay on one GPU": ``1 - boundary_cross_fraction``."""
        return 1.0 - self.boundary_cross_fraction

    def as_dict(self) -> dict[str, Any]:
        """The scalar metrics as a flat dict (tiers as ``bytes_<tier>``)."""
        out: dict[str, Any] = {
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
        }
        for tier, b in self.tier_bytes.items():
            out[f"MB_{tier}"] = b / 1e6
        return out

    def to_frame(self, name: str | None = None) -> pd.DataFrame:
        """One-row :class:`pandas.DataFrame` of :meth:`as_dict` (index = ``name``)."""
        import pandas as pd

        return pd.DataFrame([self.as_dict()], index=[name if name is not None else "placement"])


# ---------------------------------------------------------------------------------- replicas
def replica_tables(placement: Placement, topology: Topology) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-replica tables.

    Returns
    -------
    tied:
        ``int32 [layers, gpus, experts, R]``: for a token sent from GPU ``u``, the GPUs of the
        replicas of expert ``e`` tied for nearest, in increasing GPU order, then ``-1``.
    ntied:
        ``int32 [layers, gpus, experts]``: how many replicas are tied (>= 1).
    """
    G = placement.num_gpus
    if G != topology.num_gpus:
        raise input_error(f"placement is for {G} GPUs but the topology has {topology.num_gpus}",
                          placement.source, "num_gpus")
    counts = placement.replica_counts()  # [L, E, G]
    holds = counts > 0
    nholds = holds.sum(axis=2)  # [L, E]
    R = int(nholds.max())
    # replica GPUs of each (layer, expert) in increasing GPU order, -1 padded: [L, E, R]
    rep = np.argsort(~holds, axis=2, kind="stable")[..., :R]
    valid = np.arange(R)[None, None, :] < nholds[..., None]
    # rank replicas by distance from the sender u: hops first, then seconds per byte
    spb = topology.seconds_per_byte
    finite = spb[np.isfinite(spb)]
    scale = (finite.max() if finite.size else 0.0) + 1.0
    dist = topology.hops + spb / scale * 0.5  # the time term stays below one hop
    d = np.transpose(dist[:, rep], (1, 0, 2, 3))  # [L, G(u), E, R]
    d = np.where(valid[:, None], d, np.inf)
    best = d.min(axis=3, keepdims=True)
    tie = (np.abs(d - best) <= 1e-12) & valid[:, None]
    ntied = tie.sum(axis=3).astype(np.int32)
    # tied replicas first, each group in increasing GPU order (rep is already increasing)
    order = np.argsort(~tie, axis=3, kind="stable")
    tied = np.take_along_axis(np.broadcast_to(rep[:, None], tie.shape), order, axis=3)
    tied = np.where(np.arange(R)[None, None, None, :] < ntied[..., None], tied, -1).astype(np.int32)
    return tied, ntied


def route_layer(experts: np.ndarray, src: np.ndarray, tied: np.ndarray, ntied: np.ndarray,
                replay: np.ndarray | None = None) -> np.ndarray:
    """Destination GPU of each selection of one layer.

    Parameters
    ----------
    experts:
        ``int [tokens, k]`` expert ids of the layer.
    src:
        ``int [tokens]`` GPU each token is sent from.
    tied, ntied:
        One layer of :func:`replica_tables` (``[gpus, experts, R]`` and ``[gpus, experts]``).
    replay:
        ``int [tokens]`` optional: tokens of different replays are dealt independently (the
        evaluator replays a trace once per origin GPU in one batch).

    Returns
    -------
    ``int64 [tokens, k]`` the GPU of the replica each selection uses.
    """
    e = experts.astype(np.int64)
    s = np.broadcast_to(src.astype(np.int64)[:, None], e.shape)
    c = ntied[s, e]
    out = tied[s, e, 0].astype(np.int64)
    tiedsel = c > 1
    if not tiedsel.any():
        return out
    # Only selections with tied replicas are dealt; a (source, expert) group is tied as a whole,
    # and boolean masking keeps token order.
    G, E = tied.shape[0], tied.shape[1]
    st, et, ct = s[tiedsel], e[tiedsel], c[tiedsel]
    key = st * E + et
    if replay is not None:
        key = key + np.broadcast_to(replay.astype(np.int64)[:, None], e.shape)[tiedsel] * (G * E)
    order = np.argsort(key, kind="stable")
    sk = key[order]
    start = np.ones(sk.size, dtype=bool)
    start[1:] = sk[1:] != sk[:-1]
    idx = np.arange(sk.size)
    group_start = np.maximum.accumulate(np.where(start, idx, 0))
    rank = np.empty(sk.size, dtype=np.int64)
    rank[order] = idx - group_start
    out[tiedsel] = tied[st, et, rank % ct]
    return out


def first_of_each(rows: np.ndarray) -> np.ndarray:
    """``bool [n, k]``: True at the first occurrence of each value within its row.

    The de-duplication rule: a token goes once to each distinct destination GPU.

    >>> first_of_each(np.array([[2, 2, 1], [0, 1, 0]])).tolist()
    [[True, False, True], [True, True, False]]
    """
    k = rows.shape[1]
    if k == 1:
        return np.ones(rows.shape, dtype=bool)
    eq = rows[:, :, None] == rows[:, None, :]  # [n, k, k]
    earlier = np.tril(np.ones((k, k), dtype=bool), -1)  # j' < j
    return ~(eq & earlier[None]).any(axis=2)


# ---------------------------------------------------------------------------------- simulation
@dataclass
class _Flows:
    traffic: np.ndarray  # [L, G, G] dispatch (or boundary) tokens
    load: np.ndarray  # [L, G]
    cross: np.ndarray  # [L-1] summed boundary-cross weight over tokens


def _simulate_tokens(experts: np.ndarray, src: np.ndarray, tied: np.ndarray, ntied: np.ndarray, G: int,
                     dispatch: str, dedup: bool, uniform: bool, replay: np.ndarray | None = None) -> _Flows:
    """Token-level flows for integer sources ``src [tokens]``.

    With ``uniform=True`` (only valid without replicas) the origin-dependent flows are
    spread evenly over origins instead of taken from ``src``.
    """
    N, L, k = experts.shape
    traffic = np.zeros((L, G, G))
    load = np.zeros((L, G))
    cross = np.zeros(max(L - 1, 0))
    prev = None
    for layer in range(L):
        from_gpu = src if (layer == 0 or dispatch == "origin") else prev[:, 0]
        dest = route_layer(experts[:, layer, :], from_gpu, tied[layer], ntied[layer], replay)
        load[layer] = np.bincount(dest.ravel(), minlength=G)
        if dispatch == "origin" or layer == 0:
            w = first_of_each(dest).astype(np.float64) if dedup else np.ones(dest.shape)
            if uniform:
                per_dest = np.bincount(dest.ravel(), weights=w.ravel(), minlength=G)
                traffic[layer] = np.broadcast_to(per_dest / G, (G, G))
            else:
                codes = (src.astype(np.int64)[:, None] * G + dest).ravel()
                traffic[layer] = np.bincount(codes, weights=w.ravel(), minlength=G * G).reshape(G, G)
        else:
            pairs = prev[:, :, None] * G + dest[:, None, :]  # [N, k(prev), k(next)]
            if dedup:
                vs = first_of_each(prev)  # distinct sources
                vd = first_of_each(dest)  # distinct destinations
                held = (prev[:, :, None] == dest[:, None, :]).any(axis=1)  # [N, k] dest already there
                ns = vs.sum(axis=1)
                w = vs[:, :, None] & (vd & ~held)[:, None, :]
                w = w / ns[:, None, None]
            else:
                w = np.full(pairs.shape, 1.0 / k)
            traffic[layer] = np.bincount(pairs.ravel(), weights=w.ravel(), minlength=G * G).reshape(G, G)
        if layer > 0:
            prev_for_cross = prev
            cross[layer - 1] = (prev_for_cross[:, :, None] != dest[:, None, :]).sum() / (k * k)
        prev = dest
    return _Flows(traffic, load, cross)


def _simulate_uniform_origin(experts: np.ndarray, tied: np.ndarray, ntied: np.ndarray, G: int,
                             dedup: bool) -> _Flows:
    """Origin dispatch with uniform origins and origin-dependent replicas, averaged over origins.

    Replaying every token from origin ``u``, the group (``u``, expert) holds all selections of
    that expert in token order whatever ``u`` is, so each selection's round-robin rank is the
    same for every origin and is computed once per layer; the replicas themselves are a gather.
    Equal, by construction, to replaying the trace once per origin (a test checks it).
    """
    N, L, k = experts.shape
    traffic = np.zeros((L, G, G))
    load = np.zeros((L, G))
    cross = np.zeros(max(L - 1, 0))
    per_block = max(1, _VIRTUAL_SELECTIONS // max(1, N * k))
    ranks = []
    for layer in range(L):
        flat = experts[:, layer, :].astype(np.int64).ravel()
        order = np.argsort(flat, kind="stable")
        sk = flat[order]
        start = np.ones(sk.size, dtype=bool)
        start[1:] = sk[1:] != sk[:-1]
        idx = np.arange(sk.size)
        rank = np.empty(sk.size, dtype=np.int64)
        rank[order] = idx - np.maximum.accumulate(np.where(start, idx, 0))
        ranks.append(rank.reshape(N, k))
    for u0 in range(0, G, per_block):
        us = np.arange(u0, min(G, u0 + per_block))
        U = us.size
        prev = None
        for layer in range(L):
            e = experts[:, layer, :].astype(np.int64)[None]  # [1, N, k]
            uu = us[:, None, None]
            c = ntied[layer][uu, e]  # [U, N, k]
            dest = tied[layer][uu, e, ranks[layer][None] % c].astype(np.int64)
            load[layer] += np.bincount(dest.ravel(), minlength=G)
            w = first_of_each(dest.reshape(U * N, k)).astype(np.float64) if dedup else np.ones(U * N * k)
            codes = (np.broadcast_to(uu, dest.shape) * G + dest).ravel()
            traffic[layer] += np.bincount(codes, weights=w.ravel(), minlength=G * G).reshape(G, G)
            if layer > 0:
                cross[layer - 1] += (prev[:, :, :, None] != dest[:, :, None, :]).sum() / (k * k)
            prev = dest
    return _Flows(traffic / G, load / G, cross / G)


def _simulate_counts(counts_by_origin: np.ndarray, tied: np.ndarray, ntied: np.ndarray, G: int) -> _Flows:
    """Origin-model flows (no dedup) from ``counts_by_origin float64 [G(origin), L, E]``; ties split evenly."""
    _, L, E = counts_by_origin.shape
    R = tied.shape[-1]
    c = np.transpose(counts_by_origin, (1, 0, 2))  # [L, G(u), E]
    share = c / ntied  # [L, G, E]
    lay = np.arange(L)[:, None, None]
    u = np.arange(G)[None, :, None]
    traffic = np.zeros(L * G * G)
    for r in range(R):
        gpu = tied[..., r]  # [L, G, E]
        ok = gpu >= 0
        codes = ((lay * G + u) * G + gpu)[ok]
        traffic += np.bincount(codes, weights=np.broadcast_to(share, gpu.shape)[ok], minlength=L * G * G)
    traffic = traffic.reshape(L, G, G)
    return _Flows(traffic, traffic.sum(axis=1), np.full(max(L - 1, 0), np.nan))


# ---------------------------------------------------------------------------------- public entry point
def evaluate(
    placement: Placement,
    trace: Trace,
    topology: Topology,
    *,
    dispatch: str = "origin",
    dedup: bool = False,
    origins: str = "auto",
    hidden_size: int | None = None,
    dtype: str = "bf16",
) -> Metrics:
    """Evaluate ``placement`` on ``trace`` over ``topology`` (see the module docstring for the rules).

    Parameters
    ----------
    placement:
        Any placement for ``trace.num_layers`` layers, ``trace.num_experts`` experts and
        ``topology.num_gpus`` GPUs.
    trace:
        A token trace (every mode) or a count trace (``dispatch="origin"``, ``dedup=False``).
    topology:
        The cluster.
    dispatch:
        ``"origin"`` or ``"coherent"``.
    dedup:
        Send a token once per destination GPU instead of once per expert.
    origins:
        ``"auto"``, ``"trace"``, ``"uniform"`` or ``"round_robin"``.
    hidden_size:
        Elements per token hidden state (default: the model's, else 4096).
    dtype:
        Element type of the hidden state on the wire (``bf16``, ``fp8``, ``fp32``...).
    """
    if dispatch not in DISPATCH_MODELS:
        raise input_error(f"unknown dispatch model {dispatch!r}; choose one of {list(DISPATCH_MODELS)}",
                          field="dispatch")
    if origins not in ORIGIN_MODES:
        raise input_error(f"unknown origins mode {origins!r}; choose one of {list(ORIGIN_MODES)}", field="origins")
    if dtype not in DTYPE_BYTES:
        raise input_error(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPE_BYTES)}", field="dtype")
    if hidden_size is None:
        hidden_size = trace.model.hidden_size or DEFAULT_HIDDEN_SIZE
    if int(hidden_size) < 1:
        raise input_error(f"must be positive, got {hidden_size}", field="hidden_size")
    bytes_per_token = int(hidden_size) * DTYPE_BYTES[dtype]
    L, E, G = trace.num_layers, trace.num_experts, topology.num_gpus
    if placement.num_layers != L or placement.num_experts != E:
        raise input_error(f"placement has {placement.num_layers} layers x {placement.num_experts} experts but the "
                          f"trace has {L} x {E}; solve the placement for this trace's model", placement.source,
                          "slots")
    tied, ntied = replica_tables(placement, topology)
    has_ties = bool((ntied > 1).any())
    stats = TraceStats(trace)
    mode = _resolve_origins(origins, trace, G)

    if trace.kind == "counts":
        if dispatch != "origin" or dedup:
            trace.require_tokens(f"the {dispatch} dispatch model" + (" with de-duplication" if dedup else ""))
        if mode == "trace":
            by_origin = stats.load_by_origin.astype(np.float64)
        elif mode == "uniform":
            by_origin = np.broadcast_to(stats.load.astype(np.float64) / G, (G, L, E))
        else:
            raise input_error("round_robin origins need a token trace; use origins='uniform'", trace.source,
                              "origins")
        flows = _simulate_counts(by_origin, tied, ntied, G)
        num_tokens = trace.num_tokens
    else:
        experts = trace.experts
        assert experts is not None
        N = experts.shape[0]
        num_tokens = N
        if mode == "trace":
            flows = _simulate_tokens(experts, trace.origin, tied, ntied, G, dispatch, dedup, uniform=False)
        elif mode == "round_robin":
            src = (np.arange(N) % G).astype(np.int64)
            flows = _simulate_tokens(experts, src, tied, ntied, G, dispatch, dedup, uniform=False)
        elif not has_ties and _route_independent(tied):  # the sender does not change any destination
            flows = _simulate_tokens(experts, np.zeros(N, dtype=np.int64), tied, ntied, G, dispatch, dedup,
                                     uniform=True)
        elif dispatch == "origin":  # uniform origins, origin-dependent replicas: exact average
            flows = _simulate_uniform_origin(experts, tied, ntied, G, dedup)
        else:  # coherent, uniform origins, origin-dependent replicas: exact average over origins
            # Every token is replayed once from every origin GPU.  Replica ties are dealt per
            # (origin, expert) group in token order, so replaying a block of origins as one
            # batch of virtual tokens (origin-major) deals exactly as G separate replays would.
            per_block = max(1, _VIRTUAL_SELECTIONS // max(1, experts[0].size * N))
            acc = None
            for u0 in range(0, G, per_block):
                us = np.arange(u0, min(G, u0 + per_block))
                virtual = np.tile(experts, (us.size, 1, 1))
                src = np.repeat(us, N).astype(np.int64)
                f = _simulate_tokens(virtual, src, tied, ntied, G, dispatch, dedup, uniform=False, replay=src)
                if acc is None:
                    acc = f
                else:
                    acc.traffic += f.traffic
                    acc.load += f.load
                    acc.cross += f.cross
            assert acc is not None
            flows = _Flows(acc.traffic / G, acc.load / G, acc.cross / G)

    return _metrics(flows, topology, placement, dispatch=dispatch, dedup=dedup, origins=mode,
                    num_tokens=num_tokens, bytes_per_token=bytes_per_token, k=trace.top_k)


def _route_independent(tied: np.ndarray) -> bool:
    """True when every (layer, expert) has the same nearest replica from every source GPU."""
    return bool((tied[:, :1, :, 0] == tied[:, :, :, 0]).all())


def _resolve_origins(origins: str, trace: Trace, G: int) -> str:
    has = trace.origin is not None or (trace.counts is not None and trace.counts.ndim == 3)
    if origins == "auto":
        return "trace" if has and trace.num_ranks == G else "uniform"
    if origins == "trace":
        if not has:
            raise input_error("the trace has no origin ranks; use origins='uniform' or 'round_robin'",
                              trace.source, "origin")
        if trace.num_ranks != G:
            raise input_error(f"the trace's origins are ranks of a {trace.num_ranks}-rank run but the topology has "
                              f"{G} GPUs; use origins='uniform' or a matching topology", trace.source, "origin")
    return origins


def _metrics(flows: _Flows, topology: Topology, placement: Placement, *, dispatch: str, dedup: bool,
             origins: str, num_tokens: int, bytes_per_token: int, k: int) -> Metrics:
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
