"""EPLB tensors (``phy2log``, ``log2phy``, ``logcnt``) and vLLM/EPLB expert-load tensors.

Placement files (``eplb-json``, ``eplb-pt``)
--------------------------------------------
DeepSeek's EPLB, and the EPLB states of vLLM and SGLang, describe a replicated placement with
three tensors per MoE layer (``P = num_gpus * slots_per_gpu`` physical slots, ``E`` logical
experts, ``R`` = the most replicas any expert has):

``phy2log  int64 [layers, P]``
    logical expert held by physical slot ``p``; slot ``p`` lives on GPU ``p // (P / num_gpus)``;
    ``-1`` for an empty slot (EPLB itself never leaves one).
``log2phy  int64 [layers, E, R]``
    the physical slots of each logical expert in increasing slot order, padded with ``-1``.
``logcnt   int64 [layers, E]``
    replicas of each logical expert (the non-``-1`` entries of ``log2phy``).

The file is a mapping ``{"format": "eplb", "num_gpus": G, "num_experts": E, "phy2log": ...,
"log2phy": ..., "logcnt": ...}``: nested lists in ``.json``, ``int64`` tensors in ``.pt``
(``torch.save``; the dict loads with ``torch.load(weights_only=True)``).  Reading needs only
``phy2log`` (and ``num_gpus``); ``log2phy`` and ``logcnt``, when present, must agree with it.

Expert-load tensors (:func:`load_expert_load`)
----------------------------------------------
Token counts per layer and expert, as EPLB's ``weight`` input or vLLM's EPLB state:
a bare array ``[layers, experts]`` or ``[steps, layers, experts]`` (steps are summed; with
``by_rank=True`` the leading axis is the source rank instead), or a mapping holding one of
``logical_count``, ``expert_load``, ``global_expert_load``, ``weight``, ``counts``, ``load``
(logical experts), or ``expert_load_window [window, layers, P]`` / ``expert_load_pass
[layers, P]`` (physical slots, vLLM) together with ``physical_to_logical_map [layers, P]``,
which folds the slots onto their logical experts.  ``.pt``, ``.npy``, ``.npz`` and ``.json``
files are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import input_error
from ..placement import Placement
from ..trace._trace import ModelSpec, Trace
from ._common import (
    as_int_array,
    count_trace,
    placement_from_phy2log,
    positive_int,
    read_mapping,
    write_json,
    write_torch,
)

__all__ = [
    "EplbTensors",
    "eplb_tensors",
    "placement_from_eplb",
    "write_eplb",
    "read_eplb",
    "load_expert_load",
    "LOGICAL_LOAD_KEYS",
    "PHYSICAL_LOAD_KEYS",
]

LOGICAL_LOAD_KEYS = ("logical_count", "expert_load", "global_expert_load", "weight", "counts", "load")
PHYSICAL_LOAD_KEYS = ("expert_load_window", "expert_load_pass")


@dataclass(frozen=True, eq=False)
class EplbTensors:
    """A placement in EPLB's convention (see the module docstring for the shapes)."""

    phy2log: np.ndarray
    log2phy: np.ndarray
    logcnt: np.ndarray
    num_gpus: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "eplb",
            "num_gpus": self.num_gpus,
            "num_experts": int(self.logcnt.shape[1]),
            "phy2log": self.phy2log,
            "log2phy": self.log2phy,
            "logcnt": self.logcnt,
        }


def eplb_tensors(placement: Placement) -> EplbTensors:
    """EPLB's three tensors of ``placement``.

    >>> import numpy as np
    >>> p = Placement(np.array([[[0, 1], [2, 0]]]), num_experts=3)
    >>> t = eplb_tensors(p)
    >>> t.phy2log.tolist(), t.log2phy.tolist(), t.logcnt.tolist()
    ([[0, 1, 2, 0]], [[[0, 3], [1, -1], [2, -1]]], [[2, 1, 1]])
    """
    phy2log = placement.phy2log()
    L, _ = phy2log.shape
    E = placement.num_experts
    lay, phys = np.nonzero(phy2log >= 0)  # row-major: slots in increasing order within a layer
    key = lay * E + phy2log[lay, phys]
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    rank = np.arange(sorted_key.size) - np.searchsorted(sorted_key, sorted_key, side="left")
    logcnt = np.bincount(key, minlength=L * E).reshape(L, E).astype(np.int64)
    log2phy = np.full((L, E, max(1, int(logcnt.max()))), -1, dtype=np.int64)
    log2phy[sorted_key // E, sorted_key % E, rank] = phys[order]
    return EplbTensors(phy2log=phy2log, log2phy=log2phy, logcnt=logcnt, num_gpus=placement.num_gpus)


def placement_from_eplb(
    phy2log: Any,
    num_gpus: int,
    num_experts: int | None = None,
    *,
    source: str = "<memory>",
    metadata: dict[str, Any] | None = None,
) -> Placement:
    """The :class:`Placement` of ``phy2log [layers, P]`` on ``num_gpus`` GPUs (``P / num_gpus`` slots each).

    ``num_experts`` defaults to the largest id + 1.

    >>> placement_from_eplb([[0, 1, 2, 0]], num_gpus=2).slots.tolist()
    [[[0, 1], [2, 0]]]
    """
    arr = as_int_array(phy2log, source, "phy2log", (2,), "[layers, num_physical]")
    return placement_from_phy2log(arr, num_gpus, num_experts, source, "phy2log", metadata)


def write_eplb(placement: Placement, path: str | os.PathLike[str]) -> Path:
    """Write EPLB's tensors: ``.json`` (nested lists) or ``.pt`` (``int64`` tensors, needs torch)."""
    data = eplb_tensors(placement).to_dict()
    if Path(path).suffix.lower() == ".pt":
        return write_torch(data, path)
    return write_json({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in data.items()}, path)


def read_eplb(
    path: str | os.PathLike[str], *, num_gpus: int | None = None, num_experts: int | None = None
) -> Placement:
    """Read a file written by :func:`write_eplb` (or any mapping holding ``phy2log``; see the module doc)."""
    src = str(path)
    data = read_mapping(path, (".json", ".pt"))
    if not isinstance(data, dict):
        raise input_error(f"must hold a mapping with 'phy2log', got {type(data).__name__}", src)
    phy2log = as_int_array(data.get("phy2log"), src, "phy2log", (2,), "[layers, num_physical]")
    G = _agree(data.get("num_gpus"), num_gpus, src, "num_gpus")
    if G is None:
        raise input_error(
            "the file does not say how many GPUs hold the slots; pass num_gpus (--num-gpus)", src, "num_gpus"
        )
    E = _agree(data.get("num_experts"), num_experts, src, "num_experts")
    placement = placement_from_phy2log(phy2log, G, E, src, "phy2log", {"imported_from": "eplb"})
    ref = eplb_tensors(placement)
    if data.get("logcnt") is not None:
        logcnt = as_int_array(data["logcnt"], src, "logcnt", (2,))
        if not np.array_equal(logcnt, ref.logcnt):
            raise input_error(
                f"disagrees with phy2log (shape {logcnt.shape}, expected {ref.logcnt.shape} holding "
                "each expert's replica count)",
                src,
                "logcnt",
            )
    if data.get("log2phy") is not None:
        log2phy = as_int_array(data["log2phy"], src, "log2phy", (3,))
        if log2phy.shape[:2] != ref.log2phy.shape[:2] or not _same_sets(log2phy, ref.log2phy):
            raise input_error(
                "disagrees with phy2log (each expert must list exactly the slots that hold it)",
                src,
                "log2phy",
            )
    return placement


def _agree(in_file: Any, given: int | None, src: str, field: str) -> int | None:
    if in_file is not None:
        in_file = positive_int(in_file, src, field)
    if given is not None:
        given = positive_int(given, src, field)
        if in_file is not None and in_file != given:
            raise input_error(f"the file says {in_file} but {given} was given", src, field)
        return given
    return in_file


def _same_sets(a: np.ndarray, b: np.ndarray) -> bool:
    """Same non-negative entries per (layer, expert) row, order ignored."""
    width = max(a.shape[2], b.shape[2])
    pad = lambda x: np.pad(x, ((0, 0), (0, 0), (0, width - x.shape[2])), constant_values=-1)  # noqa: E731
    return bool(np.array_equal(np.sort(pad(a), axis=2), np.sort(pad(b), axis=2)))


# --------------------------------------------------------------------------------------- loads
def load_expert_load(
    path: str | os.PathLike[str],
    *,
    model: ModelSpec | str | None = None,
    top_k: int | None = None,
    key: str | None = None,
    first_moe_layer: int | None = None,
    by_rank: bool = False,
) -> Trace:
    """A count trace from vLLM/EPLB expert-load tensors (see the module docstring for the layouts).

    Parameters
    ----------
    path:
        ``.pt``, ``.npy``, ``.npz`` or ``.json`` file.
    model:
        A :class:`ModelSpec` or preset name; checks the expert count and cuts the MoE layers
        out of an all-hidden-layers tensor.  Without it, ``top_k`` is required and the MoE
        layers are those from ``first_moe_layer`` (default: the first layer with any count).
    key:
        Which entry of a mapping to read (default: the first known key present).
    by_rank:
        A 3-D tensor's leading axis is the source rank (kept: ``counts [ranks, layers, experts]``)
        instead of steps (summed).
    """
    src = str(path)
    data = read_mapping(path, (".pt", ".npy", ".npz", ".json"))
    p2l = None
    if isinstance(data, dict):
        if key is not None:
            if key not in data:
                raise input_error(f"no entry '{key}'; the file holds {sorted(map(str, data))}", src, key)
            field = key
        else:
            found = [k for k in (*LOGICAL_LOAD_KEYS, *PHYSICAL_LOAD_KEYS) if k in data]
            if not found:
                raise input_error(
                    f"holds none of {list(LOGICAL_LOAD_KEYS + PHYSICAL_LOAD_KEYS)} (it holds "
                    f"{sorted(map(str, data))}); pass key= (--key) to choose an entry",
                    src,
                )
            field = found[0]
        if field in PHYSICAL_LOAD_KEYS or (
            "physical_to_logical_map" in data and field not in LOGICAL_LOAD_KEYS
        ):
            p2l = as_int_array(
                data.get("physical_to_logical_map"),
                src,
                "physical_to_logical_map",
                (2,),
                "[layers, num_physical]",
            )
        values = data[field]
    else:
        field = "counts"
        values = data
    counts = as_int_array(values, src, field, (2, 3), "[layers, experts] or [steps, layers, experts]")
    if p2l is not None:
        counts = _fold_physical(counts, p2l, src, field, model)
    if counts.ndim == 3 and not by_rank:
        counts = counts.sum(axis=0)
    return count_trace(
        counts,
        model=model,
        top_k=top_k,
        first_moe_layer=first_moe_layer,
        source=src,
        field=field,
        name=Path(src).stem,
        metadata={"format": "expert-load", "key": field, "by_rank": by_rank},
    )


def _fold_physical(
    counts: np.ndarray, p2l: np.ndarray, src: str, field: str, model: ModelSpec | str | None
) -> np.ndarray:
    """``[..., layers, P]`` physical-slot counts to ``[..., layers, E]`` logical counts."""
    if counts.shape[-2:] != p2l.shape:
        raise input_error(
            f"shape {counts.shape} does not end with physical_to_logical_map's {p2l.shape}", src, field
        )
    if p2l.min() < 0:
        raise input_error(
            "holds a negative expert id; every physical slot must name its expert",
            src,
            "physical_to_logical_map",
        )
    from ._common import resolve_model

    spec = resolve_model(model, src)
    E = spec.num_experts if spec is not None else int(p2l.max()) + 1
    if p2l.max() >= E:
        raise input_error(f"expert id {int(p2l.max())} is outside [0, {E})", src, "physical_to_logical_map")
    L, P = p2l.shape
    lead = counts.reshape(-1, L, P)
    codes = (np.arange(L)[:, None] * E + p2l).ravel()
    out = np.stack([np.bincount(codes, weights=c.ravel(), minlength=L * E) for c in lead])
    return out.reshape(*counts.shape[:-2], L, E).round().astype(np.int64)
