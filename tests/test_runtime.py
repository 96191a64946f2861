"""placement_runtime: real all-to-all bytes == the evaluator's prediction; outputs == a reference.

The distributed tests spawn Gloo ranks on CPU (world 4 once for most checks, world 2 through the
CLI) and verify independent certificates in this process: the evaluator's traffic matrix and a
float64 single-process replay, never the runtime's own verdict alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from placement import Placement, evaluate  # noqa: E402
from placement.baselines.simple import contiguous, round_robin  # noqa: E402
from placement.errors import PlacementInputError  # noqa: E402
from placement.evaluate import first_of_each as evaluator_first_of_each  # noqa: E402
from placement.evaluate import replica_tables  # noqa: E402
from placement.topology import preset  # noqa: E402
from placement.trace import save_trace  # noqa: E402
from placement_runtime.check import CaseResult, CheckCase, CheckConfig, CheckResults, compare, format_report  # noqa: E402
from placement_runtime.launch import FAULT_ENV, RankFailure, spawn_check  # noqa: E402
from placement_runtime.moe import ExpertParallelMoE, ReferenceMoE, expert_weights  # noqa: E402
from placement_runtime.plan import Router, first_of_each, plan_dispatch, plan_moves, token_ranks  # noqa: E402
from placement_runtime.replay import reference_replay  # noqa: E402
from placement_runtime.testing import affinity_trace, hop_optimal_placement, with_replicas  # noqa: E402

pytestmark = [pytest.mark.runtime, pytest.mark.usefixtures("one_torch_thread")]

ROOT = Path(__file__).resolve().parents[1]
H, FFN = 16, 32


# ------------------------------------------------------------------------------ shared workload (world 4)
@pytest.fixture(scope="module")
def world4():
    """fat-tree:2x2 (GPUs 0,1 on server 0; 2,3 on server 1), 8 experts, top-2, 2 layers, 96 tokens."""
    topo = preset("fat-tree:2x2")
    trace = affinity_trace(96, 2, 8, 2, 4, seed=3)
    cont = contiguous(2, 8, 4)
    opt = hop_optimal_placement(trace, topo)
    # extra copies: expert 0 on GPUs 0, 1, 2 and expert 4 on GPUs 2, 3; senders 0 and 1 reach GPUs 2 and 3
    # at equal cost, so the evaluator deals their expert-4 tokens round-robin over the two copies.
    rep = with_replicas(cont, {1: 0, 2: 0, 3: 4})
    cases = (CheckCase("contiguous", cont), CheckCase("round_robin", round_robin(2, 8, 4)),
             CheckCase("hop_optimal", opt), CheckCase("replicas", rep),
             CheckCase("replicas+dedup", rep, dedup=True), CheckCase("hop_optimal+dedup", opt, dedup=True))
    config = CheckConfig(trace=trace, topology=topo, cases=cases, hidden_size=H, ffn_size=FFN, seed=5,
                         move=(0, 3))
    t0 = time.monotonic()
    results = spawn_check(config, timeout=120, gather_output=True)
    return config, results, time.monotonic() - t0


@pytest.fixture(scope="module")
def reference4(world4):
    """Float64 single-process replay of every token (computed once)."""
    return reference_replay(world4[0].trace, hidden_size=H, ffn_size=FFN, seed=5).numpy()


def test_world4_replicas_have_ties(world4):
    config = world4[0]
    _, ntied = replica_tables(config.cases[3].placement, config.topology)
    assert (ntied > 1).any()  # the replica case exercises the round-robin tie rule


@pytest.mark.parametrize("i", range(6))
def test_world4_measured_bytes_equal_evaluator(world4, i):
    config, results, _ = world4
    case, res = config.cases[i], results.cases[i]
    m = evaluate(case.placement, config.trace, config.topology, dispatch="origin", dedup=case.dedup,
                 origins="round_robin", hidden_size=H, dtype="fp32")
    assert m.bytes_per_token == H * 4
    # whole matrix, diagonal included: the evaluator counts u -> u sends, the runtime its self-splits
    np.testing.assert_array_equal(res.sent.sum(axis=(0, 1)), m.traffic * m.bytes_per_token)
    # combine = dispatch transposed, layer by layer
    np.testing.assert_array_equal(res.sent[:, 1], np.transpose(res.sent[:, 0], (0, 2, 1)))
    np.testing.assert_array_equal(res.sent, res.received)  # senders and receivers agree


@pytest.mark.parametrize("i", range(6))
def test_world4_outputs_equal_reference(world4, reference4, i):
    res = world4[1].cases[i]
    ref = reference4
    # fp32 runtime vs float64 reference, 2 layers with residuals: |error| <= 1e-5
    np.testing.assert_allclose(res.output, ref, rtol=0, atol=1e-5)
    assert res.max_abs_error <= 1e-5
    assert np.abs(ref).max() > 0.5  # not trivially small


def test_world4_reports_match_and_optimum_sends_less(world4):
    config, results, _ = world4
    reports, move = compare(config, results)
    assert all(r.ok for r in reports), format_report(config, reports, move)
    hop_bytes = {r.name: float((r.measured * config.topology.hops).sum()) for r in reports}
    assert hop_bytes["hop_optimal"] < min(hop_bytes["contiguous"], hop_bytes["round_robin"])
    off = {r.name: r.off_diagonal(r.measured) for r in reports}
    assert off["replicas+dedup"] < off["replicas"]
    assert "result: MATCH" in format_report(config, reports, move)


def test_world4_replacement_moves_planned_bytes(world4, reference4):
    config, results, _ = world4
    mv = results.move
    plan = plan_moves(config.cases[0].placement, config.cases[3].placement, config.topology.hops)
    assert mv.copies == plan.num_moves == 2 * 3  # 3 extra copies per layer, 2 layers
    np.testing.assert_array_equal(mv.moved, plan.count_matrix(4) * 2 * H * FFN * 4)
    assert mv.weights_exact
    np.testing.assert_allclose(mv.after.output, reference4, rtol=0, atol=1e-5)
    m = evaluate(config.cases[3].placement, config.trace, config.topology, origins="round_robin",
                 hidden_size=H, dtype="fp32")
    np.testing.assert_array_equal(mv.after.sent.sum(axis=(0, 1)), m.traffic * m.bytes_per_token)


def test_world4_runs_in_bounded_time(world4):
    assert world4[2] < 90


# ------------------------------------------------------------------------------ CLI, world 2
def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "placement_runtime", *args], capture_output=True, text=True,
                          timeout=timeout, env=full, cwd=ROOT)


@pytest.fixture(scope="module")
def files2(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt2")
    topo = preset("fat-tree:2x1")
    trace = affinity_trace(40, 2, 4, 2, 2, seed=1)
    save_trace(trace, d / "t.npz")
    contiguous(2, 4, 2).save(d / "contiguous.json")
    hop_optimal_placement(trace, topo).save(d / "optimal.json")
    return d


def test_cli_world2_match_with_dedup_and_move(files2):
    d = files2
    r = _cli("check", "--placement", str(d / "contiguous.json"), "--placement", str(d / "optimal.json"),
             "--move", "--trace", str(d / "t.npz"), "--topology", "fat-tree:2x1", "--world", "2", "--dedup",
             "--hidden-size", "16", "--timeout", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""
    assert "result: MATCH" in r.stdout
    assert "weights bit-exact" in r.stdout
    assert r.stdout.count(" match ") == 3  # two placements and the one after the move


def test_cli_bad_input_exit_2(files2, tmp_path):
    d = files2
    r = _cli("check", "--placement", str(tmp_path / "missing.json"), "--trace", str(d / "t.npz"),
             "--topology", "fat-tree:2x1")
    assert r.returncode == 2
    assert "missing.json" in r.stderr and "file not found" in r.stderr
    r = _cli("check", "--placement", str(d / "contiguous.json"), "--trace", str(d / "t.npz"), "--topology",
             "fat-tree:2x1", "--world", "4")
    assert r.returncode == 2
    assert "use --world 2" in r.stderr


def test_cli_killed_rank_fails_within_timeout(files2):
    d = files2
    t0 = time.monotonic()
    r = _cli("check", "--placement", str(d / "contiguous.json"), "--trace", str(d / "t.npz"), "--topology",
             "fat-tree:2x1", "--timeout", "90", env={FAULT_ENV: "exit:1"})
    assert r.returncode == 3, r.stdout + r.stderr
    assert time.monotonic() - t0 < 90  # reported when the rank dies, not at the deadline
    assert "rank 1 exited with status 3" in r.stderr
    assert "exiting early" in r.stderr  # the rank's own stderr is quoted


def test_hung_rank_times_out(files2):
    from placement.trace import load_trace

    trace = load_trace(files2 / "t.npz")
    config = CheckConfig(trace=trace, topology=preset("fat-tree:2x1"),
                         cases=(CheckCase("c", contiguous(2, 4, 2)),), hidden_size=H, ffn_size=FFN)
    t0 = time.monotonic()
    with pytest.raises(RankFailure, match=r"timed out after 6 s|rank 0 exited"):
        spawn_check(config, timeout=6, env={FAULT_ENV: "hang:1"})
    assert time.monotonic() - t0 < 6 + 5  # the deadline plus the terminate/kill grace


# ------------------------------------------------------------------------------ in-process units
def test_first_of_each_is_the_evaluators_rule():
    # the runtime de-duplicates with the evaluator's own function, not a copy
    assert first_of_each is evaluator_first_of_each
    rows = np.array([[2, 2, 1], [0, 1, 0]])
    assert first_of_each(rows).tolist() == [[True, False, True], [True, True, False]]


@pytest.mark.parametrize("replica", ["nearest", "vllm", "trtllm", "sglang-static"])
@pytest.mark.parametrize("dedup", [False, True])
def test_plans_of_all_ranks_sum_to_the_evaluator_traffic(dedup, replica):
    """The per-rank plan (local tokens only, in token order, src = rank) reproduces the evaluator's
    routing of every GPU's batch at once: the nearest rule's tie dealing, vLLM's and TRT-LLM's local
    indices, SGLang's static map."""
    topo = preset("fat-tree:2x2")
    trace = affinity_trace(64, 3, 8, 3, 4, seed=7)
    # expert 5 on GPUs 1, 0 and expert 2 on GPUs 2, 3: senders on the other server are tied between them
    p = with_replicas(round_robin(3, 8, 4), {0: 5, 1: 0, 2: 7, 3: 2})
    tied, ntied = replica_tables(p, topo)
    assert (ntied > 1).any()
    router = Router.build(p, topo, replica)
    src = token_ranks(trace, 4)
    T = np.zeros((4, 4))
    for layer in range(3):
        for rank in range(4):
            mine = np.nonzero(src == rank)[0]
            dest, q = router.route(layer, trace.experts[mine, layer], np.full(mine.size, rank))
            assert (q.max(axis=2) == 1.0).all()  # deterministic rules: one GPU per selection
            plan = plan_dispatch(trace.experts[mine, layer], np.ones((mine.size, 3)), dest, 4, dedup)
            assert (np.diff(plan.row_dest) >= 0).all()
            T[rank] += plan.send_counts
    m = evaluate(p, trace, topo, dedup=dedup, origins="round_robin", replica=replica)
    np.testing.assert_array_equal(T + T.T, m.traffic)


def test_move_plan_fetches_from_the_nearest_holder():
    topo = preset("fat-tree:2x2")
    old = with_replicas(contiguous(1, 8, 4), {3: 0})  # expert 0 on GPU 0 (server 0) and GPU 3 (server 1)
    new = Placement(np.array([[[1, 2], [3, 4], [5, 0], [6, 7]]]), 8)
    plan = plan_moves(old, new, topo.hops)
    moves = set(zip(plan.expert.tolist(), plan.src.tolist(), plan.dst.tolist(), strict=True))
    assert moves == {(2, 1, 0), (4, 2, 1), (0, 3, 2)}  # GPU 2 takes expert 0 from GPU 3, its server mate
    assert plan.kept[0, 3, 6] == 1 and plan.kept[0, 3, 0] == 0
    assert plan.count_matrix(4).sum() == plan.num_moves


def test_reference_moe_is_the_gated_sum():
    ref = ReferenceMoE(4, layer=1, hidden_size=H, ffn_size=FFN, seed=2, dtype=torch.float64)
    x = torch.randn(5, H, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ex = torch.tensor([[0, 3], [1, 2], [3, 1], [2, 0], [0, 1]])
    g = torch.rand(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = ref(x, ex, g)
    for t in range(5):
        want = torch.zeros(H, dtype=torch.float64)
        for j in range(2):
            w = expert_weights(2, 1, int(ex[t, j]), H, FFN, torch.float64)
            want += g[t, j] * (torch.nn.functional.silu(x[t] @ w["w1"]) @ w["w2"])
        torch.testing.assert_close(y[t], want, rtol=0, atol=1e-12)


def test_layer_shards_a_full_state_dict():
    p = round_robin(1, 8, 4)
    router = Router.build(p, preset("fat-tree:2x2"))
    full = ReferenceMoE(8, layer=0, hidden_size=H, ffn_size=FFN, seed=9).state_dict()
    full = {k: v * 2 for k, v in full.items()}  # not the seeded weights: they must come from the dict
    moe = ExpertParallelMoE(p, 0, rank=1, router=router, hidden_size=H, ffn_size=FFN, weights=full)
    assert moe.held_experts == [1, 5]
    assert torch.equal(moe.experts["5"].w2, full["experts.5.w2"])
    assert set(moe.state_dict()) == {"experts.1.w1", "experts.1.w2", "experts.5.w1", "experts.5.w2"}


def test_compare_flags_a_wrong_byte_count():
    """A doctored result (4 bytes too many on one link) is a mismatch; the exact one matches."""
    topo = preset("fat-tree:2x1")
    trace = affinity_trace(16, 1, 4, 2, 2, seed=0)
    p = contiguous(1, 4, 2)
    config = CheckConfig(trace=trace, topology=topo, cases=(CheckCase("c", p),), hidden_size=H, ffn_size=FFN)
    router = Router.build(p, topo)
    sent = np.zeros((1, 2, 2, 2), dtype=np.int64)
    for rank in range(2):
        mine = np.nonzero(token_ranks(trace, 2) == rank)[0]
        dest, _ = router.route(0, trace.experts[mine, 0], np.full(mine.size, rank))
        plan = plan_dispatch(trace.experts[mine, 0], np.ones((mine.size, 2)), dest, 2, dedup=False)
        sent[0, 0, rank] = plan.send_counts * H * 4
    sent[0, 1] = sent[0, 0].T
    good = CaseResult("c", False, sent, sent.copy(), np.zeros((2, 2), np.int64), 1e-7, 1.0)
    reports, _ = compare(config, CheckResults([good]))
    assert reports[0].ok
    bad_sent = sent.copy()
    bad_sent[0, 0, 0, 1] += 4
    bad = CaseResult("c", False, bad_sent, bad_sent.copy(), np.zeros((2, 2), np.int64), 1e-7, 1.0)
    reports, _ = compare(config, CheckResults([bad]))
    assert not reports[0].bytes_match and reports[0].bad_layers == [0]
    assert "MISMATCH" in format_report(config, reports, None)


def test_config_names_the_bad_field():
    trace = affinity_trace(8, 1, 4, 2, 2)
    case = (CheckCase("c", contiguous(1, 4, 2)),)
    with pytest.raises(PlacementInputError, match="is for 2 GPUs but the topology has 4"):
        CheckConfig(trace=trace, topology=preset("fat-tree:2x2"), cases=case)
    with pytest.raises(PlacementInputError, match="unknown origins 'uniform'"):
        CheckConfig(trace=trace, topology=preset("fat-tree:2x1"), cases=case, origins="uniform")


@pytest.mark.parametrize("module", ["placement_runtime.plan", "placement_runtime.testing", "placement_runtime.check"])
def test_doctests(module):
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(module)).failed == 0
