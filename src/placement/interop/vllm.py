"""vllm-ascend's expert map: the JSON its ``eplb_config.expert_map_path`` option loads.

Format (``vllm-ascend``; the deprecated name ``vllm-json`` still works)
----------------------------------------------------------------------
::

    {"moe_layer_count": 2,
     "layer_list": [
       {"layer_id": 0, "device_count": 2,
        "device_list": [{"device_id": 0, "device_expert": [0, 3]},
                        {"device_id": 1, "device_expert": [1, 2]}]},
       {"layer_id": 1, ...}]}

How vllm-ascend reads it (``vllm_ascend/eplb/core/eplb_utils.py``, ``expert_file_to_tensor`` and
``init_eplb_config``): MoE layer ``l`` (counting MoE layers only, dense layers not listed) is
``layer_list[l]`` by **position**, EP rank ``r`` is ``device_list[r]`` by position (the ids are
not read), and the ``device_expert`` lists of a layer become one rectangular tensor, so every
device lists the same number of experts.  Each rank maps a logical expert to **one** local slot
(``expert_map[local_placement] = arange(...)``: a second copy on the same device is never used)
and numbers global slots with the count of distinct experts on rank 0, so two replicas of one
expert on one device send tokens to the wrong expert's weights.  The number of slots beyond
``num_experts`` (``P - E``) must be the ``num_redundant_experts`` vLLM allocates: set
``additional_config={"eplb_config": {"expert_map_path": ..., "num_redundant_experts": P - E}}``
(or vLLM's own ``num_redundant_experts``; vllm-ascend refuses two different values).

So the writer refuses placements with an empty slot or with two replicas of one expert on one
GPU, naming the first; the reader applies the same rules.  Upstream vLLM reads no placement
file (its EPLB places experts itself at run time).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PlacementInputError, input_error
from ..placement import Placement
from ._common import as_int_array, positive_int, read_mapping, require_full, write_json

__all__ = ["vllm_expert_map", "write_vllm_map", "read_vllm_map"]


def vllm_expert_map(placement: Placement, *, source: str | None = None) -> dict[str, Any]:
    """The expert map as plain Python data (refused for empty slots or two copies of an expert on one GPU).

    >>> import numpy as np
    >>> m = vllm_expert_map(Placement(np.array([[[0, 2], [1, 2]]]), num_experts=3))
    >>> m["layer_list"][0]["device_list"]
    [{'device_id': 0, 'device_expert': [0, 2]}, {'device_id': 1, 'device_expert': [1, 2]}]
    """
    require_full(placement, "vllm-ascend's expert map", source)
    _refuse_local_duplicates(placement.slots, source, "slots")
    G = placement.num_gpus
    return {
        "moe_layer_count": placement.num_layers,
        "layer_list": [
            {
                "layer_id": layer,
                "device_count": G,
                "device_list": [
                    {"device_id": g, "device_expert": [int(e) for e in slots]}
                    for g, slots in enumerate(placement.slots[layer])
                ],
            }
            for layer in range(placement.num_layers)
        ],
    }


def _refuse_local_duplicates(slots: np.ndarray, source: str | None, field: str) -> None:
    """vllm-ascend keeps one local slot per expert: refuse ``slots [L, G, S]`` with a repeat on a GPU."""
    ordered = np.sort(slots, axis=2)
    dup = (ordered[:, :, 1:] == ordered[:, :, :-1]) & (ordered[:, :, 1:] >= 0)
    if dup.any():
        layer, gpu, j = (int(v) for v in np.argwhere(dup)[0])
        raise input_error(
            f"GPU {gpu} holds two replicas of expert {int(ordered[layer, gpu, j + 1])} at MoE layer {layer}; "
            "vllm-ascend maps an expert to one local slot and numbers global slots by the distinct experts of "
            "rank 0, so tokens would reach the wrong expert's weights. Solve with at most one replica of an "
            "expert per GPU, or export for another stack (sglang-json, trtllm-yaml)",
            source,
            field,
        )


def write_vllm_map(placement: Placement, path: str | os.PathLike[str]) -> Path:
    """Write :func:`vllm_expert_map` as JSON."""
    return write_json(vllm_expert_map(placement, source=str(path)), path)


def read_vllm_map(path: str | os.PathLike[str], *, num_experts: int | None = None) -> Placement:
    """Read an expert map as vllm-ascend does (layers and devices by position, equal lists, no repeat on a
    device); ``num_experts`` defaults to the largest id + 1."""
    src = str(path)
    data = read_mapping(path, (".json",))
    if not isinstance(data, dict) or not isinstance(data.get("layer_list"), list) or not data["layer_list"]:
        raise input_error("must hold a mapping with a non-empty 'layer_list'", src, "layer_list")
    layers = data["layer_list"]
    count = data.get("moe_layer_count", len(layers))
    if count != len(layers):
        raise input_error(f"says {count} but 'layer_list' has {len(layers)} layers", src, "moe_layer_count")
    rows: list[list[list[int]]] = []
    for i, layer in enumerate(layers):
        field = f"layer_list[{i}]"
        if not isinstance(layer, dict) or not isinstance(layer.get("device_list"), list):
            raise input_error("must be a mapping with 'layer_id' and 'device_list'", src, field)
        lid = layer.get("layer_id", i)
        if isinstance(lid, bool) or lid != i:
            raise input_error(f"layer_id {lid!r} is not its position {i}; vllm-ascend reads MoE layer i from "
                              "layer_list[i] and ignores the id", src, f"{field}.layer_id")
        devices = layer["device_list"]
        if "device_count" in layer and layer["device_count"] != len(devices):
            raise input_error(
                f"says {layer['device_count']} but 'device_list' has {len(devices)}",
                src,
                f"{field}.device_count",
            )
        lists: list[list[int]] = []
        for j, dev in enumerate(devices):
            dfield = f"{field}.device_list[{j}]"
            if not isinstance(dev, dict) or "device_expert" not in dev:
                raise input_error("must be a mapping with 'device_expert'", src, dfield)
            did = dev.get("device_id", j)
            if isinstance(did, bool) or did != j:
                raise input_error(f"device_id {did!r} is not its position {j}; vllm-ascend reads EP rank j from "
                                  "device_list[j] and ignores the id", src, f"{dfield}.device_id")
            experts = dev["device_expert"]
            if not isinstance(experts, list) or not experts:
                raise input_error("must be a non-empty list of expert ids", src, f"{dfield}.device_expert")
            arr = as_int_array(experts, src, f"{dfield}.device_expert", (1,))
            if arr.min() < 0:
                raise input_error("holds a negative expert id", src, f"{dfield}.device_expert")
            lists.append(arr.tolist())
        rows.append(lists)
    shapes = sorted({(len(devs), len(lst)) for devs in rows for lst in devs})
    if len(shapes) != 1:
        raise input_error(f"devices x experts per device differ {shapes}; vllm-ascend stacks every layer's lists "
                          "into one [devices, slots] tensor and allocates the same slots for every layer", src,
                          "layer_list")
    slots = np.asarray(rows, dtype=np.int64)  # [L, G, S]
    _refuse_local_duplicates(slots, src, "layer_list")
    E = int(slots.max()) + 1 if num_experts is None else positive_int(num_experts, src, "num_experts")
    if slots.max() >= E:
        raise input_error(f"expert id {int(slots.max())} is outside [0, num_experts={E})", src, "layer_list")
    try:
        return Placement(
            slots.astype(np.int32), num_experts=E, metadata={"imported_from": "vllm-ascend"}, source=src
        )
    except PlacementInputError as exc:
        raise input_error(exc.detail, src, "layer_list") from exc
