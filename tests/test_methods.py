"""The method registry, option checking, EPLB through the API, and compare()."""

from __future__ import annotations

import numpy as np
import pytest

import placement
from placement import METHODS, evaluate
from placement.errors import PlacementInputError
from placement.methods import get_method
from placement.topology import preset
from placement.trace import ModelSpec, Trace

TOPO = preset("fat-tree:2x4")


@pytest.fixture(scope="module")
def trace():
    rng = np.random.default_rng(3)
    E = 16
    # skewed popularity: expert e chosen with probability ~ 1/(e+1)
    p = 1.0 / np.arange(1, E + 1)
    p /= p.sum()
    ex = np.stack([np.stack([rng.choice(E, 2, replace=False, p=p) for _ in range(3)]) for _ in range(400)])
    return Trace.from_tokens(ModelSpec("skew", 3, E, 2, num_groups=4), ex, origin=rng.integers(0, 8, 400),
                             num_ranks=8)


def test_registry_lists_baselines_in_order():
    assert list(METHODS)[:4] == ["contiguous", "round_robin", "random", "eplb"]
    with pytest.raises(PlacementInputError, match="unknown method 'nope'; choose one of"):
        get_method("nope")


def test_option_validation():
    m = get_method("random")
    assert m.parse_options({"seed": "7"}) == {"seed": 7}
    with pytest.raises(PlacementInputError, match=r"unknown option\(s\) \['sede'\] for method 'random'"):
        m.parse_options({"sede": 1})
    with pytest.raises(PlacementInputError, match="cannot convert 'x' to int for option 'seed'"):
        m.parse_options({"seed": "x"})
    with pytest.raises(PlacementInputError, match="cannot convert 'maybe' to bool"):
        get_method("eplb").parse_options({"faithful": "maybe"})


def test_eplb_balances_load_with_replicas(trace):
    sol = placement.solve(trace, TOPO, method="eplb")
    p = sol.placement
    assert p.has_replicas and p.slots.shape == (3, 8, 3)  # 16 + 8 redundant = 24 slots = 3 per GPU
    assert (p.slots >= 0).all()
    assert p.metadata["method"] == "eplb" and p.metadata["options"]["redundant"] == -1
    # no expert twice on one GPU in the default mode
    assert p.replica_counts().max() == 1
    # the hottest expert of every layer got the most replicas
    counts = p.num_replicas()
    load = trace.layer_counts()
    assert all(counts[layer, load[layer].argmax()] == counts[layer].max() for layer in range(3))
    m_eplb = evaluate(p, trace, TOPO)
    m_cont = evaluate(placement.solve(trace, TOPO, method="contiguous").placement, trace, TOPO)
    # replicas split their expert's load: total computations unchanged, imbalance lower
    assert m_eplb.gpu_load.sum() == pytest.approx(m_cont.gpu_load.sum())
    assert m_eplb.load_imbalance < m_cont.load_imbalance


def test_eplb_works_on_count_traces(trace):
    counts = Trace.from_counts(trace.model, trace.layer_counts())
    sol = placement.solve(counts, TOPO, method="eplb", redundant=8)
    assert sol.placement.num_replicas().sum() == 3 * 24


def test_tokens_method_refuses_counts(restore_registry):
    # a method that declares needs="tokens" is refused on a count trace before it runs
    from placement.methods import Method, register, run_method
    from placement.stats import TraceStats

    register(Method("needs-tokens", "test", "placement.baselines.methods:contiguous_method", needs="tokens"))
    ct = Trace.from_counts(ModelSpec("c", 1, 4, 1), np.ones((1, 4), dtype=int))
    with pytest.raises(PlacementInputError, match="method 'needs-tokens' needs a per-token trace"):
        run_method("needs-tokens", TraceStats(ct), TOPO)


def test_compare_table(trace):
    frame = placement.compare(trace, TOPO, ["round_robin", "eplb"], reference="contiguous")
    assert list(frame.index) == ["round_robin", "eplb", "contiguous"]
    assert frame.loc["contiguous", "hop_transmissions/ref"] == pytest.approx(1.0)
    ratio = frame.loc["eplb", "hop_transmissions"] / frame.loc["contiguous", "hop_transmissions"]
    assert frame.loc["eplb", "hop_transmissions/ref"] == pytest.approx(ratio)
    assert frame.loc["eplb", "termination"] == "heuristic"


def test_compare_inline_options(trace):
    frame = placement.compare(trace, TOPO, ["eplb", "eplb(faithful=true, redundant=16)"], reference="eplb")
    assert list(frame.index) == ["eplb", "eplb(faithful=true, redundant=16)"]
    assert frame.loc["eplb(faithful=true, redundant=16)", "max_slots_used"] == 3 * 4  # (16 + 16) / 8 slots x 3
    with pytest.raises(PlacementInputError, match="expected KEY=VALUE inside"):
        placement.compare(trace, TOPO, ["eplb(faithful)"])


def test_negative_solver_limits_are_refused():
    for name in ("transmission-load", "exflow", "exflow-bisect", "moetuner"):
        with pytest.raises(PlacementInputError, match=f"option 'time_limit' of method '{name}' must be >= 0"):
            get_method(name).parse_options({"time_limit": "-3"})
    with pytest.raises(PlacementInputError, match="option 'threads' of method 'exflow' must be >= 0"):
        get_method("exflow").parse_options({"threads": "-1"})
