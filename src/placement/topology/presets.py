"""Named cluster topologies with H100-era numbers: single nodes, fat-trees, dragonfly, rails, NVL72.

A preset is addressed by a spec string: ``"NAME"``, ``"NAME:SxG"`` (``S`` servers of ``G``
GPUs) or ``"NAME:key=value,key=value"``.  :data:`PRESETS` maps each name to its builder, a
function taking the same keys as keyword arguments and returning a :class:`Topology`.

Default numbers (bytes per second per direction; see ``docs/topology.md``):

===========  ===============  ==========  ========================================================
tier         bandwidth        latency     what
===========  ===============  ==========  ========================================================
``nvlink``   450 GB/s         1 us        GPU <-> NVSwitch (H100 NVLink 4: 18 links x 25 GB/s)
``pcie``     64 GB/s          1 us        GPU <-> its NIC (PCIe Gen5 x16)
``nic``      50 GB/s          2 us        NIC <-> first switch (ConnectX-7, 400 Gb/s)
``spine``    non-blocking     1 us        leaf (or rail) switch <-> spine switch
``local``    400 GB/s         1 us        dragonfly router <-> router in one group
``global``   200 GB/s         5 us        dragonfly group <-> group
===========  ===============  ==========  ========================================================

Node ids: ``s{i}.gpu{j}``, ``s{i}.nvsw``, ``s{i}.nic{j}`` inside server ``s{i}``; switches
``leaf{k}``, ``spine{k}``, ``rail{j}``, ``g{a}.r{b}`` (dragonfly routers); NVL72 racks use
``r{i}`` in place of ``s{i}``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import networkx as nx

from ..errors import input_error
from ._topology import Topology

__all__ = ["PRESETS", "PRESET_ALIASES", "preset", "parse_preset_spec",
           "dgx_h100", "fat_tree", "sparse_fat_tree", "dragonfly", "rail", "nvl72"]

GB = 1e9
US = 1e-6
NVLINK_GBPS = 450.0
PCIE_GBPS = 64.0
NIC_GBPS = 50.0
NVLINK_LATENCY = 1 * US
PCIE_LATENCY = 1 * US
NIC_LATENCY = 2 * US
SWITCH_LATENCY = 1 * US
GLOBAL_LATENCY = 5 * US


# ---------------------------------------------------------------------------------------------
# parameter checks (builders are public: they validate their own arguments)


def _count(value: Any, key: str, source: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise input_error(f"must be an integer >= {minimum}, got {value!r}", source, key)
    return int(value)


def _positive(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise input_error(f"must be a finite number > 0, got {value!r}", source, key)
    return float(value)


def _at_least(value: Any, key: str, source: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < minimum:
        raise input_error(f"must be a finite number >= {minimum:g}, got {value!r}", source, key)
    return float(value)


def _source(name: str) -> str:
    return f"preset '{name}'"


# ---------------------------------------------------------------------------------------------
# building blocks


def _add_server(g: nx.Graph, server: str, gpus: int, nvlink_bw: float, pcie_bw: float,
                rack: str | None = None) -> list[str]:
    """One DGX-like server: ``gpus`` GPUs on one NVSwitch node, one NIC per GPU. Returns the NIC ids."""
    extra = {} if rack is None else {"rack": rack}
    nvsw = f"{server}.nvsw"
    g.add_node(nvsw, kind="nvswitch", server=server)
    nics = []
    for j in range(gpus):
        gpu, nic = f"{server}.gpu{j}", f"{server}.nic{j}"
        g.add_node(gpu, kind="gpu", server=server, **extra)
        g.add_node(nic, kind="nic", server=server)
        g.add_edge(gpu, nvsw, bandwidth=nvlink_bw, latency=NVLINK_LATENCY, tier="nvlink")
        g.add_edge(gpu, nic, bandwidth=pcie_bw, latency=PCIE_LATENCY, tier="pcie")
        nics.append(nic)
    return nics


def _link(g: nx.Graph, a: str, b: str, bw: float, latency: float, tier: str) -> None:
    g.add_edge(a, b, bandwidth=bw, latency=latency, tier=tier)


# ---------------------------------------------------------------------------------------------
# builders


def dgx_h100(gpus: int = 8, nvlink_GBps: float = NVLINK_GBPS, pcie_GBps: float = PCIE_GBPS,
             nic_GBps: float = NIC_GBPS, *, name: str = "dgx-h100") -> Topology:
    """One DGX-H100-like server: ``gpus`` GPUs on an NVSwitch, each GPU with its own NIC.

    The four NVSwitch chips are one node (each GPU has ``nvlink_GBps`` to it).  The NICs lead
    nowhere (there is no other server) but are kept so per-NIC traffic has a place to go.
    ``nic_GBps`` is accepted for symmetry with the other presets and unused.
    """
    src = _source(name)
    gpus = _count(gpus, "gpus", src)
    nvlink, pcie = _positive(nvlink_GBps, "nvlink_GBps", src), _positive(pcie_GBps, "pcie_GBps", src)
    _positive(nic_GBps, "nic_GBps", src)
    g = nx.Graph()
    _add_server(g, "s0", gpus, nvlink * GB, pcie * GB)
    return Topology.from_graph(g, name=name, source=src)


def _fat_tree(name: str, servers: Any, gpus: Any, servers_per_leaf: Any, spines: Any, oversubscription: Any,
              nvlink_GBps: Any, pcie_GBps: Any, nic_GBps: Any,
              default_spines: Callable[[int, float], int]) -> Topology:
    src = _source(name)
    servers = _count(servers, "servers", src)
    gpus = _count(gpus, "gpus", src)
    spl = _count(servers_per_leaf, "servers_per_leaf", src)
    over = _at_least(oversubscription, "oversubscription", src, 1.0)
    spines = default_spines(gpus, over) if spines is None else _count(spines, "spines", src)
    nvlink, pcie = _positive(nvlink_GBps, "nvlink_GBps", src), _positive(pcie_GBps, "pcie_GBps", src)
    nic = _positive(nic_GBps, "nic_GBps", src)
    num_leaves = -(-servers // spl)
    g = nx.Graph()
    leaf_nics = [0] * num_leaves
    for i in range(servers):
        leaf = i // spl
        nics = _add_server(g, f"s{i}", gpus, nvlink * GB, pcie * GB, rack=f"rack{leaf}")
        if f"leaf{leaf}" not in g:
            g.add_node(f"leaf{leaf}", kind="switch")
        for n in nics:
            _link(g, n, f"leaf{leaf}", nic * GB, NIC_LATENCY, "nic")
        leaf_nics[leaf] += len(nics)
    if num_leaves > 1:
        for k in range(spines):
            g.add_node(f"spine{k}", kind="switch")
        for leaf, count in enumerate(leaf_nics):
            uplink = count * nic * GB / over / spines
            for k in range(spines):
                _link(g, f"leaf{leaf}", f"spine{k}", uplink, SWITCH_LATENCY, "spine")
    return Topology.from_graph(g, name=name, source=src)


def fat_tree(servers: int = 4, gpus: int = 8, servers_per_leaf: int = 2, spines: int | None = None,
             nvlink_GBps: float = NVLINK_GBPS, pcie_GBps: float = PCIE_GBPS, nic_GBps: float = NIC_GBPS,
             *, name: str = "fat-tree") -> Topology:
    """A non-blocking two-level fat-tree of DGX-like servers.

    Every NIC of a server attaches to the server's leaf switch (``servers_per_leaf`` servers per
    leaf, which is also the server's rack); each leaf links to each of ``spines`` spine switches
    (default: ``gpus``) with ``leaf NICs * nic_GBps / spines``, so uplink bandwidth equals downlink
    bandwidth.  With a single leaf there is no spine.

    Examples
    --------
    >>> from placement.topology import preset
    >>> topo = preset("fat-tree:2x2")
    >>> topo.gpus
    ('s0.gpu0', 's0.gpu1', 's1.gpu0', 's1.gpu1')
    >>> topo.hops.tolist()
    [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]]
    >>> topo.path("s0.gpu1", "s1.gpu1")
    ('s0.gpu1', 's0.nic1', 'leaf0', 's1.nic1', 's1.gpu1')
    """
    return _fat_tree(name, servers, gpus, servers_per_leaf, spines, 1.0, nvlink_GBps, pcie_GBps, nic_GBps,
                     default_spines=lambda g, over: g)


def sparse_fat_tree(servers: int = 4, gpus: int = 8, servers_per_leaf: int = 2, oversubscription: float = 4.0,
                    spines: int | None = None, nvlink_GBps: float = NVLINK_GBPS, pcie_GBps: float = PCIE_GBPS,
                    nic_GBps: float = NIC_GBPS, *, name: str = "sparse-fat-tree") -> Topology:
    """An oversubscribed fat-tree: as :func:`fat_tree`, but each leaf's total uplink bandwidth is its
    downlink bandwidth divided by ``oversubscription`` (default 4), over fewer spines
    (default ``max(1, round(gpus / oversubscription))``)."""
    return _fat_tree(name, servers, gpus, servers_per_leaf, spines, oversubscription, nvlink_GBps, pcie_GBps,
                     nic_GBps, default_spines=lambda g, over: max(1, round(g / over)))


def dragonfly(groups: int = 4, routers_per_group: int = 2, servers_per_router: int = 1, gpus: int = 8,
              local_GBps: float = 400.0, global_GBps: float = 200.0, nvlink_GBps: float = NVLINK_GBPS,
              pcie_GBps: float = PCIE_GBPS, nic_GBps: float = NIC_GBPS,
              *, name: str = "dragonfly") -> Topology:
    """A dragonfly: ``groups`` groups of ``routers_per_group`` routers, all-to-all inside a group
    (tier ``local``), one link between each pair of groups (tier ``global``).

    Each router serves ``servers_per_router`` DGX-like servers (all their NICs attach to it).  In
    group ``a`` the global link to the ``k``-th other group (in increasing order) leaves from router
    ``k mod routers_per_group``.  A group is a rack.
    """
    src = _source(name)
    groups = _count(groups, "groups", src)
    rpg = _count(routers_per_group, "routers_per_group", src)
    spr = _count(servers_per_router, "servers_per_router", src)
    gpus = _count(gpus, "gpus", src)
    local, glob = _positive(local_GBps, "local_GBps", src), _positive(global_GBps, "global_GBps", src)
    nvlink, pcie = _positive(nvlink_GBps, "nvlink_GBps", src), _positive(pcie_GBps, "pcie_GBps", src)
    nic = _positive(nic_GBps, "nic_GBps", src)
    g = nx.Graph()
    server = 0
    for a in range(groups):
        for b in range(rpg):
            router = f"g{a}.r{b}"
            g.add_node(router, kind="switch")
            for _ in range(spr):
                for n in _add_server(g, f"s{server}", gpus, nvlink * GB, pcie * GB, rack=f"group{a}"):
                    _link(g, n, router, nic * GB, NIC_LATENCY, "nic")
                server += 1
    for a in range(groups):
        for b in range(rpg):
            for c in range(b + 1, rpg):
                _link(g, f"g{a}.r{b}", f"g{a}.r{c}", local * GB, SWITCH_LATENCY, "local")
    for a in range(groups):
        for z in range(a + 1, groups):
            ra = (z - 1) % rpg  # position of z among a's other groups is z - 1 (z > a)
            rz = a % rpg  # position of a among z's other groups is a (a < z)
            _link(g, f"g{a}.r{ra}", f"g{z}.r{rz}", glob * GB, GLOBAL_LATENCY, "global")
    return Topology.from_graph(g, name=name, source=src)


def rail(servers: int = 4, gpus: int = 8, spines: int = 2, nvlink_GBps: float = NVLINK_GBPS,
         pcie_GBps: float = PCIE_GBPS, nic_GBps: float = NIC_GBPS, *, name: str = "rail") -> Topology:
    """A rail-optimised cluster: NIC ``j`` of every server attaches to rail switch ``rail{j}``; every
    rail switch links to each of ``spines`` spines, non-blocking (``servers * nic_GBps / spines``).

    Under the hop metric a GPU reaches another server's GPU of a different rail in 2 hops by first
    crossing its own NVSwitch (as NCCL's PXN does), so the spines carry no GPU-to-GPU route.
    """
    src = _source(name)
    servers = _count(servers, "servers", src)
    gpus = _count(gpus, "gpus", src)
    spines = _count(spines, "spines", src)
    nvlink, pcie = _positive(nvlink_GBps, "nvlink_GBps", src), _positive(pcie_GBps, "pcie_GBps", src)
    nic = _positive(nic_GBps, "nic_GBps", src)
    g = nx.Graph()
    for i in range(servers):
        for j, n in enumerate(_add_server(g, f"s{i}", gpus, nvlink * GB, pcie * GB)):
            if f"rail{j}" not in g:
                g.add_node(f"rail{j}", kind="switch")
            _link(g, n, f"rail{j}", nic * GB, NIC_LATENCY, "nic")
    for k in range(spines):
        g.add_node(f"spine{k}", kind="switch")
    for j in range(gpus):
        for k in range(spines):
            _link(g, f"rail{j}", f"spine{k}", servers * nic * GB / spines, SWITCH_LATENCY, "spine")
    return Topology.from_graph(g, name=name, source=src)


def nvl72(racks: int = 1, gpus: int = 72, nvswitches: int = 1, leaves_per_rack: int = 2, spines: int = 4,
          nvlink_GBps: float = 900.0, pcie_GBps: float = PCIE_GBPS, nic_GBps: float = NIC_GBPS,
          *, name: str = "nvl72") -> Topology:
    """NVL72-like racks: ``gpus`` GPUs in one NVLink domain per rack, one NIC per GPU.

    A whole rack is ONE server for the hop metric (``server`` = ``rack`` = ``r{i}``).  The rack's 18
    NVSwitch chips (9 trays) give each GPU ``nvlink_GBps`` (900 GB/s) per direction, sprayed over all
    chips.  Routing uses one path per GPU pair, so by default the chips are one ``nvswitch`` node
    that each GPU reaches with the full 900 GB/s; ``nvswitches=18`` models every chip as a node
    reached with ``nvlink_GBps / 18`` each (exact per-chip links, but a single route then sees only
    one chip's 50 GB/s).  With ``racks > 1`` the NICs of each rack attach to ``leaves_per_rack``
    leaf switches (consecutive NICs share a leaf) that link, non-blocking, to ``spines`` spines;
    a single rack has no leaf or spine.
    """
    src = _source(name)
    racks = _count(racks, "racks", src)
    gpus = _count(gpus, "gpus", src)
    nvswitches = _count(nvswitches, "nvswitches", src)
    lpr = _count(leaves_per_rack, "leaves_per_rack", src)
    if lpr > gpus:
        raise input_error(f"must be at most gpus={gpus} (each leaf needs a NIC), got {lpr}", src,
                          "leaves_per_rack")
    spines = _count(spines, "spines", src)
    nvlink, pcie = _positive(nvlink_GBps, "nvlink_GBps", src), _positive(pcie_GBps, "pcie_GBps", src)
    nic = _positive(nic_GBps, "nic_GBps", src)
    g = nx.Graph()
    leaf_nics: dict[str, int] = {}
    for r in range(racks):
        rack = f"r{r}"
        chips = [f"{rack}.nvsw{k}" if nvswitches > 1 else f"{rack}.nvsw" for k in range(nvswitches)]
        for chip in chips:
            g.add_node(chip, kind="nvswitch", server=rack)
        for j in range(gpus):
            gpu, nic_id = f"{rack}.gpu{j}", f"{rack}.nic{j}"
            g.add_node(gpu, kind="gpu", server=rack, rack=rack)
            g.add_node(nic_id, kind="nic", server=rack)
            for chip in chips:
                _link(g, gpu, chip, nvlink * GB / nvswitches, NVLINK_LATENCY, "nvlink")
            _link(g, gpu, nic_id, pcie * GB, PCIE_LATENCY, "pcie")
            if racks > 1:
                leaf = f"{rack}.leaf{j * lpr // gpus}"
                if leaf not in g:
                    g.add_node(leaf, kind="switch")
                _link(g, nic_id, leaf, nic * GB, NIC_LATENCY, "nic")
                leaf_nics[leaf] = leaf_nics.get(leaf, 0) + 1
    if racks > 1:
        for k in range(spines):
            g.add_node(f"spine{k}", kind="switch")
        for leaf, count in leaf_nics.items():
            for k in range(spines):
                _link(g, leaf, f"spine{k}", count * nic * GB / spines, SWITCH_LATENCY, "spine")
    return Topology.from_graph(g, name=name, source=src)


#: Preset name -> builder, in the order they are listed to users.
PRESETS: dict[str, Callable[..., Topology]] = {
    "dgx-h100": dgx_h100,
    "fat-tree": fat_tree,
    "sparse-fat-tree": sparse_fat_tree,
    "dragonfly": dragonfly,
    "rail": rail,
    "nvl72": nvl72,
}

#: Other names accepted by :func:`preset`.
PRESET_ALIASES: dict[str, str] = {"single-node": "dgx-h100"}


def preset_keys(name: str) -> tuple[str, ...]:
    """The parameter keys preset ``name`` accepts (in signature order)."""
    params = inspect.signature(PRESETS[PRESET_ALIASES.get(name, name)]).parameters
    return tuple(k for k, p in params.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _valid_names() -> str:
    aliases = ", ".join(f"{a} (= {n})" for a, n in PRESET_ALIASES.items())
    return ", ".join(PRESETS) + (f"; aliases: {aliases}" if aliases else "")


def _parse_value(text: str, key: str, source: str) -> int | float:
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        if len(text) > 18:
            raise input_error(f"value {text[:20]}... is too large", source, key)
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise input_error(f"value {text!r} is not a number", source, key) from None
    return value


def parse_preset_spec(spec: str) -> tuple[str, dict[str, int | float | str]]:
    """Split ``"NAME"``, ``"NAME:SxG"``, ``"NAME:k=v,k=v"`` or ``"NAME:SxG,k=v"`` into (canonical name,
    parameters).  Every preset also takes ``gpu=MODEL`` (a key of :data:`placement.hardware.GPU_PRESETS`).

    Unknown names or keys raise :class:`~placement.errors.PlacementInputError` listing the valid ones.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise input_error(f"a preset spec must be a non-empty string, got {spec!r}; presets: "
                          f"{_valid_names()}", "preset", "spec")
    head, _, rest = spec.strip().partition(":")
    head = head.strip()
    source = _source(spec)
    if head not in PRESETS and head not in PRESET_ALIASES:
        raise input_error(f"unknown preset '{head}'; valid presets: {_valid_names()}", source, "name")
    name = PRESET_ALIASES.get(head, head)
    keys = preset_keys(name)
    params: dict[str, int | float | str] = {}
    items = [item.strip() for item in rest.strip().split(",")] if rest.strip() else []
    shape = re.fullmatch(r"(\d+)\s*[xX]\s*(\d+)", items[0]) if items else None
    if shape:
        items = items[1:]
        servers, gpus = int(shape.group(1)), int(shape.group(2))
        if "servers" in keys:
            params["servers"] = servers
        elif servers != 1:
            multi = ", ".join(f"{n}:{servers}x{gpus}" for n, f in PRESETS.items()
                              if "servers" in inspect.signature(f).parameters)
            raise input_error(f"'{name}' has no 'servers' key, so only '1xG' is accepted; valid keys: "
                              f"{', '.join(keys)}; for {servers} servers of {gpus} GPUs use a multi-server "
                              f"preset: {multi}", source, "servers")
        params["gpus"] = gpus
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise input_error(f"expected 'key=value' or 'SxG', got {item!r}; valid keys for "
                              f"'{name}': {', '.join(keys + ('gpu',))}", source, "spec")
        if key not in keys and key != "gpu":
            raise input_error(f"unknown key '{key}' for preset '{name}'; valid keys: {', '.join(keys + ('gpu',))}",
                              source, key)
        if key in params:
            raise input_error(f"key '{key}' is given twice", source, key)
        if key == "gpu":
            from ..hardware import GPU_PRESETS

            if value.strip().lower() not in GPU_PRESETS:
                raise input_error(f"unknown GPU {value.strip()!r}; choose one of {list(GPU_PRESETS)}", source, "gpu")
            params["gpu"] = value.strip().lower()
        else:
            params[key] = _parse_value(value, key, source)
    return name, params


#: integer parameters whose product bounds a preset's GPU count
_SIZE_KEYS = ("servers", "gpus", "groups", "routers_per_group", "servers_per_router", "racks")


def _check_size(name: str, params: dict[str, Any], source: str) -> None:
    """Refuse, before building anything, a preset with more GPUs than the ``max_gpus`` limit."""
    from ..limits import check_limit

    defaults = inspect.signature(PRESETS[name]).parameters
    total = 1
    for key in _SIZE_KEYS:
        if key in defaults:
            value = params.get(key, defaults[key].default)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                total *= value
    check_limit("max_gpus", total, source, "gpus")


def preset(spec: str) -> Topology:
    """Build the preset topology ``spec`` (named ``spec``).

    Parameters
    ----------
    spec:
        ``"NAME"``, ``"NAME:SxG"`` or ``"NAME:key=value,key=value"``; names and keys are listed in
        :data:`PRESETS` and the builders' signatures.

    Examples
    --------
    >>> topo = preset("fat-tree:servers=4,gpus=2,servers_per_leaf=2")
    >>> topo.num_gpus, topo.num_servers, topo.diameter
    (8, 4, 4.0)
    >>> preset("dgx-h100").summary()["tiers"]
    {'nvlink': 8, 'pcie': 8}
    >>> preset("rail:4x8,gpu=b200").gpu
    'b200'
    """
    name, params = parse_preset_spec(spec)
    gpu = params.pop("gpu", None)
    _check_size(name, params, _source(spec))
    topo = PRESETS[name](**params, name=spec.strip())
    return topo if gpu is None else dataclasses.replace(topo, gpu=str(gpu))
