"""The vectorised evaluator against a plain per-token loop written from the rules in its docstring.

The loop below shares no code with ``placement.evaluate``: it walks tokens one by one, picks
replicas by scanning the placement, and adds hops from ``topology.hops``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import Placement, evaluate
from placement.topology import preset
from placement.trace import ModelSpec, Trace

TOPO = preset("fat-tree:2x2")
G = TOPO.num_gpus


def naive(placement: Placement, experts: np.ndarray, origin: np.ndarray, dispatch: str, dedup: bool):
    """Per-token loop: returns (hops per token, sends leaving the GPU per token, load [L, G])."""
    H = TOPO.hops
    spb = TOPO.seconds_per_byte
    N, L, k = experts.shape
    dealt: dict[tuple[int, int, int], int] = {}

    def pick(layer: int, e: int, frm: int) -> int:
        gpus = sorted({g for g in range(G) for x in placement.slots[layer, g] if x == e})
        best = min((H[frm, g], spb[frm, g]) for g in gpus)
        tied = [g for g in gpus if (H[frm, g], spb[frm, g]) == best]
        key = (layer, e, frm)
        n = dealt.get(key, 0)
        dealt[key] = n + 1
        return tied[n % len(tied)]

    hops = 0.0
    sends = 0.0
    load = np.zeros((L, G))
    for t in range(N):
        prev: list[int] = []
        for layer in range(L):
            frm = int(origin[t]) if (layer == 0 or dispatch == "origin") else prev[0]
            dest = [pick(layer, int(e), frm) for e in experts[t, layer]]
            for g in dest:
                load[layer, g] += 1
            if dispatch == "origin" or layer == 0:
                targets = list(dict.fromkeys(dest)) if dedup else dest
                phases = 2 if dispatch == "origin" else 1
                for g in targets:
                    hops += phases * H[frm, g] if phases == 1 else H[frm, g] + H[g, frm]
                    sends += phases * (g != frm)
            elif dedup:
                sources = list(dict.fromkeys(prev))
                for g in dict.fromkeys(dest):
                    if g in sources:
                        continue
                    for u in sources:
                        hops += H[u, g] / len(sources)
                        sends += (u != g) / len(sources)
            else:
                for u in prev:
                    for g in dest:
                        hops += H[u, g] / k
                        sends += (u != g) / k
            prev = dest
    return hops / N, sends / N, load


@st.composite
def cases(draw):
    E = draw(st.sampled_from([4, 6, 8]))
    L = draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    N = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    experts = np.argsort(rng.random((N, L, E)), axis=2)[:, :, :k]
    origin = rng.integers(0, G, N)
    S = draw(st.integers(-(-E // G), -(-E // G) + 2))
    slots = np.full((L, G, S), -1)
    for layer in range(L):
        perm = rng.permutation(E)
        flat = np.full(G * S, -1)
        flat[rng.permutation(G * S)[:E]] = perm  # every expert once
        free = np.flatnonzero(flat < 0)
        extra = rng.integers(0, len(free) + 1)
        flat[free[:extra]] = rng.integers(0, E, extra)  # random replicas (may repeat on one GPU)
        slots[layer] = flat.reshape(G, S)
    spec = ModelSpec("h", L, E, k)
    return Trace.from_tokens(spec, experts, origin=origin, num_ranks=G), Placement(slots, num_experts=E)


@settings(max_examples=60, deadline=None)
@given(cases(), st.sampled_from(["origin", "coherent"]), st.booleans())
def test_matches_per_token_loop(case, dispatch, dedup):
    trace, placement = case
    m = evaluate(placement, trace, TOPO, dispatch=dispatch, dedup=dedup, origins="trace")
    hops, sends, load = naive(placement, trace.experts, trace.origin, dispatch, dedup)
    assert m.hop_transmissions == pytest.approx(hops, abs=1e-9)
    assert m.gpu_transmissions == pytest.approx(sends, abs=1e-9)
    assert np.allclose(m.gpu_load, load)


@settings(max_examples=30, deadline=None)
@given(cases(), st.sampled_from(["origin", "coherent"]), st.booleans())
def test_uniform_is_the_average_over_origins(case, dispatch, dedup):
    trace, placement = case
    m = evaluate(placement, trace, TOPO, dispatch=dispatch, dedup=dedup, origins="uniform")
    per_origin = [
        evaluate(placement, Trace.from_tokens(trace.model, trace.experts, origin=np.full(trace.num_tokens, u),
                                              num_ranks=G), TOPO, dispatch=dispatch, dedup=dedup, origins="trace")
        for u in range(G)
    ]
    assert m.hop_transmissions == pytest.approx(np.mean([x.hop_transmissions for x in per_origin]))
    assert np.allclose(m.arc_bytes, np.mean([x.arc_bytes for x in per_origin], axis=0))
    assert np.allclose(m.gpu_load, np.mean([x.gpu_load for x in per_origin], axis=0))


@settings(max_examples=30, deadline=None)
@given(cases())
def test_uniform_hops_equal_the_paper_objective(case):
    # arXiv 2508.09229: E[hops per token] = sum_{l,e} p[l,e] * h[gpu(l,e)],
    # h[s] = mean_u (d(u,s) + d(s,u)), p[l,e] = P(e in a token's top-k at layer l)
    trace, placement = case
    single = Placement.from_assignment(np.argmax(placement.replica_counts() > 0, axis=2), G)
    p = trace.layer_counts() / trace.num_tokens
    h = (TOPO.hops + TOPO.hops.T).mean(axis=0)
    expected = (p * h[single.assignment()]).sum()
    assert evaluate(single, trace, TOPO, origins="uniform").hop_transmissions == pytest.approx(expected)


@settings(max_examples=20, deadline=None)
@given(cases(), st.integers(0, 1000))
def test_relabelling_experts_changes_nothing(case, seed):
    trace, placement = case
    perm = np.random.default_rng(seed).permutation(trace.num_experts)
    relabelled = Trace.from_tokens(trace.model, perm[trace.experts], origin=trace.origin, num_ranks=G)
    slots = np.where(placement.slots >= 0, perm[np.maximum(placement.slots, 0)], -1)
    a = evaluate(placement, trace, TOPO, origins="trace")
    b = evaluate(Placement(slots, trace.num_experts), relabelled, TOPO, origins="trace")
    assert a.hop_transmissions == pytest.approx(b.hop_transmissions)
    assert np.allclose(a.gpu_load, b.gpu_load)
