"""TraceStats against brute-force Python loops on small random traces."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import placement.trace.counting as counting
from placement.errors import NeedsTokenTraceError, PlacementInputError
from placement.stats import TraceStats, coactivation_counts, expert_load, transition_counts
from placement.trace import ModelSpec, Trace
from placement.trace.counting import load_by_origin


def _random_trace(seed: int, tokens: int = 60, layers: int = 4, experts: int = 9, k: int = 3,
                  ranks: int | None = 3) -> Trace:
    rng = np.random.default_rng(seed)
    ids = np.array([[rng.permutation(experts)[:k] for _ in range(layers)] for _ in range(tokens)])
    origin = rng.integers(0, ranks, tokens) if ranks else None
    return Trace.from_tokens(ModelSpec("rand", layers, experts, k), ids, origin=origin, num_ranks=ranks)


def _brute(trace: Trace) -> dict[str, np.ndarray]:
    return _naive_counts(trace.experts, trace.num_experts, trace.origin, trace.num_ranks or 1)


def _naive_counts(experts: np.ndarray, E: int, origin: np.ndarray | None = None, R: int = 1) -> dict[str, np.ndarray]:
    """Every count by plain Python loops over tokens, layers and top-k slots (ids may repeat)."""
    n, L, k = experts.shape
    load = np.zeros((L, E), dtype=np.int64)
    by_origin = np.zeros((R, L, E), dtype=np.int64)
    trans = np.zeros((max(L - 1, 0), E, E), dtype=np.int64)
    coact = np.zeros((L, E, E), dtype=np.int64)
    for t in range(n):
        for layer in range(L):
            ids = [int(x) for x in experts[t, layer]]
            for i in ids:
                load[layer, i] += 1
                if origin is not None:
                    by_origin[origin[t], layer, i] += 1
                for j in ids:
                    if i != j:
                        coact[layer, i, j] += 1
                if layer + 1 < L:
                    for j in experts[t, layer + 1]:
                        trans[layer, i, int(j)] += 1
    return {"load": load, "by_origin": by_origin, "trans": trans, "coact": coact}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trace_stats_match_brute_force(seed):
    trace = _random_trace(seed)
    expect = _brute(trace)
    s = TraceStats(trace)
    np.testing.assert_array_equal(s.load, expect["load"])
    np.testing.assert_array_equal(s.load_by_origin, expect["by_origin"])
    np.testing.assert_array_equal(s.origin_counts, np.bincount(trace.origin, minlength=3))
    assert len(s.transitions) == trace.num_layers - 1
    for layer, mat in enumerate(s.transitions):
        assert mat.dtype == np.int64
        np.testing.assert_array_equal(mat.toarray(), expect["trans"][layer])
    for layer, mat in enumerate(s.coactivation):
        np.testing.assert_array_equal(mat.toarray(), expect["coact"][layer])
        np.testing.assert_array_equal(mat.toarray(), mat.toarray().T)
    np.testing.assert_allclose(s.probability.sum(axis=1), trace.top_k)
    np.testing.assert_allclose(s.probability, expect["load"] / trace.num_tokens)
    assert s.kind == "tokens"


def test_counting_conventions():
    trace = _random_trace(5, tokens=40)
    s = TraceStats(trace)
    n, L, k = trace.experts.shape
    assert (s.load.sum(axis=1) == n * k).all()
    assert all(m.sum() == n * k * k for m in s.transitions)  # all k*k pairs of each token
    assert all(m.sum() == n * k * (k - 1) for m in s.coactivation)
    assert all(m.diagonal().sum() == 0 for m in s.coactivation)


def test_no_origins_gives_none():
    s = TraceStats(_random_trace(3, ranks=None))
    assert s.load_by_origin is None and s.origin_counts is None


def test_block_boundaries_do_not_change_counts(monkeypatch):
    # force many small blocks in the load and pair counters (the paths large traces take)
    trace = _random_trace(7, tokens=101, k=4)
    expect = _brute(trace)
    monkeypatch.setattr(counting, "_PAIR_BLOCK", 20)
    monkeypatch.setattr(counting, "_LOAD_BLOCK", 50)
    np.testing.assert_array_equal(expert_load(trace.experts, 9), expect["load"])
    np.testing.assert_array_equal(TraceStats(trace).load_by_origin, expect["by_origin"])
    for layer, mat in enumerate(transition_counts(trace.experts, 9)):
        np.testing.assert_array_equal(mat.toarray(), expect["trans"][layer])
    for layer, mat in enumerate(coactivation_counts(trace.experts, 9)):
        np.testing.assert_array_equal(mat.toarray(), expect["coact"][layer])


def test_wide_ids_do_not_overflow():
    # E*E beyond int16 and ids stored as int16: codes must be built in a wide type
    spec = ModelSpec("wide", num_layers=2, num_experts=300, top_k=2)
    ids = np.array([[[299, 298], [297, 0]], [[299, 1], [298, 297]]], dtype=np.int16)
    T = transition_counts(Trace.from_tokens(spec, ids).experts, 300)[0]
    assert T[299, 297] == 2 and T[298, 0] == 1 and T.sum() == 8


def test_count_trace_has_load_but_no_token_statistics():
    spec = ModelSpec("c", num_layers=2, num_experts=3, top_k=2)
    counts = np.array([[[4, 2, 0], [1, 1, 4]], [[2, 2, 2], [3, 3, 0]]])  # [ranks=2, layers, experts]
    s = TraceStats(Trace.from_counts(spec, counts))
    assert s.kind == "counts"
    np.testing.assert_array_equal(s.load, counts.sum(axis=0))
    np.testing.assert_array_equal(s.load_by_origin, counts)
    np.testing.assert_array_equal(s.origin_counts, [3, 3])  # layer-0 selections / k
    np.testing.assert_allclose(s.probability.sum(axis=1), 2)
    with pytest.raises(NeedsTokenTraceError, match="inter-layer transition statistics needs a per-token"):
        _ = s.transitions
    with pytest.raises(NeedsTokenTraceError, match="co-activation"):
        _ = s.coactivation
    flat = TraceStats(Trace.from_counts(spec, counts.sum(axis=0)))
    assert flat.load_by_origin is None and flat.origin_counts is None


@st.composite
def _raw_traces(draw):
    """``(experts [tokens, layers, k], E, origin, R, pair block)``; ids distinct per top-k or, sometimes, repeated."""
    E = draw(st.sampled_from([1, 2, 3, 7, 16, 17, 256, 257]))  # code dtypes uint8 / uint16 / uint32
    k = draw(st.integers(1, min(E, 5)))
    tokens = draw(st.integers(1, 25))
    layers = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        ids = np.argsort(rng.random((tokens, layers, E)), axis=2)[:, :, :k]  # distinct, as a Trace holds
    else:
        ids = rng.integers(0, E, (tokens, layers, k))  # the raw kernels take repeats too
    ids = ids.astype(draw(st.sampled_from([np.int16, np.int32, np.int64, np.uint16])))
    R = draw(st.integers(1, 3))
    return ids, E, rng.integers(0, R, tokens), R, draw(st.sampled_from([1, 7, 64, 1 << 19]))


@settings(max_examples=80, deadline=None)
@given(_raw_traces())
def test_counting_kernels_match_naive_loops(case):
    experts, E, origin, R, block = case
    expect = _naive_counts(experts, E, origin, R)
    with mock.patch.object(counting, "_PAIR_BLOCK", block), mock.patch.object(counting, "_LOAD_BLOCK", block):
        load = expert_load(experts, E)
        by_origin = load_by_origin(experts, origin, R, E)
        trans = transition_counts(experts, E)
        coact = coactivation_counts(experts, E)
    assert load.dtype == by_origin.dtype == np.int64
    np.testing.assert_array_equal(load, expect["load"])
    np.testing.assert_array_equal(by_origin, expect["by_origin"])
    assert len(trans) == experts.shape[1] - 1 and len(coact) == experts.shape[1]
    for got, want in [*zip(trans, expect["trans"], strict=True), *zip(coact, expect["coact"], strict=True)]:
        assert got.dtype == np.int64 and got.shape == (E, E)
        np.testing.assert_array_equal(got.toarray(), want)


def test_wide_ids_coactivation():
    # E = 300: pair codes need uint32
    ids = np.array([[[299, 298, 0]], [[298, 299, 1]]], dtype=np.int16)
    C = coactivation_counts(ids, 300)[0]
    assert C[299, 298] == C[298, 299] == 2 and C[0, 299] == 1 and C[1, 298] == 1 and C.sum() == 12


@pytest.mark.parametrize(("experts", "num_experts", "field"), [
    (np.zeros((2, 3), dtype=np.int64), 4, "experts"),  # not [tokens, layers, k]
    (np.zeros((2, 1, 1), dtype=np.float64), 4, "experts"),  # not integers
    (np.full((2, 1, 1), 4), 4, "experts"),  # id out of range
    (np.full((2, 1, 1), -1), 4, "experts"),  # negative id
    (np.zeros((2, 1, 1), dtype=np.int64), 0, "num_experts"),
])
def test_kernels_reject_bad_input(experts, num_experts, field):
    for kernel in (expert_load, transition_counts, coactivation_counts):
        with pytest.raises(PlacementInputError, match=f"field '{field}'"):
            kernel(experts, num_experts)


def test_load_by_origin_rejects_bad_origins():
    ids = np.zeros((2, 1, 1), dtype=np.int64)
    with pytest.raises(PlacementInputError, match="origin"):
        load_by_origin(ids, np.array([0, 2]), 2, 1)
    with pytest.raises(PlacementInputError, match="origin"):
        load_by_origin(ids, np.array([0]), 2, 1)


def test_stats_reexports_the_trace_kernels():
    import placement.stats as stats_module

    for name in ("expert_load", "transition_counts", "coactivation_counts"):
        assert getattr(stats_module, name) is getattr(counting, name)
