"""Tests of the synthetic trace generator (placement.trace.synthesize).

The calibration tests are the contract with docs/synthetic-traces.md: the DeepSeek-V3 preset's load
statistics must land in the ranges measured on real SGLang recordings (CALIBRATION.md, the union of
its decode and prefill rows), and the Mixtral preset's inter-layer affinity and skew in those of a real
per-token Mixtral recording, compared at the recording's effective sample size.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from placement.errors import PlacementInputError
from placement.trace import ModelSpec, Trace
from placement.trace.synthesize import (
    DEEPSEEK_V3_TARGETS,
    MIXTRAL_8X7B_EFFECTIVE_TOKENS,
    MIXTRAL_8X7B_TARGETS,
    MODEL_PRESETS,
    affinity_stats,
    calibration_stats,
    layer_popularity,
    synthesize,
)


@pytest.fixture(scope="module")
def dsv3() -> Trace:
    return synthesize("deepseek-v3", 20_000, seed=0, weights=False)


# ------------------------------------------------------------------------------------------ calibration
@pytest.mark.parametrize("key", sorted(DEEPSEEK_V3_TARGETS))
def test_deepseek_v3_preset_matches_real_load_statistics(dsv3, key):
    lo, hi = DEEPSEEK_V3_TARGETS[key]
    value = calibration_stats(dsv3)[key]
    assert lo <= value <= hi, f"{key}={value:.4f} outside the real recordings' range [{lo}, {hi}]"


def _mixtral_stats(**params) -> dict[str, float]:
    """CALIBRATION.md's Mixtral statistics, mean over 16 seeds of traces of the recording's effective size."""
    rows = []
    for seed in range(16):
        t = synthesize("mixtral-8x7b", MIXTRAL_8X7B_EFFECTIVE_TOKENS, seed=seed, weights=False, **params)
        rows.append({**affinity_stats(t), **calibration_stats(t)})
    return {key: float(np.mean([r[key] for r in rows])) for key in MIXTRAL_8X7B_TARGETS}


@pytest.fixture(scope="module")
def mixtral_stats() -> dict[str, float]:
    return _mixtral_stats()


@pytest.mark.parametrize("key", sorted(MIXTRAL_8X7B_TARGETS))
def test_mixtral_preset_matches_real_routing(mixtral_stats, key):
    lo, hi = MIXTRAL_8X7B_TARGETS[key]
    assert lo <= mixtral_stats[key] <= hi, f"{key}={mixtral_stats[key]:.4f} outside the real range [{lo}, {hi}]"


def test_mixtral_targets_reject_the_previous_guess():
    # the preset's former defaults (affinity 0.4, skew 0.35, spread 0.3) overstated the affinity and the
    # worst layer's skew: the targets must tell them apart
    old = _mixtral_stats(skew=0.35, skew_spread=0.3, affinity=0.4)
    outside = [k for k, (lo, hi) in MIXTRAL_8X7B_TARGETS.items() if not lo <= old[k] <= hi]
    assert {"top1_successor_share", "hot_over_mean_max"} <= set(outside)


def test_olmoe_preset_skew_matches_the_olmoe_repository_counts():
    # CALIBRATION.md: OLMoE's hottest/mean expert load, median of layers 0, 7 and 15, is 2.7 (C4) to 7.5
    # (arXiv) across five domains; each seed is one draw of the popularity, like one domain
    for seed in range(4):
        hot = calibration_stats(synthesize("olmoe", 20_000, seed=seed, weights=False),
                                per_layer=True)["per_layer"]["hot_over_mean"]
        assert 2.7 <= np.median(hot[[0, 7, 15]]) <= 7.5


def test_affinity_stats_against_direct_counts():
    t = synthesize("mixtral-8x7b", 3000, seed=5, weights=False)
    ex = t.experts.astype(np.int64)
    s = affinity_stats(t, per_boundary=True)
    assert s["top1_successor_share"] == pytest.approx(_successor_concentration(ex[:, :, 0], 8))
    mi, pooled = [], []
    for layer in range(31):
        joint = np.zeros((8, 8))
        np.add.at(joint, (ex[:, layer, 0], ex[:, layer + 1, 0]), 1)
        p = joint / joint.sum()
        px, py = p.sum(axis=1), p.sum(axis=0)
        mi.append(sum(p[a, b] * np.log2(p[a, b] / (px[a] * py[b])) for a in range(8) for b in range(8) if p[a, b]))
        pairs = np.zeros((8, 8))
        for i in range(2):
            for j in range(2):
                np.add.at(pairs, (ex[:, layer, i], ex[:, layer + 1, j]), 1)
        pooled.append(pairs.max(axis=1).sum() / pairs.sum())
    np.testing.assert_allclose(s["per_boundary"]["top1_mutual_information"], mi, rtol=1e-9)
    assert s["top1_mutual_information"] == pytest.approx(np.mean(mi))
    assert s["topk_successor_share"] == pytest.approx(np.mean(pooled))
    # independent layers share no information (up to the plug-in bias of 3000 tokens)
    free = affinity_stats(synthesize("mixtral-8x7b", 3000, seed=5, affinity=0.0, weights=False))
    assert free["top1_mutual_information"] < 0.02 < s["top1_mutual_information"]


def test_token_seed_gives_fresh_tokens_of_the_same_model():
    a = synthesize("mixtral-8x7b", 20_000, seed=3, weights=False)
    b = synthesize("mixtral-8x7b", 20_000, seed=3, token_seed=1, weights=False)
    c = synthesize("mixtral-8x7b", 20_000, seed=4, weights=False)
    assert (a.experts != b.experts).mean() > 0.5
    # same popularity: per-layer loads agree to sampling noise, unlike another model seed
    la, lb, lc = (t.layer_counts() / 40_000 for t in (a, b, c))
    assert np.abs(la - lb).max() < 0.02 < np.abs(la - lc).max()
    assert b.metadata["token_seed"] == 1 and a.metadata["token_seed"] is None
    np.testing.assert_array_equal(b.experts, synthesize("mixtral-8x7b", 20_000, seed=3, token_seed=1,
                                                        weights=False).experts)


def test_calibration_stats_by_hand():
    # layer 0: loads 4,2,1,1 (mean 2): hot/mean 2, CV = std([4,2,1,1]) / 2 = sqrt(1.5) / 2
    # layer 1: uniform: hot/mean 1, CV 0, Gini 0
    s = calibration_stats(np.array([[4, 2, 1, 1], [2, 2, 2, 2]]), per_layer=True)
    assert s["hot_over_mean_max"] == 2.0
    np.testing.assert_allclose(s["per_layer"]["cv"], [np.sqrt(1.5) / 2, 0.0])
    # Gini of (1,1,2,4): sum_i (2i - 5) x_i / (4 * 8) = (-3 - 1 + 2 + 12) / 32
    np.testing.assert_allclose(s["per_layer"]["gini"], [10 / 32, 0.0])
    np.testing.assert_allclose(s["per_layer"]["top8_share"], [1.0, 1.0])
    # a pure power law load = rank^-0.5 has log-log slope -0.5
    ranks = np.arange(1, 257, dtype=float)
    s = calibration_stats((1e6 * ranks ** -0.5)[None, :])
    assert s["loglog_slope"] == pytest.approx(-0.5, abs=1e-3)


def test_calibration_stats_accepts_count_traces(dsv3):
    counts = Trace.from_counts(dsv3.model, dsv3.layer_counts())
    assert calibration_stats(counts) == calibration_stats(dsv3)
    with pytest.raises(PlacementInputError, match=r"load array \[layers, experts\]"):
        calibration_stats(np.zeros(5))


# ------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_every_preset_generates_a_valid_trace(name):
    spec = MODEL_PRESETS[name].spec
    t = synthesize(name, 700, seed=3, num_ranks=4)  # 700: not a power of two (a partial block)
    n, L, k, E = 700, spec.num_layers, spec.top_k, spec.num_experts
    assert t.model == spec
    assert t.experts.shape == (n, L, k) and t.experts.dtype == np.int16
    assert t.experts.min() >= 0 and t.experts.max() < E
    srt = np.sort(t.experts, axis=2)
    assert not (srt[:, :, 1:] == srt[:, :, :-1]).any(), "top-k ids must be distinct"
    if spec.topk_groups is not None:
        groups = np.sort(t.experts // (E // spec.num_groups), axis=2)
        distinct = 1 + (groups[:, :, 1:] != groups[:, :, :-1]).sum(axis=2)
        assert distinct.max() <= spec.topk_groups
    assert t.weights.dtype == np.float32 and t.weights.shape == (n, L, k)
    np.testing.assert_allclose(t.weights.sum(axis=2), 1.0, atol=1e-5)
    assert (np.diff(t.weights, axis=2) <= 0).all(), "weights decrease along the top-k slots"
    assert t.metadata["generator"] == "placement.trace.synthesize" and t.metadata["seed"] == 3


def test_deepseek_r1_is_an_alias_of_v3():
    v3, r1 = MODEL_PRESETS["deepseek-v3"], MODEL_PRESETS["deepseek-r1"]
    assert {**v3.spec.to_dict(), "name": None} == {**r1.spec.to_dict(), "name": None}
    assert (v3.skew, v3.skew_spread, v3.affinity) == (r1.skew, r1.skew_spread, r1.affinity)
    assert v3.spec.num_groups == 8 and v3.spec.topk_groups == 4 and v3.spec.first_moe_layer == 3


def test_group_limit_is_used_not_just_respected(dsv3):
    # real DeepSeek-V3 routing concentrates each token's 8 experts in at most 4 of 8 groups; a
    # generator that ignored the limit would need 5-6 groups per token on average
    groups = np.sort(dsv3.experts[:2000] // 32, axis=2)
    distinct = 1 + (groups[:, :, 1:] != groups[:, :, :-1]).sum(axis=2)
    assert distinct.max() == 4 and distinct.mean() > 3.5


def test_custom_specs_including_degenerate_ones():
    grouped = ModelSpec("g", num_layers=3, num_experts=64, top_k=6, num_groups=8, topk_groups=2)
    t = synthesize(grouped, 500, seed=1)  # the Trace validator checks groups and distinctness
    assert t.experts.shape == (500, 3, 6)
    small_groups = ModelSpec("sg", num_layers=3, num_experts=32, top_k=6, num_groups=8, topk_groups=2)
    t = synthesize(small_groups, 2000, seed=1, affinity=0.5)  # 2 groups of 4 must hold 6 experts
    assert t.experts.shape == (2000, 3, 6)
    full = ModelSpec("full", num_layers=4, num_experts=4, top_k=4)  # every token takes every expert
    t = synthesize(full, 300, seed=2, affinity=0.9)
    np.testing.assert_array_equal(np.sort(t.experts, axis=2), np.broadcast_to(np.arange(4), (300, 4, 4)))
    top1 = synthesize(ModelSpec("t1", 2, 16, 1), 50, weights=True)
    assert (top1.weights == 1.0).all()


def test_same_seed_same_trace_and_threads_do_not_matter():
    a = synthesize("olmoe", 40_000, seed=7, workers=1)
    b = synthesize("olmoe", 40_000, seed=7, workers=2)
    np.testing.assert_array_equal(a.experts, b.experts)
    np.testing.assert_array_equal(a.weights, b.weights)
    c = synthesize("olmoe", 40_000, seed=8, workers=1)
    assert (a.experts != c.experts).mean() > 0.5


def test_origins_spread_evenly_over_ranks():
    t = synthesize("mixtral-8x7b", 1003, num_ranks=8, weights=False)
    assert t.num_ranks == 8 and t.origin.dtype == np.int32
    counts = np.bincount(t.origin, minlength=8)
    assert counts.max() - counts.min() <= 1
    assert (np.diff(t.origin) >= 0).all()  # contiguous blocks, as a batch split over DP ranks
    assert synthesize("mixtral-8x7b", 10).origin is None


# ------------------------------------------------------------------------------------------ parameters
def _successor_concentration(top1: np.ndarray, E: int) -> float:
    """Fraction of (token, boundary) whose top-1 at l+1 is the most frequent successor of its top-1 at l."""
    n, L = top1.shape
    hits = 0
    for layer in range(L - 1):
        T = np.bincount(top1[:, layer].astype(np.int64) * E + top1[:, layer + 1], minlength=E * E)
        hits += T.reshape(E, E).max(axis=1).sum()
    return hits / (n * (L - 1))


def _independent_concentration(top1: np.ndarray, E: int) -> float:
    """The same fraction if layers were independent: the next layer's largest top-1 share."""
    return float(np.mean([np.bincount(top1[:, layer], minlength=E).max() / top1.shape[0]
                          for layer in range(1, top1.shape[1])]))


def test_affinity_zero_is_independent_and_high_affinity_is_predictive():
    free = synthesize("mixtral-8x7b", 20_000, affinity=0.0, weights=False).experts[:, :, 0]
    base = _independent_concentration(free, 8)
    assert _successor_concentration(free, 8) == pytest.approx(base, abs=0.02)
    tied = synthesize("mixtral-8x7b", 20_000, affinity=0.8, weights=False).experts[:, :, 0]
    assert _successor_concentration(tied, 8) > _independent_concentration(tied, 8) + 0.3
    # the marginal load does not depend on the affinity (same seed => same popularity)
    lf = np.bincount(free[:, 5], minlength=8) / free.shape[0]
    lt = np.bincount(tied[:, 5], minlength=8) / tied.shape[0]
    np.testing.assert_allclose(lf, lt, atol=0.02)


def _stay_on_gpu(top1: np.ndarray, E: int, gpus: int, test: np.ndarray | None = None) -> float:
    """ExFlow's metric under a greedy placement: layer by layer, place layer l+1's experts (E/gpus per
    GPU) to maximise the top-1 boundaries that stay on one GPU (a linear assignment per layer); scored
    on ``test`` (other tokens) when given, else in-sample."""
    n, L = top1.shape
    per = E // gpus
    gpu_of = np.arange(E) // per
    placement = [gpu_of]  # GPU of each expert, layer by layer
    for layer in range(L - 1):
        T = np.bincount(top1[:, layer].astype(np.int64) * E + top1[:, layer + 1], minlength=E * E)
        W = np.zeros((gpus, E))
        np.add.at(W, gpu_of, T.reshape(E, E))  # W[g, j]: tokens leaving GPU g for expert j
        slots, experts = linear_sum_assignment(-np.repeat(W, per, axis=0))
        gpu_of = np.empty(E, dtype=np.int64)
        gpu_of[experts] = slots // per
        placement.append(gpu_of)
    scored = top1 if test is None else test
    gpu = np.stack([placement[layer][scored[:, layer]] for layer in range(L)], axis=1)
    return float((gpu[:, 1:] == gpu[:, :-1]).mean())


def test_mixtral_default_affinity_generalises_but_below_exflows_claim():
    # uniform routing keeps 25 % / 12.5 % of top-1 boundaries on one of 4 / 8 GPUs; ExFlow reports 43.6 % /
    # 28.5 % on Mixtral; the real recording of CALIBRATION.md gives an exact ExFlow placement 28 % / 14 % out
    # of sample. A greedy placement fitted to one token sample must beat uniform on fresh tokens of the
    # same model, and stay below ExFlow's figure
    fit = synthesize("mixtral-8x7b", 10_000, weights=False).experts[:, :, 0]
    test = synthesize("mixtral-8x7b", 10_000, token_seed=1, weights=False).experts[:, :, 0]
    for gpus, uniform, exflow in ((4, 0.25, 0.436), (8, 0.125, 0.285)):
        assert uniform + 0.05 < _stay_on_gpu(fit, 8, gpus, test=test) < exflow


def test_skew_increases_hot_over_mean_monotonically():
    hot = [calibration_stats(synthesize("olmoe", 4000, skew=s, weights=False))["hot_over_mean_median"]
           for s in (0.0, 0.4, 0.8, 1.2)]
    assert hot[0] < 1.3  # uniform popularity: only sampling noise
    assert all(a < b for a, b in zip(hot, hot[1:], strict=False)), hot


def test_skew_spread_separates_layers():
    flat = calibration_stats(synthesize("olmoe", 4000, skew_spread=0.0, weights=False), per_layer=True)
    wide = calibration_stats(synthesize("olmoe", 4000, skew_spread=0.6, weights=False), per_layer=True)
    assert np.ptp(wide["per_layer"]["cv"]) > 2 * np.ptp(flat["per_layer"]["cv"])


def test_layer_popularity_is_the_generators_target():
    spec = MODEL_PRESETS["olmoe"].spec
    p = layer_popularity(spec, seed=4, skew=0.5, skew_spread=0.1)
    assert p.shape == (16, 64)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    t = synthesize(spec, 20_000, seed=4, skew=0.5, skew_spread=0.1, affinity=0.0, weights=False)
    share = t.layer_counts() / (20_000 * 8)
    # distinct top-8 ids flatten the realised load a little (a popular expert cannot be taken twice)
    np.testing.assert_allclose(share, p, atol=0.012)
    assert np.corrcoef(share.ravel(), p.ravel())[0, 1] > 0.99


@pytest.mark.parametrize(("kwargs", "field", "message"), [
    ({"num_tokens": -5}, "num_tokens", "positive integer number of tokens, got -5"),
    ({"num_tokens": 0}, "num_tokens", "positive integer number of tokens, got 0"),
    ({"num_tokens": True}, "num_tokens", "positive integer"),
    ({"affinity": 1.5}, "affinity", r"finite number \[0, 1\], got 1.5"),
    ({"affinity": -0.1}, "affinity", r"\[0, 1\]"),
    ({"affinity": float("nan")}, "affinity", "finite number"),
    ({"skew": -1}, "skew", "finite number"),
    ({"skew": "high"}, "skew", "must be a number, got 'high'"),
    ({"skew_spread": -0.2}, "skew_spread", "finite number"),
    ({"gate_gap": -1.0}, "gate_gap", "finite number"),
    ({"num_ranks": 0}, "num_ranks", "positive integer or None, got 0"),
    ({"seed": -1}, "seed", "non-negative integer"),
    ({"workers": 0}, "workers", "positive integer or None"),
    ({"model": "gpt-5"}, "model", "unknown model preset 'gpt-5'; choose one of"),
    ({"model": 42}, "model", "preset name or a ModelSpec"),
    ({"model": ModelSpec("bad", 2, 4, 8)}, "model.top_k", "top_k=8 exceeds num_experts=4"),
    ({"model": ModelSpec("many", 2, 64, 4, num_groups=16, topk_groups=2)}, "model.num_groups",
     "at most 10 groups"),
])
def test_bad_parameters_are_named(kwargs, field, message):
    args = {"model": "mixtral-8x7b", "num_tokens": 10, **kwargs}
    with pytest.raises(PlacementInputError, match=message) as info:
        synthesize(args.pop("model"), args.pop("num_tokens"), **args)
    assert info.value.field == field
