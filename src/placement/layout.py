"""Where a model's MoE layers sit among its hidden layers: the :class:`LayerLayout`.

Serving stacks index some placement files by **hidden layer** (SGLang's expert-location map has a
row for every hidden layer, dense ones included; TensorRT-LLM keys its load balancer by the
decoder layer index), while a :class:`~placement.Placement` and a trace count **MoE layers** from
0.  The layout maps one to the other: MoE layer ``l`` is hidden layer ``moe_layers[l]``.  It
covers models whose first layers are dense (DeepSeek-V3: MoE layers 3..60 of 61) and models
whose MoE layers are interleaved with dense ones (every second layer).

Traces carry it in their :class:`~placement.trace.ModelSpec` (model presets and SGLang dumps know
it), placements solved from them carry it in :attr:`Placement.layout`, and exports default
their layer indexing from it.

>>> lay = LayerLayout.contiguous(3, 58, num_hidden_layers=61, model="deepseek-v3", hidden_size=7168)
>>> lay.moe_layers[:2], lay.first_moe_layer, lay.describe()
((3, 4), 3, 'MoE layers 3..60 of 61 hidden layers (deepseek-v3, hidden size 7168)')
>>> LayerLayout((1, 3, 5), num_hidden_layers=6).describe()
'MoE layers [1, 3, 5] of 6 hidden layers'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import PlacementInputError, input_error

__all__ = ["LayerLayout"]


def _int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class LayerLayout:
    """The hidden-layer index of every MoE layer of a model.

    Attributes
    ----------
    moe_layers:
        ``tuple[int, ...]`` of length ``num_moe_layers``: MoE layer ``l`` is hidden layer
        ``moe_layers[l]``; strictly increasing, non-negative.
    num_hidden_layers:
        All hidden (decoder) layers of the model, dense ones included; ``None`` when unknown
        (then exports that cover every hidden layer need it given).
    model:
        The model's name, when known (a preset name or the name the trace gave).
    hidden_size:
        Width of a token's hidden state, when known.
    """

    moe_layers: tuple[int, ...]
    num_hidden_layers: int | None = None
    model: str | None = None
    hidden_size: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str | None = None) -> None:
        """Raise :class:`~placement.errors.PlacementInputError` naming the bad field."""
        layers = self.moe_layers
        if not isinstance(layers, (tuple, list)) or not layers or not all(_int(v) for v in layers):
            raise input_error(f"must be a non-empty list of hidden-layer indices, got {layers!r}", source,
                              "layout.moe_layers")
        object.__setattr__(self, "moe_layers", tuple(int(v) for v in layers))
        arr = np.asarray(self.moe_layers)
        if arr[0] < 0 or (np.diff(arr) <= 0).any():
            raise input_error(f"must be non-negative and strictly increasing, got {list(self.moe_layers)}",
                              source, "layout.moe_layers")
        H = self.num_hidden_layers
        if H is not None:
            if not _int(H) or H < 1:
                raise input_error(f"must be a positive integer or null, got {H!r}", source,
                                  "layout.num_hidden_layers")
            if arr[-1] >= H:
                raise input_error(f"{H} hidden layers cannot hold MoE layer {int(arr[-1])}; need at least "
                                  f"{int(arr[-1]) + 1}", source, "layout.num_hidden_layers")
            object.__setattr__(self, "num_hidden_layers", int(H))
        if self.model is not None and not isinstance(self.model, str):
            raise input_error(f"must be a string or null, got {self.model!r}", source, "layout.model")
        if self.hidden_size is not None:
            if not _int(self.hidden_size) or self.hidden_size < 1:
                raise input_error(f"must be a positive integer or null, got {self.hidden_size!r}", source,
                                  "layout.hidden_size")
            object.__setattr__(self, "hidden_size", int(self.hidden_size))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def contiguous(cls, first_moe_layer: int, num_moe_layers: int, num_hidden_layers: int | None = None,
                   *, model: str | None = None, hidden_size: int | None = None) -> LayerLayout:
        """MoE layers ``first_moe_layer .. first_moe_layer + num_moe_layers - 1``."""
        if not _int(first_moe_layer) or first_moe_layer < 0:
            raise input_error(f"must be a non-negative integer, got {first_moe_layer!r}", field="first_moe_layer")
        if not _int(num_moe_layers) or num_moe_layers < 1:
            raise input_error(f"must be a positive integer, got {num_moe_layers!r}", field="num_moe_layers")
        return cls(tuple(range(int(first_moe_layer), int(first_moe_layer) + int(num_moe_layers))),
                   num_hidden_layers, model, hidden_size)

    # ------------------------------------------------------------------ views
    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layers)

    @property
    def first_moe_layer(self) -> int:
        return self.moe_layers[0]

    @property
    def is_contiguous(self) -> bool:
        return self.moe_layers[-1] - self.moe_layers[0] + 1 == len(self.moe_layers)

    def same_layers(self, other: LayerLayout) -> bool:
        """Same MoE-layer indices and, where both know it, the same number of hidden layers."""
        return self.moe_layers == other.moe_layers and (
            self.num_hidden_layers is None or other.num_hidden_layers is None
            or self.num_hidden_layers == other.num_hidden_layers)

    def describe(self) -> str:
        """One phrase: ``MoE layers 3..60 of 61 hidden layers (deepseek-v3, hidden size 7168)``."""
        layers = (f"{self.moe_layers[0]}..{self.moe_layers[-1]}" if self.is_contiguous and len(self.moe_layers) > 1
                  else str(list(self.moe_layers)))
        of = (f" of {self.num_hidden_layers} hidden layers" if self.num_hidden_layers is not None
              else " (number of hidden layers unknown)")
        extra = [x for x in (self.model, None if self.hidden_size is None else f"hidden size {self.hidden_size}")
                 if x]
        return f"MoE layers {layers}{of}" + (f" ({', '.join(extra)})" if extra else "")

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (placement files): ``moe_layers`` as a list."""
        return {"model": self.model, "hidden_size": self.hidden_size, "num_hidden_layers": self.num_hidden_layers,
                "moe_layers": list(self.moe_layers)}

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> LayerLayout:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the key."""
        if not isinstance(data, dict):
            raise input_error(f"must be a mapping, got {type(data).__name__}", source, "layout")
        known = {"model", "hidden_size", "num_hidden_layers", "moe_layers"}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise input_error(f"unknown key(s) {unknown}; known keys are {sorted(known)}", source, "layout")
        if "moe_layers" not in data:
            raise input_error("missing", source, "layout.moe_layers")
        layers = data["moe_layers"]
        if not isinstance(layers, list):
            raise input_error(f"must be a list of hidden-layer indices, got {layers!r}", source, "layout.moe_layers")
        try:
            return cls(tuple(layers), data.get("num_hidden_layers"), data.get("model"), data.get("hidden_size"))
        except PlacementInputError as exc:
            raise input_error(exc.detail, source, exc.field) from exc
