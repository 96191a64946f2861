"""Interop with serving stacks: export placements to SGLang, TensorRT-LLM and vllm-ascend (and DeepSeek's
EPLB tensors), and import loads and traces from SGLang, TensorRT-LLM and vLLM.

Placement formats (:data:`PLACEMENT_FORMATS`, written by :func:`export_placement` and read back
by :func:`import_placement`; ``docs/interop.md`` gives every shape):

==============  ======  =====================================================================
``eplb-json``   .json   EPLB's ``phy2log``, ``log2phy``, ``logcnt`` (:mod:`.eplb`)
``eplb-pt``     .pt     the same as ``int64`` torch tensors (needs the ``runtime`` extra)
``sglang-json`` .json   SGLang's ``--init-expert-location`` file, all hidden layers (:mod:`.sglang`)
``sglang-pt``   .pt     the same as a torch tensor
``trtllm-yaml`` .yaml   TensorRT-LLM's MoE load-balancer slot lists (:mod:`.trtllm`)
``vllm-ascend`` .json   vllm-ascend's ``expert_map_path`` JSON (:mod:`.vllm`)
==============  ======  =====================================================================

Trace formats (:data:`TRACE_FORMATS`, read by :func:`import_trace`): ``sglang-dump`` (SGLang's
expert-distribution recorder, :func:`.sglang.load_sglang_dump`), ``expert-load`` (vLLM/EPLB
load tensors, :func:`.eplb.load_expert_load`) and ``trtllm-stats`` (TensorRT-LLM's expert
statistics, :func:`.trtllm.load_trtllm_stats`).  Load formats (:data:`LOAD_FORMATS`, written
from a trace by :func:`export_load`): ``sglang-logical-count`` (SGLang's ``init_by_eplb``).

Importing this package loads neither torch nor matplotlib; ``.pt`` files import torch when read
or written.

>>> import numpy as np, tempfile, os
>>> from placement import Placement
>>> p = Placement(np.array([[[0, 1], [2, 0]]]), num_experts=3)
>>> with tempfile.TemporaryDirectory() as d:
...     path = export_placement(p, os.path.join(d, "p.yaml"), "trtllm-yaml", first_moe_layer=3)
...     import_placement(path, "trtllm-yaml").same_as(p)
True
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import input_error
from ..placement import Placement
from ..trace._trace import ModelSpec, Trace
from .eplb import EplbTensors, eplb_tensors, load_expert_load, placement_from_eplb, read_eplb, write_eplb
from .sglang import (
    load_sglang_dump,
    read_sglang,
    sglang_logical_count,
    sglang_physical_to_logical_map,
    write_sglang,
    write_sglang_logical_count,
)
from .trtllm import load_trtllm_stats, read_trtllm, trtllm_config, write_trtllm
from .vllm import read_vllm_map, vllm_expert_map, write_vllm_map

__all__ = [
    "PLACEMENT_FORMATS",
    "FORMAT_ALIASES",
    "TRACE_FORMATS",
    "LOAD_FORMATS",
    "PlacementFormat",
    "LoadFormat",
    "export_load",
    "sglang_logical_count",
    "load_trtllm_stats",
    "export_placement",
    "import_placement",
    "import_trace",
    "EplbTensors",
    "eplb_tensors",
    "placement_from_eplb",
    "sglang_physical_to_logical_map",
    "trtllm_config",
    "vllm_expert_map",
    "load_sglang_dump",
    "load_expert_load",
]


@dataclass(frozen=True)
class PlacementFormat:
    """A serving-stack placement format: its file suffixes, writer and reader.

    ``layers`` says how the file indexes layers: ``"moe"`` (MoE layers from 0; the layout is not
    needed), ``"hidden"`` (keyed by hidden-layer index) or ``"all-hidden"`` (a row for every hidden
    layer, dense ones included).  ``write(placement, path, **layout)`` and ``read(path, num_gpus=...,
    num_experts=..., **layout)`` take every option (``num_hidden_layers``, ``first_moe_layer``,
    ``moe_layers``, ``model``, ``num_moe_layers``); each format uses those it needs.  ``reader``
    names the serving stack that loads the file (``docs/interop.md`` gives the version checked).
    """

    name: str
    suffixes: tuple[str, ...]
    summary: str
    write: Callable[..., Path]
    read: Callable[..., Placement]
    layers: str = "moe"
    reader: str = ""


def _w_eplb(p: Placement, path: Any, **_: Any) -> Path:
    return write_eplb(p, path)


def _r_eplb(path: Any, *, num_gpus: int | None, num_experts: int | None, **_: Any) -> Placement:
    return read_eplb(path, num_gpus=num_gpus, num_experts=num_experts)


def _w_sglang(p: Placement, path: Any, *, num_hidden_layers: Any = None, first_moe_layer: Any = None,
              moe_layers: Any = None, model: Any = None) -> Path:
    return write_sglang(p, path, num_hidden_layers=num_hidden_layers, first_moe_layer=first_moe_layer,
                        moe_layers=moe_layers, model=model)


def _r_sglang(path: Any, *, num_gpus: int | None, num_experts: int | None, first_moe_layer: int | None = None,
              num_moe_layers: int | None = None, moe_layers: Any = None, model: Any = None) -> Placement:
    return read_sglang(path, num_gpus=num_gpus, first_moe_layer=first_moe_layer, num_moe_layers=num_moe_layers,
                       num_experts=num_experts, moe_layers=moe_layers, model=model)


def _w_trtllm(p: Placement, path: Any, *, num_hidden_layers: Any = None, first_moe_layer: Any = None,
              moe_layers: Any = None, model: Any = None) -> Path:
    return write_trtllm(p, path, first_moe_layer=first_moe_layer, num_hidden_layers=num_hidden_layers,
                        moe_layers=moe_layers, model=model)


def _r_trtllm(path: Any, *, num_gpus: int | None, num_experts: int | None, **_: Any) -> Placement:
    return read_trtllm(path, num_gpus=num_gpus, num_experts=num_experts)


def _w_vllm(p: Placement, path: Any, **_: Any) -> Path:
    return write_vllm_map(p, path)


def _r_vllm(path: Any, *, num_experts: int | None, **_: Any) -> Placement:
    return read_vllm_map(path, num_experts=num_experts)


_SGLANG = "SGLang --init-expert-location"
#: Placement formats in the order the CLI lists them.
PLACEMENT_FORMATS: dict[str, PlacementFormat] = {
    f.name: f
    for f in (
        PlacementFormat("eplb-json", (".json",), "EPLB phy2log/log2phy/logcnt as JSON (no stack loads it)",
                        _w_eplb, _r_eplb),
        PlacementFormat("eplb-pt", (".pt",), "EPLB phy2log/log2phy/logcnt as torch tensors (no stack loads it)",
                        _w_eplb, _r_eplb),
        PlacementFormat("sglang-json", (".json",), "SGLang --init-expert-location (all hidden layers)",
                        _w_sglang, _r_sglang, "all-hidden", _SGLANG),
        PlacementFormat("sglang-pt", (".pt",), "SGLang --init-expert-location as a torch tensor",
                        _w_sglang, _r_sglang, "all-hidden", _SGLANG),
        PlacementFormat("trtllm-yaml", (".yaml", ".yml"), "TensorRT-LLM MoE load balancer YAML",
                        _w_trtllm, _r_trtllm, "hidden", "TensorRT-LLM moe_config.load_balancer"),
        PlacementFormat("vllm-ascend", (".json",), "vllm-ascend eplb_config.expert_map_path JSON",
                        _w_vllm, _r_vllm, "moe", "vllm-ascend additional_config eplb_config.expert_map_path"),
    )
}

#: Deprecated format names -> their current name (still accepted, with a DeprecationWarning).
FORMAT_ALIASES = {"vllm-json": "vllm-ascend"}

#: Trace formats :func:`import_trace` reads.
TRACE_FORMATS = {
    "sglang-dump": "SGLang expert-distribution recorder dump (stat, per_pass or per_token mode)",
    "expert-load": "vLLM/EPLB expert-load tensor [layers, experts] (.pt, .npy, .npz, .json)",
    "trtllm-stats": "TensorRT-LLM expert statistics directory (meta_info.json + rank*.safetensors)",
}


@dataclass(frozen=True)
class LoadFormat:
    """A file of a trace's expert loads that a serving stack reads (:func:`export_load`)."""

    name: str
    suffixes: tuple[str, ...]
    summary: str
    write: Callable[..., Path]
    reader: str = ""


#: Load formats :func:`export_load` writes from a trace.
LOAD_FORMATS: dict[str, LoadFormat] = {
    f.name: f
    for f in (
        LoadFormat("sglang-logical-count", (".json", ".pt"),
                   "SGLang --init-expert-location logical_count (EPLB at start)", write_sglang_logical_count,
                   "SGLang --init-expert-location (init_by_eplb)"),
    )
}


def _format(name: str, path: str | os.PathLike[str], table: dict[str, Any] | None = None,
            kind: str = "placement") -> Any:
    """The format ``name`` of ``table`` (default :data:`PLACEMENT_FORMATS`), refused when unknown or when ``path``
    has another suffix."""
    table = PLACEMENT_FORMATS if table is None else table
    if table is PLACEMENT_FORMATS and name in FORMAT_ALIASES:
        warnings.warn(f"placement format {name!r} is deprecated; use {FORMAT_ALIASES[name]!r} (the file is "
                      "vllm-ascend's expert map: upstream vLLM reads no placement file)", DeprecationWarning,
                      stacklevel=3)
        name = FORMAT_ALIASES[name]
    fmt = table.get(name)
    if fmt is None:
        raise input_error(f"unknown {kind} format {name!r}; choose one of {list(table)}", str(path), "format")
    if Path(path).suffix.lower() not in fmt.suffixes:
        raise input_error(
            f"format {name} uses {' or '.join(fmt.suffixes)} files, not '{Path(path).suffix}'",
            str(path),
            "format",
        )
    return fmt


def export_placement(
    placement: Placement,
    path: str | os.PathLike[str],
    format: str,
    *,
    num_hidden_layers: int | None = None,
    first_moe_layer: int | None = None,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
) -> Path:
    """Write ``placement`` for a serving stack (atomically: a failure leaves no file).

    Parameters
    ----------
    format:
        A key of :data:`PLACEMENT_FORMATS`; the file suffix must match it.
    num_hidden_layers, first_moe_layer, moe_layers, model:
        Where the placement's MoE layers sit among the model's hidden layers, for the formats
        that index hidden layers (SGLang's file covers all hidden layers; TensorRT-LLM keys layers
        by hidden index).  Default: the placement's :attr:`~placement.Placement.layout` (from the
        trace it was solved on); give ``first_moe_layer`` (contiguous MoE layers), ``moe_layers``
        (their hidden indices, e.g. interleaved) or ``model`` (a preset) when it has none.  Values
        contradicting the placement's layout, or an unknown layout, are refused.  Formats
        indexing MoE layers only ignore them.
    """
    fmt = _format(format, path)
    return fmt.write(placement, path, num_hidden_layers=num_hidden_layers, first_moe_layer=first_moe_layer,
                     moe_layers=moe_layers, model=model)


def import_placement(
    path: str | os.PathLike[str],
    format: str,
    *,
    num_gpus: int | None = None,
    num_experts: int | None = None,
    first_moe_layer: int | None = None,
    num_moe_layers: int | None = None,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
) -> Placement:
    """Read a placement written for a serving stack back into a :class:`Placement`.

    ``num_gpus`` is needed where the file does not record the EP size (SGLang; TensorRT-LLM
    files written by other tools).  SGLang's all-hidden-layers map needs its MoE rows named:
    ``model``, ``moe_layers`` or ``first_moe_layer`` (with ``num_moe_layers``).
    ``num_experts`` defaults to the largest id + 1.
    """
    fmt = _format(format, path)
    kwargs: dict[str, Any] = {"num_gpus": num_gpus, "num_experts": num_experts}
    if fmt.layers == "all-hidden":
        kwargs.update(first_moe_layer=first_moe_layer, num_moe_layers=num_moe_layers, moe_layers=moe_layers,
                      model=model)
    return fmt.read(path, **kwargs)


def export_load(
    trace: Trace,
    path: str | os.PathLike[str],
    format: str,
    *,
    num_hidden_layers: int | None = None,
    first_moe_layer: int | None = None,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
) -> Path:
    """Write ``trace``'s expert loads for a serving stack that balances them itself (atomically).

    ``format`` is a key of :data:`LOAD_FORMATS`.  The layer layout defaults to the trace model's
    (:meth:`~placement.trace.ModelSpec.layout`), as in :func:`export_placement`.
    """
    fmt = _format(format, path, LOAD_FORMATS, "load")
    return fmt.write(trace, path, num_hidden_layers=num_hidden_layers, first_moe_layer=first_moe_layer,
                     moe_layers=moe_layers, model=model)


def import_trace(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    format: str,
    *,
    model: ModelSpec | str | None = None,
    top_k: int | None = None,
    first_moe_layer: int | None = None,
    key: str | None = None,
    by_rank: bool = False,
    recorded: str | None = None,
) -> Trace:
    """Read expert loads or routing recorded by a serving stack as a :class:`~placement.trace.Trace`.

    ``format`` is ``"sglang-dump"`` (one recording, one file per rank for ``per_pass`` and
    ``per_token``; ``recorded`` applies), ``"expert-load"`` (one file; ``key`` and ``by_rank``
    apply) or ``"trtllm-stats"`` (TensorRT-LLM's statistics directory; ``recorded`` applies).  A count
    trace works with load-based methods (``placement.solve(trace, topo, method="eplb")``); methods
    needing per-token routing refuse it with a message saying so.
    """
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if format == "sglang-dump":
        return load_sglang_dump(files, model=model, top_k=top_k, first_moe_layer=first_moe_layer, recorded=recorded)
    if format == "trtllm-stats":
        if len(files) != 1:
            raise input_error(f"trtllm-stats reads one directory, got {len(files)} paths", field="paths")
        return load_trtllm_stats(files[0], model=model, top_k=top_k, first_moe_layer=first_moe_layer,
                                 recorded=recorded)
    if format == "expert-load":
        if len(files) != 1:
            raise input_error(f"expert-load reads one file, got {len(files)}", field="paths")
        return load_expert_load(
            files[0], model=model, top_k=top_k, key=key, first_moe_layer=first_moe_layer, by_rank=by_rank
        )
    raise input_error(f"unknown trace format {format!r}; choose one of {list(TRACE_FORMATS)}", field="format")
