"""Synthetic routing traces calibrated to real MoE load statistics.

The generative model
--------------------
**Popularity.**  At every MoE layer ``l`` each routed expert ``e`` gets a popularity
``p[l, e] ∝ exp(sigma_l * z[l, e])`` with ``z`` standard normal (a log-normal popularity
profile).  ``sigma_l`` is ``skew`` times a per-layer factor ``exp(skew_spread * n_l)``
(``n_l`` standard normal, the factors rescaled to mean 1), so ``skew`` is the mean over
layers and ``skew_spread`` makes some layers nearly balanced and a few very skewed.  The
log-normal profile, not a pure Zipf law, is what matches the real DeepSeek-V3 recordings
(see ``docs/synthetic-traces.md``): over its 128 busiest experts it *is* Zipf-like
(log-log slope about ``-0.63 * skew``), but its cold tail falls off faster, which the
recordings' Gini coefficients and top-32 shares need.

**Latent positions and affinity.**  Each layer lays its experts out on ``[0, 1)`` in a
random order (fixed per layer by the seed), expert ``e`` taking an interval of length
``p[l, e]``.  Each of a token's ``k`` slots carries a latent position ``u``; the slot's
expert at layer ``l`` is the one whose interval holds ``u``.  At the first layer every
``u`` is uniform; at each next layer a slot *keeps* its ``u`` with probability
``affinity`` and draws a fresh uniform one otherwise.  Because ``u`` stays uniform, every
layer's marginal load is its popularity whatever the affinity, while a kept ``u`` sends
the token from expert ``i`` at layer ``l`` to the one to three experts of layer ``l + 1``
whose intervals overlap ``i``'s: a fixed random successor map per layer boundary, with
no relation between expert ids (a contiguous id sharding gains nothing from it).
``affinity = 0`` gives independent layers.

**Routing constraints.**  A token's ``k`` ids are made distinct by redrawing later
duplicates.  With group-limited routing (``topk_groups``, DeepSeek-V3), a token whose
slots fall in more than ``topk_groups`` groups keeps the ``topk_groups`` groups holding
most of its slots (ties: the group of slot 0, then a random order) and redraws the other
slots inside those groups, in proportion to popularity.  Redraws move the latent
position into the new expert's interval, so affinity continues from the expert actually
chosen.  These redraws flatten the realised load a little; the presets' ``skew`` is
calibrated on the realised load, not on ``p``.

**Gate weights.**  ``float32 [tokens, layers, k]``: a softmax over ``k`` logits whose
gaps between consecutive slots are exponential with mean ``gate_gap``, so slot 0 holds
the largest weight, weights decrease along the slots and each row sums to 1 (each
(token, layer) picks one of 65,536 such vectors drawn from the seed).

Everything is vectorised over blocks of tokens; 1 M tokens of DeepSeek-V3
(58 layers, top-8) take seconds (``benchmarks/bench_synthesize.py``).

Examples
--------
>>> from placement.trace.synthesize import synthesize, calibration_stats
>>> t = synthesize("mixtral-8x7b", 1000, seed=1)
>>> t.experts.shape, t.experts.dtype.name, t.weights.dtype.name
((1000, 32, 2), 'int16', 'float32')
>>> bool(abs(t.weights.sum(axis=2) - 1).max() < 1e-6)
True
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import input_error
from ._trace import ModelSpec, Trace

__all__ = [
    "DEEPSEEK_V3_TARGETS",
    "MIXTRAL_8X7B_EFFECTIVE_TOKENS",
    "MIXTRAL_8X7B_TARGETS",
    "MODEL_PRESETS",
    "SynthPreset",
    "affinity_stats",
    "calibration_stats",
    "layer_popularity",
    "synthesize",
]

#: version of the generative model, stored in each trace's metadata
GENERATOR_VERSION = 1
#: latent positions are integers in [0, _CELLS): each layer's expert intervals are runs of cells
_CELLS = 1 << 16
#: cells of the per-group lookup tables used to redraw a slot inside a group
_GROUP_BITS = 12
_GROUP_CELLS = 1 << _GROUP_BITS
#: most expert groups the group-limited sampler handles (its lookup table has 2**groups rows)
_MAX_GROUPS = 10
#: default cap on generator threads
_MAX_WORKERS = 4
#: distinct gate-weight vectors a trace draws from
_GATE_ROWS = 1 << 16
#: tokens generated together (a block's random streams depend on the seed and block index only)
_BLOCK = 1 << 15
#: rejection rounds before the exact draw (over all experts) resolves the few slots left
_MAX_ROUNDS = 8


@dataclass(frozen=True)
class SynthPreset:
    """A model's routing shape plus the generator's default parameters for it.

    Attributes
    ----------
    spec:
        The routing shape (:class:`~placement.trace.ModelSpec`).
    skew:
        Mean over layers of the log-normal popularity spread ``sigma_l`` (0 = uniform).
    skew_spread:
        Standard deviation of ``log(sigma_l)`` across layers.
    affinity:
        Probability that a slot keeps its latent position from one layer to the next.
    gate_gap:
        Mean logit gap between consecutive top-k choices (gate weights).
    note:
        Where the defaults come from.
    """

    spec: ModelSpec
    skew: float
    skew_spread: float
    affinity: float
    gate_gap: float
    note: str = ""


# DeepSeek-V3 calibration (tests/test_synthesize.py checks it; docs/synthetic-traces.md has the table).
_DSV3_SKEW = 0.78
_DSV3_SPREAD = 0.12
_DSV3 = dict(num_layers=58, num_experts=256, top_k=8, num_shared_experts=1, num_groups=8, topk_groups=4,
             first_moe_layer=3, hidden_size=7168, intermediate_size=2048, weight_dtype="fp8", num_hidden_layers=61)
_FINE_NOTE = ("skew and skew_spread reuse the DeepSeek-V3 calibration (same per-expert log-popularity "
              "spread); affinity is a moderate guess, no public per-token recording was available")

MODEL_PRESETS: dict[str, SynthPreset] = {
    "mixtral-8x7b": SynthPreset(
        ModelSpec("mixtral-8x7b", num_layers=32, num_experts=8, top_k=2, hidden_size=4096,
                  intermediate_size=14336, num_hidden_layers=32),
        skew=0.22, skew_spread=0.15, affinity=0.21, gate_gap=1.0,
        note="skew, skew_spread and affinity fitted to a per-token vLLM recording of Mixtral-8x7B-Instruct "
             "(CALIBRATION.md: successor predictability, mutual information, hottest expert), compared at "
             "the recording's effective sample size (MIXTRAL_8X7B_TARGETS)"),
    "deepseekmoe-16b": SynthPreset(
        ModelSpec("deepseekmoe-16b", num_layers=27, num_experts=64, top_k=6, num_shared_experts=2,
                  first_moe_layer=1, hidden_size=2048, intermediate_size=1408, num_hidden_layers=28),
        skew=_DSV3_SKEW, skew_spread=_DSV3_SPREAD, affinity=0.3, gate_gap=0.3, note=_FINE_NOTE),
    "deepseek-v3": SynthPreset(
        ModelSpec("deepseek-v3", **_DSV3),
        skew=_DSV3_SKEW, skew_spread=_DSV3_SPREAD, affinity=0.3, gate_gap=0.15,
        note="skew and skew_spread calibrated to twelve SGLang DeepSeek-V3 load recordings "
             "(CALIBRATION.md); affinity is a guess"),
    "deepseek-r1": SynthPreset(
        ModelSpec("deepseek-r1", **_DSV3),
        skew=_DSV3_SKEW, skew_spread=_DSV3_SPREAD, affinity=0.3, gate_gap=0.15,
        note="alias of deepseek-v3 (same architecture and router)"),
    "qwen3-235b-a22b": SynthPreset(
        ModelSpec("qwen3-235b-a22b", num_layers=94, num_experts=128, top_k=8, hidden_size=4096,
                  intermediate_size=1536, num_hidden_layers=94),
        skew=_DSV3_SKEW, skew_spread=_DSV3_SPREAD, affinity=0.3, gate_gap=0.3, note=_FINE_NOTE),
    "olmoe": SynthPreset(
        ModelSpec("olmoe", num_layers=16, num_experts=64, top_k=8, hidden_size=2048, intermediate_size=1024,
                  num_hidden_layers=16),
        skew=_DSV3_SKEW, skew_spread=_DSV3_SPREAD, affinity=0.3, gate_gap=0.3, note=_FINE_NOTE),
}

#: defaults for a custom :class:`ModelSpec` (the DeepSeek-V3 calibration)
DEFAULT_SKEW = _DSV3_SKEW
DEFAULT_SKEW_SPREAD = _DSV3_SPREAD
DEFAULT_AFFINITY = 0.3
DEFAULT_GATE_GAP = 0.3

#: CALIBRATION.md's ranges, the union of its decode and prefill rows (shares as fractions)
DEEPSEEK_V3_TARGETS: dict[str, tuple[float, float]] = {
    "hot_over_mean_median": (5.2, 8.2),
    "hot_over_mean_max": (10.1, 13.7),
    "cv": (0.72, 1.02),
    "top8_share": (0.117, 0.157),
    "top32_share": (0.307, 0.383),
    "gini": (0.32, 0.44),
    "loglog_slope": (-0.55, -0.43),
}

#: CALIBRATION.md's real Mixtral-8x7B-Instruct routing (vLLM, GSM8K and HumanEval prompts, 577 generated
#: tokens x 32 layers x top-2), as ranges around its point figures (about +-10 %): keys of
#: :func:`affinity_stats` and :func:`calibration_stats`.  The figures are plug-in estimates on a small
#: sample, biased upward; compare a trace with them on :data:`MIXTRAL_8X7B_EFFECTIVE_TOKENS` tokens.
MIXTRAL_8X7B_TARGETS: dict[str, tuple[float, float]] = {
    "top1_successor_share": (0.27, 0.33),     # real 0.30 (uniform routing 0.125)
    "top1_mutual_information": (0.27, 0.35),  # real 0.31 bits
    "topk_successor_share": (0.19, 0.23),     # real 0.21
    "hot_over_mean_median": (1.22, 1.44),     # real 1.33
    "hot_over_mean_max": (1.55, 2.0),         # real 1.76
}
#: Independent tokens that carry the sampling bias of the 577 recorded Mixtral tokens.  The recording's
#: mutual information is 0.54 bits on 244 tokens and 0.31 on 577: a bias ``c / N`` with ``c = 97`` bits x
#: tokens, 2.75 times the ``(8 - 1)^2 / (2 ln 2) = 35`` of independent tokens (tokens of one prompt route
#: alike), so 577 recorded tokens weigh like 577 / 2.75 = 210 independent ones.
MIXTRAL_8X7B_EFFECTIVE_TOKENS = 210


# ---------------------------------------------------------------------------------------------- statistics
def _layer_stats(load: np.ndarray) -> dict[str, np.ndarray]:
    """Per-layer calibration statistics of ``load [layers, experts]`` (each ``float64 [layers]``)."""
    load = np.asarray(load, dtype=np.float64)
    _, E = load.shape
    total = load.sum(axis=1)
    safe_total = np.where(total > 0, total, 1.0)
    mean = safe_total / E
    desc = -np.sort(-load, axis=1)
    hot = desc[:, 0] / mean
    cv = load.std(axis=1) / mean
    top8 = desc[:, :8].sum(axis=1) / safe_total
    top32 = desc[:, :32].sum(axis=1) / safe_total
    # Gini = sum_i (2i - E - 1) x_(i) / (E * sum x), x ascending, i = 1..E
    asc = desc[:, ::-1]
    i = np.arange(1, E + 1, dtype=np.float64)
    gini = ((2 * i - E - 1) * asc).sum(axis=1) / (E * safe_total)
    m = min(128, E)
    if m >= 2:
        x = np.log(np.arange(1, m + 1, dtype=np.float64))
        x -= x.mean()
        y = np.log(np.maximum(desc[:, :m], 0.5))  # an idle expert counts as half a token
        slope = ((y - y.mean(axis=1, keepdims=True)) * x).sum(axis=1) / (x * x).sum()
    else:
        slope = np.zeros(load.shape[0])
    return {"hot_over_mean": hot, "cv": cv, "top8_share": top8, "top32_share": top32, "gini": gini,
            "loglog_slope": slope}


def calibration_stats(trace: Trace | np.ndarray, *, per_layer: bool = False) -> dict[str, Any]:
    """The load statistics of ``CALIBRATION.md``, to compare a trace with real DeepSeek-V3 recordings.

    Each statistic is computed per MoE layer from the expert load (selections per routed
    expert), then summarised by the median over layers; the hottest-expert ratio is also
    given for the worst layer.

    Parameters
    ----------
    trace:
        A token or count :class:`~placement.trace.Trace`, or a load array ``[layers, experts]``.
    per_layer:
        Also return the per-layer values (``float64 [layers]`` each) under ``"per_layer"``.

    Returns
    -------
    dict
        ``hot_over_mean_median``, ``hot_over_mean_max`` (hottest expert's load / mean load),
        ``cv`` (coefficient of variation, population std / mean), ``top8_share`` and
        ``top32_share`` (fraction of the layer's selections taken by its 8 / 32 busiest
        experts), ``gini`` (Gini coefficient of the loads), ``loglog_slope`` (least-squares
        slope of ``log(load)`` against ``log(rank)`` over the ``min(128, experts)`` busiest
        experts, zero loads counted as 0.5).  Shares are fractions, not percent.
        :data:`DEEPSEEK_V3_TARGETS` holds the real recordings' ranges under the same keys.

    Examples
    --------
    >>> import numpy as np
    >>> s = calibration_stats(np.array([[4, 2, 1, 1], [2, 2, 2, 2]]))
    >>> s["hot_over_mean_median"], s["hot_over_mean_max"]
    (1.5, 2.0)
    >>> round(s["gini"], 4)
    0.1562
    """
    load = trace.layer_counts() if isinstance(trace, Trace) else np.asarray(trace)
    if load.ndim != 2 or load.shape[1] < 1:
        raise input_error(f"expected a load array [layers, experts], got shape {load.shape}", None, "trace")
    layers = _layer_stats(load)
    out: dict[str, Any] = {
        "hot_over_mean_median": float(np.median(layers["hot_over_mean"])),
        "hot_over_mean_max": float(layers["hot_over_mean"].max()),
    }
    for key in ("cv", "top8_share", "top32_share", "gini", "loglog_slope"):
        out[key] = float(np.median(layers[key]))
    if per_layer:
        out["per_layer"] = layers
    return out


def _mutual_information_bits(joint: np.ndarray) -> np.ndarray:
    """Plug-in mutual information (bits) of each count table ``joint [..., E, E]`` (``float64 [...]``)."""
    total = joint.sum(axis=(-2, -1), keepdims=True)
    pxy = joint / np.where(total > 0, total, 1.0)
    outer = pxy.sum(axis=-1, keepdims=True) * pxy.sum(axis=-2, keepdims=True)
    terms = np.zeros_like(pxy)
    np.log2(pxy / np.where(outer > 0, outer, 1.0), out=terms, where=pxy > 0)
    return (pxy * terms).sum(axis=(-2, -1))


def affinity_stats(trace: Trace, *, per_boundary: bool = False) -> dict[str, Any]:
    """Inter-layer affinity of a token trace: how well a token's expert at one layer predicts the next.

    Per boundary ``l -> l + 1`` (each statistic then averaged over the boundaries):

    ``top1_successor_share``
        Fraction of tokens whose top-1 expert at ``l + 1`` is the most frequent successor of their
        top-1 expert at ``l`` (in-sample; uniform independent routing gives about ``1 / E``).
    ``top1_mutual_information``
        Plug-in mutual information, in bits, between the top-1 experts at ``l`` and ``l + 1``.
    ``topk_successor_share``
        ``top1_successor_share`` over all ``k x k`` (expert at ``l``, expert at ``l + 1``) pairs of each
        token pooled.

    These are CALIBRATION.md's Mixtral statistics; :data:`MIXTRAL_8X7B_TARGETS` holds the real
    recording's ranges.  Plug-in estimates grow on small samples (compare traces of equal size).

    Parameters
    ----------
    trace:
        A token trace with at least two MoE layers.
    per_boundary:
        Also return the per-boundary values (``float64 [layers - 1]`` each) under ``"per_boundary"``.

    Examples
    --------
    >>> import numpy as np
    >>> from placement.trace import ModelSpec, Trace
    >>> ex = np.array([[[0], [1]], [[0], [1]], [[1], [0]], [[1], [1]]])  # 4 tokens, 2 layers, top-1
    >>> s = affinity_stats(Trace.from_tokens(ModelSpec("m", 2, 2, 1), ex))
    >>> s["top1_successor_share"], round(s["top1_mutual_information"], 4)
    (0.75, 0.3113)
    """
    experts = trace.require_tokens("affinity_stats")
    T, L, k = experts.shape
    E = trace.num_experts
    if L < 2:
        raise input_error(f"needs at least two MoE layers, the trace has {L}", trace.source, "experts")
    ex = experts.astype(np.int64)
    boundary = np.arange(L - 1, dtype=np.int64)[None, :]
    # top-1 pair counts of every boundary at once: [L - 1, E, E]
    top1 = np.bincount(((boundary * E + ex[:, :-1, 0]) * E + ex[:, 1:, 0]).ravel(),
                       minlength=(L - 1) * E * E).reshape(L - 1, E, E).astype(np.float64)
    pooled = np.zeros((L - 1) * E * E, dtype=np.float64)
    for i in range(k):
        for j in range(k):
            pooled += np.bincount(((boundary * E + ex[:, :-1, i]) * E + ex[:, 1:, j]).ravel(),
                                  minlength=(L - 1) * E * E)
    pooled = pooled.reshape(L - 1, E, E)
    per = {
        "top1_successor_share": top1.max(axis=2).sum(axis=1) / T,
        "top1_mutual_information": _mutual_information_bits(top1),
        "topk_successor_share": pooled.max(axis=2).sum(axis=1) / (T * k * k),
    }
    out: dict[str, Any] = {key: float(v.mean()) for key, v in per.items()}
    if per_boundary:
        out["per_boundary"] = per
    return out


# ---------------------------------------------------------------------------------------------- generator
def _resolve(model: str | ModelSpec) -> tuple[ModelSpec, SynthPreset | None]:
    if isinstance(model, ModelSpec):
        model.validate("synthesize")
        return model, None
    if isinstance(model, str):
        preset = MODEL_PRESETS.get(model.lower())
        if preset is None:
            raise input_error(f"unknown model preset {model!r}; choose one of {sorted(MODEL_PRESETS)} or "
                              "pass a ModelSpec", "synthesize", "model")
        return preset.spec, preset
    raise input_error(f"model must be a preset name or a ModelSpec, got {type(model).__name__}", "synthesize",
                      "model")


def _check_real(value: Any, field: str, lo: float, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise input_error(f"must be a number, got {value!r}", "synthesize", field)
    v = float(value)
    if not np.isfinite(v) or v < lo or (hi is not None and v > hi):
        rng = f"[{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
        raise input_error(f"must be a finite number {rng}, got {value!r}", "synthesize", field)
    return v


def layer_popularity(spec: ModelSpec, *, seed: int = 0, skew: float = DEFAULT_SKEW,
                     skew_spread: float = DEFAULT_SKEW_SPREAD) -> np.ndarray:
    """The generator's target popularity ``float64 [layers, experts]`` (rows sum to 1).

    The same draw :func:`synthesize` uses for ``(spec, seed, skew, skew_spread)``; the
    realised load of a generated trace is a little flatter (distinct ids, group limits).

    >>> p = layer_popularity(ModelSpec("m", 3, 16, 2), seed=0, skew=0.0)
    >>> p.shape, bool(np.allclose(p, 1 / 16))
    ((3, 16), True)
    """
    return _popularity(np.random.default_rng(np.random.SeedSequence([seed, 0])), spec, skew, skew_spread)


def _popularity(rng: np.random.Generator, spec: ModelSpec, skew: float, spread: float) -> np.ndarray:
    L, E = spec.num_layers, spec.num_experts
    factor = np.exp(spread * rng.standard_normal(L))
    sigma = skew * factor / factor.mean()
    logp = sigma[:, None] * rng.standard_normal((L, E))
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _cells(p: np.ndarray, total: int) -> np.ndarray:
    """Integer cells ``int64 [E]`` proportional to ``p``, each >= 1, summing to ``total``.

    Largest-remainder rounding; the minimum of one cell keeps every expert reachable.
    """
    raw = p * total
    c = np.maximum(np.floor(raw).astype(np.int64), 1)
    diff = total - int(c.sum())
    if diff > 0:
        c[np.argsort(-(raw - np.floor(raw)), kind="stable")[:diff]] += 1
    while diff < 0:  # the minimum of one cell overshot: take from the largest
        take = min(-diff, int((c > 1).sum()))
        c[np.argsort(-c, kind="stable")[:take]] -= 1
        diff += take
    return c


@dataclass
class _Layer:
    """Lookup tables of one layer (built once per trace)."""

    table: np.ndarray  # int16/int32 [_CELLS]: expert at each latent position (the layer's layout)
    start: np.ndarray  # int64 [E]: first cell of each expert's interval
    cells: np.ndarray  # int64 [E]: cells of each expert's interval (its quantised popularity)
    start16: np.ndarray  # uint16 [E]: ``start`` (positions are uint16)
    cells32: np.ndarray  # uint32 [E]: ``cells``
    group_table: np.ndarray | None  # flat [groups * _GROUP_CELLS]: expert at each position inside a group
    group_choice: np.ndarray | None  # uint8 flat [2**groups * 256]: a group of each mask per 8-bit draw


def _build_layers(rng: np.random.Generator, spec: ModelSpec, p: np.ndarray, id_dtype: type) -> list[_Layer]:
    E, G = spec.num_experts, spec.num_groups
    out = []
    for layer in range(spec.num_layers):
        order = rng.permutation(E)
        cells = _cells(p[layer], _CELLS)
        table = np.repeat(order.astype(id_dtype), cells[order])
        start = np.empty(E, dtype=np.int64)
        start[order] = np.cumsum(cells[order]) - cells[order]
        gtab = gchoice = None
        if spec.topk_groups is not None and 1 < G:
            P = E // G
            pg = (cells / _CELLS).reshape(G, P)
            gmass = pg.sum(axis=1)
            gtab = np.concatenate([np.repeat(np.arange(g * P, (g + 1) * P, dtype=id_dtype),
                                             _cells(pg[g] / gmass[g], _GROUP_CELLS)) for g in range(G)])
            # group_choice[mask, r]: for a token allowed the groups in bit mask `mask`, the group an
            # 8-bit uniform r selects, each allowed group in proportion to its popularity
            member = (np.arange(1 << G)[:, None] >> np.arange(G)[None, :]) & 1  # [2**G, G]
            cum = np.cumsum(member * gmass[None, :], axis=1)
            frac = cum / np.maximum(cum[:, -1:], 1e-300)
            x = (np.arange(256) + 0.5) / 256
            choice = (frac[:, None, :] <= x[None, :, None]).sum(axis=2)  # [2**G, 256]
            gchoice = np.minimum(choice, G - 1).astype(np.uint8).ravel()
        out.append(_Layer(table, start, cells, start.astype(np.uint16), cells.astype(np.uint32), gtab,
                          gchoice))
    return out


def _bit_dtype(G: int) -> type:
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if G <= np.iinfo(dt).bits:
            return dt
    raise input_error(f"group-limited routing supports at most 64 groups, got {G}", "synthesize",
                      "model.num_groups")


def _later_duplicates(e: np.ndarray) -> np.ndarray:
    """``bool [k, n]``: slot ``j`` of token ``t`` repeats the id of an earlier slot (``e`` is ``[k, n]``)."""
    bad = np.zeros(e.shape, dtype=bool)
    tmp = np.empty(e.shape[1], dtype=bool)
    for j in range(1, e.shape[0]):
        row = bad[j]
        for i in range(j):
            np.equal(e[j], e[i], out=tmp)
            row |= tmp
    return bad


class _BlockSampler:
    """Generates the expert ids ``[k, width]`` (slot-major) of one block of tokens, layer after layer.

    Per layer: every slot takes the expert at its latent position; with group-limited
    routing the token keeps the first ``topk_groups`` distinct groups in slot order and
    marks the slots outside them; later duplicates are marked too.  Marked slots are
    redrawn from the layer's popularity restricted to the token's kept groups (a group in
    proportion to its popularity, then an expert inside it), their latent positions moved
    into the new expert's interval.  Duplicates created by a redraw are redrawn again;
    after ``_MAX_ROUNDS`` rounds the few left are drawn exactly from the acceptable experts.
    ``width`` is a power of two (>= the block's tokens) so flat indices split with a mask.
    """

    def __init__(self, spec: ModelSpec, layers: list[_Layer], affinity: float, rng: np.random.Generator,
                 width: int) -> None:
        self.spec = spec
        self.layers = layers
        self.rng = rng
        self.width = width
        self.shift = width.bit_length() - 1
        self.keep_threshold = int(round(affinity * 65536))
        G, limit = spec.num_groups, spec.topk_groups
        self.grouped = limit is not None and 1 < G and limit < G and spec.top_k > limit
        self.pos: np.ndarray | None = None  # uint16 [k, width] latent positions
        if self.grouped:
            assert limit is not None
            bdt = _bit_dtype(G)
            group_of = np.arange(spec.num_experts) // (spec.num_experts // G)
            self.group_bit = np.left_shift(bdt(1), group_of.astype(bdt))  # [E]
            self.bit_dtype = bdt
            self.limit = limit

    def _raw16(self, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform ``uint16`` of ``shape``, four per raw 64-bit output of the bit generator (fast).

        The words are split little-endian whatever the machine, so traces are portable.
        """
        size = int(np.prod(shape))
        raw = self.rng.bit_generator.random_raw((size + 3) // 4).astype("<u8", copy=False)
        return raw.view("<u2")[:size].reshape(shape)

    def layer(self, li: int) -> np.ndarray:
        """Expert ids ``[k, width]`` of layer ``li`` (call the layers in order)."""
        lay, k = self.layers[li], self.spec.top_k
        draws = self._raw16((2, k, self.width))
        fresh = draws[0]
        if self.pos is None or self.keep_threshold == 0:
            self.pos = fresh
        elif self.keep_threshold < 65536:
            # keep the old position where draws[1] < threshold: a branch-free bit select
            mask = (draws[1] < self.keep_threshold).view(np.uint8).astype(np.uint16)
            mask *= np.uint16(0xFFFF)
            self.pos = fresh ^ ((fresh ^ self.pos) & mask)
        e = np.take(lay.table, self.pos)
        if k == 1:
            return e
        bad = _later_duplicates(e)
        allowed = self._limit_groups(e, bad) if self.grouped else None
        flat = np.flatnonzero(bad)
        for _ in range(_MAX_ROUNDS):
            if flat.size == 0:
                return e
            self._redraw(lay, e, flat, allowed)
            if flat.size * 8 > self.width:  # many tokens touched: rescan the block
                flat = np.flatnonzero(_later_duplicates(e))
            else:  # a few: rescan only their tokens
                tokens = np.unique(flat & (self.width - 1))
                sub = np.flatnonzero(_later_duplicates(e[:, tokens]))
                flat = ((sub // tokens.size) << self.shift) | tokens[sub % tokens.size]
        if flat.size:
            self._exact(lay, e, flat, allowed)
        return e

    def _limit_groups(self, e: np.ndarray, bad: np.ndarray) -> np.ndarray:
        """Keep each token's first ``topk_groups`` groups in slot order; mark slots outside them."""
        bits = np.take(self.group_bit, e)  # [k, width]
        allowed = bits[0].copy()
        count = np.ones(self.width, dtype=np.uint8)
        for j in range(1, e.shape[0]):
            new = (allowed & bits[j]) == 0
            take = new & (count < self.limit)
            count += take
            allowed |= bits[j] * take
            bad[j] |= new ^ take
        return allowed

    def _redraw(self, lay: _Layer, e: np.ndarray, flat: np.ndarray, allowed: np.ndarray | None) -> None:
        """New experts for the flat slot indices ``flat`` (``slot * width + token``) in ``allowed`` groups."""
        r = self._raw16((3, flat.size))
        if allowed is None:
            e.ravel()[flat] = lay.table[r[0]]
            self.pos.ravel()[flat] = r[0]
            return
        assert lay.group_table is not None and lay.group_choice is not None
        tok = flat & (self.width - 1)
        masks = allowed[tok].astype(np.intp)
        group = lay.group_choice[(masks << 8) | (r[0] >> 8)]  # a kept group, by popularity
        cand = lay.group_table[(group.astype(np.intp) << _GROUP_BITS) | (r[1] & (_GROUP_CELLS - 1))]
        e.ravel()[flat] = cand
        within = (r[2].astype(np.uint32) * lay.cells32[cand]) >> 16  # uniform in [0, cells)
        self.pos.ravel()[flat] = lay.start16[cand] + within

    def _exact(self, lay: _Layer, e: np.ndarray, flat: np.ndarray, allowed: np.ndarray | None) -> None:
        """Draw the few slots left exactly from the popularity of the experts they may take."""
        E = self.spec.num_experts
        for f in flat.tolist():  # one at a time: two slots of one token interact
            s, t = f >> self.shift, f & (self.width - 1)
            ok = np.ones(E, dtype=bool)
            ok[np.delete(e[:, t], s)] = False
            if allowed is not None:
                in_kept = ok & ((self.group_bit & allowed[t]) != 0)
                # the kept groups can be exhausted when groups are smaller than k; the token then
                # has fewer than topk_groups groups (the spec guarantees room) and may open another
                if in_kept.any():
                    ok = in_kept
            cum = np.cumsum(lay.cells * ok)
            cand = int(np.searchsorted(cum, self.rng.integers(0, cum[-1]), side="right"))
            e[s, t] = cand
            self.pos[s, t] = lay.start[cand]
            if allowed is not None:
                allowed[t] |= self.group_bit[cand]


def synthesize(
    model: str | ModelSpec,
    num_tokens: int,
    *,
    seed: int = 0,
    skew: float | None = None,
    skew_spread: float | None = None,
    affinity: float | None = None,
    num_ranks: int | None = None,
    weights: bool = True,
    gate_gap: float | None = None,
    workers: int | None = None,
    token_seed: int | None = None,
) -> Trace:
    """Generate a synthetic token trace (see the module docstring for the generative model).

    Parameters
    ----------
    model:
        A preset name from :data:`MODEL_PRESETS` (``"deepseek-v3"``, ``"mixtral-8x7b"``...)
        or a :class:`~placement.trace.ModelSpec`.
    num_tokens:
        Tokens to generate (>= 1).
    seed:
        Seed of every random choice: the same arguments give the same trace.
    skew:
        Mean over layers of the log-normal popularity spread (0 = every expert equally
        popular; DeepSeek-V3 calibration 0.75).  ``None``: the preset's value.
    skew_spread:
        Standard deviation of the per-layer log skew factor (0 = every layer equally
        skewed).  ``None``: the preset's value.
    affinity:
        In ``[0, 1]``: probability that a token's slot keeps its latent position from one
        layer to the next, i.e. follows a successor of its current expert (0 = layers
        independent, 1 = fully determined by the first layer up to redraws).
        ``None``: the preset's value.
    num_ranks:
        If given, each token gets an origin rank: tokens are split into ``num_ranks``
        contiguous, equal (+-1) blocks, as a batch split over data-parallel ranks.
    weights:
        Generate gate weights (``float32 [tokens, layers, k]``, rows sum to 1, decreasing
        along the slots).  ``False`` saves time and memory.
    gate_gap:
        Mean logit gap between consecutive slots of the gate weights (larger = top-1
        weight dominates).  ``None``: the preset's value.
    workers:
        Threads generating blocks of tokens in parallel (``None``: up to 4, one per CPU).
        The trace does not depend on it.
    token_seed:
        Seed of the tokens only: the model (popularity, layouts, successor maps, gate-weight
        table) still comes from ``seed``, so two token seeds give two independent samples of
        one model's routing, e.g. a trace to fit a placement to and one to test it on.
        ``None``: the tokens come from ``seed`` too.

    Returns
    -------
    Trace
        A token trace: ``experts int16 [tokens, layers, k]``, ``weights float32`` or None,
        ``origin int32 [tokens]`` or None; ``metadata`` records the generator's parameters.

    Raises
    ------
    PlacementInputError
        (a ``ValueError``) for an unknown preset or a parameter out of range, naming it.

    Examples
    --------
    >>> t = synthesize("deepseek-v3", 256, seed=0, num_ranks=32, weights=False)
    >>> t.experts.shape, t.num_ranks, t.origin[:10].tolist()
    ((256, 58, 8), 32, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    >>> synthesize("deepseek-v3", 10, affinity=1.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    placement.errors.PlacementInputError: synthesize: field 'affinity': must be a finite number [0, 1], ...
    """
    spec, preset = _resolve(model)
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, (int, np.integer)) or num_tokens < 1:
        raise input_error(f"must be a positive integer number of tokens, got {num_tokens!r}", "synthesize",
                          "num_tokens")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise input_error(f"must be a non-negative integer, got {seed!r}", "synthesize", "seed")
    skew = _check_real(preset.skew if preset and skew is None else DEFAULT_SKEW if skew is None else skew,
                       "skew", 0.0, 10.0)
    skew_spread = _check_real(
        preset.skew_spread if preset and skew_spread is None
        else DEFAULT_SKEW_SPREAD if skew_spread is None else skew_spread, "skew_spread", 0.0, 5.0)
    affinity = _check_real(
        preset.affinity if preset and affinity is None
        else DEFAULT_AFFINITY if affinity is None else affinity, "affinity", 0.0, 1.0)
    gate_gap = _check_real(
        preset.gate_gap if preset and gate_gap is None
        else DEFAULT_GATE_GAP if gate_gap is None else gate_gap, "gate_gap", 0.0, 100.0)
    if num_ranks is not None and (isinstance(num_ranks, bool) or not isinstance(num_ranks, (int, np.integer))
                                  or num_ranks < 1):
        raise input_error(f"must be a positive integer or None, got {num_ranks!r}", "synthesize", "num_ranks")
    if token_seed is not None and (isinstance(token_seed, bool) or not isinstance(token_seed, (int, np.integer))
                                   or token_seed < 0):
        raise input_error(f"must be a non-negative integer or None, got {token_seed!r}", "synthesize",
                          "token_seed")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 1):
        raise input_error(f"must be a positive integer or None, got {workers!r}", "synthesize", "workers")
    if spec.topk_groups is not None and spec.num_groups > _MAX_GROUPS:
        raise input_error(f"group-limited routing is generated for at most {_MAX_GROUPS} groups, got "
                          f"num_groups={spec.num_groups}", "synthesize", "model.num_groups")
    if spec.num_experts > _CELLS:
        raise input_error(f"at most {_CELLS} experts per layer are supported, got {spec.num_experts}",
                          "synthesize", "model.num_experts")

    from ..limits import check_limit

    check_limit("max_trace_entries", int(num_tokens) * spec.num_layers * spec.top_k, "synthesize", "num_tokens")
    if num_ranks is not None:
        check_limit("max_gpus", int(num_ranks), "synthesize", "num_ranks")
    n, L, k = int(num_tokens), spec.num_layers, spec.top_k
    id_dtype = np.int16 if spec.num_experts <= np.iinfo(np.int16).max else np.int32
    model_rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    p = _popularity(model_rng, spec, skew, skew_spread)
    layers = _build_layers(model_rng, spec, p, id_dtype)

    experts = np.empty((n, L, k), dtype=id_dtype)
    w = np.empty((n, L, k), dtype=np.float32) if weights else None
    gate = _gate_table(model_rng, k, gate_gap) if weights else None

    def block(b: int) -> None:
        start, stop = b * _BLOCK, min(n, (b + 1) * _BLOCK)
        stream = [seed, 1, b] if token_seed is None else [seed, 2, int(token_seed), b]
        rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence(stream)))
        width = 1 << max(0, (stop - start - 1).bit_length())  # a power of two >= the block's tokens
        sampler = _BlockSampler(spec, layers, affinity, rng, width)
        for li in range(L):
            experts[start:stop, li, :] = sampler.layer(li)[:, :stop - start].T
        if w is not None and gate is not None:
            rows = sampler._raw16(((stop - start) * L,))
            np.take(gate, rows, axis=0, out=w[start:stop].reshape(-1, k))

    blocks = range((n + _BLOCK - 1) // _BLOCK)
    if workers is None:
        workers = min(_MAX_WORKERS, os.cpu_count() or 1)
    if workers > 1 and len(blocks) > 1:
        # numpy releases the GIL inside its kernels; blocks own their random streams and output rows,
        # so the result does not depend on the number of workers
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(block, blocks))
    else:
        for b in blocks:
            block(b)

    origin = None
    if num_ranks is not None:
        origin = (np.arange(n, dtype=np.int64) * int(num_ranks) // n).astype(np.int32)
    metadata = {
        "generator": "placement.trace.synthesize", "generator_version": GENERATOR_VERSION,
        "preset": None if preset is None else preset.spec.name, "seed": int(seed),
        "token_seed": None if token_seed is None else int(token_seed), "skew": skew,
        "skew_spread": skew_spread, "affinity": affinity, "gate_gap": gate_gap if weights else None,
    }
    return Trace.from_tokens(spec, experts, weights=w, origin=origin, num_ranks=num_ranks,
                             source=f"synthesize({spec.name})", metadata=metadata)


def _gate_table(rng: np.random.Generator, k: int, gap: float) -> np.ndarray:
    """``float32 [_GATE_ROWS, k]`` weight vectors: softmax of decreasing logits with exponential gaps.

    Logit ``j`` is ``-(d_1 + ... + d_j)`` with ``d_i`` exponential of mean ``gap``; each
    (token, layer) takes one row at random, which is far cheaper than drawing ``k``
    exponentials for each of a billion selections and just as plausible.
    """
    logits = np.zeros((_GATE_ROWS, k), dtype=np.float64)
    if k > 1 and gap > 0:
        logits[:, 1:] = -np.cumsum(rng.standard_exponential((_GATE_ROWS, k - 1)) * gap, axis=1)
    w = np.exp(logits)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
