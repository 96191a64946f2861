"""SGLang: the expert-location file (``--init-expert-location``) and expert-distribution dumps.

Expert-location file (``sglang-json``, ``sglang-pt``)
-----------------------------------------------------
SGLang's ``--init-expert-location`` takes a ``.json`` or ``.pt`` file holding a mapping with
the single key ``physical_to_logical_map``: ``int64 [num_hidden_layers, P]``, the logical expert
of every physical slot ``p`` of every hidden layer, where ``P = num_experts +
ep_num_redundant_experts`` and slot ``p`` lives on EP rank ``p // (P / ep_size)``.  SGLang
passes the mapping's keys as keyword arguments to ``ExpertLocationMetadata.init_by_mapping``,
so the file holds that key and nothing else.

The map covers **all** hidden layers, dense ones included (SGLang sizes it by
``num_hidden_layers``).  A dense layer's row is never used for routing, but SGLang still
builds its logical-to-physical tables from it, so it must name a valid expert in every slot
and list every expert: we write SGLang's own "trivial" row there, ``p % num_experts``.  MoE
layer ``l`` of the placement is hidden layer ``first_moe_layer + l``.  Every slot must hold an
expert (no ``-1``).  Serve with ``--ep-num-redundant-experts P - num_experts`` and an EP size
equal to the placement's GPU count.

Expert-distribution dumps (:func:`load_sglang_dump`)
----------------------------------------------------
``/dump_expert_distribution_record`` writes ``torch.save``'d mappings.  By recorder mode:

``stat``
    ``{"rank": 0, "logical_count": int [steps, num_hidden_layers, E], ...}`` (all ranks
    already summed; older versions have no ``steps`` axis).  The steps are summed into a count
    trace ``[layers, E]``.
``per_pass``
    one file per rank: ``{"records": [{"forward_pass_id", "rank", "gatherer_key",
    "global_physical_count": int [num_hidden_layers, P]}, ...], "last_physical_to_logical_map":
    int [num_hidden_layers, P]}``.  Physical counts are folded onto logical experts with the map
    and summed per rank: a count trace ``[ranks, layers, E]`` (a record's ``rank`` is where its
    tokens were routed from).
``per_token``
    the same, with each record also holding ``"topk_ids_of_layer": int [num_hidden_layers,
    tokens, 8]``: the physical slots each token chose, ``-1`` beyond its top-k and in dense
    layers.  Slots are mapped back to logical ids with the map: a token trace ``[tokens, layers,
    k]`` whose ``origin`` is the record's rank.  Tokens with no choice in any MoE layer (padding)
    are dropped.  The map is the one in force when the dump was written; if EPLB rebalanced
    during recording, earlier passes are mapped with the later map.

Dense layers record nothing, so the MoE layers are found as the leading layers without any
routing (or given by ``first_moe_layer`` or a model preset).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PlacementInputError, input_error
from ..layout import LayerLayout
from ..placement import Placement
from ..trace._trace import ModelSpec, Trace
from ._common import (
    LAYOUT_FIX,
    as_int_array,
    count_trace,
    export_layout,
    moe_layer_rows,
    parse_layers,
    placement_from_phy2log,
    positive_int,
    read_mapping,
    require_full,
    resolve_layout,
    resolve_model,
    with_layout,
    write_json,
    write_torch,
)

__all__ = [
    "sglang_physical_to_logical_map",
    "write_sglang",
    "read_sglang",
    "load_sglang_dump",
    "sglang_logical_count",
    "write_sglang_logical_count",
]


def sglang_physical_to_logical_map(
    placement: Placement,
    num_hidden_layers: int | None = None,
    first_moe_layer: int | None = None,
    *,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
    source: str | None = None,
) -> np.ndarray:
    """``int64 [num_hidden_layers, P]``: SGLang's map, dense layers given the trivial row ``p % E``.

    The MoE layers' rows come from the placement's layout unless given (see
    :func:`~placement.interop._common.export_layout`).

    >>> import numpy as np
    >>> p = Placement(np.array([[[1, 0], [2, 1]]]), num_experts=3)
    >>> sglang_physical_to_logical_map(p, num_hidden_layers=2, first_moe_layer=1).tolist()
    [[0, 1, 2, 0], [1, 0, 2, 1]]
    """
    require_full(placement, "SGLang's expert-location file", source)
    layout = export_layout(placement, "SGLang's expert-location file", source, num_hidden_layers=num_hidden_layers,
                           first_moe_layer=first_moe_layer, moe_layers=moe_layers, model=model, need_hidden=True)
    phy2log = placement.phy2log()
    assert layout.num_hidden_layers is not None
    out = np.tile(np.arange(phy2log.shape[1], dtype=np.int64) % placement.num_experts, (layout.num_hidden_layers, 1))
    out[list(layout.moe_layers)] = phy2log
    return out


def write_sglang(
    placement: Placement,
    path: str | os.PathLike[str],
    *,
    num_hidden_layers: int | None = None,
    first_moe_layer: int | None = None,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
) -> Path:
    """Write ``{"physical_to_logical_map": ...}`` as ``.json`` (nested lists) or ``.pt`` (an int64 tensor)."""
    src = str(path)
    table = sglang_physical_to_logical_map(placement, num_hidden_layers, first_moe_layer, moe_layers=moe_layers,
                                           model=model, source=src)
    return _write_table("physical_to_logical_map", table, path)


def _write_table(key: str, table: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """``{key: table}`` as ``.pt`` (an int64 tensor) or ``.json`` (nested lists), by the suffix of ``path``."""
    if Path(path).suffix.lower() == ".pt":
        return write_torch({key: table}, path)
    return write_json({key: table.tolist()}, path)


def read_sglang(
    path: str | os.PathLike[str],
    *,
    num_gpus: int | None,
    first_moe_layer: int | None = None,
    num_moe_layers: int | None = None,
    num_experts: int | None = None,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
) -> Placement:
    """Read an expert-location file back; the placement's layers are its MoE rows.

    The file has a row for every hidden layer and records neither the EP size nor which rows
    are MoE layers (a dense row looks like any placement): pass ``num_gpus`` and one of
    ``model`` (a preset: its MoE layers), ``moe_layers`` (the rows) or ``first_moe_layer``
    (with ``num_moe_layers``, default every row from there on).  Without any of them the read is
    refused rather than taking dense rows for MoE layers.  The placement's
    :attr:`~placement.Placement.layout` records the rows and the number of hidden layers.
    """
    src = str(path)
    data = read_mapping(path, (".json", ".pt"))
    if not isinstance(data, dict) or "physical_to_logical_map" not in data:
        what = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise input_error(
            f"must hold a mapping with 'physical_to_logical_map' (found {what})",
            src,
            "physical_to_logical_map",
        )
    table = as_int_array(
        data["physical_to_logical_map"],
        src,
        "physical_to_logical_map",
        (2,),
        "[num_hidden_layers, num_physical]",
    )
    if num_gpus is None:
        raise input_error(
            "SGLang's file does not record the EP size; pass num_gpus (--num-gpus)", src, "num_gpus"
        )
    if table.min() < 0:
        bad = np.argwhere(table < 0)[0]
        raise input_error(
            f"negative expert id at layer {bad[0]}, slot {bad[1]}; SGLang needs every slot to name an expert",
            src,
            "physical_to_logical_map",
        )
    H = table.shape[0]
    explicit = [n for n, v in (("model", model), ("moe_layers", moe_layers), ("first_moe_layer", first_moe_layer))
                if v is not None]
    if len(explicit) > 1:
        raise input_error(f"give one of {explicit}, not several", src, explicit[1])
    spec = resolve_model(model, src)
    if spec is not None:
        layout = spec.layout()
        if layout is None or layout.num_hidden_layers != H:
            raise input_error(f"has {H} rows (hidden layers), but model '{spec.name}' has "
                              f"{'an unknown number of' if layout is None else layout.num_hidden_layers} hidden "
                              "layers; check the model", src, "physical_to_logical_map")
        rows = layout.moe_layers
    elif moe_layers is not None:
        rows = parse_layers(moe_layers, src)
    elif first_moe_layer is not None:
        if isinstance(first_moe_layer, bool) or not 0 <= first_moe_layer < H:
            raise input_error(f"first_moe_layer={first_moe_layer} is outside [0, {H})", src, "first_moe_layer")
        L = H - first_moe_layer if num_moe_layers is None else positive_int(num_moe_layers, src, "num_moe_layers")
        if first_moe_layer + L > H:
            raise input_error(f"{L} MoE layers from layer {first_moe_layer} exceed the file's {H} layers", src,
                              "num_moe_layers")
        rows = tuple(range(first_moe_layer, first_moe_layer + L))
    else:
        raise input_error("SGLang's map has a row for every hidden layer, dense ones included, and does not say "
                          f"which of its {H} rows are MoE layers; " + LAYOUT_FIX, src, "first_moe_layer")
    try:
        layout = LayerLayout(rows, H, spec.name if spec is not None else None,
                             spec.hidden_size if spec is not None else None)
    except PlacementInputError as exc:
        raise input_error(f"{exc.detail} (the file has {H} rows)", src, "moe_layers") from exc
    placement = placement_from_phy2log(
        table[list(rows)],
        num_gpus,
        num_experts,
        src,
        "physical_to_logical_map",
        {"imported_from": "sglang", "first_moe_layer": rows[0]},
    )
    return replace(placement, layout=layout)


# --------------------------------------------------------------------------------------- logical_count
def sglang_logical_count(
    trace: Trace,
    num_hidden_layers: int | None = None,
    first_moe_layer: int | None = None,
    *,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
    source: str | None = None,
) -> np.ndarray:
    """``int64 [num_hidden_layers, E]``: the trace's tokens per expert at each hidden layer, zero in dense layers.

    What SGLang's ``init_by_eplb`` takes as ``logical_count`` (it sums a leading steps axis and runs
    its EPLB on ``[num_hidden_layers, E]``).  The MoE rows come from the trace's layout
    (``trace.model.layout()``) unless given, as for :func:`sglang_physical_to_logical_map`.

    >>> from placement.trace import ModelSpec, Trace
    >>> t = Trace.from_counts(ModelSpec("m", 1, 3, 1), np.array([[5, 0, 2]]))
    >>> sglang_logical_count(t, num_hidden_layers=2, first_moe_layer=1).tolist()
    [[0, 0, 0], [5, 0, 2]]
    """
    layout = resolve_layout(trace.model.layout(), trace.num_layers, trace.num_experts, "SGLang's logical_count",
                            source, "this trace", num_hidden_layers=num_hidden_layers,
                            first_moe_layer=first_moe_layer, moe_layers=moe_layers, model=model, need_hidden=True)
    assert layout.num_hidden_layers is not None
    out = np.zeros((layout.num_hidden_layers, trace.num_experts), dtype=np.int64)
    out[list(layout.moe_layers)] = trace.layer_counts()
    return out


def write_sglang_logical_count(
    trace: Trace,
    path: str | os.PathLike[str],
    *,
    num_hidden_layers: int | None = None,
    first_moe_layer: int | None = None,
    moe_layers: Any = None,
    model: ModelSpec | str | None = None,
) -> Path:
    """Write ``{"logical_count": [H][E]}`` (``.json``) or an int64 tensor (``.pt``) for ``--init-expert-location``."""
    src = str(path)
    table = sglang_logical_count(trace, num_hidden_layers, first_moe_layer, moe_layers=moe_layers, model=model,
                                 source=src)
    return _write_table("logical_count", table, path)


# --------------------------------------------------------------------------------------- dumps
def load_sglang_dump(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    model: ModelSpec | str | None = None,
    top_k: int | None = None,
    first_moe_layer: int | None = None,
    recorded: str | None = None,
) -> Trace:
    """A trace from SGLang expert-distribution recorder dumps (``stat``, ``per_pass`` or ``per_token``).

    Parameters
    ----------
    paths:
        One dump, or the per-rank dumps of one recording (``.pt``; a ``.json`` holding the
        same mapping with nested lists also works).
    model:
        A :class:`ModelSpec` or preset name: checks the shapes and says where the MoE layers
        are.  Without it, counts need ``top_k`` (``per_token`` dumps show it).
    first_moe_layer:
        Hidden-layer index of the first MoE layer (default: the model's, else the first layer
        with any routing); routing recorded before it is an error, not dropped.
    recorded:
        What each rank's records of a ``per_pass``/``per_token`` recording hold: ``"sent"`` (the
        tokens it routes: per-rank origins are kept), ``"received"`` (DeepEP low-latency
        ``per_pass``: what its experts received; the ranks are summed, origins unknown) or
        ``"replicated"`` (tensor-parallel attention: every rank recorded the same tokens; one
        copy is kept, origins unknown).  Default: detected from the dump (see
        ``docs/interop.md``); where it cannot be, the import is refused and asks for it.

    Returns
    -------
    Trace
        A count trace (``stat``: ``[layers, E]``; ``per_pass``: ``[ranks, layers, E]``, or
        ``[layers, E]`` when origins are unknown) or a token trace (``per_token``).  Its model
        records the layer layout (``model.layout()``), and ``metadata["recorded"]`` the mode.
    """
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not files:
        raise input_error("give at least one dump file", field="paths")
    loaded = [(str(f), read_mapping(f, (".pt", ".json"))) for f in files]
    for src, data in loaded:
        if not isinstance(data, dict) or not ({"logical_count", "records"} & set(data)):
            what = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
            raise input_error(
                f"not an expert-distribution dump: expected 'logical_count' (stat mode) or "
                f"'records' (per_pass/per_token mode), found {what}",
                src,
            )
    kinds = {"stat" if "logical_count" in data else "detail" for _, data in loaded}
    if len(kinds) > 1:
        raise input_error(
            "mixes stat dumps with per_pass/per_token dumps; load one recording at a time", loaded[0][0]
        )
    src = loaded[0][0] if len(loaded) == 1 else f"{loaded[0][0]} (+{len(loaded) - 1} more)"
    name = Path(loaded[0][0]).stem
    if kinds == {"stat"}:
        total = None
        for fsrc, data in loaded:
            c = as_int_array(
                data["logical_count"],
                fsrc,
                "logical_count",
                (2, 3),
                "[num_hidden_layers, E] or [steps, num_hidden_layers, E]",
            )
            c = c.sum(axis=0) if c.ndim == 3 else c
            if total is not None and total.shape != c.shape:
                raise input_error(
                    f"shape {c.shape} differs from the first dump's {total.shape}", fsrc, "logical_count"
                )
            total = c if total is None else total + c
        assert total is not None
        return count_trace(
            total,
            model=model,
            top_k=top_k,
            first_moe_layer=first_moe_layer,
            source=src,
            field="logical_count",
            name=name,
            metadata={"format": "sglang-dump", "mode": "stat", "files": len(loaded)},
            rows_are_hidden=True,
        )
    return _load_detail(loaded, src, name, model, top_k, first_moe_layer, recorded)


def _records(loaded: list[tuple[str, Any]]) -> list[tuple[str, int, dict[str, Any], np.ndarray]]:
    """``(source, index, record, physical_to_logical_map)`` of every record of every file."""
    out = []
    for src, data in loaded:
        p2l = as_int_array(
            data.get("last_physical_to_logical_map"),
            src,
            "last_physical_to_logical_map",
            (2,),
            "[num_hidden_layers, num_physical]",
        )
        if p2l.min() < 0:
            raise input_error("holds a negative expert id", src, "last_physical_to_logical_map")
        records = data["records"]
        if not isinstance(records, (list, tuple)) or not records:
            raise input_error("must be a non-empty list of per-pass records", src, "records")
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise input_error(f"record {i} is a {type(rec).__name__}, not a mapping", src, "records")
            out.append((src, i, rec, p2l))
    return out


def _rank_of(rec: dict[str, Any], src: str, i: int) -> int:
    rank = rec.get("rank", 0)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 0:
        raise input_error(
            f"record {i}: rank must be a non-negative integer, got {rank!r}", src, "records.rank"
        )
    return int(rank)


#: What the records of each rank hold (``recorded=``), see the module docstring.
RECORDED_MODES = ("sent", "received", "replicated")


def _check_recorded(recorded: str | None, src: str) -> str | None:
    if recorded is not None and recorded not in RECORDED_MODES:
        raise input_error(f"unknown recorder mode {recorded!r}; choose one of {list(RECORDED_MODES)}", src, "recorded")
    return recorded


def _check_ranks(ranks: set[int], src: str) -> int:
    R = max(ranks) + 1
    missing = sorted(set(range(R)) - ranks)
    if missing:
        raise input_error(f"no records of rank(s) {missing} (ranks 0..{R - 1} expected): give the dump file of every "
                          "rank of one recording", src, "records.rank")
    return R


def _detect_pass_mode(phys: np.ndarray, src: str) -> str:
    """How ``phys [ranks, H, P]`` (physical counts summed per recording rank) was recorded.

    ``replicated``: every rank recorded the same counts (tensor-parallel attention: each rank routes
    every token).  ``received``: each rank's counts lie only in its own slots ``[r * P / R, (r + 1) *
    P / R)`` (DeepEP low-latency: a rank counts what its experts received).  ``sent``: otherwise (each
    rank counts the tokens it routes, all slots).
    """
    R, _, P = phys.shape
    if R == 1:
        return "sent"
    if all(np.array_equal(phys[0], phys[r]) for r in range(1, R)):
        return "replicated"
    if P % R:
        raise input_error(f"{P} physical slots do not divide over the {R} ranks recorded, so whether each rank "
                          "recorded the tokens it sent or those its experts received cannot be told; pass "
                          "recorded='sent' or 'received' (--recorded)", src, "recorded")
    S = P // R
    own = np.arange(P)[None, :] // S == np.arange(R)[:, None]  # [R, P]
    outside = (phys.sum(axis=1) * ~own).sum()
    return "received" if outside == 0 else "sent"


def _load_detail(
    loaded: list[tuple[str, Any]],
    src: str,
    name: str,
    model: ModelSpec | str | None,
    top_k: int | None,
    first_moe_layer: int | None,
    recorded: str | None = None,
) -> Trace:
    recorded = _check_recorded(recorded, src)
    recs = _records(loaded)
    shape = recs[0][3].shape
    for fsrc, _, _, p2l in recs:
        if p2l.shape != shape:
            raise input_error(
                f"shape {p2l.shape} differs from the first dump's {shape}",
                fsrc,
                "last_physical_to_logical_map",
            )
    H, P = shape
    spec = resolve_model(model, src)
    E = spec.num_experts if spec is not None else int(max(r[3].max() for r in recs)) + 1
    for fsrc, _, _, p2l in recs:
        if p2l.max() >= E:
            raise input_error(
                f"expert id {int(p2l.max())} is outside [0, {E})", fsrc, "last_physical_to_logical_map"
            )
    ranks = [_rank_of(rec, fsrc, i) for fsrc, i, rec, _ in recs]
    R = _check_ranks(set(ranks), src)
    per_token = all("topk_ids_of_layer" in rec for _, _, rec, _ in recs)
    if not per_token:
        phys = np.zeros((R, H, P), dtype=np.int64)
        logical = np.zeros((R, H, E), dtype=np.int64)
        codes_base = np.arange(H)[:, None] * E
        for (fsrc, i, rec, p2l), rank in zip(recs, ranks, strict=True):
            c = as_int_array(
                rec.get("global_physical_count"),
                fsrc,
                f"records[{i}].global_physical_count",
                (2,),
                "[num_hidden_layers, num_physical]",
            )
            if c.shape != (H, P):
                raise input_error(
                    f"shape {c.shape} must be [num_hidden_layers, num_physical] = {(H, P)}",
                    fsrc,
                    f"records[{i}].global_physical_count",
                )
            if c.min() < 0:
                raise input_error("counts must be non-negative", fsrc, f"records[{i}].global_physical_count")
            phys[rank] += c
            logical[rank] += np.bincount((codes_base + p2l).ravel(), weights=c.ravel(),
                                         minlength=H * E).reshape(H, E).round().astype(np.int64)
        mode = recorded or _detect_pass_mode(phys, src)
        if mode == "replicated" and not all(np.array_equal(phys[0], phys[r]) for r in range(1, R)):
            raise input_error("the ranks recorded different counts, so they did not all record the same tokens; "
                              "omit recorded='replicated'", src, "recorded")
        counts = logical if mode == "sent" else logical.sum(axis=0) if mode == "received" else logical[0]
        return count_trace(
            counts,
            model=spec,
            top_k=top_k,
            first_moe_layer=first_moe_layer,
            source=src,
            field="records.global_physical_count",
            name=name,
            metadata={"format": "sglang-dump", "mode": "per_pass", "files": len(loaded), "recorded": mode,
                      "recorded_detected": recorded is None, "recording_ranks": R},
            rows_are_hidden=True,
        )
    if recorded == "received":
        raise input_error("per_token dumps record the tokens each rank routes (select_experts), never the tokens "
                          "its experts received; omit recorded='received'", src, "recorded")
    chunks, origins = [], []
    for (fsrc, i, rec, p2l), rank in zip(recs, ranks, strict=True):
        field = f"records[{i}].topk_ids_of_layer"
        ids = as_int_array(rec["topk_ids_of_layer"], fsrc, field, (3,), "[num_hidden_layers, tokens, slots]")
        if ids.shape[0] != H:
            raise input_error(f"has {ids.shape[0]} layers, the map has {H}", fsrc, field)
        if ids.min() < -1 or ids.max() >= P:
            bad = np.argwhere((ids < -1) | (ids >= P))[0]
            raise input_error(
                f"physical id {int(ids[tuple(bad)])} at layer {bad[0]}, token {bad[1]} is outside "
                f"[0, {P}) (-1 = no choice)",
                fsrc,
                field,
            )
        chunks.append(np.where(ids >= 0, p2l[np.arange(H)[:, None, None], np.maximum(ids, 0)], -1))
        origins.append(np.full(ids.shape[1], rank, dtype=np.int32))
    width = max(c.shape[2] for c in chunks)
    chunks = [np.pad(c, ((0, 0), (0, 0), (0, width - c.shape[2])), constant_values=-1) for c in chunks]
    per_rank = [np.concatenate([c for c, o in zip(chunks, origins, strict=True) if o.size and o[0] == r]
                               or [np.zeros((H, 0, width), np.int64)], axis=1) for r in range(R)]
    same = R > 1 and all(np.array_equal(per_rank[0], x) for x in per_rank[1:])
    mode = recorded or ("replicated" if same else "sent")
    if mode == "replicated" and not same:
        raise input_error("the ranks recorded different tokens, so they did not all record the same tokens; omit "
                          "recorded='replicated'", src, "recorded")
    if mode == "replicated":
        logical, origin = per_rank[0], None
    else:
        logical, origin = np.concatenate(chunks, axis=1), np.concatenate(origins)  # [H, tokens, slots]
    rows = moe_layer_rows((logical >= 0).any(axis=(1, 2)), spec, first_moe_layer, src, "records.topk_ids_of_layer")
    ex = logical[list(rows)].transpose(1, 0, 2)  # [tokens, L, slots]
    chosen = (ex >= 0).sum(axis=2)  # [tokens, L]
    keep = chosen.any(axis=1)
    ex, chosen = ex[keep], chosen[keep]
    origin = None if origin is None else origin[keep]
    if ex.shape[0] == 0:
        raise input_error("no token chose an expert in the MoE layers", src, "records.topk_ids_of_layer")
    k = int(chosen.max())
    if spec is not None:
        k = spec.top_k
    elif top_k is not None:
        k = positive_int(top_k, src, "top_k")
    bad = np.argwhere((chosen != k) | (ex[:, :, :k] < 0).any(axis=2))
    if bad.size:
        t, layer = (int(v) for v in bad[0])
        raise input_error(
            f"token {t} chose {int(chosen[t, layer])} experts at MoE layer {layer}, expected top_k={k} "
            "in the first columns",
            src,
            "records.topk_ids_of_layer",
        )
    if spec is None:
        spec = ModelSpec(name, num_layers=len(rows), num_experts=E, top_k=k, first_moe_layer=rows[0])
    spec = with_layout(spec, rows, H)
    experts = ex[:, :, :k]
    meta = {
        "format": "sglang-dump",
        "mode": "per_token",
        "files": len(loaded),
        "first_moe_layer": rows[0],
        "hidden_layers": H,
        "moe_layers": list(rows),
        "dropped_tokens": int((~keep).sum()),
        "recorded": mode,
        "recorded_detected": recorded is None,
        "recording_ranks": R,
    }
    return Trace.from_tokens(
        spec, experts, origin=origin, num_ranks=None if origin is None else R, source=src, metadata=meta
    )
