"""A JSON expert map of the kind vLLM forks load (vllm-ascend's ``expert_map_path``).

Format (``vllm-json``)
----------------------
::

    {"moe_layer_count": 2,
     "layer_list": [
       {"layer_id": 0, "device_count": 2,
        "device_list": [{"device_id": 0, "device_expert": [0, 3]},
                        {"device_id": 1, "device_expert": [1, 2]}]},
       {"layer_id": 1, ...}]}

``layer_id`` is the MoE-layer index (0-based, dense layers not counted); ``device_expert`` lists
the logical experts a device (EP rank) holds, in its local slot order.  An expert listed on
several devices is replicated.  Empty slots are left out, so a placement with ``-1`` slots gives
devices shorter lists (forks that need equal lists per device want a placement without empty
slots).  Reading pads every device to the longest list with empty slots.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PlacementInputError, input_error
from ..placement import Placement
from ._common import as_int_array, positive_int, read_mapping, write_json

__all__ = ["vllm_expert_map", "write_vllm_map", "read_vllm_map"]


def vllm_expert_map(placement: Placement) -> dict[str, Any]:
    """The expert map as plain Python data.

    >>> import numpy as np
    >>> m = vllm_expert_map(Placement(np.array([[[0, -1], [1, 2]]]), num_experts=3))
    >>> m["layer_list"][0]["device_list"]
    [{'device_id': 0, 'device_expert': [0]}, {'device_id': 1, 'device_expert': [1, 2]}]
    """
    G = placement.num_gpus
    return {
        "moe_layer_count": placement.num_layers,
        "layer_list": [
            {
                "layer_id": layer,
                "device_count": G,
                "device_list": [
                    {"device_id": g, "device_expert": [int(e) for e in slots if e >= 0]}
                    for g, slots in enumerate(placement.slots[layer])
                ],
            }
            for layer in range(placement.num_layers)
        ],
    }


def write_vllm_map(placement: Placement, path: str | os.PathLike[str]) -> Path:
    """Write :func:`vllm_expert_map` as JSON."""
    return write_json(vllm_expert_map(placement), path)


def read_vllm_map(path: str | os.PathLike[str], *, num_experts: int | None = None) -> Placement:
    """Read an expert map; ``num_experts`` defaults to the largest id + 1."""
    src = str(path)
    data = read_mapping(path, (".json",))
    if not isinstance(data, dict) or not isinstance(data.get("layer_list"), list) or not data["layer_list"]:
        raise input_error("must hold a mapping with a non-empty 'layer_list'", src, "layer_list")
    layers = data["layer_list"]
    count = data.get("moe_layer_count", len(layers))
    if count != len(layers):
        raise input_error(f"says {count} but 'layer_list' has {len(layers)} layers", src, "moe_layer_count")
    by_layer: dict[int, list[list[int]]] = {}
    for i, layer in enumerate(layers):
        field = f"layer_list[{i}]"
        if not isinstance(layer, dict) or not isinstance(layer.get("device_list"), list):
            raise input_error("must be a mapping with 'layer_id' and 'device_list'", src, field)
        lid = layer.get("layer_id", i)
        if isinstance(lid, bool) or not isinstance(lid, int) or not 0 <= lid < len(layers) or lid in by_layer:
            raise input_error(
                f"layer_id {lid!r} must be a distinct integer in [0, {len(layers)})", src, f"{field}.layer_id"
            )
        devices = layer["device_list"]
        if "device_count" in layer and layer["device_count"] != len(devices):
            raise input_error(
                f"says {layer['device_count']} but 'device_list' has {len(devices)}",
                src,
                f"{field}.device_count",
            )
        lists: dict[int, list[int]] = {}
        for j, dev in enumerate(devices):
            dfield = f"{field}.device_list[{j}]"
            if not isinstance(dev, dict) or "device_expert" not in dev:
                raise input_error("must be a mapping with 'device_expert'", src, dfield)
            did = dev.get("device_id", j)
            if (
                isinstance(did, bool)
                or not isinstance(did, int)
                or not 0 <= did < len(devices)
                or did in lists
            ):
                raise input_error(
                    f"device_id {did!r} must be a distinct integer in [0, {len(devices)})",
                    src,
                    f"{dfield}.device_id",
                )
            experts = dev["device_expert"]
            if not isinstance(experts, list):
                raise input_error("must be a list of expert ids", src, f"{dfield}.device_expert")
            arr = (
                as_int_array(experts, src, f"{dfield}.device_expert", (1,))
                if experts
                else np.zeros(0, np.int64)
            )
            if arr.size and arr.min() < 0:
                raise input_error("holds a negative expert id", src, f"{dfield}.device_expert")
            lists[did] = arr.tolist()
        by_layer[lid] = [lists[g] for g in range(len(devices))]
    G = {len(v) for v in by_layer.values()}
    if len(G) != 1:
        raise input_error(f"layers list different device counts {sorted(G)}", src, "layer_list")
    num_gpus = G.pop()
    S = max(1, max(len(lst) for v in by_layer.values() for lst in v))
    slots = np.full((len(layers), num_gpus, S), -1, dtype=np.int64)
    for lid, devs in by_layer.items():
        for g, lst in enumerate(devs):
            slots[lid, g, : len(lst)] = lst
    E = int(slots.max()) + 1 if num_experts is None else positive_int(num_experts, src, "num_experts")
    if slots.max() >= E:
        raise input_error(f"expert id {int(slots.max())} is outside [0, num_experts={E})", src, "layer_list")
    try:
        return Placement(
            slots.astype(np.int32), num_experts=E, metadata={"imported_from": "vllm-json"}, source=src
        )
    except PlacementInputError as exc:
        raise input_error(exc.detail, src, "layer_list") from exc
