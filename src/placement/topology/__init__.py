"""Cluster topologies: which GPUs exist, how they are linked, and what moving a byte between them costs.

Build a :class:`Topology` from a networkx graph (:meth:`Topology.from_graph`), a preset
(:func:`preset`, names in :data:`PRESETS`) or a YAML file (:func:`load_topology`, which also takes
a preset spec); write one with :func:`save_topology_yaml`.

Examples
--------
>>> from placement.topology import load_topology
>>> topo = load_topology("fat-tree:2x8")
>>> topo.num_gpus, topo.num_servers, topo.cost_matrix("hops").shape
(16, 2, (16, 16))
"""

from __future__ import annotations

from ._topology import COST_KINDS, KNOWN_TIERS, Topology
from .presets import PRESET_ALIASES, PRESETS, parse_preset_spec, preset
from .yaml_io import load_topology, save_topology_yaml, topology_from_yaml_dict, topology_to_yaml_dict

__all__ = [
    "COST_KINDS",
    "KNOWN_TIERS",
    "PRESETS",
    "PRESET_ALIASES",
    "Topology",
    "load_topology",
    "parse_preset_spec",
    "preset",
    "save_topology_yaml",
    "topology_from_yaml_dict",
    "topology_to_yaml_dict",
]
