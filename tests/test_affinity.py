"""Inter-layer affinity methods (ExFlow, MoETuner): brute-force optima on tiny instances, objectives
equal to the evaluator (or to an independent recomputation from the tokens), time limits, API and CLI.

Tiny instances: 2-3 layers, 4 experts, top-1 or top-2, 2 GPUs (or 4 with two servers), few
enough placements to enumerate them all (``C(4, 2) = 6`` balanced placements per layer on 2 GPUs).
Traces come from ``sticky_trace`` (tests/conftest.py): tokens keep their expert, shifted by one,
into the next layer with probability 0.6, else re-draw.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys

import numpy as np
import pytest

import placement
from placement import Placement, evaluate
from placement.api import as_stats
from placement.errors import SolveFailedError
from placement.formulations import exflow as X
from placement.formulations import moetuner as MT
from placement.formulations._common import assignment_from_x, solve_model, solver_params
from placement.formulations._labels import relabel_by_first_appearance
from placement.formulations.moetuner.heuristics import lpt_clusters
from placement.topology import preset
from placement.trace import Trace, save_trace

TWO = preset("fat-tree:1x2")
FOUR_2S = preset("fat-tree:2x2")  # 4 GPUs on 2 servers: hops 0 inside a server, 2 across


def balanced_rows(E: int, G: int) -> list[np.ndarray]:
    """Every assignment of E experts to G GPUs with E/G experts on each."""
    m = E // G
    return [np.array(r) for r in itertools.product(range(G), repeat=E) if np.all(np.bincount(r, minlength=G) == m)]


def all_placements(L: int, E: int, G: int):
    rows = balanced_rows(E, G)
    for combo in itertools.product(rows, repeat=L):
        yield np.stack(combo)


def cross(trace: Trace, topo, a: np.ndarray) -> float:
    return evaluate(Placement.from_assignment(a, topo.num_gpus), trace, topo,
                    dispatch="coherent").boundary_cross_fraction


def hops(trace: Trace, topo, a: np.ndarray) -> float:
    return evaluate(Placement.from_assignment(a, topo.num_gpus), trace, topo, dispatch="coherent",
                    origins="uniform").hop_transmissions


@pytest.fixture(scope="module", params=[(3, 1), (3, 2)], ids=["top1", "top2"])
def tiny(request, sticky_trace):
    L, k = request.param
    return sticky_trace(L, 4, k, 60, seed=10 + k)


# ---------------------------------------------------------------------------------------------- ExFlow
@pytest.mark.parametrize("strategy", ["milp", "dp", "local"])
def test_exflow_brute_force_cross(tiny, strategy):
    # min over all 6^3 balanced placements of the evaluator's boundary_cross_fraction
    best = min(cross(tiny, TWO, a) for a in all_placements(3, 4, 2))
    sol = placement.solve(tiny, TWO, method="exflow", strategy=strategy, time_limit=20, local_time=0.3)
    got = cross(tiny, TWO, sol.placement.assignment())
    assert sol.objective == pytest.approx(got, abs=1e-12)  # objective == evaluator metric
    assert sol.bound <= sol.objective + 1e-12
    if strategy in ("milp", "dp"):
        assert sol.termination == "optimal"
        assert got == pytest.approx(best, abs=1e-12)
    else:
        assert got >= best - 1e-12 and sol.bound <= best + 1e-12  # the bound is valid


def test_exflow_brute_force_hops_two_servers(sticky_trace):
    # 2 layers x 4 experts on 4 GPUs (2 servers): all 24^2 placements, coherent hop-transmissions
    # (layer-0 dispatch from uniform origins plus boundary pairs at 1/k each)
    tr = sticky_trace(2, 4, 2, 80, seed=5)
    rows = [np.array(p) for p in itertools.permutations(range(4))]
    best = min(hops(tr, FOUR_2S, np.stack(c)) for c in itertools.product(rows, repeat=2))
    for strategy in ("milp", "dp"):
        sol = placement.solve(tr, FOUR_2S, method="exflow", cost="hops", strategy=strategy)
        got = hops(tr, FOUR_2S, sol.placement.assignment())
        assert sol.objective == pytest.approx(got, rel=1e-12)
        assert got == pytest.approx(best, rel=1e-12)
        assert sol.termination == "optimal"


def seconds_per_token(trace: Trace, topo) -> np.ndarray:
    """``[G, G]`` seconds to send one bf16 token of the trace's model (4096 elements by default)."""
    return np.asarray(topo.seconds_per_byte) * (trace.model.hidden_size or 4096) * 2


def test_exflow_time_objective_is_seconds_per_token(sticky_trace):
    # cost=time reports seconds per token: layer-0 dispatch from uniform origins plus every boundary
    # pair at 1/k token, each send at its route's seconds per token, recomputed from the raw tokens
    tr = sticky_trace(2, 4, 2, 80, seed=5)
    sol = placement.solve(tr, FOUR_2S, method="exflow", cost="time", strategy="dp")
    a = sol.placement.assignment()
    spt = seconds_per_token(tr, FOUR_2S)
    ex = tr.experts
    N, L, k = ex.shape
    total = 0.0
    for t in range(N):
        total += sum(spt[:, a[0, e]].mean() for e in ex[t, 0])
        for layer in range(L - 1):
            total += sum(spt[a[layer, i], a[layer + 1, j]] / k for i in ex[t, layer] for j in ex[t, layer + 1])
    assert sol.termination == "optimal"
    assert sol.objective == pytest.approx(total / N, rel=1e-12) and sol.bound == pytest.approx(sol.objective)
    assert 1e-9 < sol.objective < 1e-3  # seconds, not microseconds


def test_exflow_model_objective_equals_evaluator_on_any_placement(sticky_trace):
    tr = sticky_trace(4, 8, 2, 200, seed=2)
    topo = preset("fat-tree:2x2")
    rng = np.random.default_rng(0)
    for cost, metric in (("cross", cross), ("hops", hops)):
        P = X.build_problem(as_stats(tr), topo, cost)
        model = X.build_model(P)
        for _ in range(3):
            a = np.stack([rng.permutation(np.arange(8) // 2) for _ in range(4)])
            v = X.warm_start(P, model, a)
            assert model.max_violation(v) <= 1e-9 or P.interchangeable_gpus  # symmetry rows may cut this labelling
            assert model.objective_value(v) / P.scale == pytest.approx(metric(tr, topo, a), rel=1e-12)
            assert X.objective(P, a) / P.scale == pytest.approx(metric(tr, topo, a), rel=1e-12)


def test_exflow_time_limit_returns_feasible_with_bound(sticky_trace):
    tr = sticky_trace(6, 16, 2, 400, seed=4)
    topo = preset("fat-tree:1x4")
    sol = placement.solve(tr, topo, method="exflow", strategy="milp", time_limit=1.0, local_time=0.2)
    a = sol.placement.assignment()
    assert np.all(np.stack([np.bincount(r, minlength=4) for r in a]) == 4)
    assert sol.bound is not None and sol.bound <= sol.objective + 1e-12
    assert sol.termination in ("optimal", "feasible")
    assert sol.objective == pytest.approx(cross(tr, topo, a), abs=1e-12)
    assert sol.gap == pytest.approx((sol.objective - sol.bound) / sol.objective, abs=1e-9)


def test_exflow_beats_baselines_and_bisect(sticky_trace):
    tr = sticky_trace(6, 16, 2, 400, seed=7)
    topo = preset("fat-tree:1x4")
    ours = placement.solve(tr, topo, method="exflow", time_limit=3)
    bis = placement.solve(tr, topo, method="exflow-bisect", solve_cap=0.3)
    contig = placement.solve(tr, topo, method="contiguous")
    vals = {name: cross(tr, topo, s.placement.assignment()) for name, s in
            (("ours", ours), ("bisect", bis), ("contiguous", contig))}
    assert vals["ours"] <= vals["bisect"] + 1e-12 and vals["ours"] <= vals["contiguous"] + 1e-12
    assert bis.objective == pytest.approx(vals["bisect"], abs=1e-12)
    assert ours.bound <= vals["bisect"] + 1e-12  # a valid bound is below every placement


def test_exflow_chain_exact_for_one_expert_per_gpu(sticky_trace):
    # E = G and interchangeable GPUs: boundaries decouple into assignment problems; brute force agrees
    tr = sticky_trace(2, 4, 1, 80, seed=8)
    topo = preset("fat-tree:1x4")
    rows = [np.array(p) for p in itertools.permutations(range(4))]
    best = min(cross(tr, topo, np.stack(c)) for c in itertools.product(rows, repeat=2))
    sol = placement.solve(tr, topo, method="exflow")
    assert sol.info["solver"] == "chain" and sol.termination == "optimal"
    assert cross(tr, topo, sol.placement.assignment()) == pytest.approx(best, abs=1e-12)


def test_decomposition_bound_below_optimum(tiny):
    P = X.build_problem(as_stats(tiny), TWO, "cross")
    bound, _ = X.boundary_bound(P, "highs", deadline=float("inf"))
    best = min(X.objective(P, a) for a in all_placements(3, 4, 2))
    assert bound <= best + 1e-9


def test_exflow_rejects_indivisible(sticky_trace):
    tr = sticky_trace(2, 6, 1, 20, seed=1)
    with pytest.raises(placement.PlacementInputError, match="does not divide over 4 GPUs"):
        placement.solve(tr, preset("fat-tree:1x4"), method="exflow")
    with pytest.raises(placement.PlacementInputError, match="strategy"):
        placement.solve(tr, TWO, method="exflow", strategy="nope")


# ---------------------------------------------------------------------------------------------- MoETuner
def token_traffic(trace: Trace, a: np.ndarray, G: int) -> np.ndarray:
    """``[L-1, G, G]`` tokens from GPU u to v at each boundary, from the raw tokens (pairs weigh 1/k)."""
    ex = trace.experts
    N, L, k = ex.shape
    out = np.zeros((L - 1, G, G))
    for t in range(N):
        for layer in range(L - 1):
            for i in ex[t, layer]:
                for j in ex[t, layer + 1]:
                    out[layer, a[layer, i], a[layer + 1, j]] += 1.0 / k
    return out


def bottleneck(trace: Trace, a: np.ndarray, G: int) -> float:
    """MoETuner's communication objective with 0/1 pair weights, recomputed from the tokens."""
    tr = token_traffic(trace, a, G)
    off = ~np.eye(G, dtype=bool)
    return float(sum(t[off].max() for t in tr))


def deviation(trace: Trace, topo, a: np.ndarray) -> float:
    load = evaluate(Placement.from_assignment(a, topo.num_gpus), trace, topo, dispatch="coherent").gpu_load
    return float(np.abs(load - load.mean(axis=1, keepdims=True)).sum())


def test_moetuner_ilp1_brute_force(tiny):
    # ILP1: per layer, the 3 ways to split 4 experts in 2 pairs; sum of |cluster load - mean|
    P = MT.build_problem(as_stats(tiny), TWO, "cross")
    best = 0.0
    for layer in range(3):
        best += min(float(np.abs(np.bincount(r, weights=P.load[layer], minlength=2) - P.load[layer].sum() / 2).sum())
                    for r in balanced_rows(4, 2))
    cl, obj, bound, term = MT.solve_ilp1(P, "highs", 10.0, 1e-9, 0, False)
    assert term == "optimal" and obj == pytest.approx(best) and bound <= obj + 1e-9
    assert obj == pytest.approx(deviation(tiny, TWO, cl))  # equals the evaluator's GPU loads


def test_moetuner_ilp2_milp_brute_force(tiny):
    # ILP2 with fixed clusters: each layer's 2 clusters on 2 GPUs (2 ways); the MILP, solved without
    # help, must reach the enumerated optimum of the token-level bottleneck objective
    P = MT.build_problem(as_stats(tiny), TWO, "cross")
    cl = relabel_by_first_appearance(lpt_clusters(P))
    W = MT.cluster_traffic(P, cl)
    model = MT.build_ilp2(P, W)
    res = solve_model(model, "highs", solver_params(time_limit=20, rel_gap=1e-9))
    perm = assignment_from_x(model.block_values(res.solution, "p"))
    a = np.take_along_axis(perm, cl, axis=1)
    best = min(bottleneck(tiny, np.take_along_axis(np.stack(p), cl, axis=1), 2)
               for p in itertools.product([np.array([0, 1]), np.array([1, 0])], repeat=3))
    assert str(res.termination) == "optimal"
    assert res.objective == pytest.approx(best) and bottleneck(tiny, a, 2) == pytest.approx(best)
    # and the exact per-boundary decomposition agrees
    perm0, dec = MT.ilp2_decomposition(P, W)
    assert dec == pytest.approx(best)


def test_moetuner_joint_brute_force(tiny):
    # joint: all 6^3 balanced placements with max GPU load <= (1 + eps) mean in every layer
    eps = 0.5
    P = MT.build_problem(as_stats(tiny), TWO, "cross")
    cap = (1 + eps) * P.load.sum(axis=1) / 2
    feasible = [a for a in all_placements(3, 4, 2)
                if all(np.bincount(a[la], weights=P.load[la], minlength=2).max() <= cap[la] + 1e-9 for la in range(3))]
    best = min(bottleneck(tiny, a, 2) for a in feasible)
    sol = placement.solve(tiny, TWO, method="moetuner-joint", cost="cross", eps=eps, warm=False, rel_gap=1e-9)
    a = sol.placement.assignment()
    assert sol.termination == "optimal"
    assert bottleneck(tiny, a, 2) == pytest.approx(best) and sol.objective == pytest.approx(best)
    assert sol.info["max_load_ratio"] <= 1 + eps + 1e-9


def test_moetuner_sequential_objective_and_joint_not_worse(sticky_trace):
    tr = sticky_trace(4, 8, 2, 300, seed=3)
    topo = preset("fat-tree:1x4")
    seq = placement.solve(tr, topo, method="moetuner", cost="cross", time_limit=4)
    a = seq.placement.assignment()
    assert seq.objective == pytest.approx(bottleneck(tr, a, 4))
    assert seq.info["ilp1_objective"] == pytest.approx(deviation(tr, topo, a))
    joint = placement.solve(tr, topo, method="moetuner-joint", cost="cross", time_limit=4)
    assert joint.objective <= seq.objective + 1e-9  # same balance (eps from the sequential run), warm start
    assert joint.objective == pytest.approx(bottleneck(tr, joint.placement.assignment(), 4))
    assert joint.bound is not None and joint.bound <= joint.objective + 1e-9


def test_moetuner_time_objective_is_seconds(sticky_trace):
    # cost=time: sum over boundaries of the largest GPU-pair traffic (tokens) x seconds per token
    tr = sticky_trace(3, 4, 2, 60, seed=12)
    spt = seconds_per_token(tr, FOUR_2S)
    off = ~np.eye(4, dtype=bool)
    for method in ("moetuner", "moetuner-joint"):
        sol = placement.solve(tr, FOUR_2S, method=method, cost="time", rel_gap=1e-9)
        traffic = token_traffic(tr, sol.placement.assignment(), 4)
        seconds = float(sum((t * spt)[off].max() for t in traffic))
        assert sol.objective == pytest.approx(seconds, rel=1e-12)
        assert 1e-9 < sol.objective < 1e-3  # seconds, not milliseconds
        # the sequential method's ILP2 bound holds given its clusters only: reported in info, in seconds
        bound = sol.bound if method == "moetuner-joint" else sol.info["ilp2_bound_given_clusters"]
        assert bound is not None and bound <= sol.objective


def test_moetuner_joint_infeasible_eps_message(sticky_trace):
    tr = sticky_trace(2, 4, 1, 40, seed=1)
    with pytest.raises((placement.PlacementInputError, SolveFailedError), match=r"eps=0.0"):
        placement.solve(tr, TWO, method="moetuner-joint", eps=0.0, warm=False)


# ---------------------------------------------------------------------------------------------- API and CLI
@pytest.mark.parametrize("method", ["exflow", "exflow-bisect", "moetuner", "moetuner-joint"])
def test_methods_through_api(method, sticky_trace):
    tr = sticky_trace(3, 8, 2, 120, seed=6)
    sol = placement.solve(tr, "fat-tree:1x4", method=method, time_limit=5)
    assert sol.placement.slots.shape == (3, 4, 2)
    assert sol.placement.metadata["method"] == method


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    script = shutil.which("placement")
    cmd = [script, *args] if script else [sys.executable, "-m", "placement", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_cli_solve_and_compare(tmp_path, sticky_trace):
    path = tmp_path / "t.npz"
    save_trace(sticky_trace(3, 8, 2, 120, seed=9), path)
    r = _run_cli("solve", "--trace", str(path), "--topology", "fat-tree:1x4", "--method", "exflow",
                 "--dispatch", "coherent", "--option", "time_limit=5", "--quiet", "--out", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.json").exists()
    r = _run_cli("compare", "--trace", str(path), "--topology", "fat-tree:1x4", "--dispatch", "coherent",
                 "--methods", "exflow,exflow-bisect,moetuner,moetuner-joint",
                 "--option", "exflow.time_limit=5", "--option", "moetuner.time_limit=5",
                 "--option", "moetuner-joint.time_limit=5", "--option", "exflow-bisect.solve_cap=1")
    assert r.returncode == 0, r.stderr
    for name in ("exflow", "exflow-bisect", "moetuner", "moetuner-joint"):
        assert name in r.stdout


def test_moetuner_joint_refuses_a_model_too_large_before_building_it(sticky_trace):
    # 3 layers x 4 experts on 4 GPUs: x has 3*4*4 = 48 columns, r has 2*4*4*4 = 128, z has 2: 178 in all
    tr = sticky_trace(3, 4, 1, 40, seed=1)
    with pytest.raises(placement.PlacementInputError, match=r"would have 178 columns .* max_columns=177"):
        placement.solve(tr, FOUR_2S, method="moetuner-joint", max_columns=177)
    sol = placement.solve(tr, FOUR_2S, method="moetuner-joint", max_columns=178)
    assert sol.placement.num_layers == 3
