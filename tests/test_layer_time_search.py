"""The ``layer-time`` method's search (placement.search): the objective is the evaluator's step time, every
start is matched or beaten per layer, the migration budget holds, windows fit load shift, and ECMP-free
fat-tree routes no longer put every pair of leaves on one spine."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import placement
from placement import evaluate
from placement.api import as_stats, solve
from placement.errors import PlacementInputError
from placement.search.local import moved_experts
from placement.search.method import window_traces
from placement.search.objective import StepObjective
from placement.topology import preset
from placement.trace.synthesize import MODEL_PRESETS, synthesize

SERVING = {"replica": "vllm", "transport": "deepep", "dispatch_dtype": "fp8"}


@pytest.fixture(scope="module")
def case():
    spec = dataclasses.replace(MODEL_PRESETS["deepseekmoe-16b"].spec, num_layers=3)
    trace = synthesize(spec, 1024, seed=4, num_ranks=8, skew=1.0)
    return trace, preset("fat-tree:2x4")


def test_objective_is_the_evaluators_step_time_and_beats_every_start(case):
    trace, topo = case
    sol = solve(trace, topo, "layer-time", time_limit=20, **SERVING)
    m = evaluate(sol.placement, trace, topo, **SERVING)
    assert sol.objective == pytest.approx(m.step_time, rel=1e-12)
    # each start is a whole placement the search could have returned: the answer is no slower than any
    for name, total in sol.info["seeds"].items():
        assert sol.objective <= total * (1 + 1e-12), name
    eplb = solve(trace, topo, "eplb").placement
    assert sol.objective <= evaluate(eplb, trace, topo, **SERVING).step_time * (1 + 1e-12)


def test_step_objective_matches_evaluate_per_layer(case):
    trace, topo = case
    p = solve(trace, topo, "eplb").placement
    obj = StepObjective.build(trace, topo, **SERVING)
    np.testing.assert_allclose(obj.layer_times(p.slots), evaluate(p, trace, topo, **SERVING).step.layer_time,
                               rtol=1e-12)
    # the guidance counts are the trace's selections per sender, scaled to one serving step
    assert obj.sent.sum() == pytest.approx(obj.setup.tokens_per_step * trace.top_k * trace.num_layers)


def test_migration_budget(case, tmp_path):
    trace, topo = case
    current = solve(trace, topo, "contiguous").placement
    E, G = trace.num_experts, topo.num_gpus
    # contiguous has E / G slots per GPU: the deployed layout fixes redundant = 0
    path = tmp_path / "current.json"
    current.save(path)
    base = evaluate(current, trace, topo, **SERVING).step_time
    frozen = solve(trace, topo, "layer-time", current=str(path), max_moves=0, redundant=0, **SERVING)
    assert frozen.info["experts_moved"] == 0
    assert np.array_equal(frozen.placement.slots, current.slots)
    some = solve(trace, topo, "layer-time", current=str(path), max_moves=4, redundant=0, time_limit=20, **SERVING)
    moved = moved_experts(some.placement.slots, current.slots.astype(np.int64), E)
    assert moved.max() <= 4 and some.info["experts_moved"] == moved.sum()
    assert some.info["bytes_moved"] > 0 and some.objective < base
    with pytest.raises(PlacementInputError, match="slots per GPU"):
        solve(trace, topo, "layer-time", current=str(path), **SERVING)  # default redundant: 1 slot per GPU more
    with pytest.raises(PlacementInputError, match="current="):
        solve(trace, topo, "layer-time", max_moves=3, **SERVING)
    assert G == 8


def test_windows_fit_the_mean_over_successive_windows(case):
    trace, topo = case
    sol = solve(trace, topo, "layer-time", windows=2, time_limit=20, **SERVING)
    parts = window_traces(trace, 2)
    mean = np.mean([evaluate(sol.placement, t, topo, **SERVING).step_time for t in parts])
    assert sol.objective == pytest.approx(mean, rel=1e-12)
    worst = solve(trace, topo, "layer-time", windows=2, robust="max", time_limit=20, **SERVING)
    per = [evaluate(worst.placement, t, topo, **SERVING).step.layer_time for t in parts]
    assert worst.objective == pytest.approx(np.max(per, axis=0).sum(), rel=1e-12)


def test_fast_solver_reports_the_evaluators_figure(case):
    trace, topo = case
    sol = solve(trace, topo, "layer-time", solver="fast", **SERVING)
    assert sol.objective == pytest.approx(evaluate(sol.placement, trace, topo, **SERVING).step_time, rel=1e-12)


def test_fat_tree_spreads_leaf_pairs_over_spines():
    # D-mod-k: leaf-to-spine arcs of a non-blocking fat-tree carry equally many GPU pairs; before, every pair of
    # leaves shared the first spine the shortest-path search found
    topo = preset("fat-tree:4x8")
    pairs = np.diff(topo.route_matrix.tocsc().indptr)
    spine = np.array(topo.arc_tier) == "spine"
    # 4 servers, 2 per leaf: 2 leaves; each sends 16 x 16 pairs to the other over 8 spines = 32 per up-arc
    assert pairs[spine].min() == pairs[spine].max() == 16 * 16 // 8
    assert np.array_equal(topo.hops, preset("fat-tree:4x8").hops)


def test_cli_solve_from_a_deployed_placement(case, tmp_path, capsys):
    from placement.cli import main

    trace, topo = case
    tpath, cur = tmp_path / "t.npz", tmp_path / "current.json"
    placement.save_trace(trace, tpath)
    solve(trace, topo, "contiguous").placement.save(cur)
    out = tmp_path / "p.json"
    code = main(["solve", "--trace", str(tpath), "--topology", "fat-tree:2x4", "--method", "layer-time",
                 "--from", str(cur), "--option", "max_moves=2", "--option", "redundant=0", "--replica", "vllm",
                 "--out", str(out)])
    assert code == 0
    p = placement.load_placement(out)
    assert moved_experts(p.slots.astype(np.int64), solve(trace, topo, "contiguous").placement.slots.astype(np.int64),
                         trace.num_experts).max() <= 2
    assert p.metadata["replica"] == "vllm"  # the method optimised for the rule the report evaluates
    assert main(["solve", "--trace", str(tpath), "--topology", "fat-tree:2x4", "--method", "eplb",
                 "--from", str(cur)]) == 2
    assert "--from" in capsys.readouterr().err


def test_no_layer_busier_than_under_eplb(case):
    trace, topo = case
    from placement.search.method import eplb_slots, max_gpu_load

    sol = solve(trace, topo, "layer-time", time_limit=20, replica="sglang-static", transport="nccl", max_load="eplb")
    w = as_stats(trace).load.astype(np.float64)
    P = sol.placement.num_gpus * sol.placement.slots_per_gpu
    eplb = solve(trace, topo, "eplb").placement
    assert np.array_equal(eplb_slots(w, P, topo.num_gpus, topo.num_servers, trace.model.num_groups), eplb.slots)
    # even split over replicas, recomputed here from the slots
    def peak(slots):
        count = np.stack([np.bincount(s[s >= 0], minlength=w.shape[1]) for s in slots.reshape(len(slots), -1)])
        share = w / np.maximum(count, 1)
        per = np.where(slots >= 0, np.take_along_axis(share, np.maximum(slots, 0).reshape(len(slots), -1),
                                                      axis=1).reshape(slots.shape), 0.0)
        return per.sum(axis=2).max(axis=1)
    assert (peak(sol.placement.slots) <= peak(eplb.slots) * (1 + 1e-9)).all()
    np.testing.assert_allclose(max_gpu_load(eplb.slots.astype(np.int64), w), peak(eplb.slots))


def test_also_fits_several_traces_at_once(case, tmp_path):
    trace, topo = case
    other = synthesize(trace.model, 1024, seed=9, num_ranks=8, skew=1.0)  # another workload of the same model
    path = tmp_path / "other.npz"
    placement.save_trace(other, path)
    sol = solve(trace, topo, "layer-time", also=str(path), robust="max", time_limit=20, **SERVING)
    per = [evaluate(sol.placement, t, topo, **SERVING).step.layer_time for t in (trace, other)]
    assert sol.objective == pytest.approx(np.max(per, axis=0).sum(), rel=1e-12)
    assert sol.info["traces_fitted"] == 2
    small = synthesize(dataclasses.replace(trace.model, num_layers=2), 64, seed=1)
    placement.save_trace(small, tmp_path / "small.npz")
    with pytest.raises(PlacementInputError, match="fit traces of one model together"):
        solve(trace, topo, "layer-time", also=str(tmp_path / "small.npz"), **SERVING)


def test_split_routing_lp_is_exact_and_no_worse_than_an_even_split(case):
    from placement.formulations.split_routing import solve_split_routing

    trace, topo = case
    sol = solve(trace, topo, "layer-time", replica="split", transport="nccl", time_limit=20)
    p = sol.placement
    assert p.routing is not None
    np.testing.assert_allclose(p.routing.sum(axis=3), 1.0)
    m = evaluate(p, trace, topo, replica="split", transport="nccl")
    assert sol.objective == pytest.approx(m.step_time, rel=1e-12)
    # the LP's optimum is the evaluator's dispatch + combine link time of its routing (latency terms aside), and
    # an even split over replicas (a feasible routing under the cap) is never faster on the links
    obj = StepObjective.build(trace, topo, replica="split", transport="nccl")
    rs = p.replica_slots()
    count = np.maximum(p.num_replicas(), 1)
    even = np.broadcast_to((np.where(rs >= 0, 1.0, 0.0) / count[..., None])[:, None], p.routing.shape).copy()
    L, G = p.num_layers, p.num_gpus
    routing, seconds = solve_split_routing(p.slots.astype(np.int64), obj.sent, topo,
                                           obj.setup.dispatch_wire.bytes_per_token,
                                           obj.setup.combine_wire.bytes_per_token, np.full((L, G), np.inf), rs)
    lp = obj.times(p.slots, routing)
    ev = obj.times(p.slots, even)
    latency = topo.latency[~np.eye(G, dtype=bool)].max()
    comm_lp = lp.phase_time[:, [0, 2]].sum(axis=1)
    comm_even = ev.phase_time[:, [0, 2]].sum(axis=1)
    np.testing.assert_allclose(comm_lp, seconds + 2 * latency, rtol=1e-6)
    assert (comm_lp <= comm_even * (1 + 1e-9)).all()


def test_full_slots_and_the_smaller_layout(case):
    trace, topo = case
    E, G = trace.num_experts, topo.num_gpus
    sol = solve(trace, topo, "layer-time", time_limit=20, **SERVING)
    assert (sol.placement.slots >= 0).all()  # what SGLang, TensorRT-LLM and vllm-ascend can load
    used = sol.info["redundant_used"]
    assert sol.placement.slots_per_gpu * G == E + used and used in (0, G)
    loose = solve(trace, topo, "layer-time", time_limit=20, full=False, fewer_slots=False, **SERVING)
    assert loose.placement.slots_per_gpu * G == E + G  # the budget's layout, slots may stay empty
    eplb_time = evaluate(solve(trace, topo, "eplb").placement, trace, topo, **SERVING).step_time
    assert sol.objective <= eplb_time * (1 + 1e-12)


def test_jobs_give_the_same_answer(case):
    trace, topo = case
    one = solve(trace, topo, "layer-time", time_limit=30, **SERVING)
    two = solve(trace, topo, "layer-time", time_limit=30, jobs=2, **SERVING)
    if not (one.info["timed_out"] or two.info["timed_out"]):  # a search that ran to its end is deterministic
        assert np.array_equal(one.placement.slots, two.placement.slots)
    assert two.objective == pytest.approx(evaluate(two.placement, trace, topo, **SERVING).step_time, rel=1e-12)


def test_the_cut_bound_by_hand_and_below_every_placement():
    from placement.search.bounds import server_cuts

    # fat-tree:4x8: a server owns its GPUs and their NICs; 8 NIC uplinks of 50 GB/s leave it
    out_bw, in_bw = server_cuts(preset("fat-tree:4x8"))
    assert out_bw.tolist() == in_bw.tolist() == [8 * 50e9] * 4
    # sparse-fat-tree:4x8 (oversubscription 4): a rack (leaf, 2 servers) owns its leaf; 16 x 50 GB/s / 4 leaves it
    sparse = preset("sparse-fat-tree:4x8")
    rack_out, _ = server_cuts(sparse, sparse.rack_of)
    assert rack_out.tolist() == [16 * 50e9 / 4] * 2
    # the bound is below the evaluator's figure of every placement tried, at DeepSeek-V3 scale
    trace = placement.data.trace("deepseek-v3")
    for topo in ("fat-tree:4x8", "sparse-fat-tree:4x8"):
        sol = solve(trace, topo, "layer-time", solver="fast", **SERVING | {"transport": "nccl"})
        assert sol.bound is not None and 0 < sol.bound <= sol.objective
        for m in ("contiguous", "eplb"):
            p = solve(trace, topo, m).placement
            assert sol.bound <= evaluate(p, trace, topo, **SERVING | {"transport": "nccl"}).step_time
    deepep = solve(trace, "fat-tree:4x8", "layer-time", solver="fast", **SERVING)
    assert deepep.bound is None and deepep.gap is None  # de-duplication: no bound claimed


def test_cli_compare_optimises_layer_time_for_the_evaluated_stack(case, tmp_path):
    from placement.cli import main

    trace, _ = case
    tpath, out = tmp_path / "t.npz", tmp_path / "cmp.json"
    placement.save_trace(trace, tpath)
    code = main(["compare", "--trace", str(tpath), "--topology", "fat-tree:2x4", "--methods", "eplb,layer-time",
                 "--replica", "sglang-static", "--option", "layer-time.time_limit=10", "--format", "json",
                 "--out", str(out), "--quiet"])
    assert code == 0
    import json

    rows = json.loads(out.read_text())  # --out: {method: row}
    assert rows["layer-time"]["replica"] == "sglang-static"  # evaluated, and optimised, for that rule
    assert rows["layer-time"]["step_time_ms"] <= rows["eplb"]["step_time_ms"] * (1 + 1e-9)
