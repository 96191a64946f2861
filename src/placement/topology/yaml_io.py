"""Topology YAML files: read, validate, write.

Format (see ``docs/topology.md`` for a full example)::

    name: two-servers            # optional; default: the file name without extension
    gpu: h200                    # optional; the GPU model (placement.hardware.GPU_PRESETS), default h100-sxm
    defaults:                    # optional, per tier: values for links that omit them
      nvlink: {bandwidth_GBps: 450, latency_us: 1}
    nodes:                       # required: every node once
      - {id: s0.gpu0, kind: gpu, server: s0, rack: r0}   # server required on GPUs, rack optional
      - {id: s0.nvsw, kind: nvswitch, server: s0}
    links:                       # required: undirected, full-duplex links
      - {a: s0.gpu0, b: s0.nvsw, tier: nvlink}           # bandwidth/latency from defaults
      - {a: s0.gpu0, b: s0.nic0, tier: pcie, bandwidth_GBps: 64, latency_us: 1}

or, for a named preset, only ``name`` and ``preset: "fat-tree:4x8"``.  ``bandwidth_GBps`` is
10^9 bytes per second per direction; ``latency_us`` is microseconds (default 0).  Unknown keys,
duplicate keys or node ids, links to undeclared nodes and duplicate links are errors.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import yaml

from .._io import atomic_write_text
from ..errors import PlacementInputError, input_error
from ._topology import Topology
from .presets import PRESET_ALIASES, PRESETS, preset

__all__ = ["load_topology", "save_topology_yaml", "topology_from_yaml_dict", "topology_to_yaml_dict"]

TOP_KEYS = ("name", "gpu", "defaults", "nodes", "links", "preset")
NODE_KEYS = ("id", "kind", "server", "rack")
LINK_KEYS = ("a", "b", "tier", "bandwidth_GBps", "latency_us")
DEFAULT_KEYS = ("bandwidth_GBps", "latency_us")
GBPS = 1e9  # bytes per second per GBps
US = 1e-6  # seconds per microsecond
YAML_SUFFIXES = (".yaml", ".yml")


def _presets_list() -> str:
    return ", ".join([*PRESETS, *PRESET_ALIASES])


# ---------------------------------------------------------------------------------------------
# reading


def load_topology(spec_or_path: str | os.PathLike[str]) -> Topology:
    """Load a topology from a YAML file or build it from a preset spec.

    Parameters
    ----------
    spec_or_path:
        A path to an existing ``.yaml``/``.yml`` file, or a preset spec such as ``"fat-tree:4x8"``
        (see :func:`placement.topology.preset`).

    Raises
    ------
    PlacementInputError
        If the file does not exist, is not valid, or the spec names no preset; the message names the
        file and field and lists the presets.

    Examples
    --------
    >>> load_topology("dgx-h100").num_gpus
    8
    """
    text = os.fspath(spec_or_path)
    if not text.strip():
        raise input_error(f"empty topology; give a .yaml/.yml file or a preset spec (presets: {_presets_list()})",
                          "topology")
    path = Path(text)
    if path.suffix.lower() in YAML_SUFFIXES:
        if path.is_dir():
            raise input_error("is a directory, not a topology file; give the .yaml/.yml file inside it", text)
        if path.exists():
            return _load_file(path, text)
        raise input_error(f"file not found; give an existing .yaml/.yml file or a preset spec "
                          f"(presets: {_presets_list()})", text)
    if path.is_file():
        raise input_error("unsupported file type: topology files end in .yaml or .yml", text)
    head = text.partition(":")[0].strip()
    if head in PRESETS or head in PRESET_ALIASES:
        return preset(text)
    raise input_error(f"not a preset name, and no file '{text}' was found; give a .yaml/.yml file or one of "
                      f"the presets: {_presets_list()}", text)


def _load_file(path: Path, source: str) -> Topology:
    from .._input import parse_yaml, read_text

    data = parse_yaml(read_text(path, source), source)
    return topology_from_yaml_dict(data, source=source, default_name=path.stem)


def _number(value: Any, source: str, field: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise input_error(f"must be a number, got {value!r}", source, field)
    return float(value)


def _bandwidth(value: Any, source: str, field: str) -> float:
    bw = _number(value, source, field)
    if not (math.isfinite(bw) and bw > 0):
        raise input_error(f"bandwidth must be positive and finite (GB/s per direction), got {value!r}",
                          source, field)
    return bw


def _latency(value: Any, source: str, field: str) -> float:
    lat = _number(value, source, field)
    if not (math.isfinite(lat) and lat >= 0):
        raise input_error(f"latency must be >= 0 microseconds and finite, got {value!r}", source, field)
    return lat


def _mapping(value: Any, keys: tuple[str, ...], source: str, field: str,
             required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise input_error(f"must be a mapping with keys {list(keys)}, got {type(value).__name__}", source,
                          field)
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise input_error(f"unknown key(s) {unknown}; allowed keys: {list(keys)}", source, field)
    missing = [k for k in required if value.get(k) is None]
    if missing:
        raise input_error(f"missing key(s) {missing}", source, field)
    return value


def _text(value: Any, source: str, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise input_error(f"must be a non-empty string, got {value!r}", source, field)
    return str(value)


def topology_from_yaml_dict(data: Any, source: str = "<memory>", default_name: str = "custom") -> Topology:
    """Build a :class:`Topology` from the parsed contents of a topology YAML file.

    Parameters
    ----------
    data:
        The mapping read from YAML (see the module docstring for the format).
    source:
        Where it came from, for error messages.
    default_name:
        The name when ``data`` has none.
    """
    if not isinstance(data, dict):
        raise input_error(f"the top level must be a mapping with keys {list(TOP_KEYS)}, got "
                          f"{type(data).__name__}", source)
    _mapping(data, TOP_KEYS, source, "<top level>")
    name = default_name if data.get("name") is None else _text(data["name"], source, "name")
    gpu = None if data.get("gpu") is None else _text(data["gpu"], source, "gpu").lower()
    if gpu is not None:
        from ..hardware import GPU_PRESETS

        if gpu not in GPU_PRESETS:
            raise input_error(f"unknown GPU {data['gpu']!r}; choose one of {list(GPU_PRESETS)}", source, "gpu")

    if "preset" in data:
        extra = [k for k in data if k not in ("name", "preset", "gpu")]
        if extra:
            raise input_error(f"a preset file takes only 'name', 'gpu' and 'preset'; remove {extra} or drop "
                              "'preset'", source, "preset")
        spec = data["preset"]
        if not isinstance(spec, str):
            raise input_error(f"must be a preset spec string such as 'fat-tree:4x8', got {spec!r}", source,
                              "preset")
        try:
            topo = preset(spec)
        except PlacementInputError as exc:
            raise input_error(str(exc), source, "preset") from None
        return dataclasses.replace(topo, name=name if data.get("name") is not None else topo.name,
                                   source=source, gpu=gpu or topo.gpu)

    for key in ("nodes", "links"):
        if key not in data:
            raise input_error(f"missing key '{key}' (or give 'preset: NAME' instead of nodes and links)",
                              source, key)
        if not isinstance(data[key], list) or not data[key]:
            raise input_error("must be a non-empty list", source, key)
    from ..limits import check_limit

    check_limit("max_topology_nodes", len(data["nodes"]), source, "nodes")
    check_limit("max_topology_links", len(data["links"]), source, "links")

    defaults: dict[str, dict[str, float]] = {}
    raw_defaults = data.get("defaults") or {}
    if not isinstance(raw_defaults, dict):
        raise input_error("must be a mapping tier -> {bandwidth_GBps, latency_us}", source, "defaults")
    for tier, entry in raw_defaults.items():
        where = f"defaults.{tier}"
        _mapping(entry, DEFAULT_KEYS, source, where)
        d = {}
        if entry.get("bandwidth_GBps") is not None:
            d["bandwidth_GBps"] = _bandwidth(entry["bandwidth_GBps"], source, f"{where}.bandwidth_GBps")
        if entry.get("latency_us") is not None:
            d["latency_us"] = _latency(entry["latency_us"], source, f"{where}.latency_us")
        defaults[str(tier)] = d

    g = nx.Graph()
    declared: dict[str, int] = {}
    for i, node in enumerate(data["nodes"]):
        where = f"nodes[{i}]"
        _mapping(node, NODE_KEYS, source, where, required=("id", "kind"))
        nid = _text(node["id"], source, f"{where}.id")
        if nid in declared:
            raise input_error(f"duplicate node id '{nid}' (first declared at nodes[{declared[nid]}]); node "
                              "ids must be unique", source, f"{where}.id")
        declared[nid] = i
        attrs = {"kind": _text(node["kind"], source, f"{where}.kind")}
        for key in ("server", "rack"):
            if node.get(key) is not None:
                attrs[key] = _text(node[key], source, f"{where}.{key}")
        g.add_node(nid, **attrs)

    for i, link in enumerate(data["links"]):
        where = f"links[{i}]"
        _mapping(link, LINK_KEYS, source, where, required=("a", "b", "tier"))
        a, b = _text(link["a"], source, f"{where}.a"), _text(link["b"], source, f"{where}.b")
        for end, nid in (("a", a), ("b", b)):
            if nid not in declared:
                raise input_error(f"unknown node '{nid}'; declare it under 'nodes'", source, f"{where}.{end}")
        if a == b:
            raise input_error(f"self-loop on node '{a}'; a link joins two different nodes", source, where)
        if g.has_edge(a, b):
            raise input_error(f"duplicate link {a} - {b}; merge parallel links into one whose bandwidth is "
                              "their sum", source, where)
        tier = _text(link["tier"], source, f"{where}.tier")
        tier_defaults = defaults.get(tier, {})
        if link.get("bandwidth_GBps") is not None:
            bw = _bandwidth(link["bandwidth_GBps"], source, f"{where}.bandwidth_GBps")
        elif "bandwidth_GBps" in tier_defaults:
            bw = tier_defaults["bandwidth_GBps"]
        else:
            raise input_error(f"missing key 'bandwidth_GBps' (and no defaults.{tier}.bandwidth_GBps)", source,
                              f"{where}.bandwidth_GBps")
        if link.get("latency_us") is not None:
            lat = _latency(link["latency_us"], source, f"{where}.latency_us")
        else:
            lat = tier_defaults.get("latency_us", 0.0)
        g.add_edge(a, b, bandwidth=bw * GBPS, latency=lat * US, tier=tier)

    return Topology.from_graph(g, name=name, source=source, gpu=gpu)


# ---------------------------------------------------------------------------------------------
# writing


def _unscaled(value: float, scale: float) -> float:
    """``x`` with ``x * scale == value`` exactly where a neighbour of ``value / scale`` allows it."""
    x = value / scale
    if x * scale != value:
        for candidate in (np.nextafter(x, np.inf), np.nextafter(x, -np.inf)):
            if float(candidate) * scale == value:
                return float(candidate)
    return float(x)


def topology_to_yaml_dict(topology: Topology) -> dict[str, Any]:
    """The YAML mapping of ``topology`` (every node and link explicit, no defaults)."""
    g = topology.graph
    nodes = []
    for nid in topology.nodes:
        attrs = g.nodes[nid]
        entry = {"id": nid, "kind": attrs["kind"]}
        for key in ("server", "rack"):
            if attrs.get(key) is not None:
                entry[key] = attrs[key]
        nodes.append(entry)
    links = []
    for e in range(topology.num_links):
        arc = 2 * e
        links.append({
            "a": topology.nodes[int(topology.arc_src[arc])],
            "b": topology.nodes[int(topology.arc_dst[arc])],
            "tier": topology.arc_tier[arc],
            "bandwidth_GBps": _unscaled(float(topology.arc_bandwidth[arc]), GBPS),
            "latency_us": _unscaled(float(topology.arc_latency[arc]), US),
        })
    return {"name": topology.name, "gpu": topology.gpu, "nodes": nodes, "links": links}


def save_topology_yaml(topology: Topology, path: str | os.PathLike[str]) -> None:
    """Write ``topology`` to ``path`` (atomically) so that :func:`load_topology` reads it back identical.

    Every node and link is written explicitly, one per line; node, link and arc order are kept.
    """
    header = (f"# placement topology '{topology.name}': {topology.num_gpus} GPUs, {topology.num_servers} "
              f"servers, {topology.num_links} links\n"
              "# bandwidth_GBps: 1e9 bytes/s per direction; latency_us: microseconds\n")
    body = yaml.safe_dump(topology_to_yaml_dict(topology), sort_keys=False, default_flow_style=None,
                          width=1000)
    atomic_write_text(path, header + body)
