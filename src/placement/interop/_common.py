"""Shared helpers of the interop readers and writers: one place that reads, converts and checks.

Every reader goes through :func:`read_mapping` (by extension: ``.pt`` with torch, ``.json``,
``.yaml``, ``.npy``, ``.npz``) and :func:`as_int_array` (torch tensors, nested lists or numpy
arrays to a checked ``int64`` array), so that every bad input names its file and field.
Every writer goes through :func:`write_json`, :func:`write_yaml` or :func:`write_torch`, which
write a temporary file and rename it, so a failure never leaves a partial file.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, atomic_write_text
from ..errors import PlacementInputError, input_error
from ..layout import LayerLayout
from ..placement import Placement
from ..trace._trace import ModelSpec

__all__ = [
    "read_mapping",
    "as_int_array",
    "require_torch",
    "write_json",
    "write_yaml",
    "write_torch",
    "resolve_model",
    "moe_layer_rows",
    "with_layout",
    "export_layout",
    "resolve_layout",
    "read_safetensors",
    "parse_layers",
    "require_full",
    "placement_from_phy2log",
]

RUNTIME_HINT = "pip install 'placement[runtime]'"


def require_torch(source: str | None, what: str = "reading or writing .pt files") -> Any:
    """Import torch or raise an input error naming the ``runtime`` extra."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is installed in the test environment
        raise input_error(f"{what} needs torch, which is not installed: {RUNTIME_HINT}", source) from exc
    return torch


def _check_file(path: Path, src: str) -> None:
    from .._input import input_path

    input_path(path, src)


def _check_unpacked_size(p: Path, suffix: str, src: str) -> None:
    """Refuse, before loading, an archive (``.pt`` and ``.npz`` are zip files) whose members unpack to more
    than ``max_archive_bytes``, or an ``.npy`` whose header declares more (read from the headers only)."""
    import zipfile

    from ..limits import check_limit

    try:
        if suffix == ".npy":
            with p.open("rb") as fh:
                version = np.lib.format.read_magic(fh)
                shape, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(fh))
            size = int(np.prod(shape, dtype=object)) * int(dtype.itemsize)
        else:
            if suffix == ".pt" and not zipfile.is_zipfile(p):
                return  # torch's legacy format: torch.load reads it (or says why not); the file size is checked
            with zipfile.ZipFile(p) as archive:
                size = sum(int(info.file_size) for info in archive.infolist())
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        what = {".pt": "a .pt file (a zip archive)", ".npz": "a numpy .npz archive (a zip file)",
                ".npy": "a numpy .npy array"}[suffix]
        raise input_error(f"is not {what}: {type(exc).__name__}: {' '.join(str(exc).split())}", src) from None
    check_limit("max_archive_bytes", size, src)


def read_mapping(path: str | os.PathLike[str], suffixes: tuple[str, ...] | None = None) -> Any:
    """Read ``path`` by its extension and return what it holds (a dict, a list or an array).

    ``.pt`` files are read with ``torch.load(weights_only=True)`` (tensors stay tensors; see
    :func:`as_int_array`); ``.npz`` gives a dict of arrays.
    """
    p = Path(path)
    src = str(path)
    suffix = p.suffix.lower()
    if suffixes is not None and suffix not in suffixes:
        raise input_error(f"unsupported extension '{p.suffix}'; use one of {list(suffixes)}", src)
    _check_file(p, src)
    if suffix in (".pt", ".npz", ".npy"):
        _check_unpacked_size(p, suffix, src)
    try:
        if suffix == ".pt":
            torch = require_torch(src)
            return torch.load(p, map_location="cpu", weights_only=True)
        if suffix in (".json", ".yaml", ".yml"):
            from .._input import load_text_mapping

            return load_text_mapping(p, src)
        if suffix in (".npy", ".npz"):
            with p.open("rb") as fh:
                magic = fh.read(6)
            want = b"\x93NUMPY" if suffix == ".npy" else b"PK"
            if not magic.startswith(want):
                what = "a numpy .npy array" if suffix == ".npy" else "a numpy .npz archive (a zip file)"
                raise input_error(f"is not {what}: it does not start like one", src)
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
    except PlacementInputError:
        raise
    except Exception as exc:  # torch's UnpicklingError/RuntimeError, zip errors, ValueError, MemoryError
        if suffix == ".pt":  # torch's message advises weights_only=False, which placement never does
            raise input_error(f"cannot read as a .pt file ({type(exc).__name__}); placement reads .pt files with "
                              "torch.load(weights_only=True): tensors, dicts and lists only", src) from None
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise input_error("holds Python objects (pickled data), which are never loaded; store plain numeric "
                              "arrays", src) from None
        raise input_error(f"cannot read as a {suffix} file ({type(exc).__name__}: {' '.join(str(exc).split())})",
                          src) from None
    raise input_error(f"unsupported extension '{p.suffix}'; use .pt, .json, .yaml, .npy or .npz", src)


def as_int_array(
    value: Any, source: str | None, field: str, ndims: tuple[int, ...] | None = None, shape_doc: str = ""
) -> np.ndarray:
    """``value`` (torch tensor, numpy array or nested lists) as an ``int64`` array, checked.

    Whole-number floats are accepted; NaN, fractions, ragged lists and other ranks are errors
    naming ``source`` and ``field``.
    """
    if value is None:
        raise input_error("missing", source, field)
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        value = value.numpy()
    if isinstance(value, (list, tuple)):  # from JSON/YAML: every leaf an integer (no bools, floats or text)
        from .._input import int_array

        value = int_array(list(value), source, field, lo=-(2 ** 62), hi=2 ** 62, shape_doc=shape_doc)
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise input_error(f"must be a rectangular array of integers ({exc})", source, field) from exc
    if arr.dtype == object:
        raise input_error(
            "must be a rectangular array of integers (ragged or mixed nested lists)", source, field
        )
    if ndims is not None and arr.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise input_error(
            f"expected a {want} array{' ' + shape_doc if shape_doc else ''}, got shape {arr.shape}",
            source,
            field,
        )
    if arr.size == 0:
        raise input_error(f"is empty (shape {arr.shape})", source, field)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise input_error("must hold whole numbers (found NaN, infinity or fractions)", source, field)
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "b":
        raise input_error("must hold integers, got booleans", source, field)
    elif arr.dtype.kind not in "iu":
        raise input_error(f"must hold integers, got dtype {arr.dtype}", source, field)
    return arr.astype(np.int64, copy=False)


def positive_int(value: Any, source: str | None, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise input_error(f"must be a positive integer, got {value!r}", source, field)
    return int(value)


# --------------------------------------------------------------------------------------- writers
def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Compact JSON, one line per top-level key is not needed: serving stacks parse it whole."""
    atomic_write_text(path, json.dumps(obj, separators=(",", ":")) + "\n")
    return Path(path)


def write_yaml(obj: Any, path: str | os.PathLike[str], header: str = "") -> Path:
    """YAML with lists written inline (``[3, 1, 4]``), after an optional ``# comment`` header."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _inline(dumper: yaml.SafeDumper, data: list) -> Any:
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)

    _Dumper.add_representer(list, _inline)
    text = yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=1 << 30)
    atomic_write_text(path, header + text)
    return Path(path)


def write_torch(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save`` of ``obj`` with numpy arrays turned into ``int64`` tensors."""
    torch = require_torch(str(path))
    data = {
        k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
        for k, v in obj.items()
    }
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)


# --------------------------------------------------------------------------------------- layers
def resolve_model(model: ModelSpec | str | None, source: str | None = None) -> ModelSpec | None:
    """A :class:`ModelSpec` from itself or a preset name (``placement trace synth --model`` names)."""
    if model is None or isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        from ..trace.synthesize import MODEL_PRESETS

        preset = MODEL_PRESETS.get(model.lower())
        if preset is None:
            raise input_error(
                f"unknown model preset {model!r}; choose one of {sorted(MODEL_PRESETS)}", source, "model"
            )
        return preset.spec
    raise input_error(f"must be a ModelSpec or a preset name, got {type(model).__name__}", source, "model")


def moe_layer_rows(
    layer_used: np.ndarray,
    model: ModelSpec | None,
    first_moe_layer: int | None,
    source: str | None,
    field: str,
) -> tuple[int, ...]:
    """Which rows of a per-layer array (``layer_used bool [rows]``: the rows with any routing) are MoE layers.

    With ``model``, the array holds either its ``num_layers`` MoE layers only, or all its hidden
    layers (its layout's ``num_hidden_layers`` rows: the MoE rows are its ``moe_layers``; a model
    without a layout: ``num_layers`` rows from ``first_moe_layer``, default the model's).
    Without ``model``, the MoE layers are the rows with routing (every token passes every MoE
    layer, and dense layers record nothing), which also finds interleaved layouts; a given
    ``first_moe_layer`` must be the first of them.  Routing recorded in a row that would not be
    a MoE layer is an error, never dropped.
    """
    H = int(layer_used.shape[0])
    used = np.flatnonzero(layer_used)
    if not used.size:
        raise input_error("no layer recorded any routed token (all counts are zero)", source, field)
    if first_moe_layer is not None and (isinstance(first_moe_layer, bool)
                                        or not isinstance(first_moe_layer, (int, np.integer))
                                        or not 0 <= first_moe_layer < H):
        raise input_error(f"first_moe_layer={first_moe_layer!r} is outside [0, {H})", source, "first_moe_layer")
    if model is not None:
        L = model.num_layers
        layout = model.layout()
        if layout is not None and layout.num_hidden_layers == H:
            rows = layout.moe_layers
        elif H == L:
            rows = tuple(range(L))
        elif layout is None or layout.num_hidden_layers is None:
            first = model.first_moe_layer if first_moe_layer is None else int(first_moe_layer)
            if first + L > H:
                raise input_error(f"has {H} layers, but model '{model.name}' has {L} MoE layers starting at hidden "
                                  f"layer {first}; check the model or first_moe_layer", source, field)
            rows = layout.moe_layers if layout is not None else tuple(range(first, first + L))
        else:
            raise input_error(f"has {H} layers, but model '{model.name}' has {L} MoE layers among "
                              f"{layout.num_hidden_layers} hidden layers; check the model", source, field)
        if first_moe_layer is not None and rows[0] != first_moe_layer and H != L:
            raise input_error(f"first_moe_layer={first_moe_layer} contradicts model '{model.name}' (first MoE layer "
                              f"{rows[0]}); drop one of them", source, "first_moe_layer")
        if rows[-1] >= H:
            raise input_error(f"has {H} layers, but model '{model.name}' has a MoE layer at hidden layer {rows[-1]}; "
                              "check the model", source, field)
        stray = np.setdiff1d(used, rows)
        if stray.size:
            raise input_error(f"layer(s) {stray.tolist()} recorded routing but are not MoE layers of model "
                              f"'{model.name}' ({len(rows)} MoE layers from {rows[0]}); check the model", source, field)
        return tuple(int(r) for r in rows)
    if first_moe_layer is not None:
        if used[0] < first_moe_layer:
            dropped = used[used < first_moe_layer].tolist()
            raise input_error(f"first_moe_layer={first_moe_layer} would drop layer(s) {dropped}, which recorded "
                              f"routing; omit it (the MoE layers are the layers with routing, from {int(used[0])})",
                              source, "first_moe_layer")
        if used[0] > first_moe_layer:
            raise input_error(f"layer {first_moe_layer} recorded no routing, so it is not a MoE layer (every token "
                              f"passes every MoE layer); the first layer with routing is {int(used[0])}", source,
                              "first_moe_layer")
    return tuple(int(r) for r in used)


#: The one-line fix every export or import that cannot place the MoE layers among the hidden layers gives.
LAYOUT_FIX = ("pass first_moe_layer (--first-moe-layer N, with --num-hidden-layers H if dense layers follow), "
              "moe_layers (--moe-layers 1,3,5 or 3-60) or a model preset (--model deepseek-v3)")


def parse_layers(value: Any, source: str | None, field: str = "moe_layers") -> tuple[int, ...]:
    """Hidden-layer indices from a sequence of integers or a string such as ``"1,3,5"`` or ``"3-60"``."""
    if isinstance(value, str):
        out: list[int] = []
        for part in value.replace(" ", "").split(","):
            lo, sep, hi = part.partition("-")
            if not lo.isdigit() or (sep and not hi.isdigit()):
                raise input_error(f"expected hidden-layer indices such as '1,3,5' or '3-60', got {value!r}", source,
                                  field)
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        return tuple(out)
    if isinstance(value, (list, tuple, np.ndarray)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
            raise input_error(f"must hold integers, got {list(value)!r}", source, field)
        return tuple(int(v) for v in value)
    raise input_error(f"must be a list of hidden-layer indices, got {value!r}", source, field)


def export_layout(
    placement: Placement,
    fmt: str,
    source: str | None,
    *,
    num_hidden_layers: int | None = None,
    first_moe_layer: int | None = None,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
    need_hidden: bool = False,
) -> LayerLayout:
    """The :class:`LayerLayout` an export that indexes hidden layers writes ``placement`` with.

    The placement's own layout (:attr:`Placement.layout`, from the trace it was solved on) is the
    default; ``model`` (a preset), ``moe_layers`` or ``first_moe_layer`` give it explicitly
    (at most one of them) and ``num_hidden_layers`` completes it.  Given values that contradict
    the placement's layout are refused, and so is an export whose layout stays unknown.  With
    ``need_hidden`` (a file with a row per hidden layer) the number of hidden layers must be
    known too; explicit ``first_moe_layer``/``moe_layers`` without ``num_hidden_layers`` mean no
    dense layer follows the last MoE layer.
    """
    return resolve_layout(placement.layout, placement.num_layers, placement.num_experts, fmt, source,
                          "this placement", num_hidden_layers=num_hidden_layers, first_moe_layer=first_moe_layer,
                          moe_layers=moe_layers, model=model, need_hidden=need_hidden)


def resolve_layout(
    own: LayerLayout | None,
    L: int,
    E: int,
    fmt: str,
    source: str | None,
    what: str,
    *,
    num_hidden_layers: int | None = None,
    first_moe_layer: int | None = None,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
    need_hidden: bool = False,
) -> LayerLayout:
    """:func:`export_layout` for ``what`` (a placement or a trace) of ``L`` MoE layers and ``E`` experts whose
    own layout is ``own``."""
    explicit = [name for name, v in (("model", model), ("moe_layers", moe_layers), ("first_moe_layer", first_moe_layer))
                if v is not None]
    if len(explicit) > 1:
        raise input_error(f"give one of {explicit}, not several", source, explicit[1])
    given: LayerLayout | None = None
    try:
        if model is not None:
            spec = resolve_model(model, source)
            assert spec is not None
            given = spec.layout()
            if given is None:
                raise input_error(f"model '{spec.name}' does not say where its MoE layers are (no num_hidden_layers "
                                  "or moe_layers)", source, "model")
            if spec.num_layers != L or spec.num_experts != E:
                raise input_error(f"model '{spec.name}' has {spec.num_layers} MoE layers x {spec.num_experts} experts, "
                                  f"{what} {L} x {E}", source, "model")
        elif moe_layers is not None:
            layers = parse_layers(moe_layers, source)
            if len(layers) != L:
                raise input_error(f"lists {len(layers)} hidden layers, but {what} has {L} MoE layers", source,
                                  "moe_layers")
            given = LayerLayout(layers)
        elif first_moe_layer is not None:
            if isinstance(first_moe_layer, bool) or not isinstance(first_moe_layer, (int, np.integer)) \
                    or first_moe_layer < 0:
                raise input_error(f"must be a non-negative integer, got {first_moe_layer!r}", source,
                                  "first_moe_layer")
            given = LayerLayout.contiguous(int(first_moe_layer), L)
        if num_hidden_layers is not None:
            H = positive_int(num_hidden_layers, source, "num_hidden_layers")
            base = given or own
            if base is None:
                if H != L:
                    raise input_error(f"{H} hidden layers hold the {L} MoE layers of {what}, but which ones? "
                                      + LAYOUT_FIX, source, "num_hidden_layers")
                base = LayerLayout.contiguous(0, L)
            if base.num_hidden_layers is not None and base.num_hidden_layers != H:
                raise input_error(f"{H} contradicts the {base.describe()}", source, "num_hidden_layers")
            try:
                given = LayerLayout(base.moe_layers, H, base.model, base.hidden_size)
            except PlacementInputError as exc:
                raise input_error(exc.detail, source, "num_hidden_layers") from exc
    except PlacementInputError as exc:
        if exc.source is None:
            raise input_error(exc.detail, source, exc.field) from exc
        raise
    if given is not None and own is not None:
        if not own.same_layers(given):
            raise input_error(f"{given.describe()} contradicts the layout of {what} ({own.describe()}); drop the "
                              "option to use it", source, explicit[0] if explicit else "num_hidden_layers")
        given = LayerLayout(given.moe_layers, given.num_hidden_layers or own.num_hidden_layers,
                            given.model or own.model, given.hidden_size or own.hidden_size)
    layout = given or own
    if layout is None:
        raise input_error(f"{fmt} indexes the model's hidden layers, and {what} does not record which hidden "
                          "layers are its MoE layers (no model layout in the trace, or an older file); "
                          + LAYOUT_FIX, source, "layout")
    if need_hidden and layout.num_hidden_layers is None:
        if not explicit:
            raise input_error(f"{fmt} has a row for every hidden layer, and the layout of {what} does not say how "
                              f"many there are ({layout.describe()}); pass num_hidden_layers (--num-hidden-layers)",
                              source, "num_hidden_layers")
        layout = LayerLayout(layout.moe_layers, layout.moe_layers[-1] + 1, layout.model, layout.hidden_size)
    return layout


def require_full(placement: Placement, fmt: str, source: str | None) -> None:
    """Serving stacks that address physical slots need every slot filled: refuse ``-1``.

    The error names the placement (its file when it was read from one), not the output ``source``."""
    empty = np.argwhere(placement.slots < 0)
    if empty.size:
        layer, gpu, slot = (int(v) for v in empty[0])
        named = placement.source if placement.source != "<memory>" else None
        target = f" (so {source} is not written)" if source and named else ""
        raise input_error(
            f"{len(empty)} empty slot(s) (-1), first at layer {layer}, GPU {gpu}, slot {slot}; "
            f"{fmt} needs every physical slot to hold an expert{target}. Give every GPU the same number "
            "of experts (e.g. solve with more replicas), or export to eplb-json (no serving stack reads it)",
            named or source,
            "slots",
        )


def placement_from_phy2log(
    phy2log: np.ndarray,
    num_gpus: int,
    num_experts: int | None,
    source: str,
    field: str,
    metadata: dict[str, Any] | None = None,
) -> Placement:
    """A :class:`Placement` from ``phy2log [layers, num_physical]``; slot ``p`` is on GPU ``p // (P / G)``."""
    G = positive_int(num_gpus, source, "num_gpus")
    L, P = phy2log.shape
    if P % G:
        raise input_error(f"{P} physical slots per layer do not divide over num_gpus={G}", source, field)
    if phy2log.min() < -1:
        bad = np.argwhere(phy2log < -1)[0]
        raise input_error(
            f"expert id {int(phy2log[tuple(bad)])} at layer {bad[0]}, slot {bad[1]} is negative "
            "(only -1, an empty slot, may be)",
            source,
            field,
        )
    E = int(phy2log.max()) + 1 if num_experts is None else positive_int(num_experts, source, "num_experts")
    if phy2log.max() >= E:
        bad = np.argwhere(phy2log >= E)[0]
        raise input_error(
            f"expert id {int(phy2log[tuple(bad)])} at layer {bad[0]}, slot {bad[1]} is outside "
            f"[0, num_experts={E})",
            source,
            field,
        )
    try:
        return Placement(
            phy2log.reshape(L, G, P // G).astype(np.int32),
            num_experts=E,
            metadata=dict(metadata or {}),
            source=source,
        )
    except PlacementInputError as exc:
        raise input_error(exc.detail, source, field) from exc


def count_trace(
    counts: np.ndarray,
    *,
    model: ModelSpec | str | None,
    top_k: int | None,
    first_moe_layer: int | None,
    source: str,
    field: str,
    name: str,
    metadata: dict[str, Any],
    rows_are_hidden: bool = False,
) -> Any:
    """A count :class:`~placement.trace.Trace` from ``counts [..., rows, experts]``.

    The MoE layers are cut out with :func:`moe_layer_rows`; the leading axis, if any, is kept
    (``[ranks, layers, experts]``).  Without ``model``, ``top_k`` must be given: counts do not
    say how many experts each token picked.  ``rows_are_hidden``: the rows are the model's hidden
    layers (SGLang), so the trace's model records the layer layout (:meth:`ModelSpec.layout`).
    """
    from ..trace._trace import Trace

    spec = resolve_model(model, source)
    if counts.min() < 0:
        raise input_error("counts must be non-negative", source, field)
    per_layer = counts.reshape(-1, *counts.shape[-2:]).sum(axis=0)  # [rows, E]
    if spec is not None and counts.shape[-1] != spec.num_experts:
        raise input_error(
            f"has {counts.shape[-1]} experts per layer, but model '{spec.name}' has {spec.num_experts}",
            source,
            field,
        )
    if spec is not None and top_k is not None and top_k != spec.top_k:
        raise input_error(
            f"top_k={top_k} contradicts model '{spec.name}' (top_k={spec.top_k})", source, "top_k"
        )
    rows = moe_layer_rows(per_layer.sum(axis=1) > 0, spec, first_moe_layer, source, field)
    H = int(counts.shape[-2])
    if spec is None:
        if top_k is None:
            raise input_error(
                "expert counts do not say how many experts each token picks; pass top_k "
                "(--top-k) or a model preset (--model)",
                source,
                "top_k",
            )
        spec = ModelSpec(
            name,
            num_layers=len(rows),
            num_experts=int(counts.shape[-1]),
            top_k=positive_int(top_k, source, "top_k"),
            first_moe_layer=rows[0],
        )
        spec.validate(source)
    spec = with_layout(spec, rows, H if rows_are_hidden else None)
    cut = counts[..., list(rows), :]
    meta = {**metadata, "first_moe_layer": rows[0], "hidden_layers": H, "moe_layers": list(rows)}
    return Trace.from_counts(spec, cut, source=source, metadata=meta)


def with_layout(spec: ModelSpec, rows: tuple[int, ...], num_hidden_layers: int | None) -> ModelSpec:
    """``spec`` recording that its MoE layers are hidden layers ``rows`` of ``num_hidden_layers`` (when
    it knows no layout yet and the recording does); unchanged otherwise."""
    if spec.layout() is not None or num_hidden_layers is None or len(rows) != spec.num_layers:
        return spec
    contiguous = rows[-1] - rows[0] + 1 == len(rows)
    return replace(spec, first_moe_layer=rows[0], num_hidden_layers=num_hidden_layers,
                   moe_layers=None if contiguous else rows)


#: safetensors dtype codes this reader takes (counts): integer and float types numpy has.
_SAFETENSORS_DTYPES = {"I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "U8": "<u1", "U16": "<u2",
                       "U32": "<u4", "U64": "<u8", "F16": "<f2", "F32": "<f4", "F64": "<f8"}


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file as numpy arrays, without the ``safetensors`` package.

    The format: an unsigned little-endian 64-bit header length ``N``, ``N`` bytes of JSON mapping
    each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the
    byte buffer that follows; an optional ``"__metadata__"`` entry holds strings), then the
    buffer, little-endian and row-major.  Every entry is checked against the file's size.
    """
    p = Path(path)
    src = str(path)
    _check_file(p, src)
    raw = p.read_bytes()
    if len(raw) < 8:
        raise input_error("is not a safetensors file (shorter than its 8-byte header length)", src)
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise input_error(f"is not a safetensors file (header of {n} bytes in a {len(raw)}-byte file)", src)
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise input_error(f"is not a safetensors file (its header is not JSON: {exc})", src) from exc
    if not isinstance(header, dict):
        raise input_error("is not a safetensors file (its header is not a mapping)", src)
    buffer = memoryview(raw)[8 + n:]
    out: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise input_error("must be a mapping with dtype, shape and data_offsets", src, name)
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise input_error(f"dtype {entry['dtype']!r} is not one of {sorted(_SAFETENSORS_DTYPES)}", src, name)
        shape, offsets = entry["shape"], entry["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                   for v in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in offsets)):
            raise input_error(f"bad shape {shape!r} or data_offsets {offsets!r}", src, name)
        begin, end = offsets
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if not 0 <= begin <= end <= len(buffer) or end - begin != size:
            raise input_error(f"data_offsets {offsets} do not hold {shape} of {entry['dtype']} in the file's "
                              f"{len(buffer)}-byte buffer", src, name)
        out[name] = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape)
    return out
