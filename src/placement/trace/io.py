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

from .._input import describe, input_path, one_line
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
    input_path(p, src)
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
#: members of a native trace archive and what each holds; any other member is refused
_NPZ_MEMBERS = {
    "format": "the text 'placement-trace'", "version": "the integer 1", "model": "the model spec as JSON text",
    "metadata": "a JSON object as text", "experts": "int [tokens, layers, k] expert ids",
    "weights": "float [tokens, layers, k] gate weights", "origin": "int [tokens] origin ranks",
    "num_ranks": "the integer world size of 'origin'", "counts": "int [layers, experts] or [ranks, layers, experts]",
}
#: the limit that bounds each array member's declared size
_MEMBER_LIMIT = {"experts": "max_trace_entries", "weights": "max_trace_entries", "origin": "max_trace_entries",
                 "counts": "max_count_entries"}
#: largest text member (model, metadata), in characters
_MAX_TEXT_MEMBER = 1 << 24


def _npy_header(fp: Any, src: str, field: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Read an ``.npy`` header from ``fp``: (shape, dtype, fortran order), refusing object dtypes."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(fp, max_header_size=1 << 16)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(fp, max_header_size=1 << 16)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except PlacementInputError:
        raise
    except Exception as exc:  # ValueError, EOFError, OSError, zlib/zip errors: a corrupt header
        raise input_error(f"not a readable .npy array ({one_line(exc)})", src, field) from None
    if dtype.hasobject:
        raise input_error("holds Python objects (pickled data), which are never loaded; store a plain numeric array",
                          src, field)
    if any(int(n) < 0 for n in shape):
        raise input_error(f"the header declares a negative size {tuple(shape)}; the file is corrupt", src, field)
    return tuple(int(n) for n in shape), dtype, bool(fortran)


def _read_npy_body(fp: Any, shape: tuple[int, ...], dtype: np.dtype, fortran: bool, src: str,
                   field: str) -> np.ndarray:
    """The array data after the header, checked to be complete."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    need = count * dtype.itemsize
    arr = np.empty(count, dtype=dtype)
    view = memoryview(arr).cast("B") if need else memoryview(b"")
    got = 0
    try:
        while got < need:
            n = fp.readinto(view[got:])
            if not n:
                break
            got += n
    except Exception as exc:  # zlib.error, zipfile.BadZipFile (CRC), OSError
        raise input_error(f"the data cannot be read ({one_line(exc)}); the file is corrupt", src, field) from None
    if got != need or fp.read(1):
        raise input_error(f"the data does not match the shape {shape} its header declares ({need} bytes); the file "
                          "is truncated or corrupt", src, field)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def _check_declared(name: str, shape: tuple[int, ...], src: str) -> None:
    """Declared sizes against the limits, before anything is allocated."""
    from ..limits import check_limit

    size = int(np.prod(shape, dtype=object)) if shape else 1
    if name in _MEMBER_LIMIT:
        check_limit(_MEMBER_LIMIT[name], size, src, name)
    elif shape != ():
        raise input_error(f"must be a single value ({_NPZ_MEMBERS[name]}), got an array of shape {shape}", src, name)


def _npz_arrays(p: Path, src: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """(the known members of a native trace archive, the names of the others); each known member is read
    inside the error handling and checked against the limits before its data is read."""
    import zipfile

    try:
        archive = zipfile.ZipFile(p)
    except Exception as exc:  # BadZipFile, OSError, ValueError
        raise input_error(f"not a readable .npz archive ({one_line(exc)}); regenerate it with `placement trace synth` "
                          "or save_trace()", src) from None
    out: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    with archive:
        try:
            infos = archive.infolist()
        except Exception as exc:  # pragma: no cover - infolist reads the central directory already parsed
            raise input_error(f"not a readable .npz archive ({one_line(exc)})", src) from None
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if name not in _NPZ_MEMBERS:
                unknown.append(name)
                continue
            if name in out:
                raise input_error("appears twice in the archive", src, name)
            try:
                with archive.open(info) as fp:
                    shape, dtype, fortran = _npy_header(fp, src, name)
                    _check_declared(name, shape, src)
                    if name in ("model", "metadata", "format") and dtype.itemsize > 4 * _MAX_TEXT_MEMBER:
                        raise input_error(f"text longer than {_MAX_TEXT_MEMBER} characters", src, name)
                    out[name] = _read_npy_body(fp, shape, dtype, fortran, src, name)
            except PlacementInputError:
                raise
            except Exception as exc:  # zlib.error, BadZipFile (bad CRC), OSError, NotImplementedError
                raise input_error(f"the member cannot be read ({one_line(exc)}); the file is corrupt", src,
                                  name) from None
    return out, unknown


def _npz_text(data: dict[str, np.ndarray], name: str, src: str) -> str:
    value = data[name]
    if value.dtype.kind != "U":
        raise input_error(f"must be {_NPZ_MEMBERS[name]}, got an array of dtype {value.dtype}", src, name)
    return str(value[()])


def _npz_int(data: dict[str, np.ndarray], name: str, src: str) -> int:
    value = data[name]
    if value.dtype.kind not in "iu":
        raise input_error(f"must be {_NPZ_MEMBERS[name]}, got {describe(value[()])} (dtype {value.dtype})", src, name)
    return int(value[()])


def _npz_json(text: str, src: str, name: str) -> Any:
    from .._input import parse_json

    try:
        return parse_json(text, src)
    except PlacementInputError as exc:
        raise input_error(f"not valid JSON text ({exc.detail})", src, name) from None


def _load_npz(p: Path, src: str) -> Trace:
    input_path(p, src)
    data, unknown = _npz_arrays(p, src)
    if "format" not in data or _npz_text(data, "format", src) != "placement-trace":
        raise input_error("missing 'format = placement-trace'; this .npz was not written by placement "
                          "(ExFlow dumps are .npy files)", src, "format")
    if unknown:
        raise input_error(f"unknown member '{unknown[0]}'; a placement trace holds only {sorted(_NPZ_MEMBERS)}",
                          src, unknown[0])
    version = _npz_int(data, "version", src) if "version" in data else None
    if version != 1:
        raise input_error(f"unsupported version {version}; this placement reads version 1", src, "version")
    if "model" not in data:
        raise input_error("missing model metadata", src, "model")
    model = ModelSpec.from_dict(_npz_json(_npz_text(data, "model", src), src, "model"), src)
    metadata: Any = {}
    if "metadata" in data:
        metadata = _npz_json(_npz_text(data, "metadata", src), src, "metadata")
        if not isinstance(metadata, dict):
            raise input_error(f"must be a JSON object, got {type(metadata).__name__}", src, "metadata")
    if "experts" in data and "counts" in data:
        raise input_error("the archive holds both 'experts' and 'counts'; a trace holds one of them (per-token "
                          "ids or load counts), so remove the other", src, "counts")
    if "experts" in data:
        num_ranks = None
        if "num_ranks" in data:
            if "origin" not in data:
                raise input_error("is given without 'origin'; drop it or add the per-token origin ranks", src,
                                  "num_ranks")
            num_ranks = _npz_int(data, "num_ranks", src)
            if num_ranks < 1:
                raise input_error(f"must be a positive integer, got {num_ranks}", src, "num_ranks")
        weights = data.get("weights")
        if weights is not None and weights.dtype.kind not in "fiu":
            raise input_error(f"gate weights must be numbers, got dtype {weights.dtype}", src, "weights")
        return Trace.from_tokens(model, data["experts"], weights=weights, origin=data.get("origin"),
                                 num_ranks=num_ranks, source=src, metadata=metadata)
    for extra in ("weights", "origin", "num_ranks"):
        if extra in data:
            raise input_error("belongs to a token trace, but this archive holds no 'experts'", src, extra)
    if "counts" in data:
        return Trace.from_counts(model, data["counts"], source=src, metadata=metadata)
    raise input_error("holds neither 'experts' nor 'counts'", src, "experts")


# ---------------------------------------------------------------------------- ExFlow npy
def _load_exflow_npy(p: Path, src: str, model: ModelSpec | None) -> Trace:
    from ..limits import check_limit

    input_path(p, src)
    try:
        with p.open("rb") as fp:
            if fp.read(2) == b"PK":
                raise input_error("is a zip archive (an .npz), not an .npy array; rename it to .npz if placement "
                                  "wrote it", src)
            fp.seek(0)
            shape, dtype, fortran = _npy_header(fp, src, "experts")
            if len(shape) != 2:
                raise input_error(f"ExFlow traces are [tokens, layers] top-1 expert ids; got shape {shape}", src,
                                  "experts")
            if 0 in shape:
                raise input_error(f"the trace is empty (shape {shape}); it needs at least one token and one layer",
                                  src, "experts")
            check_limit("max_trace_entries", shape[0] * shape[1], src, "experts")
            check_limit("max_layers", shape[1], src, "experts")
            arr = _read_npy_body(fp, shape, dtype, fortran, src, "experts")
    except OSError as exc:
        raise input_error(f"cannot read the file ({one_line(exc)})", src) from None
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise input_error("expert ids must be whole numbers (found NaN or fractions)", src, "experts")
        if arr.min() < 0 or arr.max() >= 2 ** 31:
            raise input_error(f"expert id {arr.min() if arr.min() < 0 else arr.max():.0f} is outside [0, 2**31)",
                              src, "experts")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise input_error(f"expert ids must be integers, got dtype {arr.dtype}", src, "experts")
    if model is None:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise input_error(f"negative expert id {lo}; ids are 0-based", src, "experts")
        check_limit("max_experts", hi + 1, src, "experts")
        model = ModelSpec("exflow", num_layers=int(arr.shape[1]), num_experts=max(1, hi + 1), top_k=1)
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


#: the limit on each long-format id column (token ids are only compared, so they have none)
_LONG_LIMIT = {"layer": "max_layers", "rank_in_topk": "max_top_k", "expert": "max_experts"}


def _csv_header(p: Path, src: str) -> list[str]:
    """The column names of a CSV file's first line (pandas renames duplicates; we refuse them)."""
    import csv

    try:
        with p.open(encoding="utf-8", newline="") as f:
            return next(csv.reader(f), [])
    except UnicodeDecodeError as exc:
        raise input_error(f"not UTF-8 text (byte at offset {exc.start}); save the file as UTF-8", src) from None
    except (csv.Error, OSError) as exc:
        raise input_error(f"cannot read as csv ({one_line(exc)})", src) from None


def _long_column(frame: Any, c: str, src: str) -> np.ndarray:
    """Column ``c`` as ``int64``, refusing NaN, fractions, text, booleans and values beyond the limits."""
    from ..limits import check_limit

    col = frame[c]
    if col.isna().any():
        raise input_error(f"empty or NaN value in row {int(np.flatnonzero(col.isna().to_numpy())[0])}", src, c)
    values = col.to_numpy()
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
            raise input_error("values must be whole numbers", src, c)
    elif values.dtype.kind not in "iu":
        raise input_error(f"values must be integers, got {col.dtype}", src, c)
    lo, hi = values.min(), values.max()
    if lo < 0:
        raise input_error(f"negative value {lo:.0f}", src, c)
    if c in _LONG_LIMIT:
        check_limit(_LONG_LIMIT[c], int(hi) + 1 if hi < 2 ** 62 else 2 ** 62, src, c)
    elif hi >= 2 ** 62:
        raise input_error(f"value {hi:.0f} is too large for an id", src, c)
    return values.astype(np.int64)


def _load_long(p: Path, src: str, fmt: str, model: ModelSpec | None) -> Trace:
    import pandas as pd

    from ..limits import check_limit

    input_path(p, src)
    try:
        if fmt == "csv":
            header = _csv_header(p, src)
            dup = sorted({c for c in header if header.count(c) > 1})
            if dup:
                raise input_error("the column appears more than once in the header", src, dup[0])
            frame = pd.read_csv(p, encoding="utf-8", low_memory=False)
        else:
            _require_pyarrow(src)
            frame = pd.read_parquet(p)
    except PlacementInputError:
        raise
    except UnicodeDecodeError as exc:
        raise input_error(f"not UTF-8 text (byte at offset {exc.start}); save the file as UTF-8", src) from None
    except Exception as exc:  # ParserError, EmptyDataError, ArrowInvalid, OSError...
        raise input_error(f"cannot read as {fmt} ({one_line(exc)})", src) from None
    names = [str(c) for c in frame.columns]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise input_error("the column appears more than once", src, dup[0])
    missing = [c for c in _LONG_COLUMNS if c not in frame.columns]
    if missing:
        raise input_error(f"missing column(s) {missing}; the long format needs columns {list(_LONG_COLUMNS)} "
                          "(+ optional weight, origin)", src, missing[0])
    if len(frame) == 0:
        raise input_error("the trace is empty (no rows)", src)
    check_limit("max_trace_entries", len(frame), src)
    cols = {c: _long_column(frame, c, src) for c in _LONG_COLUMNS}
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
        raw = frame["weight"]
        w = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if raw.dtype.kind == "b":
            raise input_error("gate weights must be numbers, got booleans", src, "weight")
        if not np.isfinite(w).all():
            row = int(np.flatnonzero(~np.isfinite(w))[0])
            value = raw.iloc[row]
            if isinstance(value, str) and not np.isfinite(pd.to_numeric(pd.Series([value]), errors="coerce")[0]):
                raise input_error(f"non-numeric weight {describe(value)} in row {row}", src, "weight")
            raise input_error(f"NaN or infinite weight in row {row}", src, "weight")
        weights = np.empty(n * L * k, dtype=np.float32)
        weights[flat] = w
        weights = weights.reshape(n, L, k)
    origin = None
    if "origin" in frame.columns:
        o = frame["origin"].to_numpy()
        if o.dtype.kind not in "iu":
            raise input_error(f"origin ranks must be integers, got {frame['origin'].dtype}", src, "origin")
        if o.min() < 0:
            raise input_error(f"negative origin rank {int(o.min())}", src, "origin")
        check_limit("max_gpus", int(o.max()) + 1, src, "origin")
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
