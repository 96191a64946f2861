"""The congestion-aware method ``alltoall-time``: exact objective, optimality, and beating hop-minimisation.

``nic_topology()`` (tests/conftest.py): 4 GPUs on 2 servers with unequal NIC bandwidths and latencies.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import placement
from placement import evaluate, load_trace
from placement.api import as_stats
from placement.errors import PlacementInputError
from placement.formulations import alltoall
from placement.methods import run_method
from placement.topology import preset
from placement.trace import ModelSpec, Trace

DRAGONFLY = "dragonfly:groups=4,routers_per_group=2,servers_per_router=1,gpus=4"


def _tiny_trace() -> Trace:
    rng = np.random.default_rng(5)
    p = np.array([0.55, 0.25, 0.15, 0.05])
    ex = np.stack([np.stack([rng.choice(4, 2, replace=False, p=p) for _ in range(2)]) for _ in range(60)])
    return Trace.from_tokens(ModelSpec("tiny", 2, 4, 2, hidden_size=64), ex)


def _latency_terms(m) -> float:
    """The evaluator's latency part of alltoall_time: per layer and phase, max latency among sends."""
    topo_lat = _latency_terms.lat
    G = topo_lat.shape[0]
    off = ~np.eye(G, dtype=bool)
    total = 0.0
    for X in (m.layer_traffic, np.transpose(m.layer_traffic, (0, 2, 1))):
        sends = (X > 0) & off[None]
        total += float(np.where(sends, topo_lat[None], 0.0).max(axis=(1, 2))[sends.any(axis=(1, 2))].sum())
    return total


@pytest.mark.parametrize("topo_name", ["tiny", "fat-tree:2x2"])
@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_objective_is_evaluator_time_minus_latency(topo_name, dtype, nic_topology):
    topo = nic_topology() if topo_name == "tiny" else preset(topo_name)
    trace = _tiny_trace()
    for solver in ("heuristic", "milp"):
        sol = placement.solve(trace, topo, method="alltoall-time", solver=solver, dtype=dtype, time_limit=10)
        m = evaluate(sol.placement, trace, topo, origins="uniform", dispatch="origin", dedup=False, dtype=dtype)
        _latency_terms.lat = topo.latency
        assert sol.objective == pytest.approx(m.alltoall_time - _latency_terms(m), rel=1e-9, abs=0)
        # any placement: the instance's objective is the evaluator's, too
        cont = placement.solve(trace, topo, method="contiguous").placement
        inst = alltoall.build_instance(as_stats(trace), topo, dtype=dtype)
        mc = evaluate(cont, trace, topo, origins="uniform", dtype=dtype)
        assert alltoall.layer_times(inst, cont.assignment()).sum() == pytest.approx(
            mc.alltoall_time - _latency_terms(mc), rel=1e-9, abs=0)


@pytest.mark.parametrize("topo_name", ["tiny", "fat-tree:2x2"])
@pytest.mark.parametrize("m", [1, 2])
def test_brute_force_optimal(topo_name, m, nic_topology):
    topo = nic_topology() if topo_name == "tiny" else preset(topo_name)
    trace = _tiny_trace()
    inst = alltoall.build_instance(as_stats(trace), topo, experts_per_gpu=m)
    best = 0.0
    for layer in range(trace.num_layers):
        w = inst.load[layer]
        values = []
        for a in itertools.product(range(4), repeat=4):
            a = np.array(a)
            if np.bincount(a, minlength=4).max() <= m:
                ld, lc = w @ np.eye(4)[a] @ inst.dispatch_seconds, w @ np.eye(4)[a] @ inst.combine_seconds
                values.append(ld.max() + lc.max())
        best += min(values)
        assert alltoall.arc_bound(inst, w) <= min(values) * (1 + 1e-12)
    sol = placement.solve(trace, topo, method="alltoall-time", experts_per_gpu=m, time_limit=20)
    # the LP bound is scaled down by 1e-7 against solver tolerances, so a gap that small may remain
    assert sol.termination == "optimal" and sol.gap <= 1e-6
    assert sol.objective == pytest.approx(best, rel=1e-9)
    assert best * (1 - 1e-6) <= sol.bound <= best * (1 + 1e-9)
    assert sol.placement.replica_counts().sum(axis=1).max() <= m  # at most m experts per GPU and layer
    heur = placement.solve(trace, topo, method="alltoall-time", solver="heuristic", experts_per_gpu=m)
    assert heur.objective >= best * (1 - 1e-12) and heur.bound <= best * (1 + 1e-12)


@pytest.fixture(scope="module")
def small_deepseek():
    full = load_trace("data/traces/deepseek-v3.npz")
    ex = np.asarray(full.experts)[:1024, :3, :]
    return Trace.from_tokens(ModelSpec("ds-small", 3, full.num_experts, full.top_k, hidden_size=7168), ex)


def test_dragonfly_beats_contiguous_and_transmission_load(small_deepseek):
    topo = preset(DRAGONFLY)
    trace = small_deepseek
    times = {}
    for name, opts in (("contiguous", {}), ("transmission-load", {}),
                       ("alltoall-time", {"time_limit": 6.0})):
        sol = placement.solve(trace, topo, method=name, **opts)
        times[name] = evaluate(sol.placement, trace, topo, origins="uniform").alltoall_time
        if name == "alltoall-time":
            assert sol.bound is not None and sol.bound <= sol.objective
            assert sol.gap is not None and sol.gap >= 0
            assert sol.placement.replica_counts().sum(axis=1).max() <= 8
            assert sol.wall_time < 15
    assert times["alltoall-time"] <= times["contiguous"]
    assert times["alltoall-time"] <= times["transmission-load"]


def test_option_errors():
    trace = _tiny_trace()
    topo = preset("fat-tree:2x2")
    with pytest.raises(PlacementInputError, match="experts_per_gpu"):
        alltoall.build_instance(as_stats(trace), topo, experts_per_gpu=-1)
    with pytest.raises(PlacementInputError, match="dtype"):
        alltoall.build_instance(as_stats(trace), topo, dtype="fp64")
    with pytest.raises(PlacementInputError, match="must be one of"):
        run_method("alltoall-time", as_stats(trace), topo, solver="nope")
    three = Trace.from_tokens(ModelSpec("t", 1, 9, 1), np.arange(9).reshape(9, 1, 1))
    with pytest.raises(PlacementInputError, match="experts_per_gpu=2"):
        alltoall.build_instance(as_stats(three), topo, experts_per_gpu=2)
