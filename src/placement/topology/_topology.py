"""The :class:`Topology` value type: a validated cluster graph and its derived cost matrices.

A topology is an undirected :mod:`networkx` graph whose nodes are GPUs, switches and NICs and
whose edges are full-duplex links.  :meth:`Topology.from_graph` validates it once and computes,
vectorised, everything the formulations and the evaluator need:

* the hop metric of arXiv 2508.09229 (``hops [G, G]``): a link whose two endpoints sit in the
  same server is free, every other link costs one hop;
* one deterministic route per ordered GPU pair (fewest hops, then fewest links, then the
  smallest sum of ``1 / bandwidth``) and, along it, the latency, the bottleneck bandwidth and
  the seconds per byte (``[G, G]`` each);
* the directed arcs (two per link) and ``route_matrix [G*G, A]``, which maps a ``[G, G]``
  traffic matrix to bytes per arc: ``route_matrix.T @ traffic.ravel()``.

Graph conventions
-----------------
Node attributes: ``kind`` (``"gpu"``, ``"nvswitch"``, ``"pcie_switch"``, ``"nic"``,
``"switch"``...), ``server`` (required on GPUs, optional on any other node that sits inside a
server) and ``rack`` (optional, on GPUs).  Edge attributes: ``bandwidth`` (bytes per second per
direction, required), ``latency`` (seconds, default 0) and ``tier`` (``"nvlink"``, ``"pcie"``,
``"nic"``, ``"spine"``..., default ``"link"``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from ..errors import PlacementInputError, input_error

__all__ = ["Topology", "COST_KINDS", "KNOWN_TIERS"]

#: Cost matrices :meth:`Topology.cost_matrix` can return.
COST_KINDS = ("hops", "time")

#: Tiers listed first, in this order, in :attr:`Topology.tiers`; other tiers follow in order of appearance.
KNOWN_TIERS = ("nvlink", "pcie", "nic", "leaf", "spine", "local", "global")

_DEFAULT_TIER = "link"


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Topology:
    """A validated cluster topology with its GPU-to-GPU cost matrices and routes.

    Build one with :meth:`from_graph`, :func:`placement.topology.preset` or
    :func:`placement.topology.load_topology`; never call the constructor directly.  All arrays are
    read-only.  ``G`` is the number of GPUs, ``N`` the number of nodes, ``A`` the number of
    directed arcs (two per link).

    Attributes
    ----------
    graph:
        The (frozen copy of the) undirected :class:`networkx.Graph`.
    name, source:
        A display name, and where the topology came from (a file, a preset spec or ``"<memory>"``).
    nodes:
        ``tuple[str, ...]`` every node id, in graph order (arc endpoints index into it).
    node_kind:
        ``tuple[str, ...]`` the ``kind`` of each node.
    gpus:
        ``tuple[str, ...]`` GPU node ids ordered by server (first appearance), then graph order.
        Index ``i`` in every ``[G, ...]`` array refers to ``gpus[i]``.
    gpu_index:
        ``dict[str, int]`` GPU id -> index into :attr:`gpus`.
    gpu_node:
        ``int32 [G]`` index of each GPU in :attr:`nodes`.
    servers, server_of:
        ``tuple[str, ...]`` server names; ``int32 [G]`` the server of each GPU.
    racks, rack_of:
        ``tuple[str, ...]`` rack names (a server without a ``rack`` is its own rack); ``int32 [G]``.
    hops:
        ``float64 [G, G]`` shortest-path hop count, intra-server links free; 0 on the diagonal.
    route_length:
        ``int32 [G, G]`` number of links on the route; 0 on the diagonal.
    latency:
        ``float64 [G, G]`` seconds, the sum of link latencies along the route; 0 on the diagonal.
    bottleneck_bandwidth:
        ``float64 [G, G]`` bytes per second, the smallest link bandwidth on the route; ``inf`` on
        the diagonal.
    seconds_per_byte:
        ``float64 [G, G]`` ``1 / bottleneck_bandwidth``; 0 on the diagonal.
    arc_src, arc_dst:
        ``int32 [A]`` node indices of each arc; link ``e`` gives arcs ``2e`` (``a -> b``) and
        ``2e + 1`` (``b -> a``).
    arc_bandwidth, arc_latency:
        ``float64 [A]`` bytes per second (the full link bandwidth, each direction) and seconds.
    arc_tier:
        ``tuple[str, ...]`` length ``A``, the tier of each arc.
    arc_tier_index:
        ``int32 [A]`` index of each arc's tier in :attr:`tiers`.
    arc_names:
        ``tuple[str, ...]`` length ``A``, ``"src->dst"``.
    tiers:
        ``tuple[str, ...]`` distinct tiers: those of :data:`KNOWN_TIERS` first, in that order, then
        the others in order of appearance.
    route_matrix:
        ``scipy.sparse.csr_matrix float64 [G*G, A]``; row ``u*G + v`` holds 1.0 at each arc of the
        route from GPU ``u`` to GPU ``v`` (empty when ``u == v``).

    Examples
    --------
    >>> import networkx as nx
    >>> g = nx.Graph()
    >>> for i in range(2):
    ...     g.add_node(f"gpu{i}", kind="gpu", server="s0")
    ...     g.add_node(f"nic{i}", kind="nic", server="s0")
    ...     g.add_edge(f"gpu{i}", f"nic{i}", bandwidth=64e9, latency=1e-6, tier="pcie")
    >>> g.add_node("gpu2", kind="gpu", server="s1")
    >>> g.add_node("sw", kind="switch")
    >>> g.add_edge("nic0", "sw", bandwidth=50e9, latency=2e-6, tier="nic")
    >>> g.add_edge("nic1", "sw", bandwidth=50e9, latency=2e-6, tier="nic")
    >>> g.add_edge("gpu2", "sw", bandwidth=25e9, latency=2e-6, tier="nic")
    >>> topo = Topology.from_graph(g, name="toy")
    >>> topo
    Topology(name='toy', gpus=3, servers=2, racks=2, nodes=6, links=5, diameter=2)
    >>> topo.hops.tolist()
    [[0.0, 2.0, 2.0], [2.0, 0.0, 2.0], [2.0, 2.0, 0.0]]
    >>> topo.path("gpu0", "gpu2")
    ('gpu0', 'nic0', 'sw', 'gpu2')
    >>> float(topo.bottleneck_bandwidth[0, 2]) / 1e9
    25.0
    """

    graph: nx.Graph
    name: str
    source: str
    nodes: tuple[str, ...] = field(repr=False)
    node_kind: tuple[str, ...] = field(repr=False)
    gpus: tuple[str, ...] = field(repr=False)
    gpu_index: dict[str, int] = field(repr=False)
    gpu_node: np.ndarray = field(repr=False)
    servers: tuple[str, ...] = field(repr=False)
    server_of: np.ndarray = field(repr=False)
    racks: tuple[str, ...] = field(repr=False)
    rack_of: np.ndarray = field(repr=False)
    hops: np.ndarray = field(repr=False)
    route_length: np.ndarray = field(repr=False)
    latency: np.ndarray = field(repr=False)
    bottleneck_bandwidth: np.ndarray = field(repr=False)
    seconds_per_byte: np.ndarray = field(repr=False)
    arc_src: np.ndarray = field(repr=False)
    arc_dst: np.ndarray = field(repr=False)
    arc_bandwidth: np.ndarray = field(repr=False)
    arc_latency: np.ndarray = field(repr=False)
    arc_tier: tuple[str, ...] = field(repr=False)
    arc_tier_index: np.ndarray = field(repr=False)
    arc_names: tuple[str, ...] = field(repr=False)
    tiers: tuple[str, ...] = field(repr=False)
    route_matrix: sp.csr_matrix = field(repr=False)
    gpu: str = "h100-sxm"

    # ------------------------------------------------------------------ sizes
    @property
    def num_gpus(self) -> int:
        """``G``, the number of GPUs."""
        return len(self.gpus)

    @property
    def num_servers(self) -> int:
        """Number of servers (distinct ``server`` attributes of GPUs)."""
        return len(self.servers)

    @property
    def num_racks(self) -> int:
        """Number of racks."""
        return len(self.racks)

    @property
    def num_nodes(self) -> int:
        """``N``, the number of nodes (GPUs, switches, NICs)."""
        return len(self.nodes)

    @property
    def num_links(self) -> int:
        """Number of undirected links (``num_arcs / 2``)."""
        return len(self.arc_tier) // 2

    @property
    def num_arcs(self) -> int:
        """``A``, the number of directed arcs (two per link)."""
        return len(self.arc_tier)

    @property
    def diameter(self) -> float:
        """Largest GPU-to-GPU hop count."""
        return float(self.hops.max())

    # ------------------------------------------------------------------ queries
    def cost_matrix(self, kind: str = "hops") -> np.ndarray:
        """The ``float64 [G, G]`` cost of moving data between GPUs (read-only).

        Parameters
        ----------
        kind:
            ``"hops"`` (:attr:`hops`) or ``"time"`` (:attr:`seconds_per_byte`).
        """
        if kind == "hops":
            return self.hops
        if kind == "time":
            return self.seconds_per_byte
        raise ValueError(f"unknown cost kind {kind!r}; choose one of {list(COST_KINDS)}")

    def path(self, src: str, dst: str) -> tuple[str, ...]:
        """The node ids along the route from GPU ``src`` to GPU ``dst`` (both included)."""
        for gpu in (src, dst):
            if gpu not in self.gpu_index:
                raise input_error(f"'{gpu}' is not a GPU of topology '{self.name}'", self.source, "gpus")
        u, v = self.gpu_index[src], self.gpu_index[dst]
        row = self.route_matrix.getrow(u * self.num_gpus + v)
        next_node = {int(self.arc_src[a]): int(self.arc_dst[a]) for a in row.indices}
        node = int(self.gpu_node[u])
        out = [self.nodes[node]]
        while node in next_node:
            node = next_node[node]
            out.append(self.nodes[node])
        return tuple(out)

    def summary(self) -> dict[str, Any]:
        """Plain-dict description (for logs, CLI output and reports).

        Keys: ``name``, ``gpus``, ``gpu`` (the GPU model), ``servers``, ``racks``, ``switches`` (nodes
        that are neither GPUs nor NICs), ``nics``, ``links``, ``tiers`` (tier -> link count), ``diameter_hops``,
        ``min_inter_server_bandwidth`` and ``max_inter_server_bandwidth`` (bytes per second over the
        routes between GPUs of different servers; ``None`` for a single server).
        """
        kinds = np.asarray(self.node_kind, dtype=object)
        tier_counts = {t: 0 for t in self.tiers}
        for tier in self.arc_tier[::2]:
            tier_counts[tier] += 1
        inter = self.server_of[:, None] != self.server_of[None, :]
        bw = self.bottleneck_bandwidth[inter]
        return {
            "name": self.name,
            "gpus": self.num_gpus,
            "gpu": self.gpu,
            "servers": self.num_servers,
            "racks": self.num_racks,
            "switches": int(np.sum((kinds != "gpu") & (kinds != "nic"))),
            "nics": int(np.sum(kinds == "nic")),
            "links": self.num_links,
            "tiers": tier_counts,
            "diameter_hops": self.diameter,
            "min_inter_server_bandwidth": float(bw.min()) if bw.size else None,
            "max_inter_server_bandwidth": float(bw.max()) if bw.size else None,
        }

    def __repr__(self) -> str:
        return (f"Topology(name={self.name!r}, gpus={self.num_gpus}, servers={self.num_servers}, "
                f"racks={self.num_racks}, nodes={self.num_nodes}, links={self.num_links}, "
                f"diameter={self.diameter:g})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_graph(cls, graph: nx.Graph, name: str = "custom", source: str = "<memory>",
                   gpu: str | None = None) -> Topology:
        """Validate ``graph`` and compute every derived matrix.

        Parameters
        ----------
        graph:
            An undirected :class:`networkx.Graph` following the conventions of this module.  It is
            copied (and the copy frozen), so later changes to ``graph`` do not affect the topology.
            Non-string node ids are converted with ``str``.
        name:
            Display name.
        source:
            Where the graph came from; error messages start with it.
        gpu:
            The GPU model of every GPU, a key of :data:`placement.hardware.GPU_PRESETS` (default: the
            graph attribute ``graph.graph["gpu"]``, else ``"h100-sxm"``); the compute model uses it.

        Raises
        ------
        PlacementInputError
            A ``ValueError`` naming ``source`` and the offending field, for: a directed or multi
            graph, no GPU, a GPU without ``server``, a missing ``kind``, a self-loop, a bandwidth that
            is not positive and finite, a negative latency, or a disconnected graph.
        """
        from ..hardware import gpu_preset

        model = gpu if gpu is not None else getattr(graph, "graph", {}).get("gpu", "h100-sxm")
        try:
            gpu_preset(model)
        except PlacementInputError as exc:
            raise input_error(str(exc).split(": ", 1)[-1], source, "gpu") from None
        return dataclasses.replace(_build(graph, name=name, source=source), gpu=str(model).lower())


# ---------------------------------------------------------------------------------------------
# validation


def _validated_copy(graph: Any, source: str) -> nx.Graph:
    if not isinstance(graph, nx.Graph):
        raise input_error(f"expected a networkx.Graph, got {type(graph).__name__}", source, "graph")
    if graph.is_directed():
        raise input_error("links are full duplex: pass an undirected nx.Graph (e.g. graph.to_undirected())",
                          source, "graph")
    if graph.is_multigraph():
        raise input_error("parallel links are not supported: pass an nx.Graph and merge parallel links "
                          "into one link whose bandwidth is their sum", source, "graph")
    from ..limits import check_limit

    check_limit("max_topology_nodes", graph.number_of_nodes(), source, "nodes")
    check_limit("max_gpus", sum(1 for _, k in graph.nodes(data="kind") if k == "gpu"), source, "nodes")
    g = nx.Graph()
    g.graph.update(graph.graph)
    seen: dict[str, Any] = {}
    for node, data in graph.nodes(data=True):
        key = node if isinstance(node, str) else str(node)
        if key in seen:
            raise input_error(f"node ids {seen[key]!r} and {node!r} both read '{key}' as text; give them "
                              "distinct ids", source, "nodes")
        seen[key] = node
        g.add_node(key, **data)
    for u, v, data in graph.edges(data=True):
        g.add_edge(str(u), str(v), **data)

    for node, data in g.nodes(data=True):
        kind = data.get("kind")
        if not isinstance(kind, str) or not kind:
            raise input_error(f"node '{node}' has no 'kind'; set kind='gpu', 'nvswitch', 'nic', 'switch'...",
                              source, f"nodes[{node}].kind")
        if kind != kind.lower():  # 'GPU' would silently stop being a GPU
            raise input_error(f"node '{node}' has kind {kind!r}; kinds are lower case: write {kind.lower()!r}",
                              source, f"nodes[{node}].kind")
        for attr in ("server", "rack"):
            value = data.get(attr)
            if value is not None and (not isinstance(value, str) or not value):
                raise input_error(f"node '{node}' has {attr}={value!r}; it must be a non-empty string",
                                  source, f"nodes[{node}].{attr}")
        if kind == "gpu" and data.get("server") is None:
            raise input_error(f"GPU '{node}' has no 'server'; every GPU needs the name of the server it sits "
                              "in (a single-node cluster can use server='node0')", source,
                              f"nodes[{node}].server")
    for u, v, data in g.edges(data=True):
        where = f"links[{u}-{v}]"
        if u == v:
            raise input_error(f"self-loop on node '{u}'; remove it", source, where)
        bw = data.get("bandwidth")
        if bw is None:
            raise input_error(f"link {u} - {v} has no 'bandwidth' (bytes per second per direction)",
                              source, f"{where}.bandwidth")
        try:
            bw = float(bw)
        except (TypeError, ValueError):
            raise input_error(f"bandwidth must be a number, got {bw!r}", source,
                              f"{where}.bandwidth") from None
        if not (math.isfinite(bw) and bw > 0):
            raise input_error(f"bandwidth must be positive and finite, got {bw!r}; give bytes per second "
                              "per direction", source, f"{where}.bandwidth")
        lat = data.get("latency", 0.0)
        try:
            lat = float(lat)
        except (TypeError, ValueError):
            raise input_error(f"latency must be a number, got {lat!r}", source, f"{where}.latency") from None
        if not (math.isfinite(lat) and lat >= 0):
            raise input_error(f"latency must be >= 0 seconds and finite, got {lat!r}", source,
                              f"{where}.latency")
        tier = data.get("tier", _DEFAULT_TIER)
        if not isinstance(tier, str) or not tier:
            raise input_error(f"tier must be a non-empty string, got {tier!r}", source, f"{where}.tier")
        data["bandwidth"], data["latency"], data["tier"] = bw, lat, tier
    return g


def _check_connected(nodes: list[str], adjacency: sp.csr_matrix, gpu_node: np.ndarray,
                     source: str) -> None:
    ncomp, labels = csgraph.connected_components(adjacency, directed=False)
    if ncomp == 1:
        return
    gpu_labels = labels[gpu_node]
    if np.any(gpu_labels != gpu_labels[0]):
        other = int(gpu_node[np.argmax(gpu_labels != gpu_labels[0])])
        raise input_error(
            f"the graph is not connected: GPU '{nodes[int(gpu_node[0])]}' cannot reach GPU '{nodes[other]}' "
            f"({ncomp} connected components); add links so every GPU can reach every other", source, "links")
    stray = [nodes[i] for i in np.flatnonzero(labels != gpu_labels[0])]
    shown = ", ".join(stray[:5]) + (" ..." if len(stray) > 5 else "")
    raise input_error(f"the graph is not connected: node(s) {shown} cannot reach the GPUs; link them or "
                      "remove them", source, "links")


# ---------------------------------------------------------------------------------------------
# construction


def _build(graph: Any, *, name: str, source: str) -> Topology:
    g = _validated_copy(graph, source)
    nodes = list(g.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    N = len(nodes)
    kinds = tuple(g.nodes[n]["kind"] for n in nodes)
    node_server = [g.nodes[n].get("server") for n in nodes]

    # GPUs ordered by server (first appearance) then graph order
    gpu_ids = [n for n, k in zip(nodes, kinds, strict=True) if k == "gpu"]
    if not gpu_ids:
        raise input_error("the topology has no GPU; mark GPU nodes with kind='gpu'", source, "nodes")
    servers: list[str] = []
    server_pos: dict[str, int] = {}
    for n in gpu_ids:
        s = g.nodes[n]["server"]
        if s not in server_pos:
            server_pos[s] = len(servers)
            servers.append(s)
    order = sorted(range(len(gpu_ids)), key=lambda i: (server_pos[g.nodes[gpu_ids[i]]["server"]], i))
    gpus = tuple(gpu_ids[i] for i in order)
    G = len(gpus)
    gpu_node = np.array([index[n] for n in gpus], dtype=np.int32)
    server_of = np.array([server_pos[g.nodes[n]["server"]] for n in gpus], dtype=np.int32)

    # racks: one per server unless given; all GPUs of a server share a rack
    server_rack: dict[str, str] = {}
    for n in gpus:
        s, r = g.nodes[n]["server"], g.nodes[n].get("rack")
        if r is None:
            continue
        if server_rack.setdefault(s, r) != r:
            raise input_error(f"GPUs of server '{s}' are in racks '{server_rack[s]}' and '{r}'; a server "
                              "sits in one rack", source, f"nodes[{n}].rack")
    racks: list[str] = []
    rack_pos: dict[str, int] = {}
    for s in servers:
        r = server_rack.get(s, s)
        if r not in rack_pos:
            rack_pos[r] = len(racks)
            racks.append(r)
    rack_of = np.array([rack_pos[server_rack.get(servers[s], servers[s])] for s in server_of], dtype=np.int32)

    # links -> arcs (link e gives arcs 2e: a->b and 2e+1: b->a)
    E = g.number_of_edges()
    ea = np.empty(E, dtype=np.int32)
    eb = np.empty(E, dtype=np.int32)
    ebw = np.empty(E, dtype=np.float64)
    elat = np.empty(E, dtype=np.float64)
    etier: list[str] = []
    for e, (u, v, data) in enumerate(g.edges(data=True)):
        ea[e], eb[e] = index[u], index[v]
        ebw[e], elat[e] = data["bandwidth"], data["latency"]
        etier.append(data["tier"])
    arc_src = np.empty(2 * E, dtype=np.int32)
    arc_dst = np.empty(2 * E, dtype=np.int32)
    arc_src[0::2], arc_src[1::2] = ea, eb
    arc_dst[0::2], arc_dst[1::2] = eb, ea
    arc_bw = np.repeat(ebw, 2)
    arc_lat = np.repeat(elat, 2)
    arc_tier = tuple(t for t in etier for _ in range(2))
    first_seen = list(dict.fromkeys(etier))
    tiers = tuple([t for t in KNOWN_TIERS if t in first_seen]
                  + [t for t in first_seen if t not in KNOWN_TIERS])
    tier_pos = {t: i for i, t in enumerate(tiers)}
    arc_tier_index = np.array([tier_pos[t] for t in arc_tier], dtype=np.int32)
    arc_names = tuple(f"{nodes[s]}->{nodes[d]}"
                      for s, d in zip(arc_src.tolist(), arc_dst.tolist(), strict=True))

    # hop cost of each link: 0 when both ends carry the same `server` attribute, else 1
    codes: dict[str, int] = {}
    srv = np.array([-1 if s is None else codes.setdefault(s, len(codes)) for s in node_server],
                   dtype=np.int64)
    edge_free = (srv[ea] >= 0) & (srv[ea] == srv[eb])
    arc_hop = np.repeat(np.where(edge_free, 0.0, 1.0), 2)

    adjacency = sp.csr_matrix((np.ones(2 * E), (arc_src, arc_dst)), shape=(N, N))
    _check_connected(nodes, adjacency, gpu_node, source)

    hops = _hop_matrix(N, ea, eb, edge_free, gpu_node)

    # one route per GPU pair: lexicographic (hops, links, sum of 1/bandwidth) as one float weight; among
    # equally good next hops a switch picks by destination (D-mod-k, :func:`_destination_routes`)
    scale_links = float(N)
    scale_hops = float(N) * float(N)
    inv_bw = arc_bw.min() / arc_bw  # in (0, 1]: a route of < N links sums to < N = scale_links
    weight = arc_hop * scale_hops + scale_links + inv_bw
    wmat = sp.csr_matrix((weight, (arc_src, arc_dst)), shape=(N, N))
    to_gpu = csgraph.dijkstra(wmat.T.tocsr(), directed=True, indices=gpu_node)  # [G, N] distance to each GPU
    route_rows, route_arcs = _destination_routes(to_gpu, weight, gpu_node, arc_src, arc_dst)
    route_matrix = sp.csr_matrix((np.ones(route_rows.size), (route_rows, route_arcs)), shape=(G * G, 2 * E))
    route_matrix.sum_duplicates()
    route_matrix.sort_indices()

    # per-pair sums and minimum along the routes: [G, G] each
    length = np.diff(route_matrix.indptr).astype(np.int32).reshape(G, G)
    lat_sum = (route_matrix @ arc_lat).reshape(G, G)
    hop_sum = (route_matrix @ arc_hop).reshape(G, G)
    bw_min = np.full(G * G, np.inf)
    nonempty = length.ravel() > 0
    bw_min[nonempty] = np.minimum.reduceat(arc_bw[route_matrix.indices], route_matrix.indptr[:-1][nonempty])
    bw_min = bw_min.reshape(G, G)
    if not np.array_equal(hop_sum, hops):  # pragma: no cover - an internal invariant
        bad = tuple(np.argwhere(hop_sum != hops)[0])
        raise RuntimeError(f"route from {gpus[bad[0]]} to {gpus[bad[1]]} has {hop_sum[bad]} hops, "
                           f"the hop metric says {hops[bad]}")
    seconds_per_byte = np.zeros((G, G))
    np.divide(1.0, bw_min, out=seconds_per_byte, where=np.isfinite(bw_min))

    nx.freeze(g)
    return Topology(
        graph=g, name=str(name), source=str(source), nodes=tuple(nodes), node_kind=kinds, gpus=gpus,
        gpu_index={n: i for i, n in enumerate(gpus)}, gpu_node=_frozen(gpu_node), servers=tuple(servers),
        server_of=_frozen(server_of), racks=tuple(racks), rack_of=_frozen(rack_of), hops=_frozen(hops),
        route_length=_frozen(length), latency=_frozen(lat_sum), bottleneck_bandwidth=_frozen(bw_min),
        seconds_per_byte=_frozen(seconds_per_byte), arc_src=_frozen(arc_src), arc_dst=_frozen(arc_dst),
        arc_bandwidth=_frozen(arc_bw), arc_latency=_frozen(arc_lat), arc_tier=arc_tier,
        arc_tier_index=_frozen(arc_tier_index), arc_names=arc_names, tiers=tiers, route_matrix=route_matrix,
    )


def _hop_matrix(N: int, ea: np.ndarray, eb: np.ndarray, edge_free: np.ndarray,
                gpu_node: np.ndarray) -> np.ndarray:
    """``float64 [G, G]`` hop metric, computed independently of the routes.

    Contract every free (intra-server) link, then count links by breadth-first search on the
    contracted graph.
    """
    free = sp.csr_matrix((np.ones(int(edge_free.sum())), (ea[edge_free], eb[edge_free])), shape=(N, N))
    ncomp, comp = csgraph.connected_components(free, directed=False)
    cu, cv = comp[ea[~edge_free]], comp[eb[~edge_free]]
    quotient = sp.csr_matrix((np.ones(cu.size), (cu, cv)), shape=(ncomp, ncomp))
    gpu_comp = comp[gpu_node]
    sources, inverse = np.unique(gpu_comp, return_inverse=True)
    dist = csgraph.shortest_path(quotient, directed=False, unweighted=True, indices=sources)
    hops = dist[inverse][:, gpu_comp]
    return np.ascontiguousarray(hops, dtype=np.float64)


def _destination_routes(to_gpu: np.ndarray, weight: np.ndarray, gpu_node: np.ndarray, arc_src: np.ndarray,
                        arc_dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Route every GPU pair hop by hop, a switch choosing among equally good next hops by destination.

    ``to_gpu float64 [G, N]`` is each node's distance to each GPU under ``weight [A]``.  At a node, the
    out-arcs on a shortest path to GPU ``v`` are taken in the order of their far ends, and arc number
    ``v mod count`` carries the traffic for ``v``: the destination-based ("D-mod-k") spreading of
    InfiniBand fat-tree routing (OpenSM's ``ftree`` engine) and, in expectation over flows, of ECMP
    hashing.  Without it every pair of leaves would share one spine, the first the search found.
    Returns the (row, arc) entries of the route matrix, ``int64 [nnz]`` each; row ``u*G + v`` lists the
    arcs from GPU ``u`` to GPU ``v``.
    """
    G = gpu_node.size
    N = to_gpu.shape[1]
    order = np.lexsort((arc_dst, arc_src))  # arcs by (tail, head)
    src_sorted = arc_src[order].astype(np.int64)
    tol = 1e-9 * max(1.0, float(np.nanmax(np.where(np.isfinite(to_gpu), to_gpu, 0.0))))
    next_arc = np.full((G, N), -1, dtype=np.int64)  # [v, node] the arc a node sends v's traffic on
    for v in range(G):
        dist = to_gpu[v]
        tight = np.abs(weight[order] + dist[arc_dst[order]] - dist[src_sorted]) <= tol
        tight &= np.isfinite(dist[src_sorted])
        arcs, tails = order[tight], src_sorted[tight]
        if not arcs.size:
            continue
        start = np.r_[0, np.flatnonzero(tails[1:] != tails[:-1]) + 1]
        count = np.diff(np.r_[start, tails.size])
        pick = start + v % count
        next_arc[v, tails[pick]] = arcs[pick]
    pair = np.arange(G * G, dtype=np.int64)
    dst = pair % G
    cur = gpu_node[pair // G].astype(np.int64)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    active = pair[pair // G != dst]
    for _ in range(N):
        if not active.size:
            break
        arc = next_arc[dst[active], cur[active]]
        rows.append(active)
        cols.append(arc)
        cur[active] = arc_dst[arc]
        active = active[cur[active] != gpu_node[dst[active]]]
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    return row, col
