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
from ..trace._trace import ModelSpec, Trace
from ._common import (
    as_int_array,
    export_layout,
    placement_from_phy2log,
    positive_int,
    read_mapping,
    read_safetensors,
    require_full,
    resolve_model,
    write_yaml,
)

__all__ = ["trtllm_config", "write_trtllm", "read_trtllm", "load_trtllm_stats"]

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
    from .._input import parse_yaml, read_text

    src = str(path)
    text = read_text(path, src)
    data = parse_yaml(text, src)
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


# --------------------------------------------------------------------------------------- expert statistics
_RANK_FILE = re.compile(r"^rank(\d+)\.safetensors$")
_KEY = re.compile(r"^(\d+)_(\d+)$")


def load_trtllm_stats(
    path: str | os.PathLike[str],
    *,
    model: ModelSpec | str | None = None,
    top_k: int | None = None,
    first_moe_layer: int | None = None,
    recorded: str | None = None,
) -> Trace:
    """A count trace from TensorRT-LLM's expert statistics (``EXPERT_STATISTIC_PATH``).

    Parameters
    ----------
    path:
        The statistics directory (or its ``meta_info.json``): ``meta_info.json`` (``{"num_experts":
        N, "num_experts_per_token": k}``, written by rank 0) and ``rank{r}.safetensors`` per rank,
        each holding one ``int64 [N]`` tensor per ``"{iteration}_{layer}"`` key: the experts the
        rank's tokens selected in that iteration at decoder layer ``layer``
        (``tensorrt_llm/_torch/expert_statistic.py``).  ``*_raw`` and ``cooccurrence*`` files are
        not read.
    model:
        A :class:`ModelSpec` or preset name: checks ``N`` and ``k`` and says which layers are MoE
        layers (its layout); a recorded layer it does not list is an error.
    first_moe_layer:
        Must be the first recorded layer (a check; recorded layers are never dropped).
    recorded:
        ``"sent"`` (each rank recorded its own tokens: attention DP; origins kept) or
        ``"replicated"`` (tensor-parallel attention: every rank recorded the same tokens; one copy
        kept, origins unknown).  Default: ``replicated`` when every rank's counts are equal, else
        ``sent``.

    Returns
    -------
    Trace
        ``counts [ranks, layers, N]`` (or ``[layers, N]``), iterations summed; the layers are the
        recorded decoder-layer indices, in order, which the trace's model records as its MoE layers
        (``model.layout()``, number of hidden layers unknown unless ``model`` says it).

    With TensorRT-LLM's load balancer on, the counts are per **slot** (``N`` = its ``num_slots``), not
    per expert; a ``model`` whose expert count differs from ``N`` is refused for that reason.
    """
    from .sglang import RECORDED_MODES

    p = Path(path)
    src = str(path)
    if p.name == "meta_info.json":
        p = p.parent
    if not p.is_dir():
        raise input_error("is not a directory of TensorRT-LLM expert statistics (meta_info.json and "
                          "rank*.safetensors); check the path", src)
    meta_path = p / "meta_info.json"
    meta = read_mapping(meta_path, (".json",))
    msrc = str(meta_path)
    if not isinstance(meta, dict):
        raise input_error("must hold a mapping with num_experts and num_experts_per_token", msrc)
    N = positive_int(meta.get("num_experts"), msrc, "num_experts")
    k = positive_int(meta.get("num_experts_per_token"), msrc, "num_experts_per_token")
    spec = resolve_model(model, src)
    if top_k is not None and positive_int(top_k, src, "top_k") != k:
        raise input_error(f"top_k={top_k} contradicts num_experts_per_token={k} in {msrc}", src, "top_k")
    if spec is not None:
        if spec.num_experts != N:
            raise input_error(f"the statistics count {N} experts per layer, model '{spec.name}' has "
                              f"{spec.num_experts}: TensorRT-LLM counts slots, not experts, when its load balancer "
                              "is on; record without the load balancer or check the model", msrc, "num_experts")
        if spec.top_k != k:
            raise input_error(f"num_experts_per_token={k} contradicts model '{spec.name}' (top_k={spec.top_k})",
                              msrc, "num_experts_per_token")
    if recorded is not None and recorded not in ("sent", "replicated"):
        raise input_error(f"TensorRT-LLM records the experts each rank's tokens select, so recorded must be 'sent' "
                          f"or 'replicated', got {recorded!r} (modes: {list(RECORDED_MODES)})", src, "recorded")
    files = {int(m.group(1)): f for f in p.iterdir() if (m := _RANK_FILE.match(f.name))}
    if not files:
        raise input_error("holds no rank*.safetensors file", src)
    R = max(files) + 1
    missing = sorted(set(range(R)) - set(files))
    if missing:
        raise input_error(f"no rank{missing[0]}.safetensors (ranks 0..{R - 1} expected): copy every rank's file",
                          src)
    per_rank: list[dict[int, np.ndarray]] = []
    for r in range(R):
        fsrc = str(files[r])
        acc: dict[int, np.ndarray] = {}
        for key, value in read_safetensors(files[r]).items():
            m = _KEY.match(key)
            if m is None:
                raise input_error("is not an '<iteration>_<layer>' key", fsrc, key)
            c = as_int_array(value, fsrc, key, (1,), "[num_experts]")
            if c.shape[0] != N:
                raise input_error(f"has {c.shape[0]} counts, meta_info.json says num_experts={N}", fsrc, key)
            if c.min() < 0:
                raise input_error("counts must be non-negative", fsrc, key)
            layer = int(m.group(2))
            acc[layer] = acc.get(layer, 0) + c
        per_rank.append(acc)
    layers = sorted(set().union(*per_rank))
    if not layers:
        raise input_error("the rank files hold no counts", src)
    counts = np.zeros((R, len(layers), N), dtype=np.int64)
    for r, acc in enumerate(per_rank):
        for i, layer in enumerate(layers):
            if layer in acc:
                counts[r, i] = acc[layer]
    same = R > 1 and all(np.array_equal(counts[0], counts[r]) for r in range(1, R))
    mode = recorded or ("replicated" if same else "sent")
    if mode == "replicated" and R > 1 and not same:
        raise input_error("the ranks recorded different counts, so they did not all record the same tokens; omit "
                          "recorded='replicated'", src, "recorded")
    if first_moe_layer is not None and first_moe_layer != layers[0]:
        raise input_error(f"first_moe_layer={first_moe_layer}, but the first recorded layer is {layers[0]} (recorded "
                          "layers are the MoE layers; none is dropped)", src, "first_moe_layer")
    rows = tuple(layers)
    if spec is not None:
        lay = spec.layout()
        want = lay.moe_layers if lay is not None else tuple(
            range(spec.first_moe_layer, spec.first_moe_layer + spec.num_layers))
        if rows != want:
            extra = sorted(set(rows) - set(want))
            raise input_error(f"recorded layers {_span(rows)} are not model '{spec.name}''s MoE layers {_span(want)}"
                              + (f" (extra: {extra}; MTP layers?)" if extra else ""), src, "layers")
        if lay is None:
            spec = replace(spec, moe_layers=rows)
    else:
        spec = ModelSpec(p.name or "trtllm", num_layers=len(rows), num_experts=N, top_k=k, first_moe_layer=rows[0],
                         moe_layers=rows)
    cut = counts if mode == "sent" else counts[0]
    meta_out = {"format": "trtllm-stats", "recorded": mode, "recorded_detected": recorded is None,
                "recording_ranks": R, "first_moe_layer": rows[0], "moe_layers": list(rows)}
    return Trace.from_counts(spec, cut, source=src, metadata=meta_out)


def _span(rows: tuple[int, ...]) -> str:
    return f"{rows[0]}..{rows[-1]}" if rows[-1] - rows[0] + 1 == len(rows) else str(list(rows))
