"""Reading and writing traces.

Formats
-------
``npz`` (native, :func:`save_trace` writes it)
    ``format = "placement-trace"``, ``version = 1``, ``model`` (JSON of :class:`ModelSpec`),
    then either ``experts [tokens, layers, k]`` (+ optional ``weights``, ``origin``,
    ``num_ranks``) or ``counts [layers, experts]`` / ``[ranks, layers, experts]``, and
    ``metadata`` (JSON).
``npy`` (ExFlow)
    A ``[tokens, layers]`` integer array of top-1 expert ids, as ExFlow's routing dumps.
    The model spec is inferred (``num_experts = max id + 1``) unless given.
``csv`` / ``parquet`` (long format)
    One row per selection with columns ``token, layer, rank_in_topk, expert`` and
    optionally ``weight`` and ``origin``.  Every (token, layer) must list ranks
    ``0..k-1`` exactly once.

Every reader validates and names the file and field of the first problem it finds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path
from ..errors import PlacementInputError, input_error
from ._trace import ModelSpec, Trace

__all__ = ["load_trace", "save_trace", "FORMATS", "TraceFormat", "TRACE_FILE_FORMATS"]

_LONG_COLUMNS = ("token", "layer", "rank_in_topk", "expert")


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise input_error(f"unknown trace format {fmt!r}; choose one of {list(FORMATS)}", str(path), "format")
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    raise input_error(f"cannot tell the trace format from the extension '{path.suffix}'; use one of "
                      f"{['.' + f for f in FORMATS]} or pass the format explicitly", str(path))


def load_trace(path: str | os.PathLike[str], *, format: str | None = None,
               model: ModelSpec | None = None) -> Trace:
    """Load a trace file.

    Parameters
    ----------
    path:
        The file (``.npz``, ``.npy``, ``.csv``, ``.parquet``).
    format:
        Override the format inferred from the extension.
    model:
        Model spec for formats that do not store one (ExFlow ``.npy``, long CSV/parquet);
        inferred from the data when omitted (``num_experts = max id + 1``).
    """
    p = Path(path)
    src = str(path)
    fmt = _format_of(p, format)
    if not p.exists():
        raise input_error("file not found; check the path", src)
    if p.is_dir():
        raise input_error("is a directory, not a trace file", src)
    return TRACE_FILE_FORMATS[fmt].read(p, src, model)


def save_trace(trace: Trace, path: str | os.PathLike[str], *, format: str | None = None) -> Path:
    """Write ``trace`` atomically (temp file + rename); returns the path written."""
    p = Path(path)
    return TRACE_FILE_FORMATS[_format_of(p, format)].write(trace, p)


def _write_npz(trace: Trace, p: Path) -> Path:
    arrays: dict[str, Any] = {
        "format": np.array("placement-trace"),
        "version": np.array(1),
        "model": np.array(json.dumps(trace.model.to_dict())),
        "metadata": np.array(json.dumps(trace.metadata, default=str)),
    }
    if trace.experts is not None:
        arrays["experts"] = trace.experts
        if trace.weights is not None:
            arrays["weights"] = trace.weights
        if trace.origin is not None:
            arrays["origin"] = trace.origin
            arrays["num_ranks"] = np.array(trace.num_ranks)
    else:
        arrays["counts"] = trace.counts
    with atomic_path(p, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return p


def _write_exflow_npy(trace: Trace, p: Path) -> Path:
    experts = trace.require_tokens("the ExFlow .npy format")
    if trace.top_k != 1:
        raise input_error(f"ExFlow's .npy format holds top-1 routing; this trace has top_k={trace.top_k}. "
                          "Use .npz or .csv instead", str(p), "format")
    with atomic_path(p, suffix=".npy") as tmp:
        np.save(tmp, experts[:, :, 0])
    return p


def _write_long(trace: Trace, p: Path, fmt: str) -> Path:
    experts = trace.require_tokens(f"the long {fmt} format")
    frame = _to_long_frame(trace, experts)
    with atomic_path(p) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            _require_pyarrow(str(p))
            frame.to_parquet(tmp, index=False)
    return p


# ---------------------------------------------------------------------------- npz
def _load_npz(p: Path, src: str) -> Trace:
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError...
        raise input_error(f"not a readable .npz archive ({exc}); regenerate it with `placement trace synth` "
                          "or save_trace()", src) from exc
    with data:
        names = set(data.files)
        if "format" not in names or str(data["format"]) != "placement-trace":
            raise input_error("missing 'format = placement-trace'; this .npz was not written by placement "
                              "(ExFlow dumps are .npy files)", src, "format")
        version = int(data["version"]) if "version" in names else None
        if version != 1:
            raise input_error(f"unsupported version {version}; this placement reads version 1", src, "version")
        if "model" not in names:
            raise input_error("missing model metadata", src, "model")
        try:
            model_dict = json.loads(str(data["model"]))
        except json.JSONDecodeError as exc:
            raise input_error(f"model metadata is not valid JSON ({exc})", src, "model") from exc
        model = ModelSpec.from_dict(model_dict, src)
        metadata = json.loads(str(data["metadata"])) if "metadata" in names else {}
        if "experts" in names:
            return Trace.from_tokens(
                model,
                data["experts"],
                weights=data["weights"] if "weights" in names else None,
                origin=data["origin"] if "origin" in names else None,
                num_ranks=int(data["num_ranks"]) if "num_ranks" in names else None,
                source=src,
                metadata=metadata,
            )
        if "counts" in names:
            return Trace.from_counts(model, data["counts"], source=src, metadata=metadata)
        raise input_error("holds neither 'experts' nor 'counts'", src, "experts")


# ---------------------------------------------------------------------------- ExFlow npy
def _load_exflow_npy(p: Path, src: str, model: ModelSpec | None) -> Trace:
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise input_error(f"not a readable .npy array ({exc})", src) from exc
    if arr.ndim != 2:
        raise input_error(f"ExFlow traces are [tokens, layers] top-1 expert ids; got shape {arr.shape}", src,
                          "experts")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise input_error("expert ids must be whole numbers (found NaN or fractions)", src, "experts")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise input_error(f"expert ids must be integers, got dtype {arr.dtype}", src, "experts")
    if arr.shape[0] == 0:
        raise input_error("the trace is empty (0 tokens)", src, "experts")
    if model is None:
        model = ModelSpec("exflow", num_layers=int(arr.shape[1]), num_experts=max(1, int(arr.max()) + 1), top_k=1)
    return Trace.from_tokens(model, arr[:, :, None], source=src, metadata={"format": "exflow-npy"})


# ---------------------------------------------------------------------------- long format
def _require_pyarrow(src: str) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise input_error("reading or writing parquet needs pyarrow: pip install 'placement[parquet]'",
                          src) from exc


def _to_long_frame(trace: Trace, experts: np.ndarray):
    import pandas as pd

    n, L, k = experts.shape
    token, layer, rank = np.meshgrid(np.arange(n), np.arange(L), np.arange(k), indexing="ij")
    cols: dict[str, np.ndarray] = {
        "token": token.ravel(), "layer": layer.ravel(), "rank_in_topk": rank.ravel(),
        "expert": experts.ravel().astype(np.int64),
    }
    if trace.weights is not None:
        cols["weight"] = trace.weights.ravel()
    if trace.origin is not None:
        cols["origin"] = np.repeat(trace.origin, L * k)
    return pd.DataFrame(cols)


def _load_long(p: Path, src: str, fmt: str, model: ModelSpec | None) -> Trace:
    import pandas as pd

    try:
        if fmt == "csv":
            frame = pd.read_csv(p)
        else:
            _require_pyarrow(src)
            frame = pd.read_parquet(p)
    except PlacementInputError:
        raise
    except Exception as exc:
        raise input_error(f"cannot read as {fmt} ({exc})", src) from exc
    missing = [c for c in _LONG_COLUMNS if c not in frame.columns]
    if missing:
        raise input_error(f"missing column(s) {missing}; the long format needs columns {list(_LONG_COLUMNS)} "
                          "(+ optional weight, origin)", src, missing[0])
    if len(frame) == 0:
        raise input_error("the trace is empty (no rows)", src)
    cols = {}
    for c in _LONG_COLUMNS:
        col = frame[c]
        if col.isna().any():
            raise input_error(f"empty or NaN value in row {int(np.flatnonzero(col.isna().to_numpy())[0])}", src, c)
        values = col.to_numpy()
        if values.dtype.kind == "f":
            if not np.array_equal(values, np.round(values)):
                raise input_error("values must be whole numbers", src, c)
            values = values.astype(np.int64)
        elif values.dtype.kind not in "iu":
            raise input_error(f"values must be integers, got {col.dtype}", src, c)
        if values.min() < 0:
            raise input_error(f"negative value {int(values.min())}", src, c)
        cols[c] = values.astype(np.int64)
    tok_ids, tok = np.unique(cols["token"], return_inverse=True)
    n = tok_ids.size
    L = int(cols["layer"].max()) + 1
    k = int(cols["rank_in_topk"].max()) + 1
    if len(frame) != n * L * k:
        raise input_error(f"{len(frame)} rows, but {n} tokens x {L} layers x top-{k} needs {n * L * k}: every "
                          "(token, layer) must list rank_in_topk 0..k-1 exactly once", src, "rank_in_topk")
    flat = (tok * L + cols["layer"]) * k + cols["rank_in_topk"]
    if np.unique(flat).size != flat.size:
        raise input_error("a (token, layer, rank_in_topk) triple appears twice", src, "rank_in_topk")
    experts = np.empty(n * L * k, dtype=np.int64)
    experts[flat] = cols["expert"]
    experts = experts.reshape(n, L, k)
    weights = None
    if "weight" in frame.columns:
        w = frame["weight"].to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isfinite(w).all():
            raise input_error(f"NaN or infinite weight in row {int(np.flatnonzero(~np.isfinite(w))[0])}", src,
                              "weight")
        weights = np.empty(n * L * k, dtype=np.float32)
        weights[flat] = w
        weights = weights.reshape(n, L, k)
    origin = None
    if "origin" in frame.columns:
        o = frame["origin"].to_numpy()
        if o.dtype.kind not in "iu":
            raise input_error("origin ranks must be integers", src, "origin")
        per_token = np.full(n, -1, dtype=np.int64)
        per_token[tok] = o
        if not np.array_equal(per_token[tok], o):
            raise input_error("a token has different origins on different rows", src, "origin")
        origin = per_token
    if model is None:
        model = ModelSpec("custom", num_layers=L, num_experts=int(experts.max()) + 1, top_k=k)
    return Trace.from_tokens(model, experts, weights=weights, origin=origin, source=src,
                             metadata={"format": f"long-{fmt}"})


# ---------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class TraceFormat:
    """A trace file format: its ``name`` (also its file suffix), a reader and a writer.

    ``read(path, source, model) -> Trace`` validates and names the file and field of the first
    problem; ``write(trace, path) -> Path`` writes atomically (temp file, then rename).
    """

    name: str
    summary: str
    read: Callable[[Path, str, ModelSpec | None], Trace]
    write: Callable[[Trace, Path], Path]


#: Trace file formats by name (= file suffix), in the order they are listed to users.
TRACE_FILE_FORMATS: dict[str, TraceFormat] = {f.name: f for f in (
    TraceFormat("npz", "native: token or count trace with model spec and metadata",
                lambda p, src, model: _load_npz(p, src), _write_npz),
    TraceFormat("npy", "ExFlow routing dump: top-1 expert ids [tokens, layers]", _load_exflow_npy, _write_exflow_npy),
    TraceFormat("csv", "long format: one row per (token, layer, top-k rank)",
                lambda p, src, model: _load_long(p, src, "csv", model), lambda t, p: _write_long(t, p, "csv")),
    TraceFormat("parquet", "long format as parquet (needs pyarrow)",
                lambda p, src, model: _load_long(p, src, "parquet", model), lambda t, p: _write_long(t, p, "parquet")),
)}
#: The format names, in order.
FORMATS: tuple[str, ...] = tuple(TRACE_FILE_FORMATS)
