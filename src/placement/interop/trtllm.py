"""TensorRT-LLM: the MoE load-balancer YAML (``moe_config.load_balancer``) of slot lists per layer.

Format (``trtllm-yaml``)
------------------------
The file TensorRT-LLM's offline EP load balancer reads (``examples/ep_load_balancer``)::

    # TensorRT-LLM MoE load balancer config, written by placement 0.1.0
    # placement: num_gpus=8 num_experts=16 first_moe_layer=3
    num_slots: 32
    layer_updates_per_iter: 0
    initial_global_assignments:
      3: [0, 5, 9, 2, ...]
      4: [...]

``num_slots`` is ``P = num_gpus * slots_per_gpu``; ``initial_global_assignments`` maps the
model's **hidden-layer index** (MoE layer ``l`` is ``first_moe_layer + l``) to a list of ``P``
logical expert ids, rank-major: EP rank ``r`` holds slots ``[r * P / ep_size, (r + 1) * P /
ep_size)``.  ``layer_updates_per_iter: 0`` keeps the placement static.  TensorRT-LLM reads only
these keys; the EP size is its ``--ep`` option (our GPU count), which the ``# placement:``
comment records for reading the file back.  Every slot must hold an expert (no ``-1``).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import PlacementInputError, input_error
from ..layout import LayerLayout
from ..placement import Placement
from ..trace._trace import ModelSpec
from ._common import (
    as_int_array,
    export_layout,
    placement_from_phy2log,
    positive_int,
    require_full,
    write_yaml,
)

__all__ = ["trtllm_config", "write_trtllm", "read_trtllm"]

_HEADER = re.compile(r"^#\s*placement:\s*(.*)$", re.M)


def trtllm_config(
    placement: Placement,
    first_moe_layer: int | None = None,
    *,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """The load-balancer mapping (plain Python ints and lists, ready for YAML).

    Layers are keyed by hidden-layer index: the placement's layout unless given (see
    :func:`~placement.interop._common.export_layout`).

    >>> import numpy as np
    >>> p = Placement(np.array([[[1, 0], [2, 1]]]), num_experts=3)
    >>> trtllm_config(p, first_moe_layer=3)
    {'num_slots': 4, 'layer_updates_per_iter': 0, 'initial_global_assignments': {3: [1, 0, 2, 1]}}
    """
    require_full(placement, "TensorRT-LLM's load balancer", source)
    layout = export_layout(placement, "TensorRT-LLM's load balancer", source, first_moe_layer=first_moe_layer,
                           moe_layers=moe_layers, model=model)
    return _config(placement, layout)


def _config(placement: Placement, layout: LayerLayout) -> dict[str, Any]:
    phy2log = placement.phy2log()
    return {
        "num_slots": int(phy2log.shape[1]),
        "layer_updates_per_iter": 0,
        "initial_global_assignments": {h: row.tolist() for h, row in zip(layout.moe_layers, phy2log, strict=True)},
    }


def write_trtllm(
    placement: Placement,
    path: str | os.PathLike[str],
    *,
    first_moe_layer: int | None = None,
    num_hidden_layers: int | None = None,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
) -> Path:
    """Write the YAML (dense layers have no entry; ``num_hidden_layers`` is checked and recorded)."""
    src = str(path)
    require_full(placement, "TensorRT-LLM's load balancer", src)
    layout = export_layout(placement, "TensorRT-LLM's load balancer", src, num_hidden_layers=num_hidden_layers,
                           first_moe_layer=first_moe_layer, moe_layers=moe_layers, model=model)
    config = _config(placement, layout)
    hidden = "" if layout.num_hidden_layers is None else f" num_hidden_layers={layout.num_hidden_layers}"
    header = (
        f"# TensorRT-LLM MoE load balancer config, written by placement {__version__}\n"
        f"# placement: num_gpus={placement.num_gpus} num_experts={placement.num_experts} "
        f"first_moe_layer={layout.first_moe_layer}{hidden}\n"
    )
    return write_yaml(config, path, header)


def read_trtllm(
    path: str | os.PathLike[str], *, num_gpus: int | None = None, num_experts: int | None = None
) -> Placement:
    """Read the YAML; ``num_gpus`` defaults to the ``# placement:`` comment (else it is required).

    The placement's layers are the keys of ``initial_global_assignments`` in increasing order.
    """
    src = str(path)
    p = Path(path)
    if not p.is_file():
        raise input_error("file not found; check the path", src)
    import yaml

    text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise input_error(f"invalid YAML ({exc})", src) from exc
    if not isinstance(data, dict):
        raise input_error("must hold a mapping with 'num_slots' and 'initial_global_assignments'", src)
    header = _header(text, src)
    if num_gpus is None:
        num_gpus = header.get("num_gpus")
    if num_gpus is None:
        raise input_error(
            "TensorRT-LLM's file does not record the EP size; pass num_gpus (--num-gpus)", src, "num_gpus"
        )
    if num_experts is None:
        num_experts = header.get("num_experts")
    P = positive_int(data.get("num_slots"), src, "num_slots")
    assign = data.get("initial_global_assignments")
    if not isinstance(assign, dict) or not assign:
        raise input_error(
            "must map each MoE layer's index to its list of slots", src, "initial_global_assignments"
        )
    layers = []
    for key in assign:
        if isinstance(key, bool) or not isinstance(key, int) or key < 0:
            raise input_error(
                f"layer key {key!r} is not a non-negative integer", src, "initial_global_assignments"
            )
        layers.append(key)
    layers.sort()
    rows = []
    for layer in layers:
        field = f"initial_global_assignments.{layer}"
        row = as_int_array(assign[layer], src, field, (1,), "[num_slots]")
        if row.shape[0] != P:
            raise input_error(f"lists {row.shape[0]} slots, but num_slots is {P}", src, field)
        if row.min() < 0:
            raise input_error("holds a negative expert id; every slot must name an expert", src, field)
        rows.append(row)
    placement = placement_from_phy2log(
        np.stack(rows),
        num_gpus,
        num_experts,
        src,
        "initial_global_assignments",
        {"imported_from": "trtllm", "hidden_layers": layers, "first_moe_layer": layers[0]},
    )
    H = header.get("num_hidden_layers")
    try:
        layout = LayerLayout(tuple(layers), H)
    except PlacementInputError as exc:
        raise input_error(exc.detail, src, "num_hidden_layers") from exc
    return replace(placement, layout=layout)


def _header(text: str, src: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for match in _HEADER.finditer(text):
        for item in match.group(1).split():
            key, sep, value = item.partition("=")
            if sep and key in ("num_gpus", "num_experts", "first_moe_layer", "num_hidden_layers"):
                if not value.isdigit():
                    raise input_error(f"'{item}' in the '# placement:' comment is not KEY=INTEGER", src, key)
                out[key] = int(value)
    return out
