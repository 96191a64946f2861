"""The runtime routes replicas by the evaluator's rule and moves the bytes of the evaluator's transports.

One spawned Gloo run (world 4, fat-tree:2x2: GPUs 0, 1 on server 0; 2, 3 on server 1) replays every
replica rule x transport pair on one tiny case; each test checks a pair against an oracle computed here
from the evaluator alone (``placement.evaluate`` and the registries ``REPLICA_RULES`` / ``TRANSPORTS``),
never from the runtime's own verdict:

* deterministic rules (nearest, vllm, trtllm, sglang-static): measured bytes per layer, leg and phase ==
  the evaluator's tokens x bytes per token, exactly;
* random rules (sglang-dynamic, split): measured counts within a Bernstein band of the evaluator's
  expectation (stated below), and exactly the transport's legs of the runtime's seeded draws;
* outputs == a float64 single-process replay.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from placement import Placement, evaluate  # noqa: E402
from placement.baselines.simple import contiguous  # noqa: E402
from placement.errors import PlacementInputError  # noqa: E402
from placement.evaluation.replica_rules import REPLICA_RULES, RoutingContext  # noqa: E402
from placement.evaluation.transports import TRANSPORTS, destination_probability  # noqa: E402
from placement.topology import preset  # noqa: E402
from placement_runtime.check import (  # noqa: E402
    CaseResult,
    CheckCase,
    CheckConfig,
    CheckResults,
    compare,
    expected_counts,
    format_report,
)
from placement_runtime.launch import spawn_check  # noqa: E402
from placement_runtime.plan import Router, plan_dispatch, rdma_targets, token_ranks  # noqa: E402
from placement_runtime.replay import reference_replay  # noqa: E402
from placement_runtime.testing import affinity_trace, with_replicas  # noqa: E402

pytestmark = [pytest.mark.runtime, pytest.mark.usefixtures("one_torch_thread")]

H, FFN, SEED = 16, 32, 5
BPT = H * 4  # fp32 bytes per token
RULES = ["nearest", "vllm", "trtllm", "sglang-static", "sglang-dynamic", "split"]
DETERMINISTIC = RULES[:4]
TRANSPORT_CASES = [("nccl", False), ("nccl", True), ("deepep-ll", False), ("deepep", False)]
PAIRS = [(r, t, d) for r in RULES for t, d in TRANSPORT_CASES]


def agreement_placement() -> Placement:
    """contiguous(2, 8, 4) (experts 2g, 2g+1 on GPU g) plus expert 0 on GPU 1 and expert 4 on GPU 3.

    Expert 0 has replicas on GPUs 0 and 1 (server 0), expert 4 on GPUs 2 and 3 (server 1), so for the
    senders of the other server: nearest deals round-robin over the tie, vllm / trtllm alternate by
    local index, sglang-static spreads them by its seeded shuffle, sglang-dynamic draws uniformly
    (no same-GPU or same-node replica), and split draws 0.3 / 0.7 (fractions below).
    """
    base = with_replicas(contiguous(2, 8, 4), {1: 0, 3: 4})
    nrep = base.num_replicas()
    routing = np.zeros((2, 4, 8, int(nrep.max())))
    routing[..., 0] = 1.0
    two = nrep == 2  # [L, E]
    routing[:, :, :, 0] = np.where(two[:, None, :], 0.3, 1.0)
    routing[:, :, :, 1] = np.where(two[:, None, :], 0.7, 0.0)
    return Placement(base.slots, 8, routing=routing)


@pytest.fixture(scope="module")
def agreement():
    """Every rule x transport pair in one spawned world-4 run (~10-15 s on 2 cores: the tests using it are slow)."""
    topo = preset("fat-tree:2x2")
    trace = affinity_trace(64, 2, 8, 2, 4, seed=3)
    p = agreement_placement()
    cases = tuple(CheckCase(f"{r}/{t}{'+dedup' if d else ''}", p, d, r, t) for r, t, d in PAIRS)
    config = CheckConfig(trace=trace, topology=topo, cases=cases, hidden_size=H, ffn_size=FFN, seed=SEED)
    results = spawn_check(config, timeout=180, gather_output=True)
    return config, results


@pytest.fixture(scope="module")
def reference(agreement):
    return reference_replay(agreement[0].trace, hidden_size=H, ffn_size=FFN, seed=SEED).numpy()


def evaluator_legs(config: CheckConfig, case: CheckCase) -> tuple[np.ndarray, np.ndarray]:
    """The oracle from the evaluator alone: ``(tokens [L, legs, G, G], load [L, G])`` expected per dispatch.

    One-leg transports: ``Metrics.layer_traffic`` (nccl with the case's dedup; deepep-ll = one message per
    (token, expert) = nccl without dedup).  deepep: ``TRANSPORTS["deepep"].legs`` over the probabilities
    of ``REPLICA_RULES[rule].route`` for the senders ``evaluate(origins="round_robin")`` uses (token t on
    GPU t mod 4), the whole trace one step.  Load: ``Metrics.gpu_load``.
    """
    trace, topo = config.trace, config.topology
    m = evaluate(case.placement, trace, topo, dedup=case.dedup and case.transport == "nccl", origins="round_robin",
                 hidden_size=H, dtype="fp32",
                 replica=case.replica, transport=case.transport)
    assert m.bytes_per_token == BPT
    if case.transport != "deepep":
        return m.layer_traffic[:, None], m.gpu_load
    ctx = RoutingContext.build(case.placement, topo)
    src = np.arange(trace.num_tokens) % 4
    step = np.zeros(trace.num_tokens, dtype=np.int64)
    legs = []
    for layer in range(trace.num_layers):
        slots, w = REPLICA_RULES[case.replica].route(ctx, layer, trace.experts[:, layer], src, step)
        q = destination_probability(slots, w, case.placement.slots_per_gpu, 4)
        legs.append(np.stack([leg[0] for leg in TRANSPORTS["deepep"].legs(q, src, step, 1, topo.server_of, False)]))
    return np.stack(legs), m.gpu_load


def bernstein(mu: np.ndarray, m: int, alpha: float = 1e-6) -> np.ndarray:
    """Half-width of a band that a sum of independent Bernoulli indicators with mean ``mu`` leaves with
    probability <= alpha / m: Bernstein's P(|X - mu| >= t) <= 2 exp(-t^2 / (2 (var + t/3))), var <= mu."""
    lg = math.log(2 * m / alpha)
    return lg / 3 + np.sqrt(lg * lg / 9 + 2 * np.asarray(mu) * lg)


@pytest.mark.slow
@pytest.mark.parametrize(("replica", "transport", "dedup"), PAIRS)
def test_measured_bytes_agree_with_the_evaluator(agreement, replica, transport, dedup):
    config, results = agreement
    i = PAIRS.index((replica, transport, dedup))
    case, res = config.cases[i], results.cases[i]
    want, load = evaluator_legs(config, case)
    dispatch = res.leg_sent[:, 0]  # [L, legs, G, G]
    assert dispatch.shape == want.shape
    # combine = each leg run backwards; both sides of every exchange count the same bytes
    np.testing.assert_array_equal(res.leg_sent[:, 1], np.swapaxes(dispatch, 2, 3))
    np.testing.assert_array_equal(res.leg_sent, res.leg_received)
    assert (res.computed.sum(axis=1) == config.trace.num_tokens * config.trace.top_k).all()
    if replica in DETERMINISTIC:
        # exact: every layer, leg and entry, diagonal included
        np.testing.assert_array_equal(dispatch, np.rint(want) * BPT)
        np.testing.assert_array_equal(res.computed, np.rint(load))
    else:
        # every count X (tokens per layer, leg, entry; selections per GPU) is a sum of independent
        # Bernoulli indicators: |X - mu| <= t(mu) for all of them fails with probability <= 1e-6
        m = want.size + load.size
        assert (np.abs(dispatch / BPT - want) <= bernstein(want, m)).all()
        assert (np.abs(res.computed - load) <= bernstein(load, m)).all()
        assert not np.allclose(want, np.rint(want))  # the rule really is random on this placement


@pytest.mark.slow
@pytest.mark.parametrize(("replica", "transport", "dedup"), [p for p in PAIRS if p[0] not in DETERMINISTIC])
def test_random_rules_move_the_legs_of_their_draws(agreement, replica, transport, dedup):
    """The runtime's draws, reproduced from the seed, through the evaluator's transport: exact bytes."""
    config, results = agreement
    i = PAIRS.index((replica, transport, dedup))
    case, res = config.cases[i], results.cases[i]
    trace, topo = config.trace, config.topology
    router = Router.build(case.placement, topo, replica, SEED)
    src = token_ranks(trace, 4)
    step = np.zeros(trace.num_tokens, dtype=np.int64)
    for layer in range(trace.num_layers):
        dest, q = router.route(layer, trace.experts[:, layer], src, step)
        onehot = np.zeros_like(q)
        np.put_along_axis(onehot, dest[..., None], 1.0, axis=2)
        legs = TRANSPORTS[transport].legs(onehot, src, step, 1, topo.server_of, dedup)
        np.testing.assert_array_equal(res.leg_sent[layer, 0], np.stack([leg[0] for leg in legs]) * BPT)
        np.testing.assert_array_equal(res.computed[layer], np.bincount(dest.ravel(), minlength=4))


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(PAIRS)))
def test_outputs_equal_the_float64_reference(agreement, reference, i):
    res = agreement[1].cases[i]
    np.testing.assert_allclose(res.output, reference, rtol=0, atol=1e-5)
    assert np.abs(reference).max() > 0.5


@pytest.mark.slow
def test_the_check_reports_match_for_every_pair(agreement):
    config, results = agreement
    reports, _ = compare(config, results)
    text = format_report(config, reports, None)
    assert all(r.ok for r in reports), text
    assert "result: MATCH" in text and text.count("random rule:") == 8
    assert [r.random for r in reports] == [p[0] not in DETERMINISTIC for p in PAIRS]


@pytest.mark.slow
def test_the_rules_route_differently_here(agreement):
    """Guard against a vacuous pass: on this placement the deterministic rules move different bytes."""
    config, results = agreement
    nccl = [results.cases[PAIRS.index((r, "nccl", False))].sent[:, 0] for r in DETERMINISTIC]
    distinct = {m.tobytes() for m in nccl}
    assert len(distinct) == len(DETERMINISTIC)
    # deepep sends fewer off-GPU bytes over the RDMA leg than one copy per (token, remote GPU)
    deepep = results.cases[PAIRS.index(("vllm", "deepep", False))]
    assert deepep.leg_sent[:, 0, 0].sum() > 0 and deepep.leg_sent[:, 0, 1].sum() > 0


# ------------------------------------------------------------------------------ in-process units
def test_random_draws_follow_the_rules_probabilities():
    """Frequencies of many seeded draws converge to q (numpy only)."""
    topo = preset("fat-tree:2x2")
    p = agreement_placement()
    experts = np.zeros((4000, 1), dtype=np.int64)  # expert 0: replicas on GPUs 0 and 1
    src = np.full(4000, 2)
    for replica, share in (("sglang-dynamic", 0.5), ("split", 0.3)):
        dest, q = Router.build(p, topo, replica, seed=1).route(0, experts, src)
        np.testing.assert_allclose(q[:, 0, :2], np.broadcast_to([share, 1 - share], (4000, 2)))
        frac = (dest == 0).mean()
        assert abs(frac - share) < 4 * math.sqrt(share * (1 - share) / 4000)  # ~4 sigma
        assert set(np.unique(dest)) == {0, 1}
        # the same draws whether a batch is routed alone or with other senders' tokens
        both, _ = Router.build(p, topo, replica, seed=1).route(0, np.zeros((8000, 1), dtype=np.int64),
                                                               np.repeat([2, 3], 4000))
        np.testing.assert_array_equal(both[:4000], dest)


def test_the_band_catches_a_runtime_using_another_rule():
    """A doctored result: the bytes of 'nearest' (each sender keeps expert 0 on its own GPU) offered as
    'split' (10 / 90 between GPUs 0 and 1) are caught, while the split draws themselves pass."""
    topo = preset("fat-tree:2x1")
    trace = affinity_trace(2000, 1, 4, 1, 2, seed=0, affinity=0.0)
    base = with_replicas(contiguous(1, 4, 2), {1: 0})  # expert 0 on GPUs 0 and 1
    routing = np.zeros((1, 2, 4, 2))
    routing[..., 0] = 1.0
    routing[0, :, 0] = [0.1, 0.9]
    p = Placement(base.slots, 4, routing=routing)
    config = CheckConfig(trace=trace, topology=topo, cases=(CheckCase("split", p, replica="split"),),
                         hidden_size=H, ffn_size=FFN)
    src = token_ranks(trace, 2)

    def measured(replica: str) -> CaseResult:
        router = Router.build(p, topo, replica)
        sent = np.zeros((1, 2, 2, 2), dtype=np.int64)
        computed = np.zeros((1, 2), dtype=np.int64)
        for rank in range(2):
            mine = np.flatnonzero(src == rank)
            dest, _ = router.route(0, trace.experts[mine, 0], np.full(mine.size, rank))
            sent[0, 0, rank] = plan_dispatch(trace.experts[mine, 0], np.ones((mine.size, 1)), dest, 2,
                                             False).send_counts * BPT
            computed[0] += np.bincount(dest.ravel(), minlength=2)
        sent[0, 1] = sent[0, 0].T
        return CaseResult("split", False, sent, sent.copy(), np.zeros((2, 2), np.int64), 0.0, 1.0,
                          computed=computed)

    good = compare(config, CheckResults([measured("split")]))[0][0]
    assert good.ok and good.random and good.within and good.exact
    wrong = compare(config, CheckResults([measured("nearest")]))[0][0]
    assert not wrong.within and wrong.worst > 1 and not wrong.ok
    assert "NO; worst" in format_report(config, [wrong], None)


@pytest.mark.parametrize("replica", ["vllm", "trtllm", "sglang-static"])
def test_trace_origins_feed_the_rule_the_evaluators_senders(replica):
    """origins='trace' with origins that are not t mod G: each rank routes the tokens the trace puts on it,
    in token order (its local indices), and the ranks' rows sum to evaluate(origins='trace')'s traffic."""
    from placement.trace import Trace

    topo = preset("fat-tree:2x2")
    base = affinity_trace(96, 2, 8, 2, 4, seed=4)
    origin = np.random.default_rng(0).integers(0, 4, base.num_tokens)
    trace = Trace.from_tokens(base.model, base.experts, origin=origin, num_ranks=4)
    p = agreement_placement()
    router = Router.build(p, topo, replica)
    src = token_ranks(trace, 4, "trace")
    np.testing.assert_array_equal(src, origin)
    T = np.zeros((4, 4))
    for layer in range(2):
        for rank in range(4):
            mine = np.flatnonzero(src == rank)
            dest, _ = router.route(layer, trace.experts[mine, layer], np.full(mine.size, rank))
            T[rank] += plan_dispatch(trace.experts[mine, layer], np.ones((mine.size, 2)), dest, 4, False).send_counts
    m = evaluate(p, trace, topo, origins="trace", replica=replica)
    np.testing.assert_array_equal(T + T.T, m.traffic)
    rr = evaluate(p, trace, topo, origins="round_robin", replica=replica)
    assert not np.array_equal(rr.traffic, m.traffic)  # the senders matter here


def test_rdma_targets_go_to_the_rail_peer():
    # 2 servers x 2 GPUs: GPU 1 (server 0, local index 1) reaches server 1 through GPU 3
    rdma, local = rdma_targets(np.array([[0, 2], [3, 1]]), 1, np.array([0, 0, 1, 1]))
    assert rdma.tolist() == [[-1, 3], [3, -1]] and local.tolist() == [[0, -1], [-1, 1]]


def test_expected_counts_agree_with_evaluate_for_every_pair():
    topo = preset("fat-tree:2x2")
    trace = affinity_trace(32, 2, 8, 2, 4, seed=3)
    p = agreement_placement()
    for r, t, d in PAIRS:
        case = CheckCase("c", p, d, r, t)
        config = CheckConfig(trace=trace, topology=topo, cases=(case,), hidden_size=H, ffn_size=FFN)
        exp = expected_counts(config, case)
        assert exp.evaluator_agrees, (r, t, d)
        assert exp.random == (r not in DETERMINISTIC)


def test_bad_rule_and_transport_input_names_the_field():
    trace = affinity_trace(8, 2, 8, 2, 4)
    topo = preset("fat-tree:2x2")
    plain = contiguous(2, 8, 4)
    with pytest.raises(PlacementInputError, match="field 'replica'.*unknown replica rule 'vllm2'"):
        CheckConfig(trace=trace, topology=topo, cases=(CheckCase("c", plain, replica="vllm2"),))
    with pytest.raises(PlacementInputError, match="field 'routing'.*'split' needs routing fractions"):
        CheckConfig(trace=trace, topology=topo, cases=(CheckCase("c", plain, replica="split"),))
    with pytest.raises(PlacementInputError, match="field 'transport'.*unknown transport 'rdma'"):
        CheckConfig(trace=trace, topology=topo, cases=(CheckCase("c", plain, transport="rdma"),))
    with pytest.raises(PlacementInputError, match="field 'dedup'.*drop dedup"):
        CheckConfig(trace=trace, topology=topo, cases=(CheckCase("c", plain, dedup=True, transport="deepep"),))
    with pytest.raises(PlacementInputError, match="field 'alpha'"):
        CheckConfig(trace=trace, topology=topo, cases=(CheckCase("c", plain),), alpha=0.0)


def test_cli_refuses_a_rule_or_transport_it_cannot_honour(tmp_path):
    import subprocess
    import sys

    from placement.trace import save_trace

    save_trace(affinity_trace(8, 2, 8, 2, 4), tmp_path / "t.npz")
    contiguous(2, 8, 4).save(tmp_path / "p.json")
    base = ["check", "--placement", str(tmp_path / "p.json"), "--trace", str(tmp_path / "t.npz"),
            "--topology", "fat-tree:2x2"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "placement_runtime", *base, *args], capture_output=True,
                              text=True, timeout=60)

    r = cli("--replica", "split")
    assert r.returncode == 2 and r.stdout == ""
    assert "field 'routing'" in r.stderr and "'split' needs routing fractions" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("--transport", "deepep", "--dedup")
    assert r.returncode == 2 and "field '--dedup'" in r.stderr and "drop --dedup" in r.stderr
    r = cli("--replica", "lp")
    assert r.returncode == 2 and "invalid choice: 'lp'" in r.stderr and "sglang-dynamic" in r.stderr
