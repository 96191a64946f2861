"""``balance`` (placement.formulations.balance): the least largest GPU load with replicas, checked by brute
force over every packing of tiny instances, and its closed-form bound checked to be valid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from placement.api import as_stats
from placement.formulations.balance import cardinality_bound
from placement.formulations.layer_time import replica_counts
from placement.methods import run_method
from placement.search.method import max_gpu_load
from placement.topology import preset
from placement.trace import ModelSpec, Trace


def brute_force(share: np.ndarray, count: np.ndarray, G: int, S: int) -> float:
    """Least largest GPU load over every way to put the replicas on G GPUs of S slots, never two copies of an
    expert on one GPU."""
    items = [e for e, c in enumerate(count) for _ in range(c)]
    best = np.inf
    for gpus in itertools.product(range(G), repeat=len(items)):
        if (np.bincount(gpus, minlength=G) > S).any():
            continue
        if len(set(zip(gpus, items, strict=True))) < len(items):
            continue
        best = min(best, np.bincount(gpus, weights=[share[e] for e in items], minlength=G).max())
    return float(best)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("E", "G", "redundant"), [(6, 3, 0), (4, 3, 2)])
def test_balance_is_the_brute_force_optimum(seed, E, G, redundant):
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 40, size=(2, E))
    model = ModelSpec("tiny", 2, E, 1)
    # a count trace carries the loads directly
    trace = Trace.from_counts(model, w)
    topo = preset(f"fat-tree:1x{G}")
    sol = run_method("balance", as_stats(trace), topo, redundant=redundant)
    S = (E + redundant) // G
    count = replica_counts(w.astype(float), E + redundant)
    share = w / count
    best = sum(brute_force(share[l], count[l], G, S) for l in range(2))
    # the placement's peak loads, recomputed from its slots, add up to the objective, which is the optimum
    assert max_gpu_load(sol.placement.slots.astype(np.int64), w.astype(float)).sum() == pytest.approx(sol.objective)
    assert sol.objective == pytest.approx(best, rel=1e-9)
    assert sol.bound <= best * (1 + 1e-9) and sol.termination.value == "optimal"
    for l in range(2):  # the closed-form bound never exceeds the optimum
        assert cardinality_bound(share[l], count[l], G, S) <= brute_force(share[l], count[l], G, S) + 1e-9


def test_cardinality_bound_by_hand():
    # shares 10, 1, 1, 1 on 2 GPUs of 2 slots: the GPU holding 10 holds one more replica, at least 1 -> 11
    assert cardinality_bound(np.array([10.0, 1, 1, 1]), np.ones(4, dtype=int), 2, 2) == 11.0
    # whole loads: mean 6.5 rounds up to 7 (loads 1..4 on 2 GPUs of 2 slots: {1,4} {2,3} -> 5; mean 5)
    assert cardinality_bound(np.array([4.0, 3, 3, 3]), np.ones(4, dtype=int), 2, 2) == 7.0


def test_group_bound_when_hot_experts_share_the_light_ones():
    # 9, 9, 9 on 4 GPUs of 2 slots need 3 companions among 1, 1, 5, 5, 5: the three GPUs holding them carry
    # 27 + 1 + 1 + 5 = 34, so one carries >= 34 / 3 -> 12 (whole loads); one hot expert alone gives 9 + 1 = 10
    share = np.array([9.0, 9, 9, 1, 1, 5, 5, 5])
    ones = np.ones(8, dtype=int)
    assert cardinality_bound(share, ones, 4, 2) == 12.0
    assert brute_force(share, ones, 4, 2) == 14.0  # 9 + 5 on one GPU at best


@pytest.mark.parametrize("seed", range(20))
def test_group_bound_is_never_above_the_optimum(seed):
    rng = np.random.default_rng(seed)
    share = np.sort(rng.integers(1, 30, size=8).astype(float))
    share[-rng.integers(1, 4):] *= 4  # a few hot experts
    ones = np.ones(8, dtype=int)
    for G, S in ((4, 2), (2, 4)):
        assert cardinality_bound(share, ones, G, S) <= brute_force(share, ones, G, S) + 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_exchange_keeps_the_items_and_never_raises_the_peak(seed):
    """Slot exchanges permute the slots' contents across GPUs, never put two replicas of an expert on one GPU,
    and never raise the largest GPU load (here from a deliberately poor start)."""
    from placement.formulations.balance import exchange

    rng = np.random.default_rng(seed)
    E, G, S = 12, 4, 4  # 16 slots: 12 experts, experts 0 and 1 twice, 2 slots empty
    share = rng.integers(1, 50, size=E).astype(float)
    slots = np.array([[0, 4, 8, -1], [1, 5, 9, -1], [2, 6, 10, 0], [3, 7, 11, 1]])
    lower = cardinality_bound(share, np.r_[[2, 2], np.ones(E - 2, dtype=int)], G, S)
    out = exchange(share, slots, lower)
    assert sorted(out.ravel().tolist()) == sorted(slots.ravel().tolist())
    for g in range(G):
        held = out[g][out[g] >= 0]
        assert held.size == np.unique(held).size
    peak = lambda s: max(float(share[s[g][s[g] >= 0]].sum()) for g in range(G))  # noqa: E731
    assert peak(out) <= peak(slots)
    assert peak(out) >= lower - 1e-9
