"""The evaluator against values computed by hand on tiny cases.

Cluster for every hand case: ``fat-tree:2x2`` = 2 servers x 2 GPUs under one leaf switch.
GPUs 0, 1 sit on server 0 and GPUs 2, 3 on server 1, so the hop distance d(u, v) is 0
inside a server (NVLink) and 2 across servers (GPU-NIC 0, NIC-leaf 1, leaf-NIC 1, NIC-GPU 0).

Trace T (2 layers, 4 experts, top-2, origins = ranks of a 4-rank run):

    token  origin  layer 0   layer 1
    t0     0       [0, 2]    [1, 3]
    t1     1       [1, 0]    [2, 3]
    t2     3       [3, 2]    [0, 1]
"""

from __future__ import annotations

import numpy as np
import pytest

from placement import Placement, evaluate
from placement.errors import NeedsTokenTraceError, PlacementInputError
from placement.topology import preset
from placement.trace import ModelSpec, Trace

SPEC = ModelSpec("hand", num_layers=2, num_experts=4, top_k=2)
EXPERTS = np.array([
    [[0, 2], [1, 3]],
    [[1, 0], [2, 3]],
    [[3, 2], [0, 1]],
])
ORIGIN = np.array([0, 1, 3])


@pytest.fixture(scope="module")
def topo():
    t = preset("fat-tree:2x2")
    assert t.hops[0, 1] == 0 and t.hops[0, 2] == 2 and t.hops[2, 3] == 0
    return t


@pytest.fixture(scope="module")
def trace():
    return Trace.from_tokens(SPEC, EXPERTS, origin=ORIGIN, num_ranks=4)


def one_per_gpu() -> Placement:
    """Placement A: expert e on GPU e in both layers."""
    return Placement.from_assignment(np.array([[0, 1, 2, 3], [0, 1, 2, 3]]), num_gpus=4)


def paired() -> Placement:
    """Placement B: experts 0, 1 on GPU 1 and experts 2, 3 on GPU 2 (GPUs 0 and 3 empty)."""
    return Placement.from_assignment(np.array([[1, 1, 2, 2], [1, 1, 2, 2]]), num_gpus=4)


def test_origin_model_one_expert_per_gpu(topo, trace):
    m = evaluate(one_per_gpu(), trace, topo, dispatch="origin", origins="trace", hidden_size=8, dtype="bf16")
    # Hops, dispatch + combine (each send counted twice):
    #   t0 (GPU 0): L0 e0->0: 0, e2->2: 2;  L1 e1->1: 0, e3->3: 2   => 2 * (2 + 2) = 8
    #   t1 (GPU 1): L0 e1->1: 0, e0->0: 0;  L1 e2->2: 2, e3->3: 2   => 2 * (0 + 4) = 8
    #   t2 (GPU 3): L0 e3->3: 0, e2->2: 0;  L1 e0->0: 2, e1->1: 2   => 2 * (0 + 4) = 8
    assert m.hop_transmissions == pytest.approx(24 / 3)
    assert m.layer_hops.tolist() == pytest.approx([4 / 3, 20 / 3])
    # Sends leaving the GPU: t0: e2 (L0), e1, e3 (L1) = 3; t1: e0, e2, e3 = 3; t2: e2, e0, e1 = 3; x2 phases
    assert m.gpu_transmissions == pytest.approx(18 / 3)
    # Sends leaving the server: t0: e2, e3; t1: e2, e3; t2: e0, e1 = 6, x2 phases
    assert m.server_crossings == pytest.approx(12 / 3)
    # Bytes: 8 elements x 2 bytes = 16 per send.  6 intra-server sends cross 2 NVLink arcs each;
    # 12 cross-server sends cross 2 PCIe (GPU<->NIC) and 2 NIC<->leaf arcs each.
    assert m.bytes_per_token == 16
    assert m.tier_bytes["nvlink"] == pytest.approx(6 * 2 * 16)
    assert m.tier_bytes["pcie"] == pytest.approx(12 * 2 * 16)
    assert m.tier_bytes["nic"] == pytest.approx(12 * 2 * 16)
    # Load: L0 GPU0 {t0, t1}, GPU1 {t1}, GPU2 {t0, t2}, GPU3 {t2}; max/mean = 2 / 1.5 in both layers
    assert m.gpu_load.tolist() == [[2, 1, 2, 1], [1, 2, 1, 2]]
    assert m.load_imbalance == pytest.approx(4 / 3)
    assert m.max_load_imbalance == pytest.approx(4 / 3)
    # Every layer-0/layer-1 expert pair of every token sits on two different GPUs
    assert m.boundary_cross_fraction == pytest.approx(1.0)
    assert m.slots_used.tolist() == [2, 2, 2, 2]
    # traffic matrix: tokens u -> v, both phases; row sums = sends leaving + local sends
    assert m.traffic.sum() == pytest.approx(2 * 3 * 2 * 2)


def test_origin_model_dedup(topo, trace):
    p = paired()
    plain = evaluate(p, trace, topo, origins="trace")
    dedup = evaluate(p, trace, topo, origins="trace", dedup=True)
    # Without dedup (per expert), both phases:
    #   t0 (GPU 0): L0 e0->1: 0, e2->2: 2;  L1 e1->1: 0, e3->2: 2 => 8
    #   t1 (GPU 1): L0 both on GPU 1: 0;   L1 e2, e3 -> 2: 2 + 2   => 8
    #   t2 (GPU 3): L0 both on GPU 2: 0;   L1 e0, e1 -> 1: 2 + 2   => 8
    assert plain.hop_transmissions == pytest.approx(24 / 3)
    # With dedup one send per distinct GPU: t0 unchanged (8), t1 L1 one send (2 * 2 = 4),
    # t2 L1 one send (4)
    assert dedup.hop_transmissions == pytest.approx(16 / 3)
    # Sends leaving the GPU with dedup: t0: GPU 1 and 2 in both layers = 4; t1: L1 GPU 2 = 1;
    # t2: L0 GPU 2 (from 3) = 1, L1 GPU 1 = 1; x2 phases = 14
    assert dedup.gpu_transmissions == pytest.approx(14 / 3)
    # Load counts expert computations, not sends: dedup does not change it
    assert np.array_equal(plain.gpu_load, dedup.gpu_load)
    assert plain.gpu_load.tolist() == [[0, 3, 3, 0], [0, 3, 3, 0]]
    assert plain.load_imbalance == pytest.approx(2.0)


def test_uniform_origins_expectation(topo, trace):
    # h[s] = mean_u (d(u,s) + d(s,u)) = (0 + 0 + 2 + 2) / 4 * 2 = 2 for every GPU s, so every
    # selection costs 2 expected hops: 2 layers x top-2 x 2 = 8 per token (arXiv 2508.09229)
    m = evaluate(one_per_gpu(), trace, topo, origins="uniform")
    assert m.origins == "uniform"
    assert m.hop_transmissions == pytest.approx(8.0)
    # sends leaving the GPU: each selection is local with probability 1/4 -> 2 * 2 * 2 * 3/4 = 6
    assert m.gpu_transmissions == pytest.approx(6.0)
    # sends leaving the server: probability 1/2 -> 2 * 2 * 2 * 1/2 = 4
    assert m.server_crossings == pytest.approx(4.0)


def test_auto_origins(topo, trace):
    assert evaluate(one_per_gpu(), trace, topo).origins == "trace"
    two_ranks = Trace.from_tokens(SPEC, EXPERTS, origin=np.array([0, 1, 1]), num_ranks=2)
    assert evaluate(one_per_gpu(), two_ranks, topo).origins == "uniform"
    with pytest.raises(PlacementInputError, match="2-rank run but the topology has 4 GPUs"):
        evaluate(one_per_gpu(), two_ranks, topo, origins="trace")


def test_round_robin_origins(topo):
    # token t starts on GPU t mod 4: t0 on 0, t1 on 1, t2 on 2
    t = Trace.from_tokens(SPEC, EXPERTS)
    m = evaluate(one_per_gpu(), t, topo, origins="round_robin")
    # t0 as in the trace case (8); t1 as before (8);
    # t2 on GPU 2: L0 e3->3: 0, e2->2: 0; L1 e0, e1: 2 + 2 => 8
    assert m.hop_transmissions == pytest.approx(8.0)


def test_coherent_model(topo, trace):
    p = paired()
    m = evaluate(p, trace, topo, dispatch="coherent", origins="trace")
    # Layer 0 is dispatched from the origin, no combine: t0: e0->1: 0, e2->2: 2; t1: 0; t2: 0.
    # Boundary 0->1, the k x k pairs weighted 1/k = 1/2:
    #   t0 prev GPUs [1, 2], next [1, 2]: 0 + 2 + 2 + 0 = 4 -> 2
    #   t1 prev [1, 1], next [2, 2]: 4 pairs x 2 = 8 -> 4
    #   t2 prev [2, 2], next [1, 1]: 8 -> 4
    assert m.layer_hops.tolist() == pytest.approx([2 / 3, 10 / 3])
    assert m.hop_transmissions == pytest.approx(12 / 3)
    # pairs on different GPUs, weight 1/k^2: t0 2 of 4, t1 4 of 4, t2 4 of 4 -> (0.5 + 1 + 1) / 3
    assert m.boundary_cross_fraction == pytest.approx(2.5 / 3)
    assert m.local_boundary_fraction == pytest.approx(0.5 / 3)
    d = evaluate(p, trace, topo, dispatch="coherent", origins="trace", dedup=True)
    # dedup: L0 t0 sends to GPUs 1 and 2 once each: 0 + 2.  Boundary: t0 already holds the token
    # on GPUs 1 and 2 -> 0; t1 one copy GPU 1 -> 2: 2; t2 one copy GPU 2 -> 1: 2.  Total 6.
    assert d.hop_transmissions == pytest.approx(6 / 3)


def test_coherent_top1_is_exflow_boundary_count(topo):
    # top-1, 3 layers: boundaries cross when consecutive experts sit on different GPUs
    spec = ModelSpec("top1", num_layers=3, num_experts=4, top_k=1)
    ex = np.array([[[0], [1], [1]], [[2], [3], [0]]])
    p = Placement.from_assignment(np.array([[0, 0, 1, 1]] * 3), num_gpus=4)  # e0,e1 -> GPU0; e2,e3 -> GPU1
    m = evaluate(p, Trace.from_tokens(spec, ex), topo, dispatch="coherent", origins="round_robin")
    # t0: 0->1 same GPU, 1->1 same; t1: 2->3 same GPU 1, 3->0 GPU1 -> GPU0 crosses: 1 of 4 boundaries
    assert m.boundary_cross_fraction == pytest.approx(1 / 4)
    # hops: t0 starts on GPU 0, e0 on GPU 0: 0; t1 starts on GPU 1, e2 on GPU 1: 0; the crossing
    # GPU1 -> GPU0 is inside server 0: 0 hops.  One GPU-leaving send in total.
    assert m.hop_transmissions == 0
    assert m.gpu_transmissions == pytest.approx(1 / 2)


def test_replicas_nearest(topo, trace):
    # Every expert has a replica on each server: GPU0 {0, 1}, GPU1 {2, 3}, GPU2 {0, 2}, GPU3 {1, 3}
    slots = np.array([[[0, 1], [2, 3], [0, 2], [1, 3]]] * 2)
    p = Placement(slots, num_experts=4)
    m = evaluate(p, trace, topo, origins="trace")
    # every token finds each expert inside its own server: no hops at all
    assert m.hop_transmissions == 0
    assert m.server_crossings == 0
    # t0 (GPU 0): L0 e0 local, e2 -> GPU 1; L1 e1 local, e3 -> GPU 1 => 2 sends
    # t1 (GPU 1): L0 e1 -> GPU 0, e0 -> GPU 0; L1 e2 local, e3 local => 2 sends
    # t2 (GPU 3): L0 e3 local, e2 -> GPU 2; L1 e0 -> GPU 2, e1 local => 2 sends; x2 phases
    assert m.gpu_transmissions == pytest.approx(12 / 3)
    # Load of layer 0: GPU0 {t0 e0, t1 e1, t1 e0} = 3, GPU1 {t0 e2} = 1, GPU2 {t2 e2} = 1, GPU3 {t2 e3} = 1
    assert m.gpu_load[0].tolist() == [3, 1, 1, 1]
    # uniform origins: by symmetry every sender finds every expert at 0 hops
    assert evaluate(p, trace, topo, origins="uniform").hop_transmissions == 0


def test_replica_ties_are_dealt_round_robin(topo):
    # Expert 0 on GPU 2 and GPU 3 (both 2 hops from GPU 0, same bandwidth): tied.
    spec = ModelSpec("ties", num_layers=1, num_experts=4, top_k=1)
    slots = np.array([[[1, -1], [2, -1], [0, -1], [0, 3]]])
    p = Placement(slots, num_experts=4)
    t = Trace.from_tokens(spec, np.zeros((4, 1, 1), dtype=int), origin=np.zeros(4, dtype=int), num_ranks=4)
    m = evaluate(p, t, topo, origins="trace")
    assert m.gpu_load[0].tolist() == [0, 0, 2, 2]  # t0 -> GPU2, t1 -> GPU3, t2 -> GPU2, t3 -> GPU3
    assert m.hop_transmissions == pytest.approx(4.0)  # every token: 2 hops there, 2 back
    # From GPU 2 the local replica wins
    t2 = Trace.from_tokens(spec, np.zeros((3, 1, 1), dtype=int), origin=np.full(3, 2), num_ranks=4)
    assert evaluate(p, t2, topo, origins="trace").gpu_load[0].tolist() == [0, 0, 3, 0]


def test_alltoall_time_single_send(topo):
    spec = ModelSpec("one", num_layers=1, num_experts=4, top_k=1)
    t = Trace.from_tokens(spec, np.array([[[2]]]), origin=np.array([0]), num_ranks=4)
    m = evaluate(Placement.from_assignment(np.array([[0, 1, 2, 3]]), 4), t, topo,
                 hidden_size=1024, dtype="fp32", origins="trace")
    b = 1024 * 4
    # dispatch 0 -> 2 and combine 2 -> 0: each b / (slowest link on the route) + route latency
    expected = b / topo.bottleneck_bandwidth[0, 2] + topo.latency[0, 2] + b / topo.bottleneck_bandwidth[2, 0] \
        + topo.latency[2, 0]
    assert m.alltoall_time == pytest.approx(expected)
    assert m.busiest_link_bytes == pytest.approx(b)


def test_count_trace_matches_token_trace(topo, trace):
    counts = np.zeros((4, 2, 4), dtype=np.int64)
    for t in range(3):
        for layer in range(2):
            counts[ORIGIN[t], layer, EXPERTS[t, layer]] += 1
    ct = Trace.from_counts(SPEC, counts)
    for p in (one_per_gpu(), paired()):
        a = evaluate(p, trace, topo, origins="trace")
        b = evaluate(p, ct, topo, origins="trace")
        assert b.hop_transmissions == pytest.approx(a.hop_transmissions)
        assert np.allclose(a.arc_bytes, b.arc_bytes)
        assert np.allclose(a.gpu_load, b.gpu_load)
    with pytest.raises(NeedsTokenTraceError, match="per-token trace"):
        evaluate(one_per_gpu(), ct, topo, dedup=True)
    with pytest.raises(NeedsTokenTraceError):
        evaluate(one_per_gpu(), ct, topo, dispatch="coherent")


def test_bad_arguments(topo, trace):
    with pytest.raises(PlacementInputError, match="unknown dispatch model 'x'"):
        evaluate(one_per_gpu(), trace, topo, dispatch="x")
    with pytest.raises(PlacementInputError, match="unknown dtype"):
        evaluate(one_per_gpu(), trace, topo, dtype="int4")
    with pytest.raises(PlacementInputError, match="placement is for 2 GPUs but the topology has 4"):
        evaluate(Placement.from_assignment(np.array([[0, 0, 1, 1]] * 2), 2), trace, topo)
    with pytest.raises(PlacementInputError, match="3 layers x 4 experts but the trace has 2 x 4"):
        evaluate(Placement.from_assignment(np.array([[0, 1, 2, 3]] * 3), 4), trace, topo)


def test_frame_has_one_row(topo, trace):
    frame = evaluate(one_per_gpu(), trace, topo).to_frame("A")
    assert frame.shape[0] == 1 and frame.index[0] == "A"
    assert frame.loc["A", "hop_transmissions"] == pytest.approx(8.0)


# ---------------------------------------------------------------------------------- package layout
_CLASH_PROBE = """
import importlib, sys
for name in {order!r}:
    importlib.import_module(name)
import numpy as np
import placement
import placement.evaluation as ev
from placement.evaluate import Metrics, evaluate
assert placement.evaluate is ev.evaluate is evaluate, placement.evaluate
assert sys.modules["placement.evaluate"].evaluate is ev.evaluate
from placement.topology import preset
from placement.trace import ModelSpec, Trace
t = Trace.from_tokens(ModelSpec("m", 1, 4, 1), np.array([[[0]], [[3]]]))
p = placement.Placement.from_assignment(np.array([[0, 1, 2, 3]]), num_gpus=4)
m = placement.evaluate(p, t, preset("fat-tree:2x2"))
assert isinstance(m, Metrics) and isinstance(m, ev.metrics.Metrics), type(m)
print("OK")
"""


@pytest.mark.parametrize("order", [
    [],
    ["placement.evaluation.routing", "placement.evaluation.flows", "placement.evaluation.metrics"],
    ["placement.evaluate", "placement.evaluation"],
    ["placement.evaluation", "placement.evaluate", "placement.evaluation.routing"],
    ["placement_runtime.plan"],
])
def test_placement_evaluate_stays_the_function_whatever_is_imported_first(order):
    # ``placement.evaluate`` is both a module and the function exported by ``placement``; in a fresh
    # interpreter, importing the evaluator's modules in any order must leave the attribute the function.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _CLASH_PROBE.format(order=order)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stdout + out.stderr


def test_public_names_are_the_package_objects():
    import importlib

    import placement.evaluation as ev
    from placement import costs
    from placement.evaluation import routing

    # ``import placement.evaluate as shim`` would bind the function (the attribute of ``placement``)
    shim = importlib.import_module("placement.evaluate")
    for name in ["evaluate", "Metrics", "route_layer", "replica_tables", "first_of_each", "DISPATCH_MODELS",
                 "ORIGIN_MODES", "DTYPE_BYTES", "DEFAULT_HIDDEN_SIZE"]:
        assert name in shim.__all__ and name in ev.__all__
        assert getattr(shim, name) is getattr(ev, name)
    assert shim.DTYPE_BYTES is costs.DTYPE_BYTES and shim.DEFAULT_HIDDEN_SIZE == costs.DEFAULT_HIDDEN_SIZE
    assert shim.route_layer is routing.route_layer and shim.replica_tables is routing.replica_tables


def test_runtime_plan_routes_with_the_evaluator_routing():
    from placement.evaluation import replica_rules, routing, transports
    from placement_runtime import plan

    # one implementation: the runtime routes with the evaluator's rule registry and de-duplication rule
    assert plan.REPLICA_RULES is replica_rules.REPLICA_RULES and plan.first_of_each is routing.first_of_each
    assert plan.TRANSPORTS is transports.TRANSPORTS and plan.rail_peer is transports.rail_peer
    assert plan.destination_probability is transports.destination_probability
    assert "from placement.evaluation.replica_rules import" in __import__("inspect").getsource(plan)


def test_evaluator_never_imports_formulations_methods_or_backends():
    import re
    from pathlib import Path

    import placement.evaluation as ev

    banned = "(formulations|methods|baselines|backends|milp|registry|solution|api|cli)"
    pattern = re.compile(rf"^\s*(from\s+(\.\.?|placement\.){banned}\b|import\s+placement\.{banned}\b)", re.M)
    files = [*Path(ev.__file__).parent.glob("*.py"), Path(ev.__file__).parent.parent / "evaluate.py"]
    offenders = [p.name for p in files if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
