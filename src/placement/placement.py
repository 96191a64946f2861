"""The :class:`Placement`: which logical expert each physical slot of each GPU holds, per layer.

A placement is a dense integer array ``slots [layers, gpus, slots_per_gpu]``: entry
``slots[l, g, j]`` is the logical expert held by slot ``j`` of GPU ``g`` at MoE layer ``l``,
or ``-1`` for an empty slot.  Physical slot ``p = g * slots_per_gpu + j`` is the EPLB/SGLang
"physical expert" index.  An expert may have several replicas (several slots hold it); which
replica a token uses is the evaluator's rule (nearest to the token, ties shared evenly; see
:mod:`placement.evaluate`).

Files are JSON or YAML with a schema version and the metadata of what produced them::

    {"schema": "placement/1", "num_layers": 2, "num_experts": 4, "num_gpus": 2,
     "slots_per_gpu": 2, "slots": [[[0, 1], [2, 3]], [[0, 2], [1, 3]]],
     "metadata": {"method": "contiguous", ...},
     "layout": {"model": "m", "hidden_size": 4096, "num_hidden_layers": 3, "moe_layers": [1, 2]}}

``layout`` (optional; files without it have an unknown layout) says which hidden layer each MoE
layer is (:class:`~placement.layout.LayerLayout`); exports that index hidden layers use it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._input import describe, int_array, load_text_mapping, strict_int
from ._io import atomic_write_text
from .errors import input_error
from .layout import LayerLayout
from .limits import check_limit

__all__ = ["Placement", "load_placement", "SCHEMA"]

SCHEMA = "placement/1"


@dataclass(frozen=True, eq=False)
class Placement:
    """Expert-to-GPU placement of every MoE layer, replicas allowed.

    Attributes
    ----------
    slots:
        ``int32 [layers, gpus, slots_per_gpu]`` logical expert per physical slot, ``-1`` = empty.
    num_experts:
        Logical (routed) experts per layer; every one must appear at least once in every layer.
    metadata:
        What produced the placement (method, parameters, objective, bound...), JSON-serialisable.
    routing:
        Optional ``float64 [layers, gpus, experts, max_replicas]`` routing fractions: entry
        ``[l, u, e, r]`` is the share of the selections of expert ``e`` sent from GPU ``u`` that
        replica ``r`` serves, replicas in physical-slot order (:meth:`replica_slots`); each
        ``[l, u, e, :]`` sums to 1 over the expert's replicas and is 0 beyond them.  What the
        ``split`` replica rule of the evaluator follows (SGLang's LP dispatch, our optimiser);
        ``None`` when the serving stack's own rule decides.
    layout:
        Optional :class:`~placement.layout.LayerLayout`: the model, and the hidden-layer index of each
        MoE layer (its ``moe_layers`` has ``layers`` entries); ``None`` when unknown.  Placements
        solved from a trace whose model knows its layout carry it.

    Examples
    --------
    >>> import numpy as np
    >>> p = Placement.from_assignment(np.array([[0, 0, 1, 1], [0, 1, 0, 1]]), num_gpus=2)
    >>> p.slots[1].tolist()
    [[0, 2], [1, 3]]
    >>> p.gpus_of(1, 3).tolist()
    [1]
    """

    slots: np.ndarray
    num_experts: int
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"
    routing: np.ndarray | None = field(default=None, repr=False)
    layout: LayerLayout | None = None

    def __post_init__(self) -> None:
        slots = np.asarray(self.slots)
        src = self.source
        if slots.ndim != 3:
            raise input_error(f"expected shape [layers, gpus, slots_per_gpu], got {slots.shape}", src, "slots")
        if slots.dtype.kind not in "iu":
            raise input_error(f"expert ids must be integers, got dtype {slots.dtype}", src, "slots")
        if 0 in slots.shape:
            raise input_error(f"empty placement (shape {slots.shape})", src, "slots")
        E = int(self.num_experts)
        if E < 1:
            raise input_error(f"must be positive, got {self.num_experts}", src, "num_experts")
        if slots.min() < -1 or slots.max() >= E:
            bad = np.argwhere((slots < -1) | (slots >= E))[0]
            raise input_error(f"expert id {int(slots[tuple(bad)])} at layer {bad[0]}, gpu {bad[1]}, slot {bad[2]} "
                              f"is outside [0, {E}) (use -1 for an empty slot)", src, "slots")
        present = np.zeros((slots.shape[0], E + 1), dtype=bool)
        present[np.arange(slots.shape[0])[:, None], slots.reshape(slots.shape[0], -1) + 1] = True
        missing = ~present[:, 1:]
        if missing.any():
            layer, expert = np.argwhere(missing)[0]
            raise input_error(f"expert {expert} of layer {layer} is on no GPU; every expert needs at least one "
                              "slot", src, "slots")
        object.__setattr__(self, "slots", slots.astype(np.int32, copy=False))
        object.__setattr__(self, "num_experts", E)
        if self.routing is not None:
            object.__setattr__(self, "routing", self._checked_routing(self.routing))
        if self.layout is not None:
            if not isinstance(self.layout, LayerLayout):
                raise input_error(f"must be a LayerLayout, got {type(self.layout).__name__}", src, "layout")
            if self.layout.num_moe_layers != slots.shape[0]:
                raise input_error(f"lists {self.layout.num_moe_layers} MoE layers, but the placement has "
                                  f"{slots.shape[0]}", src, "layout.moe_layers")

    def _checked_routing(self, routing: Any) -> np.ndarray:
        src = self.source
        try:
            table = np.array(routing, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise input_error(f"must be a [layers][gpus][experts][replicas] nested list of numbers ({exc})", src,
                              "routing") from exc
        nrep = self.num_replicas()  # [L, E]
        want = (self.num_layers, self.num_gpus, self.num_experts, int(nrep.max()))
        if table.shape != want:
            raise input_error(f"expected shape {list(want)} [layers, gpus, experts, max replicas], got "
                              f"{list(table.shape)}", src, "routing")
        if not np.isfinite(table).all() or (table < 0).any():
            raise input_error("fractions must be finite and >= 0", src, "routing")
        beyond = np.arange(want[3])[None, None, :] >= nrep[:, :, None]  # [L, E, R]
        if (table * beyond[:, None]).any():
            layer, gpu, expert, r = np.argwhere(table * beyond[:, None] > 0)[0]
            raise input_error(f"layer {layer}, gpu {gpu}, expert {expert} gives a share to replica {r} but the expert "
                              f"has {nrep[layer, expert]} replicas", src, "routing")
        sums = table.sum(axis=3)
        if np.abs(sums - 1.0).max() > 1e-6:
            layer, gpu, expert = np.argwhere(np.abs(sums - 1.0) > 1e-6)[0]
            raise input_error(f"the shares of layer {layer}, gpu {gpu}, expert {expert} sum to "
                              f"{sums[layer, gpu, expert]:.6g}, not 1", src, "routing")
        table = table / sums[..., None]
        table.setflags(write=False)
        return table

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_assignment(cls, assignment: np.ndarray, num_gpus: int, *, slots_per_gpu: int | None = None,
                        metadata: dict[str, Any] | None = None) -> Placement:
        """One replica per expert: ``assignment int [layers, experts]`` gives each expert's GPU.

        Experts fill a GPU's slots in increasing id order; ``slots_per_gpu`` defaults to the
        largest number of experts any GPU holds in any layer.
        """
        a = np.asarray(assignment)
        if a.ndim != 2:
            raise input_error(f"expected shape [layers, experts], got {a.shape}", field="assignment")
        if a.dtype.kind not in "iu":
            raise input_error(f"GPU ids must be integers, got dtype {a.dtype}", field="assignment")
        if a.size and (a.min() < 0 or a.max() >= num_gpus):
            raise input_error(f"GPU ids must lie in [0, {num_gpus})", field="assignment")
        L, E = a.shape
        per_gpu = np.zeros((L, num_gpus), dtype=np.int64)
        np.add.at(per_gpu, (np.repeat(np.arange(L), E), a.ravel()), 1)
        need = int(per_gpu.max()) if per_gpu.size else 0
        S = need if slots_per_gpu is None else int(slots_per_gpu)
        if S < need:
            raise input_error(f"a GPU holds {need} experts of one layer but slots_per_gpu={S}",
                              field="slots_per_gpu")
        slots = np.full((L, num_gpus, max(S, 1)), -1, dtype=np.int32)
        # position of each expert among its GPU's experts (stable: increasing expert id)
        order = np.argsort(a, axis=1, kind="stable")
        sorted_gpu = np.take_along_axis(a, order, axis=1)
        starts = np.cumsum(per_gpu, axis=1) - per_gpu  # [L, G] first index of each GPU's run
        first = np.take_along_axis(starts, sorted_gpu, axis=1)
        pos = np.arange(E)[None, :] - first
        layer_idx = np.repeat(np.arange(L), E).reshape(L, E)
        slots[layer_idx, sorted_gpu, pos] = order
        return cls(slots=slots, num_experts=E, metadata=dict(metadata or {}))

    # ------------------------------------------------------------------ views
    @property
    def num_layers(self) -> int:
        return int(self.slots.shape[0])

    @property
    def num_gpus(self) -> int:
        return int(self.slots.shape[1])

    @property
    def slots_per_gpu(self) -> int:
        return int(self.slots.shape[2])

    def replica_counts(self) -> np.ndarray:
        """``int32 [layers, experts, gpus]``: copies of each expert on each GPU."""
        L, G, S = self.slots.shape
        E = self.num_experts
        out = np.zeros(L * E * G, dtype=np.int32)
        lay = np.repeat(np.arange(L), G * S)
        gpu = np.tile(np.repeat(np.arange(G), S), L)
        exp = self.slots.ravel().astype(np.int64)
        keep = exp >= 0
        np.add.at(out, (lay[keep] * E + exp[keep]) * G + gpu[keep], 1)
        return out.reshape(L, E, G)

    def replica_slots(self) -> np.ndarray:
        """``int64 [layers, experts, max_replicas]``: physical slot ids ``g * slots_per_gpu + j`` of each
        expert's replicas in increasing order (the order serving stacks list them), ``-1`` padded.

        >>> p = Placement(np.array([[[0, 1], [1, -1]]]), num_experts=2)
        >>> p.replica_slots()[0].tolist()
        [[0, -1], [1, 2]]
        """
        L = self.num_layers
        flat = self.slots.reshape(L, -1).astype(np.int64)  # [L, P]
        E = self.num_experts
        lay, phys = np.nonzero(flat >= 0)  # row-major: increasing physical id within a layer
        key = lay * E + flat[lay, phys]
        order = np.argsort(key, kind="stable")
        key, lay, phys = key[order], lay[order], phys[order]
        first = np.searchsorted(key, key, side="left")
        rank = np.arange(key.size) - first
        R = int(rank.max()) + 1 if rank.size else 1
        out = np.full((L, E, R), -1, dtype=np.int64)
        out[lay, key - lay * E, rank] = phys
        return out

    def num_replicas(self) -> np.ndarray:
        """``int32 [layers, experts]``: replicas of each expert (>= 1)."""
        return self.replica_counts().sum(axis=2, dtype=np.int32)

    @property
    def has_replicas(self) -> bool:
        """True when some expert occupies more than one slot in some layer."""
        return bool((self.slots >= 0).sum() > self.num_layers * self.num_experts)

    def gpus_of(self, layer: int, expert: int) -> np.ndarray:
        """``int64 [replicas]``: GPUs holding ``expert`` at ``layer`` (repeated if a GPU holds two copies)."""
        g, _ = np.nonzero(self.slots[layer] == expert)
        return g

    def assignment(self) -> np.ndarray:
        """``int64 [layers, experts]`` GPU of each expert; only for placements without replicas."""
        if self.has_replicas:
            raise input_error("this placement has replicas; use replica_counts() instead of assignment()",
                              self.source, "slots")
        L, G, S = self.slots.shape
        out = np.empty((L, self.num_experts), dtype=np.int64)
        lay, gpu, slot = np.nonzero(self.slots >= 0)
        out[lay, self.slots[lay, gpu, slot]] = gpu
        return out

    def slots_used(self) -> np.ndarray:
        """``int64 [gpus]``: occupied slots summed over layers (the memory an expert weight set takes)."""
        return (self.slots >= 0).sum(axis=(0, 2)).astype(np.int64)

    def phy2log(self) -> np.ndarray:
        """``int64 [layers, gpus * slots_per_gpu]``: EPLB's physical-to-logical map (-1 for empty slots)."""
        return self.slots.reshape(self.num_layers, -1).astype(np.int64)

    def summary(self) -> dict[str, Any]:
        counts = self.num_replicas()
        per_gpu = (self.slots >= 0).sum(axis=2)
        return {
            "layers": self.num_layers,
            "experts": self.num_experts,
            "gpus": self.num_gpus,
            "slots_per_gpu": self.slots_per_gpu,
            "replicated_experts": int((counts > 1).sum()),
            "extra_replicas": int((counts - 1).sum()),
            "experts_per_gpu_min": int(per_gpu.min()),
            "experts_per_gpu_max": int(per_gpu.max()),
            "method": self.metadata.get("method"),
        }

    def same_as(self, other: Placement) -> bool:
        """Same experts on the same GPUs in every layer (slot order within a GPU ignored)."""
        return (self.num_experts == other.num_experts and self.slots.shape[:2] == other.slots.shape[:2]
                and np.array_equal(self.replica_counts(), other.replica_counts()))

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "num_layers": self.num_layers,
            "num_experts": self.num_experts,
            "num_gpus": self.num_gpus,
            "slots_per_gpu": self.slots_per_gpu,
            "slots": self.slots.tolist(),
            "metadata": _jsonable(self.metadata),
            **({"routing": self.routing.tolist()} if self.routing is not None else {}),
            **({"layout": self.layout.to_dict()} if self.layout is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> Placement:
        if not isinstance(data, dict):
            raise input_error("a placement file must hold a mapping at the top level", source)
        schema = data.get("schema")
        if schema != SCHEMA:
            raise input_error(f"unsupported schema {schema!r}; this placement reads {SCHEMA!r}", source, "schema")
        for key in ("num_experts", "slots"):
            if key not in data:
                raise input_error("missing", source, key)
        num_experts = strict_int(data["num_experts"], source, "num_experts", minimum=1)
        check_limit("max_experts", num_experts, source, "num_experts")
        # ids up to 2**31 - 1 reach the located range check of __post_init__; beyond, they would wrap
        slots = int_array(data["slots"], source, "slots", lo=-1, hi=np.iinfo(np.int32).max,
                          shape_doc="[layers][gpus][slots]")
        check_limit("max_placement_slots", slots.size, source, "slots")
        for key, axis in (("num_layers", 0), ("num_gpus", 1), ("slots_per_gpu", 2)):
            if key in data:
                declared = strict_int(data[key], source, key, minimum=1)
                if slots.ndim == 3 and declared != slots.shape[axis]:
                    raise input_error(f"says {declared} but 'slots' has {slots.shape[axis]}", source, key)
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise input_error("must be a mapping", source, "metadata")
        routing = data.get("routing")
        if routing is not None:
            _check_numbers(routing, source, "routing")
        layout = None if data.get("layout") is None else LayerLayout.from_dict(data["layout"], source)
        return cls(slots=slots, num_experts=num_experts, metadata=metadata, source=source, routing=routing,
                   layout=layout)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON (``.json``) or YAML (``.yaml``/``.yml``) atomically."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == ".json":
            text = json.dumps(self.to_dict(), indent=None, separators=(",", ":")) + "\n"
        elif suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        else:
            raise input_error(f"unknown placement file extension '{p.suffix}'; use .json, .yaml or .yml",
                              str(path))
        atomic_write_text(p, text)
        return p


def load_placement(path: str | os.PathLike[str]) -> Placement:
    """Read a placement written by :meth:`Placement.save` (JSON or YAML)."""
    src = str(path)
    if Path(path).suffix.lower() not in (".json", ".yaml", ".yml"):
        raise input_error(f"unknown placement file extension '{Path(path).suffix}'; use .json, .yaml or .yml", src)
    return Placement.from_dict(load_text_mapping(path, src), source=src)


def _check_numbers(value: Any, source: str, field: str) -> None:
    """Every leaf of the nested lists ``value`` is an int or a float (booleans and text refused)."""
    level = value if isinstance(value, list) else [value]
    while level:
        nested = []
        for x in level:
            if isinstance(x, list):
                nested.extend(x)
            elif isinstance(x, bool) or not isinstance(x, (int, float)):
                raise input_error(f"must hold numbers only, found {describe(x)} ({type(x).__name__})", source,
                                  field)
        level = nested


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays inside metadata to plain Python for JSON/YAML."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value
