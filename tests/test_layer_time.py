"""The fast path of ``layer-time`` (placement.formulations.layer_time): replica counts, packing, the
EPLB-compatible entry point and its lower bound, checked by hand and by brute force on tiny cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from placement.errors import PlacementInputError
from placement.formulations.layer_time import load_lower_bound, pack, rebalance, replica_counts


def test_dhondt_counts_by_hand():
    # loads 6, 3, 1 and 5 slots: the 2 extra replicas go to 6 (6/1 > 3/1) and again to 6 (6/2 = 3 > 3/1? tie,
    # argmax takes the first: expert 0), giving counts 3, 1, 1 with shares 2, 3, 1
    assert replica_counts(np.array([[6.0, 3.0, 1.0]]), 5).tolist() == [[3, 1, 1]]


def brute_force_max_load(share: np.ndarray, count: np.ndarray, G: int, S: int) -> float:
    """The least largest GPU load over every way to put the replicas into G GPUs of S slots, no GPU
    holding one expert twice."""
    items = [e for e, c in enumerate(count) for _ in range(c)]
    best = np.inf
    for gpus in itertools.product(range(G), repeat=len(items)):
        fill = np.bincount(gpus, minlength=G)
        if (fill > S).any():
            continue
        if len({(g, e) for g, e in zip(gpus, items, strict=True)}) < len(items):
            continue
        load = np.bincount(gpus, weights=[share[e] for e in items], minlength=G)
        best = min(best, load.max())
    return best


@pytest.mark.parametrize("seed", range(6))
def test_packing_against_brute_force_and_the_bound(seed):
    rng = np.random.default_rng(seed)
    E, G, S = 4, 3, 2  # 6 slots: 2 extra replicas
    w = rng.integers(1, 30, size=(1, E)).astype(float)
    count = replica_counts(w, G * S)
    slots = pack(w, count, G, 1, S)
    # feasible: every replica placed once, no GPU holds an expert twice
    assert sorted(slots[0][slots[0] >= 0].tolist()) == sorted(np.repeat(np.arange(E), count[0]).tolist())
    assert all(len(set(r[r >= 0].tolist())) == (r >= 0).sum() for r in slots[0])
    share = w[0] / count[0]
    got = max(sum(share[e] for e in row if e >= 0) for row in slots[0])
    best = brute_force_max_load(share, count[0], G, S)
    bound = load_lower_bound(w, count, G)[0]
    assert bound <= best + 1e-12  # the bound is valid
    assert got <= best * 1.25 + 1e-12  # the fast path is a heuristic; on these instances within 25 %


def test_rebalance_is_eplb_shaped():
    rng = np.random.default_rng(0)
    w = rng.gamma(0.5, 100.0, size=(5, 16))
    phy2log, log2phy, logcnt = rebalance(w, 24, 4, 2, 8)
    assert phy2log.shape == (5, 24) and logcnt.shape == (5, 16)
    assert (logcnt.sum(axis=1) == 24).all()
    for layer in range(5):
        for e in range(16):
            phys = log2phy[layer, e][log2phy[layer, e] >= 0]
            assert len(phys) == logcnt[layer, e] and (phy2log[layer, phys] == e).all()
    # group-aware: each group of 4 experts stays within one node (GPUs 0-3 or 4-7, 12 slots each)
    node = (np.arange(24) // 3) // 4
    for layer in range(5):
        for g in range(4):
            members = np.isin(phy2log[layer], np.arange(4 * g, 4 * g + 4))
            assert len(set(node[members].tolist())) == 1
    with pytest.raises(PlacementInputError, match="divide over num_gpus"):
        rebalance(w, 25, 4, 2, 8)
