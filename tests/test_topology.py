"""Tests of placement.topology: the hop metric, routes, presets, YAML files and validation.

Routes are checked against independent certificates (flow conservation of each route row,
networkx shortest paths on small graphs), never against the code's own intermediate results.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placement.errors import PlacementInputError
from placement.topology import (
    PRESET_ALIASES,
    PRESETS,
    Topology,
    load_topology,
    parse_preset_spec,
    preset,
    save_topology_yaml,
    topology_from_yaml_dict,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "topologies"

# small instances of every preset (each key of PRESETS must appear)
SMALL_SPECS = [
    "dgx-h100",
    "single-node",
    "dgx-h100:1x4",
    "fat-tree:2x2",
    "fat-tree:servers=5,gpus=2,servers_per_leaf=2",
    "sparse-fat-tree:servers=4,gpus=4",
    "dragonfly:groups=3,routers_per_group=2,servers_per_router=1,gpus=2",
    "rail:servers=3,gpus=4",
    "nvl72",
    "nvl72:racks=2,gpus=8,nvswitches=2",
]


def arc_hops(topo: Topology) -> np.ndarray:
    """``float64 [A]``: 0 for an arc inside one server, else 1 (recomputed from the graph)."""
    server = [topo.graph.nodes[n].get("server") for n in topo.nodes]
    return np.array([0.0 if server[s] is not None and server[s] == server[d] else 1.0
                     for s, d in zip(topo.arc_src.tolist(), topo.arc_dst.tolist(), strict=True)])


def check_invariants(topo: Topology, servers_linked_inside: bool = True) -> None:
    """Properties every topology must have, checked from first principles.

    ``servers_linked_inside``: every server's GPUs are linked by intra-server nodes (an NVSwitch), so
    GPUs of one server are 0 hops apart.
    """
    G, A, N = topo.num_gpus, topo.num_arcs, topo.num_nodes
    rm = topo.route_matrix
    assert isinstance(rm, sp.csr_matrix) and rm.shape == (G * G, A) and rm.dtype == np.float64
    for name in ("hops", "latency", "bottleneck_bandwidth", "seconds_per_byte"):
        arr = getattr(topo, name)
        assert arr.shape == (G, G) and arr.dtype == np.float64, name
        assert not arr.flags.writeable, name
    for name in ("server_of", "rack_of", "gpu_node"):
        assert getattr(topo, name).dtype == np.int32 and getattr(topo, name).shape == (G,)
    for name in ("arc_src", "arc_dst"):
        assert getattr(topo, name).dtype == np.int32 and getattr(topo, name).shape == (A,)
    assert len(topo.arc_tier) == len(topo.arc_names) == A == 2 * topo.graph.number_of_edges()
    assert set(topo.arc_tier) == set(topo.tiers)
    # hops: symmetric, zero diagonal, zero inside a server
    assert np.array_equal(topo.hops, topo.hops.T)
    assert np.all(np.diag(topo.hops) == 0)
    if servers_linked_inside:
        same_server = topo.server_of[:, None] == topo.server_of[None, :]
        assert np.all(topo.hops[same_server] == 0)
    # every route row is a path from u to v: flow conservation over the node incidence matrix
    incidence = sp.csr_matrix((np.r_[np.ones(A), -np.ones(A)],
                               (np.r_[np.arange(A), np.arange(A)], np.r_[topo.arc_src, topo.arc_dst])),
                              shape=(A, N))
    flow = (rm @ incidence).toarray()
    expected = np.zeros((G * G, N))
    u, v = np.divmod(np.arange(G * G), G)
    np.add.at(expected, (np.arange(G * G), topo.gpu_node[u]), 1.0)
    np.add.at(expected, (np.arange(G * G), topo.gpu_node[v]), -1.0)
    assert np.array_equal(flow, expected)
    # route rows: 0/1 entries, length = row sum, hop sum = hops, empty on the diagonal
    assert np.all(rm.data == 1.0)
    row_sum = np.asarray(rm.sum(axis=1)).ravel().reshape(G, G)
    assert np.array_equal(row_sum, topo.route_length)
    assert np.all(np.diag(topo.route_length) == 0)
    assert np.array_equal((rm @ arc_hops(topo)).reshape(G, G), topo.hops)
    assert np.allclose((rm @ topo.arc_latency).reshape(G, G), topo.latency)
    # bottleneck and seconds per byte
    assert np.all(np.isinf(np.diag(topo.bottleneck_bandwidth)))
    assert np.all(np.diag(topo.seconds_per_byte) == 0)
    off = ~np.eye(G, dtype=bool)
    assert np.allclose(topo.seconds_per_byte[off], 1.0 / topo.bottleneck_bandwidth[off])
    dense = rm.toarray()
    for row in np.flatnonzero(off.ravel())[:: max(1, G * G // 50)]:
        assert topo.bottleneck_bandwidth.ravel()[row] == topo.arc_bandwidth[dense[row] > 0].min()
    assert topo.diameter == topo.hops.max()
    assert topo.cost_matrix("hops") is topo.hops
    assert topo.cost_matrix("time") is topo.seconds_per_byte


def reference_routes(topo: Topology) -> tuple[np.ndarray, np.ndarray]:
    """Hops and link count of the lexicographic (hops, links) optimum by networkx, ``[G, G]`` each."""
    g = topo.graph
    N = topo.num_nodes

    def weight(a, b, _data):
        sa, sb = g.nodes[a].get("server"), g.nodes[b].get("server")
        return (0 if sa is not None and sa == sb else 1) * N + 1

    G = topo.num_gpus
    hops = np.zeros((G, G))
    links = np.zeros((G, G))
    for i, u in enumerate(topo.gpus):
        dist = nx.single_source_dijkstra_path_length(g, u, weight=weight)
        for j, v in enumerate(topo.gpus):
            hops[i, j], links[i, j] = divmod(dist[v], N)
    return hops, links


# ------------------------------------------------------------------------------------------ hop metric


def test_fat_tree_2x2_hops():
    topo = preset("fat-tree:2x2")
    assert topo.gpus == ("s0.gpu0", "s0.gpu1", "s1.gpu0", "s1.gpu1")
    assert topo.servers == ("s0", "s1") and topo.num_servers == 2
    # same server: 0; two servers under one leaf: GPU-NIC 0 + NIC-leaf 1 + leaf-NIC 1 + NIC-GPU 0 = 2
    assert topo.hops.tolist() == [[0, 0, 2, 2], [0, 0, 2, 2], [2, 2, 0, 0], [2, 2, 0, 0]]
    assert topo.diameter == 2
    assert "spine" not in topo.tiers  # all servers fit one leaf: no spine
    check_invariants(topo)


def test_fat_tree_hops_across_spine():
    topo = preset("fat-tree:servers=4,gpus=2,servers_per_leaf=2")
    i = topo.gpu_index
    assert topo.hops[i["s0.gpu0"], i["s0.gpu1"]] == 0
    assert topo.hops[i["s0.gpu0"], i["s1.gpu1"]] == 2  # same leaf
    # NIC-leaf 1 + leaf-spine 1 + spine-leaf 1 + leaf-NIC 1
    assert topo.hops[i["s0.gpu0"], i["s2.gpu0"]] == 4
    assert topo.diameter == 4
    path = topo.path("s0.gpu0", "s3.gpu1")
    assert path[:3] == ("s0.gpu0", "s0.nic0", "leaf0") and path[-3:] == ("leaf1", "s3.nic1", "s3.gpu1")
    assert path[3].startswith("spine") and len(path) == 7
    assert topo.rack_of.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    check_invariants(topo)


def test_route_matrix_maps_traffic_to_arcs():
    topo = preset("fat-tree:2x2")
    traffic = np.zeros((4, 4))
    traffic[topo.gpu_index["s0.gpu0"], topo.gpu_index["s1.gpu0"]] = 3.0
    per_arc = topo.route_matrix.T @ traffic.ravel()
    loaded = {topo.arc_names[a]: per_arc[a] for a in np.flatnonzero(per_arc)}
    assert loaded == {"s0.gpu0->s0.nic0": 3.0, "s0.nic0->leaf0": 3.0, "leaf0->s1.nic0": 3.0,
                      "s1.nic0->s1.gpu0": 3.0}
    # intra-server traffic crosses the NVSwitch, not the NICs
    assert topo.path("s0.gpu0", "s0.gpu1") == ("s0.gpu0", "s0.nvsw", "s0.gpu1")
    assert topo.bottleneck_bandwidth[0, 1] == 450e9
    assert topo.bottleneck_bandwidth[0, 2] == 50e9
    assert topo.latency[0, 1] == pytest.approx(2e-6)
    assert topo.latency[0, 2] == pytest.approx(1e-6 + 2e-6 + 2e-6 + 1e-6)


def test_arcs_come_in_pairs_with_full_bandwidth():
    topo = preset("fat-tree:2x2")
    assert np.array_equal(topo.arc_src[0::2], topo.arc_dst[1::2])
    assert np.array_equal(topo.arc_dst[0::2], topo.arc_src[1::2])
    assert np.array_equal(topo.arc_bandwidth[0::2], topo.arc_bandwidth[1::2])
    for a in range(topo.num_arcs):
        src, dst = topo.nodes[topo.arc_src[a]], topo.nodes[topo.arc_dst[a]]
        assert topo.arc_names[a] == f"{src}->{dst}"
        assert topo.arc_bandwidth[a] == topo.graph.edges[src, dst]["bandwidth"]
        assert topo.tiers[topo.arc_tier_index[a]] == topo.arc_tier[a]
    assert topo.tiers == ("nvlink", "pcie", "nic")


def _toy_graph() -> nx.Graph:
    g = nx.Graph()
    g.add_node("a", kind="gpu", server="s0")
    g.add_node("b", kind="gpu", server="s1")
    return g


def test_route_prefers_fewer_hops_then_fewer_links_then_bandwidth():
    # a (server s0) to b (server s1): a-x-b crosses 2 server boundaries (2 hops, 2 links, 10 GB/s);
    # a-y-z-b has y in s0 and z in s1, so only y-z costs a hop (1 hop, 3 links, 100 GB/s)
    g = _toy_graph()
    g.add_node("x", kind="switch")
    g.add_node("y", kind="nic", server="s0")
    g.add_node("z", kind="nic", server="s1")
    g.add_edge("a", "x", bandwidth=10e9, tier="slow")
    g.add_edge("x", "b", bandwidth=10e9, tier="slow")
    g.add_edge("a", "y", bandwidth=100e9, tier="fast")
    g.add_edge("y", "z", bandwidth=100e9, tier="fast")
    g.add_edge("z", "b", bandwidth=100e9, tier="fast")
    topo = Topology.from_graph(g)
    # path2 has 1 hop (only y-z crosses servers) and wins despite 3 links
    assert topo.hops[0, 1] == 1 and topo.path("a", "b") == ("a", "y", "z", "b")
    # equal hops (1): fewer links beat more bandwidth
    g.add_edge("a", "z", bandwidth=1e9, tier="thin")
    topo = Topology.from_graph(g)
    assert topo.path("a", "b") == ("a", "z", "b") and topo.bottleneck_bandwidth[0, 1] == 1e9
    # equal hops and links: more bandwidth (smaller sum of 1/bandwidth) wins
    g.add_node("w", kind="nic", server="s1")
    g.add_edge("a", "w", bandwidth=40e9, tier="thick")
    g.add_edge("w", "b", bandwidth=40e9, tier="thick")
    topo = Topology.from_graph(g)
    assert topo.path("a", "b") == ("a", "w", "b") and topo.bottleneck_bandwidth[0, 1] == 40e9
    assert topo.path("b", "a") == ("b", "w", "a")
    check_invariants(topo)


def test_routes_match_networkx_reference():
    for spec in ("fat-tree:servers=5,gpus=2,servers_per_leaf=2", "dragonfly:groups=3,gpus=2",
                 "rail:servers=3,gpus=3"):
        topo = preset(spec)
        hops, links = reference_routes(topo)
        assert np.array_equal(topo.hops, hops), spec
        assert np.array_equal(topo.route_length, links), spec


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(3, 14), st.integers(0, 2**31 - 1), st.integers(1, 4))
def test_random_graphs_against_networkx(num_nodes, seed, num_servers):
    rng = np.random.default_rng(seed)
    g = nx.Graph()
    for n in range(num_nodes):
        if n < 2 or rng.random() < 0.5:
            g.add_node(f"n{n}", kind="gpu", server=f"s{rng.integers(num_servers)}")
        elif rng.random() < 0.5:
            g.add_node(f"n{n}", kind="nic", server=f"s{rng.integers(num_servers)}")
        else:
            g.add_node(f"n{n}", kind="switch")
    for n in range(1, num_nodes):  # a random spanning tree keeps it connected
        g.add_edge(f"n{n}", f"n{rng.integers(n)}", bandwidth=float(rng.choice([1e9, 5e9, 50e9])),
                   latency=float(rng.random() * 1e-6), tier="t")
    for _ in range(num_nodes):
        a, b = rng.integers(num_nodes, size=2)
        if a != b:
            g.add_edge(f"n{a}", f"n{b}", bandwidth=float(rng.choice([1e9, 5e9, 50e9])), latency=0.0, tier="u")
    topo = Topology.from_graph(g)
    check_invariants(topo, servers_linked_inside=False)
    hops, links = reference_routes(topo)
    assert np.array_equal(topo.hops, hops)
    assert np.array_equal(topo.route_length, links)


def test_gpus_ordered_by_server_then_insertion():
    g = nx.Graph()
    g.add_node("sw", kind="switch")
    for name, server in (("g1", "B"), ("g2", "A"), ("g3", "B"), ("g4", "A")):
        g.add_node(name, kind="gpu", server=server)
        g.add_edge(name, "sw", bandwidth=1e9)
    topo = Topology.from_graph(g)
    assert topo.gpus == ("g1", "g3", "g2", "g4")
    assert topo.servers == ("B", "A") and topo.server_of.tolist() == [0, 0, 1, 1]
    assert topo.racks == ("B", "A")  # one rack per server when none is given
    assert topo.tiers == ("link",) and topo.arc_latency.max() == 0  # defaults
    # GPUs of one server linked only through an outside switch are 2 hops apart: the metric counts links
    assert topo.hops.tolist() == [[0, 2, 2, 2], [2, 0, 2, 2], [2, 2, 0, 2], [2, 2, 2, 0]]


def test_non_string_node_ids_are_converted():
    g = nx.Graph()
    g.add_node(0, kind="gpu", server="s")
    g.add_node(1, kind="gpu", server="s")
    g.add_edge(0, 1, bandwidth=1e9)
    topo = Topology.from_graph(g)
    assert topo.gpus == ("0", "1") and topo.arc_names == ("0->1", "1->0")


def test_topology_is_frozen_and_independent_of_input_graph():
    g = _toy_graph()
    g.add_edge("a", "b", bandwidth=1e9)
    topo = Topology.from_graph(g, name="t")
    g.add_node("c", kind="gpu", server="s2")
    assert topo.num_gpus == 2 and "c" not in topo.graph
    with pytest.raises(dataclasses.FrozenInstanceError):
        topo.name = "other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        topo.hops[0, 1] = 5
    with pytest.raises(nx.NetworkXError):
        topo.graph.add_node("d")


def test_cost_matrix_unknown_kind():
    topo = preset("fat-tree:2x2")
    message = "unknown cost kind 'bytes'; choose one of ['hops', 'time']"
    with pytest.raises(ValueError, match=re.escape(message)):
        topo.cost_matrix("bytes")


def test_summary_and_repr():
    topo = preset("fat-tree:servers=4,gpus=2,servers_per_leaf=2")
    s = topo.summary()
    assert s == {
        "name": "fat-tree:servers=4,gpus=2,servers_per_leaf=2", "gpus": 8, "gpu": "h100-sxm", "servers": 4, "racks": 2,
        "switches": 8, "nics": 8, "links": 28, "tiers": {"nvlink": 8, "pcie": 8, "nic": 8, "spine": 4},
        "diameter_hops": 4.0, "min_inter_server_bandwidth": 50e9, "max_inter_server_bandwidth": 50e9,
    }
    assert repr(topo) == ("Topology(name='fat-tree:servers=4,gpus=2,servers_per_leaf=2', gpus=8, servers=4, "
                          "racks=2, nodes=24, links=28, diameter=4)")
    assert preset("dgx-h100").summary()["min_inter_server_bandwidth"] is None


# ------------------------------------------------------------------------------------------ validation


def _err(match: str):
    return pytest.raises(PlacementInputError, match=re.escape(match))


def test_from_graph_validation_errors():
    with _err("<memory>: field 'graph': links are full duplex"):
        Topology.from_graph(nx.DiGraph())
    with _err("parallel links are not supported"):
        Topology.from_graph(nx.MultiGraph())
    with _err("expected a networkx.Graph, got dict"):
        Topology.from_graph({})  # type: ignore[arg-type]

    g = nx.Graph()
    g.add_node("sw", kind="switch")
    with _err("mem.yaml: field 'nodes': the topology has no GPU"):
        Topology.from_graph(g, source="mem.yaml")
    g.add_node("x")
    with _err("field 'nodes[x].kind': node 'x' has no 'kind'"):
        Topology.from_graph(g)

    g = nx.Graph()
    g.add_node("a", kind="gpu")
    with _err("field 'nodes[a].server': GPU 'a' has no 'server'"):
        Topology.from_graph(g)

    def two(**edge):
        g = _toy_graph()
        g.add_edge("a", "b", **edge)
        return g

    with _err("field 'links[a-b].bandwidth': link a - b has no 'bandwidth'"):
        Topology.from_graph(two())
    for bad in (0, -1.0, float("inf"), float("nan")):
        with _err("bandwidth must be positive and finite"):
            Topology.from_graph(two(bandwidth=bad))
    with _err("field 'links[a-b].latency': latency must be >= 0"):
        Topology.from_graph(two(bandwidth=1e9, latency=-1e-6))
    with _err("bandwidth must be a number, got 'fast'"):
        Topology.from_graph(two(bandwidth="fast"))
    g = two(bandwidth=1e9)
    g.add_edge("a", "a", bandwidth=1e9)
    with _err("field 'links[a-a]': self-loop on node 'a'"):
        Topology.from_graph(g)


def test_from_graph_disconnected():
    g = _toy_graph()
    with _err("field 'links': the graph is not connected: GPU 'a' cannot reach GPU 'b'"):
        Topology.from_graph(g, source="x.yaml")
    g.add_edge("a", "b", bandwidth=1e9)
    g.add_node("lonely", kind="switch")
    with _err("node(s) lonely cannot reach the GPUs"):
        Topology.from_graph(g)


def test_rack_conflict_within_server():
    g = nx.Graph()
    g.add_node("a", kind="gpu", server="s", rack="r1")
    g.add_node("b", kind="gpu", server="s", rack="r2")
    g.add_edge("a", "b", bandwidth=1e9)
    with _err("GPUs of server 's' are in racks 'r1' and 'r2'"):
        Topology.from_graph(g)


# ------------------------------------------------------------------------------------------ presets


def test_every_preset_has_a_small_spec():
    names = {parse_preset_spec(s)[0] for s in SMALL_SPECS}
    assert names == set(PRESETS)
    assert list(PRESETS) == ["dgx-h100", "fat-tree", "sparse-fat-tree", "dragonfly", "rail", "nvl72"]
    assert PRESET_ALIASES == {"single-node": "dgx-h100"}


@pytest.mark.parametrize("spec", SMALL_SPECS)
def test_presets_build_and_validate(spec):
    topo = preset(spec)
    assert topo.name == spec and topo.source == f"preset '{spec}'"
    check_invariants(topo)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_defaults_build(name):
    topo = PRESETS[name]()
    assert topo.name == name and topo.num_gpus >= 8
    assert preset(name).num_gpus == topo.num_gpus


def test_dgx_h100():
    topo = preset("single-node")
    assert topo.num_gpus == 8 and topo.num_servers == 1 and topo.diameter == 0
    assert topo.summary()["nics"] == 8 and topo.tiers == ("nvlink", "pcie")
    off = ~np.eye(8, dtype=bool)
    assert np.all(topo.bottleneck_bandwidth[off] == 450e9)
    assert preset("dgx-h100:1x4").num_gpus == 4


def test_fat_tree_is_non_blocking_and_sparse_is_oversubscribed():
    for spec, ratio, spines in (("fat-tree:servers=4,gpus=4", 1.0, 4),
                                ("sparse-fat-tree:servers=4,gpus=8", 4.0, 2),
                                ("sparse-fat-tree:servers=4,gpus=8,oversubscription=2,spines=3", 2.0, 3)):
        topo = preset(spec)
        kinds = np.asarray(topo.arc_tier)
        for leaf in ("leaf0", "leaf1"):
            li = topo.nodes.index(leaf)
            down = topo.arc_bandwidth[(topo.arc_src == li) & (kinds == "nic")].sum()
            up = topo.arc_bandwidth[(topo.arc_src == li) & (kinds == "spine")]
            assert up.size == spines, spec
            assert up.sum() == pytest.approx(down / ratio), spec


def test_dragonfly_structure():
    topo = preset("dragonfly:groups=4,routers_per_group=3,servers_per_router=1,gpus=2")
    tiers = topo.summary()["tiers"]
    assert tiers["global"] == 4 * 3 // 2  # one link per pair of groups
    assert tiers["local"] == 4 * 3  # 3 routers all-to-all in each of 4 groups
    assert topo.num_servers == 12 and topo.num_racks == 4  # a group is a rack
    assert topo.diameter == 5  # NIC-router, local, global, local, router-NIC
    check_invariants(topo)


def test_rail_uses_nvlink_to_change_rail():
    topo = preset("rail:servers=2,gpus=2")
    assert topo.hops[topo.gpu_index["s0.gpu0"], topo.gpu_index["s1.gpu0"]] == 2
    assert topo.hops[topo.gpu_index["s0.gpu0"], topo.gpu_index["s1.gpu1"]] == 2
    assert topo.path("s0.gpu0", "s1.gpu0") == ("s0.gpu0", "s0.nic0", "rail0", "s1.nic0", "s1.gpu0")
    path = topo.path("s0.gpu0", "s1.gpu1")
    assert len(path) == 7 and not any(n.startswith("spine") for n in path)


def test_nvl72():
    topo = preset("nvl72")
    assert topo.num_gpus == 72 and topo.num_servers == 1 and topo.servers == ("r0",) and topo.racks == ("r0",)
    assert topo.diameter == 0 and topo.bottleneck_bandwidth[0, 71] == 900e9
    two = preset("nvl72:racks=2")
    assert two.num_gpus == 144 and two.num_servers == 2 and two.diameter == 4
    chips = preset("nvl72:gpus=4,nvswitches=18")
    assert sum(k == "nvswitch" for k in chips.node_kind) == 18
    assert chips.summary()["tiers"]["nvlink"] == 4 * 18 and chips.bottleneck_bandwidth[0, 1] == 50e9


def test_preset_spec_errors():
    with _err("unknown preset 'fat_tree'; valid presets: dgx-h100, fat-tree, sparse-fat-tree, dragonfly, "
              "rail, nvl72; aliases: single-node (= dgx-h100)"):
        preset("fat_tree")
    with _err("preset 'fat-tree:leafs=2': field 'leafs': unknown key 'leafs' for preset 'fat-tree'; "
              "valid keys: servers, gpus, servers_per_leaf, spines, nvlink_GBps, pcie_GBps, nic_GBps"):
        preset("fat-tree:leafs=2")
    with _err("field 'servers': must be an integer >= 1, got 0"):
        preset("fat-tree:0x8")
    with _err("field 'gpus': must be an integer >= 1, got 2.5"):
        preset("fat-tree:gpus=2.5")
    with _err("field 'nic_GBps': value 'fast' is not a number"):
        preset("fat-tree:nic_GBps=fast")
    with _err("field 'nic_GBps': must be a finite number > 0, got -5"):
        preset("rail:nic_GBps=-5")
    with _err("field 'oversubscription': must be a finite number >= 1, got 0.5"):
        preset("sparse-fat-tree:oversubscription=0.5")
    with _err("expected 'key=value' or 'SxG', got 'big'"):
        preset("fat-tree:big")
    with _err("'dragonfly' has no 'servers' key, so only '1xG' is accepted; valid keys: groups"):
        preset("dragonfly:4x8")
    with _err("for 4 servers of 8 GPUs use a multi-server preset: fat-tree:4x8, sparse-fat-tree:4x8, rail:4x8"):
        preset("dgx-h100:4x8")
    with _err("key 'gpus' is given twice"):
        preset("rail:gpus=2,gpus=3")
    with _err("field 'leaves_per_rack': must be at most gpus=2"):
        preset("nvl72:gpus=2,leaves_per_rack=3")
    with _err("a preset spec must be a non-empty string"):
        preset("")
    assert parse_preset_spec("single-node") == ("dgx-h100", {})
    assert parse_preset_spec("fat-tree:4x8") == ("fat-tree", {"servers": 4, "gpus": 8})
    assert parse_preset_spec("sparse-fat-tree:oversubscription=2.5") == ("sparse-fat-tree",
                                                                          {"oversubscription": 2.5})


def test_building_is_deterministic():
    a, b = preset("dragonfly:groups=3,gpus=2"), preset("dragonfly:groups=3,gpus=2")
    assert (a.route_matrix != b.route_matrix).nnz == 0
    assert a.arc_names == b.arc_names and np.array_equal(a.latency, b.latency)


def test_fat_tree_32x8_builds_fast():
    preset("fat-tree:2x2")  # warm imports
    start = time.perf_counter()
    topo = preset("fat-tree:32x8")
    elapsed = time.perf_counter() - start
    assert topo.num_gpus == 256 and topo.route_matrix.shape == (256 * 256, topo.num_arcs)
    assert elapsed < 1.0, f"fat-tree:32x8 took {elapsed:.2f} s"
    assert topo.diameter == 4


# ------------------------------------------------------------------------------------------ YAML


def assert_same_topology(a: Topology, b: Topology) -> None:
    assert a.name == b.name and a.gpus == b.gpus and a.nodes == b.nodes and a.node_kind == b.node_kind
    assert a.servers == b.servers and a.racks == b.racks
    assert np.array_equal(a.server_of, b.server_of) and np.array_equal(a.rack_of, b.rack_of)
    for name in ("hops", "latency", "bottleneck_bandwidth", "seconds_per_byte", "route_length", "arc_src",
                 "arc_dst", "arc_bandwidth", "arc_latency"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.arc_tier == b.arc_tier and a.arc_names == b.arc_names and a.tiers == b.tiers
    assert a.route_matrix.shape == b.route_matrix.shape and (a.route_matrix != b.route_matrix).nnz == 0


@pytest.mark.parametrize("spec", ["fat-tree:servers=4,gpus=2", "dragonfly:groups=3,gpus=2",
                                  "nvl72:racks=2,gpus=4",
                                  "sparse-fat-tree:servers=3,gpus=3,oversubscription=3"])
def test_yaml_round_trip(tmp_path, spec):
    topo = preset(spec)
    path = tmp_path / "topo.yaml"
    save_topology_yaml(topo, path)
    back = load_topology(str(path))
    assert back.source == str(path)
    assert_same_topology(topo, back)
    # and once more through the written file
    save_topology_yaml(back, tmp_path / "again.yml")
    assert (tmp_path / "again.yml").read_text() == path.read_text()


def test_yaml_round_trip_of_odd_numbers(tmp_path):
    g = _toy_graph()
    g.add_node("sw", kind="switch")
    g.add_edge("a", "sw", bandwidth=1e9 / 3, latency=1e-7 / 3, tier="x")
    g.add_edge("sw", "b", bandwidth=123456789.123, latency=7.77e-6, tier="y")
    topo = Topology.from_graph(g, name="odd")
    save_topology_yaml(topo, tmp_path / "odd.yaml")
    assert_same_topology(topo, load_topology(tmp_path / "odd.yaml"))


def test_example_files_load():
    two = load_topology(str(EXAMPLES / "two-servers-4gpus.yaml"))
    assert two.name == "two-servers-4gpus" and two.num_gpus == 4 and two.num_servers == 2
    assert two.hops.tolist() == [[0, 0, 2, 2], [0, 0, 2, 2], [2, 2, 0, 0], [2, 2, 0, 0]]
    assert two.bottleneck_bandwidth[0, 1] == 450e9 and two.bottleneck_bandwidth[0, 2] == 50e9
    check_invariants(two)

    small = load_topology(str(EXAMPLES / "small-fat-tree.yaml"))
    reference = preset("fat-tree:servers=4,gpus=2")
    assert_same_topology(dataclasses.replace(small, name=reference.name), reference)

    named = load_topology(str(EXAMPLES / "preset-fat-tree.yaml"))
    assert named.name == "cluster-a" and named.source.endswith("preset-fat-tree.yaml")
    assert_same_topology(dataclasses.replace(named, name="fat-tree:4x8"), preset("fat-tree:4x8"))


def test_load_topology_presets_and_missing_files(tmp_path):
    assert load_topology("fat-tree:2x2").num_gpus == 4
    assert load_topology("single-node").num_gpus == 8
    with _err("nope.yaml: file not found; give an existing .yaml/.yml file or a preset spec "
              "(presets: dgx-h100,"):
        load_topology("nope.yaml")
    with _err("torus:4x4: not a preset name, and no file 'torus:4x4' was found; give a .yaml/.yml file "
              "or one of the presets: dgx-h100, fat-tree"):
        load_topology("torus:4x4")
    other = tmp_path / "topo.json"
    other.write_text("{}")
    with _err("unsupported file type: topology files end in .yaml or .yml"):
        load_topology(str(other))


BASE_YAML = """\
name: base
defaults:
  nic: {bandwidth_GBps: 50, latency_us: 2}
nodes:
  - {id: a, kind: gpu, server: s0}
  - {id: b, kind: gpu, server: s1}
  - {id: sw, kind: switch}
links:
  - {a: a, b: sw, tier: nic}
  - {a: b, b: sw, tier: nic, bandwidth_GBps: 25, latency_us: 1}
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_base_is_valid(tmp_path):
    topo = load_topology(_write(tmp_path, BASE_YAML))
    assert topo.name == "base" and topo.hops[0, 1] == 2
    assert topo.bottleneck_bandwidth[0, 1] == 25e9 and topo.latency[0, 1] == pytest.approx(3e-6)
    assert load_topology(_write(tmp_path, BASE_YAML.replace("name: base\n", ""))).name == "t"


NODES_BLOCK = "nodes:\n  - {id: a, kind: gpu, server: s0}\n  - {id: b, kind: gpu, server: s1}\n" \
    "  - {id: sw, kind: switch}\n"
BW_MESSAGE = "bandwidth must be positive and finite (GB/s per direction), got "
A, B = "{a: a, b: sw, tier: nic}", "{a: b, b: sw, tier: nic,"
NODE_A, NODE_B = "{id: a, kind: gpu, server: s0}", "{id: b, kind: gpu, server: s1}"
DEFAULT = "{bandwidth_GBps: 50, latency_us: 2}"
YAML_ERRORS = [  # (text to replace in BASE_YAML, replacement, expected message)
    ("  - {id: sw, kind: switch}\n", "  - {id: sw, kind: switch\n",
     "t.yaml: invalid YAML: while parsing a flow mapping"),
    ("name: base\n", "name: base\nname: again\n", "t.yaml: invalid YAML: duplicate key 'name' in "),
    ("name: base\n", "name: base\ncolour: red\n",
     "t.yaml: field '<top level>': unknown key(s) ['colour']; allowed keys: ['name', 'gpu', 'defaults', "
     "'nodes', 'links', 'preset']"),
    (NODES_BLOCK, "",
     "t.yaml: field 'nodes': missing key 'nodes' (or give 'preset: NAME' instead of nodes and links)"),
    (NODE_A, "{id: a, server: s0}", "t.yaml: field 'nodes[0]': missing key(s) ['kind']"),
    (NODE_A, "{id: a, kind: gpu, server: s0, colour: red}",
     "t.yaml: field 'nodes[0]': unknown key(s) ['colour']; allowed keys: ['id', 'kind', 'server', 'rack']"),
    (NODE_B, "{id: a, kind: gpu, server: s1}",
     "t.yaml: field 'nodes[1].id': duplicate node id 'a' (first declared at nodes[0]); node ids must be "
     "unique"),
    (NODE_B, "{id: b, kind: gpu}", "t.yaml: field 'nodes[b].server': GPU 'b' has no 'server'"),
    (A, "{a: a, b: switch, tier: nic}", "t.yaml: field 'links[0].b': unknown node 'switch'; declare it under "
                                        "'nodes'"),
    (A, "{a: a, tier: nic}", "t.yaml: field 'links[0]': missing key(s) ['b']"),
    (A, "{a: a, b: sw, tier: nic, speed: 3}",
     "t.yaml: field 'links[0]': unknown key(s) ['speed']; allowed keys: ['a', 'b', 'tier', 'bandwidth_GBps', "
     "'latency_us']"),
    ("bandwidth_GBps: 25,", "bandwidth_GBps: -25,",
     f"t.yaml: field 'links[1].bandwidth_GBps': {BW_MESSAGE}-25"),
    ("bandwidth_GBps: 25,", "bandwidth_GBps: 0,", f"t.yaml: field 'links[1].bandwidth_GBps': {BW_MESSAGE}0"),
    ("bandwidth_GBps: 25,", "bandwidth_GBps: fast,",
     "field 'links[1].bandwidth_GBps': must be a number, got 'fast'"),
    ("latency_us: 1}", "latency_us: -1}", "field 'links[1].latency_us': latency must be >= 0 microseconds"),
    (A, "{a: a, b: sw, tier: pcie}",
     "t.yaml: field 'links[0].bandwidth_GBps': missing key 'bandwidth_GBps' (and no "
     "defaults.pcie.bandwidth_GBps)"),
    (DEFAULT, "{bandwidth_GBps: 0}", f"field 'defaults.nic.bandwidth_GBps': {BW_MESSAGE}0"),
    (DEFAULT, "{bandwidth: 50}",
     "field 'defaults.nic': unknown key(s) ['bandwidth']; allowed keys: ['bandwidth_GBps', 'latency_us']"),
    (B, "{a: sw, b: a, tier: nic,", "t.yaml: field 'links[1]': duplicate link sw - a; merge parallel links"),
    (B, "{a: b, b: b, tier: nic,", "field 'links[1]': self-loop on node 'b'"),
    ("  - {a: b, b: sw, tier: nic, bandwidth_GBps: 25, latency_us: 1}\n", "",
     "t.yaml: field 'links': the graph is not connected: GPU 'a' cannot reach GPU 'b'"),
    ("links:\n", "links: []\nold_links:\n", "t.yaml: field '<top level>': unknown key(s) ['old_links']"),
]


@pytest.mark.parametrize(("old", "new", "message"), YAML_ERRORS)
def test_yaml_errors(tmp_path, old, new, message):
    assert old in BASE_YAML
    with _err(message):
        load_topology(_write(tmp_path, BASE_YAML.replace(old, new)))


def test_yaml_top_level_and_empty_lists(tmp_path):
    with _err("t.yaml: the top level must be a mapping"):
        load_topology(_write(tmp_path, "- a\n- b\n"))
    with _err("t.yaml: the top level must be a mapping"):
        load_topology(_write(tmp_path, ""))
    with _err("field 'links': must be a non-empty list"):
        load_topology(_write(tmp_path, BASE_YAML.split("links:")[0] + "links: []\n"))


def test_yaml_preset_files(tmp_path):
    topo = load_topology(_write(tmp_path, "name: mine\npreset: fat-tree:2x2\n"))
    assert topo.name == "mine" and topo.num_gpus == 4 and topo.source.endswith("t.yaml")
    assert load_topology(_write(tmp_path, "preset: fat-tree:2x2\n")).name == "fat-tree:2x2"
    with _err("t.yaml: field 'preset': a preset file takes only 'name', 'gpu' and 'preset'; remove ['nodes']"):
        load_topology(_write(tmp_path, "preset: fat-tree:2x2\nnodes: []\n"))
    with _err("t.yaml: field 'preset': preset 'torus': field 'name': unknown preset 'torus'"):
        load_topology(_write(tmp_path, "preset: torus\n"))
    with _err("field 'preset': must be a preset spec string such as 'fat-tree:4x8', got 3"):
        load_topology(_write(tmp_path, "preset: 3\n"))


def test_topology_from_yaml_dict_in_memory():
    data = {"nodes": [{"id": "a", "kind": "gpu", "server": "s"}, {"id": "b", "kind": "gpu", "server": "s"}],
            "links": [{"a": "a", "b": "b", "tier": "nvlink", "bandwidth_GBps": "4.5e2"}]}
    topo = topology_from_yaml_dict(data)
    assert topo.name == "custom" and topo.source == "<memory>" and topo.bottleneck_bandwidth[0, 1] == 450e9
    assert topo.latency[0, 1] == 0.0


def test_gpu_model_in_presets_and_yaml(tmp_path):
    from placement.topology import load_topology
    from placement.topology.yaml_io import save_topology_yaml

    assert preset("fat-tree:2x4").gpu == "h100-sxm"
    topo = preset("rail:2x4,gpu=B200")
    assert topo.gpu == "b200" and topo.num_gpus == 8
    with _err("unknown GPU 'h1000'"):
        preset("rail:2x4,gpu=h1000")
    path = tmp_path / "t.yaml"
    save_topology_yaml(topo, path)
    assert load_topology(str(path)).gpu == "b200"
    path.write_text("preset: fat-tree:2x4\ngpu: gb200\n")
    assert load_topology(str(path)).gpu == "gb200"
    path.write_text("preset: fat-tree:2x4\ngpu: tpu\n")
    with _err("t.yaml: field 'gpu': unknown GPU 'tpu'"):
        load_topology(str(path))
