"""The :class:`Trace` and :class:`ModelSpec` value types and their validation.

A trace is what the router decided.  Two kinds exist:

* a **token trace** holds, for each sampled token and MoE layer, the top-k routed expert
  ids (``experts: int [tokens, layers, k]``), optionally the gate weights of those choices
  (``weights: float32 [tokens, layers, k]``) and the rank each token started on
  (``origin: int32 [tokens]``, values in ``[0, num_ranks)``);
* a **count trace** holds only how many tokens each expert received
  (``counts: int64 [layers, experts]``, or ``[ranks, layers, experts]`` when the recorder
  split counts by source rank).  Production recorders (SGLang's ``stat`` mode, EPLB load
  tensors) often keep only this.

Statistics and methods state which kind they need (:attr:`Trace.kind`); asking a count
trace for per-token data raises :class:`~placement.errors.NeedsTokenTraceError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._input import describe, strict_int
from ..errors import NeedsTokenTraceError, PlacementInputError, input_error
from ..layout import LayerLayout
from .counting import _load_counts

__all__ = ["ModelSpec", "Trace"]


@dataclass(frozen=True)
class ModelSpec:
    """Shape of an MoE model's routing.

    Parameters
    ----------
    name:
        Free-form model name (``"deepseek-v3"``, ``"custom"``...).
    num_layers:
        Number of MoE layers (dense layers are not counted; see ``first_moe_layer``).
    num_experts:
        Routed experts per MoE layer.
    top_k:
        Routed experts chosen per token and layer.
    num_shared_experts:
        Experts that run for every token (no routing, no network traffic; they use memory).
    num_groups:
        Expert groups for group-limited routing (DeepSeek-V3: 8); 1 means no groups.
        Group ``g`` holds the contiguous expert ids ``[g*E/num_groups, (g+1)*E/num_groups)``.
    topk_groups:
        At most this many groups per token (DeepSeek-V3: 4); ``None`` means no limit.
    first_moe_layer:
        Index of the first MoE layer among the model's hidden layers (DeepSeek-V3: 3), used
        by exports that address all hidden layers.
    hidden_size:
        Width of a token's hidden state (DeepSeek-V3: 7168); the evaluator's default for
        bytes per transmitted token.  ``None`` when unknown.
    intermediate_size:
        Width of a routed expert's FFN (DeepSeek-V3: 2048; shared experts take the same width
        here); with ``hidden_size`` it sizes the expert for the compute model.  ``None`` when unknown.
    weight_dtype:
        Dtype of the expert weights as served (DeepSeek-V3: ``"fp8"``).
    num_hidden_layers:
        All hidden layers of the model, dense ones included (DeepSeek-V3: 61); ``None`` when
        unknown.  With it (or ``moe_layers``) the model's layer layout is known
        (:meth:`layout`), and placements solved from the trace carry it to the exports.
    moe_layers:
        Hidden-layer index of each MoE layer, for models whose MoE layers are interleaved with
        dense ones (``(1, 3, 5, ...)``); ``None`` means ``first_moe_layer ..
        first_moe_layer + num_layers - 1``.  Its first entry must be ``first_moe_layer``.
    """

    name: str
    num_layers: int
    num_experts: int
    top_k: int
    num_shared_experts: int = 0
    num_groups: int = 1
    topk_groups: int | None = None
    first_moe_layer: int = 0
    hidden_size: int | None = None
    intermediate_size: int | None = None
    weight_dtype: str = "bf16"
    num_hidden_layers: int | None = None
    moe_layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.moe_layers, (list, np.ndarray)):  # JSON and npz give lists: keep the spec hashable
            object.__setattr__(self, "moe_layers", tuple(self.moe_layers))

    def layout(self) -> LayerLayout | None:
        """The model's :class:`~placement.layout.LayerLayout`, or ``None`` when neither
        ``num_hidden_layers`` nor ``moe_layers`` is known."""
        if self.num_hidden_layers is None and self.moe_layers is None:
            return None
        layers = self.moe_layers if self.moe_layers is not None else tuple(
            range(self.first_moe_layer, self.first_moe_layer + self.num_layers))
        return LayerLayout(layers, self.num_hidden_layers, self.name, self.hidden_size)

    def validate(self, source: str | None = None) -> None:
        """Raise :class:`~placement.errors.PlacementInputError` naming the bad field.

        Integers must be integers (``True``, ``2.0`` and ``"2"`` are refused), and the sizes stay
        within the limits of :mod:`placement.limits` (``max_layers``, ``max_experts``, ``max_top_k``).
        """
        from ..limits import check_limit

        if not isinstance(self.name, str):
            raise input_error(f"must be a string, got {describe(self.name)}", source, "model.name")
        for name, lim in (("num_layers", "max_layers"), ("num_experts", "max_experts"), ("top_k", "max_top_k")):
            value = strict_int(getattr(self, name), source, f"model.{name}", minimum=1)
            check_limit(lim, value, source, f"model.{name}")
        for name in ("num_shared_experts", "first_moe_layer"):
            value = strict_int(getattr(self, name), source, f"model.{name}", minimum=0)
            check_limit("max_layers" if name == "first_moe_layer" else "max_experts", value, source, f"model.{name}")
        strict_int(self.num_groups, source, "model.num_groups", minimum=1)
        if self.topk_groups is not None:
            strict_int(self.topk_groups, source, "model.topk_groups", minimum=1)
        for name in ("hidden_size", "intermediate_size"):
            value = getattr(self, name)
            if value is not None:
                strict_int(value, source, f"model.{name}", minimum=1, maximum=1 << 24)
        from ..costs import DTYPE_BYTES

        if not isinstance(self.weight_dtype, str) or self.weight_dtype not in DTYPE_BYTES:
            raise input_error(f"unknown dtype {describe(self.weight_dtype)}; choose one of {sorted(DTYPE_BYTES)}",
                              source, "model.weight_dtype")
        if self.top_k > self.num_experts:
            raise input_error(f"top_k={self.top_k} exceeds num_experts={self.num_experts}", source, "model.top_k")
        if self.num_groups < 1 or self.num_experts % self.num_groups:
            raise input_error(f"num_groups={self.num_groups} must be >= 1 and divide num_experts="
                              f"{self.num_experts}", source, "model.num_groups")
        if self.topk_groups is not None:
            if not 1 <= self.topk_groups <= self.num_groups:
                raise input_error(f"topk_groups={self.topk_groups} must lie in [1, num_groups="
                                  f"{self.num_groups}]", source, "model.topk_groups")
            per_group = self.num_experts // self.num_groups
            if self.topk_groups * per_group < self.top_k:
                raise input_error(f"topk_groups={self.topk_groups} groups of {per_group} experts cannot hold "
                                  f"top_k={self.top_k} experts", source, "model.topk_groups")
        self._validate_layout(source)

    def _validate_layout(self, source: str | None) -> None:
        from ..limits import check_limit

        if self.num_hidden_layers is not None:
            value = strict_int(self.num_hidden_layers, source, "model.num_hidden_layers", minimum=1)
            check_limit("max_layers", value, source, "model.num_hidden_layers")
        if self.moe_layers is not None and not isinstance(self.moe_layers, tuple):
            raise input_error(f"must be a list of hidden-layer indices, got {describe(self.moe_layers)}", source,
                              "model.moe_layers")
        if self.moe_layers is not None:
            if len(self.moe_layers) != self.num_layers:
                raise input_error(f"lists {len(self.moe_layers)} layers, but num_layers={self.num_layers}", source,
                                  "model.moe_layers")
            if self.moe_layers and self.moe_layers[0] != self.first_moe_layer:
                raise input_error(f"starts at hidden layer {self.moe_layers[0]}, but first_moe_layer="
                                  f"{self.first_moe_layer}; make them agree", source, "model.moe_layers")
        if self.num_hidden_layers is not None or self.moe_layers is not None:
            try:
                self.layout()
            except PlacementInputError as exc:
                raise input_error(exc.detail, source, (exc.field or "").replace("layout.", "model.")) from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON/YAML/npz metadata)."""
        return {
            "name": self.name,
            "num_layers": int(self.num_layers),
            "num_experts": int(self.num_experts),
            "top_k": int(self.top_k),
            "num_shared_experts": int(self.num_shared_experts),
            "num_groups": int(self.num_groups),
            "topk_groups": None if self.topk_groups is None else int(self.topk_groups),
            "first_moe_layer": int(self.first_moe_layer),
            "hidden_size": None if self.hidden_size is None else int(self.hidden_size),
            "intermediate_size": None if self.intermediate_size is None else int(self.intermediate_size),
            "weight_dtype": self.weight_dtype,
            "num_hidden_layers": None if self.num_hidden_layers is None else int(self.num_hidden_layers),
            "moe_layers": None if self.moe_layers is None else [int(v) for v in self.moe_layers],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> ModelSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the key."""
        if not isinstance(data, dict):
            raise input_error("model metadata must be a mapping", source, "model")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise input_error(f"unknown key(s) {unknown}; known keys are {sorted(known)}", source, "model")
        missing = [k for k in ("num_layers", "num_experts", "top_k") if k not in data]
        if missing:
            raise input_error(f"missing key(s) {missing}", source, "model")
        spec = cls(**{"name": "custom", **data})
        spec.validate(source)
        return spec


@dataclass(frozen=True, eq=False)
class Trace:
    """Routing decisions of an MoE model: per token (token trace) or aggregated (count trace).

    Build one with :meth:`from_tokens` or :meth:`from_counts`, load one with
    :func:`placement.trace.load_trace`, or generate one with
    :func:`placement.trace.synthesize.synthesize`.  Construction validates every field.

    Attributes
    ----------
    model:
        The routing shape (:class:`ModelSpec`).
    experts:
        ``int16`` or ``int32 [tokens, layers, k]`` routed expert ids (token trace), else ``None``.
    weights:
        ``float32 [tokens, layers, k]`` gate weights, or ``None``.
    origin:
        ``int32 [tokens]`` rank each token started on, in ``[0, num_ranks)``, or ``None``.
    counts:
        ``int64 [layers, experts]`` or ``[ranks, layers, experts]`` token counts (count trace), else ``None``.
    num_ranks:
        World size that ``origin`` (or the leading axis of ``counts``) refers to, or ``None``.
    source:
        Where the trace came from (a file name), used in error messages.

    Examples
    --------
    >>> import numpy as np
    >>> from placement.trace import ModelSpec, Trace
    >>> spec = ModelSpec("tiny", num_layers=2, num_experts=4, top_k=1)
    >>> t = Trace.from_tokens(spec, np.array([[[0], [1]], [[2], [3]]]))
    >>> t.kind, t.num_tokens
    ('tokens', 2)
    """

    model: ModelSpec
    experts: np.ndarray | None = None
    weights: np.ndarray | None = None
    origin: np.ndarray | None = None
    counts: np.ndarray | None = None
    num_ranks: int | None = None
    source: str = "<memory>"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_tokens(
        cls,
        model: ModelSpec,
        experts: np.ndarray,
        *,
        weights: np.ndarray | None = None,
        origin: np.ndarray | None = None,
        num_ranks: int | None = None,
        source: str = "<memory>",
        metadata: dict[str, Any] | None = None,
    ) -> Trace:
        """A token trace from ``experts [tokens, layers, k]`` (ids are converted to the smallest int type)."""
        experts = np.asarray(experts)
        if experts.dtype.kind not in "iu":
            raise input_error(f"expert ids must be integers, got dtype {experts.dtype}", source, "experts")
        if experts.size == 0 or (experts.min() >= 0 and experts.max() < model.num_experts):
            # out-of-range ids are reported, with their position, by _validate
            dtype = np.int16 if model.num_experts <= np.iinfo(np.int16).max else np.int32
            experts = experts.astype(dtype, copy=False)
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float32)
        if origin is not None:
            origin = np.asarray(origin)
            if origin.dtype.kind not in "iu":
                raise input_error(f"origin ranks must be integers, got dtype {origin.dtype}", source, "origin")
            origin = origin.astype(np.int32, copy=False)
            if num_ranks is None and origin.size:
                num_ranks = int(origin.max()) + 1
        return cls(model=model, experts=experts, weights=weights, origin=origin, num_ranks=num_ranks,
                   source=source, metadata=dict(metadata or {}))

    @classmethod
    def from_counts(
        cls,
        model: ModelSpec,
        counts: np.ndarray,
        *,
        source: str = "<memory>",
        metadata: dict[str, Any] | None = None,
    ) -> Trace:
        """A count trace from ``counts [layers, experts]`` or ``[ranks, layers, experts]``."""
        counts = np.asarray(counts)
        num_ranks = int(counts.shape[0]) if counts.ndim == 3 else None
        return cls(model=model, counts=counts, num_ranks=num_ranks, source=source,
                   metadata=dict(metadata or {}))

    # ------------------------------------------------------------------ views
    @property
    def kind(self) -> str:
        """``"tokens"`` for a token trace, ``"counts"`` for a count-only trace."""
        return "tokens" if self.experts is not None else "counts"

    @property
    def num_tokens(self) -> int:
        """Sampled tokens (token trace) or tokens per layer implied by the counts (count trace)."""
        if self.experts is not None:
            return int(self.experts.shape[0])
        assert self.counts is not None
        per_layer = self.layer_counts().sum(axis=1)
        return int(round(float(per_layer.max()) / self.model.top_k)) if per_layer.size else 0

    @property
    def num_layers(self) -> int:
        return self.model.num_layers

    @property
    def num_experts(self) -> int:
        return self.model.num_experts

    @property
    def top_k(self) -> int:
        return self.model.top_k

    def layer_counts(self) -> np.ndarray:
        """``int64 [layers, experts]``: tokens routed to each expert (summed over ranks)."""
        if self.experts is not None:
            return _load_counts(self.experts, self.model.num_experts)
        assert self.counts is not None
        return self.counts.sum(axis=0) if self.counts.ndim == 3 else self.counts

    def require_tokens(self, what: str) -> np.ndarray:
        """Return ``experts`` or raise :class:`NeedsTokenTraceError` saying ``what`` needs it."""
        if self.experts is None:
            raise NeedsTokenTraceError(
                f"{what} needs a per-token trace ([tokens, layers, k] expert ids), but this trace only "
                "holds expert load counts; record per-token routing (e.g. SGLang's per_token mode) or "
                "use a load-based method",
                source=self.source,
            )
        return self.experts

    def head(self, num_tokens: int) -> Trace:
        """The first ``num_tokens`` tokens of a token trace (a cheap view)."""
        experts = self.require_tokens("Trace.head")
        n = int(num_tokens)
        return Trace(
            model=self.model,
            experts=experts[:n],
            weights=None if self.weights is None else self.weights[:n],
            origin=None if self.origin is None else self.origin[:n],
            num_ranks=self.num_ranks,
            source=self.source,
            metadata=dict(self.metadata),
        )

    def summary(self) -> dict[str, Any]:
        """A plain dict describing the trace (used by ``placement trace info``)."""
        load = self.layer_counts().astype(np.float64)
        mean = load.mean(axis=1, keepdims=True)
        hot = np.divide(load.max(axis=1), mean[:, 0], out=np.zeros(load.shape[0]), where=mean[:, 0] > 0)
        out: dict[str, Any] = {
            "source": self.source,
            "kind": self.kind,
            **{f"model.{k}": v for k, v in self.model.to_dict().items()},
            "tokens": self.num_tokens,
            "selections": int(load.sum()),
            "has_weights": self.weights is not None,
            "has_origin": self.origin is not None or (self.counts is not None and self.counts.ndim == 3),
            "num_ranks": self.num_ranks,
            "hot_over_mean_median": float(np.median(hot)) if hot.size else 0.0,
            "hot_over_mean_max": float(hot.max()) if hot.size else 0.0,
        }
        return out


def _validate(trace: Trace) -> None:
    """Check every field of ``trace``; raise an error naming the source, field and fix."""
    src = trace.source
    spec = trace.model
    if not isinstance(spec, ModelSpec):
        raise input_error(f"model must be a ModelSpec, got {type(spec).__name__}", src, "model")
    spec.validate(src)
    if (trace.experts is None) == (trace.counts is None):
        raise input_error("a trace holds either per-token expert ids or expert counts (exactly one)", src,
                          "experts/counts")
    L, E, k = spec.num_layers, spec.num_experts, spec.top_k
    if trace.experts is not None:
        ex = trace.experts
        if not isinstance(ex, np.ndarray) or ex.ndim != 3:
            raise input_error(f"expected shape [tokens, layers, k], got {getattr(ex, 'shape', None)}", src,
                              "experts")
        if ex.dtype.kind not in "iu":
            raise input_error(f"expert ids must be integers, got dtype {ex.dtype}", src, "experts")
        if ex.shape[0] == 0:
            raise input_error("the trace is empty (0 tokens); record or generate at least one token", src,
                              "experts")
        if ex.shape[1] != L or ex.shape[2] != k:
            raise input_error(f"shape {ex.shape} does not match [tokens, layers={L}, k={k}] from the model "
                              "metadata", src, "experts")
        _check_expert_ids(ex, spec, src)
        if trace.weights is not None:
            w = trace.weights
            if not isinstance(w, np.ndarray) or w.shape != ex.shape:
                raise input_error(f"shape {getattr(w, 'shape', None)} must equal the expert ids' shape "
                                  f"{ex.shape}", src, "weights")
            if not np.isfinite(w).all():
                t, layer, j = np.argwhere(~np.isfinite(w))[0]
                raise input_error(f"non-finite gate weight at token {t}, layer {layer}, slot {j}", src, "weights")
        if trace.origin is not None:
            o = trace.origin
            if not isinstance(o, np.ndarray) or o.shape != (ex.shape[0],):
                raise input_error(f"shape {getattr(o, 'shape', None)} must be [tokens]=({ex.shape[0]},)", src,
                                  "origin")
            if o.dtype.kind not in "iu":
                raise input_error(f"origin ranks must be integers, got dtype {o.dtype}", src, "origin")
            if trace.num_ranks is None or trace.num_ranks < 1:
                raise input_error("num_ranks must be a positive integer when origins are given", src, "num_ranks")
            if o.min() < 0 or o.max() >= trace.num_ranks:
                raise input_error(f"origin ranks must lie in [0, num_ranks={trace.num_ranks}), got "
                                  f"[{int(o.min())}, {int(o.max())}]", src, "origin")
    else:
        c = trace.counts
        if trace.weights is not None or trace.origin is not None:
            raise input_error("a count trace cannot carry per-token weights or origins", src, "weights/origin")
        if not isinstance(c, np.ndarray) or c.ndim not in (2, 3):
            raise input_error(f"expected shape [layers, experts] or [ranks, layers, experts], got "
                              f"{getattr(c, 'shape', None)}", src, "counts")
        if c.shape[-2:] != (L, E):
            raise input_error(f"shape {c.shape} does not match [.., layers={L}, experts={E}]", src, "counts")
        if c.dtype.kind == "f":
            if not np.isfinite(c).all():
                raise input_error("counts contain NaN or infinity", src, "counts")
            if not np.array_equal(c, np.round(c)):
                raise input_error("counts must be whole numbers of tokens", src, "counts")
        elif c.dtype.kind not in "iu":
            raise input_error(f"counts must be numbers, got dtype {c.dtype}", src, "counts")
        if (c < 0).any():
            raise input_error("counts must be non-negative", src, "counts")
        if c.max() > (1 << 62) // max(c.size, 1):
            raise input_error(f"count {c.max():.0f} is too large: the counts must sum to less than 2**62 tokens", src,
                              "counts")
        if c.sum() == 0:
            raise input_error("the trace is empty (all counts are zero)", src, "counts")
        object.__setattr__(trace, "counts", c.astype(np.int64, copy=False))
        if c.ndim == 3:
            object.__setattr__(trace, "num_ranks", int(c.shape[0]))


#: tokens per block when validating expert ids (bounded temporaries on million-token traces)
_VALIDATE_BLOCK = 1 << 16


def _check_expert_ids(ex: np.ndarray, spec: ModelSpec, src: str) -> None:
    """Range, distinctness and group-limit checks of ``ex [tokens, layers, k]``, block by block.

    Distinctness compares the ``k * (k - 1) / 2`` slot pairs directly and the group limit
    counts set bits of a per-token group mask, so no block is ever sorted.
    """
    E, k = spec.num_experts, spec.top_k
    grouped = spec.topk_groups is not None and spec.num_groups > 1
    per_group = E // spec.num_groups
    for start in range(0, ex.shape[0], _VALIDATE_BLOCK):
        block = ex[start:start + _VALIDATE_BLOCK]
        if int(block.min()) < 0 or int(block.max()) >= E:
            t, layer, j = np.argwhere((block < 0) | (block >= E))[0]
            raise input_error(f"expert id {int(block[t, layer, j])} at token {start + t}, layer {layer}, slot {j} "
                              f"is outside [0, {E}); check num_experts or the id base (0-based)", src, "experts")
        cols = [np.ascontiguousarray(block[:, :, j]) for j in range(k)]
        for a in range(k):
            for b in range(a + 1, k):
                same = cols[a] == cols[b]
                if same.any():
                    t, layer = np.argwhere(same)[0]
                    raise input_error(f"token {start + t} at layer {layer} selects expert {int(block[t, layer, a])} "
                                      "twice in its top-k; each token's top-k ids must be distinct", src, "experts")
        if grouped and spec.num_groups > 64:  # too many groups for a bit mask: sort the group ids
            gs = np.sort(block // per_group, axis=2)
            used = 1 + (gs[:, :, 1:] != gs[:, :, :-1]).sum(axis=2)
        elif grouped:
            mask = np.zeros(block.shape[:2], dtype=np.uint64)
            one = np.uint64(1)
            for col in cols:
                mask |= np.left_shift(one, (col // per_group).astype(np.uint64))
            used = _popcount(mask)
        if grouped:
            if (used > spec.topk_groups).any():
                t, layer = np.argwhere(used > spec.topk_groups)[0]
                raise input_error(f"token {start + t} at layer {layer} uses {int(used[t, layer])} expert groups, "
                                  f"more than topk_groups={spec.topk_groups}", src, "experts")


def _popcount(mask: np.ndarray) -> np.ndarray:
    """Set bits of each ``uint64`` (``numpy.bitwise_count`` where numpy has it)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(mask)
    used = np.zeros(mask.shape, dtype=np.int64)
    bits = mask.copy()
    while bits.any():
        used += (bits & np.uint64(1)).astype(np.int64)
        bits >>= np.uint64(1)
    return used
