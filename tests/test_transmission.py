"""The transmission ILP of arXiv 2508.09229 (methods ``transmission`` and ``transmission-load``).

Model under test (see ``placement.formulations.transmission``)::

    min  sum_{l,e,g} c[l,e,g] x[l,e,g]
    s.t. sum_g x[l,e,g] = 1            each expert once
         sum_e x[l,e,g] <= m           experts of one layer per GPU
         sum_{l,e} x[l,e,g] <= M       memory slots per GPU
    c[l,e,g] = p[l,e] * h[g],  h[g] = mean_u (d(u,g) + d(g,u))      (uniform origins)
    c[l,e,g] = sum_u q[l,e,u] (d(u,g) + d(g,u))                      (origins="trace")

Every optimum is certified independently: by brute force over all GPU assignments on tiny
instances, and by the evaluator (``hop_transmissions``) on the decoded placement.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from placement import evaluate
from placement.api import as_stats, solve
from placement.backends import get_backend
from placement.errors import PlacementInputError
from placement.formulations import transmission as tx
from placement.topology import Topology, preset
from placement.trace import ModelSpec, Trace, save_trace
from placement.trace.synthesize import synthesize

HAVE_CPSAT = get_backend("cpsat").available()[0]
BACKENDS = ["highs"] + (["cpsat"] if HAVE_CPSAT else [])


# ------------------------------------------------------------------------------------------ helpers
# chain_topology(sizes) and skewed_trace(G, ...) are the shared factories of tests/conftest.py
def gpu_costs(trace: Trace, topo: Topology, *, variant: str, origins: str = "uniform",
              cost: str = "hops") -> np.ndarray:
    """``[L, E, G]`` costs computed from the raw trace and the topology, independently of the module."""
    d = topo.hops if cost == "hops" else topo.seconds_per_byte
    D2 = d + d.T
    L, E, k, G = trace.num_layers, trace.num_experts, trace.top_k, topo.num_gpus
    n = trace.num_tokens
    load = np.zeros((L, E))
    by_origin = np.zeros((G, L, E))
    for t in range(n):
        for layer in range(L):
            for e in trace.experts[t, layer]:
                load[layer, e] += 1
                by_origin[trace.origin[t], layer, e] += 1
    if variant == "transmission":
        p = np.full((L, E), k / E)
        pi = np.bincount(trace.origin, minlength=G) / n if origins == "trace" else np.full(G, 1 / G)
        return p[:, :, None] * (pi @ D2)[None, None, :]
    if origins == "uniform":
        return (load / n)[:, :, None] * D2.mean(axis=0)[None, None, :]
    return np.einsum("ule,ug->leg", by_origin / n, D2)


def brute_force(c: np.ndarray, m: int, M: int | None) -> float:
    """Minimum of sum c[l,e,gpu] over every assignment with <= m per layer and <= M per GPU."""
    L, E, G = c.shape
    n = L * E
    codes = np.arange(G ** n, dtype=np.int64)
    digits = (codes[:, None] // G ** np.arange(n)[None, :]) % G  # [assignments, L*E]
    ok = np.ones(codes.size, dtype=bool)
    for g in range(G):
        on = digits == g
        for layer in range(L):
            ok &= on[:, layer * E:(layer + 1) * E].sum(axis=1) <= m
        if M is not None:
            ok &= on.sum(axis=1) <= M
    flat = c.reshape(n, G)
    total = flat[np.arange(n)[None, :], digits].sum(axis=1)
    return float(total[ok].min())


def check_feasible(sol, m: int, M: int | None) -> None:
    per_layer = (sol.placement.slots >= 0).sum(axis=2)  # [L, G]
    assert per_layer.max() <= m
    assert sol.placement.num_replicas().max() == 1
    if M is not None:
        assert sol.placement.slots_used().max() <= M


def placed_cost(c: np.ndarray, sol) -> float:
    a = sol.placement.assignment()
    return float(np.take_along_axis(c, a[:, :, None], axis=2).sum())


ALL_PATHS = [dict(solver="structured"), dict(solver="structured", aggregate="gpu"),
             dict(solver="lp"), dict(solver="lp", aggregate="gpu")] + [
    dict(solver="milp", backend=b, aggregate=a) for b in BACKENDS for a in ("class", "gpu")]


# ------------------------------------------------------------------------------------------ brute force
TINY = [  # (server sizes, experts_per_gpu, memory): memory 3 binds (the cheap GPUs want 4 each)
    ((1, 2, 1), 2, 0),
    ((1, 2, 1), 2, 3),
    ((1, 3), 0, 0),
    ((1, 3), 3, 3),
    ((2, 1), 2, 0),
]


@pytest.mark.parametrize("sizes,m,memory", TINY)
@pytest.mark.parametrize("variant", ["transmission", "transmission-load"])
@pytest.mark.parametrize("origins", ["uniform", "trace"])
def test_brute_force_optimum(sizes, m, memory, variant, origins, chain_topology, skewed_trace):
    topo = chain_topology(sizes)
    trace = skewed_trace(topo.num_gpus, seed=sum(sizes) + m)
    c = gpu_costs(trace, topo, variant=variant, origins=origins)
    mm = m or -(-trace.num_experts // topo.num_gpus)
    best = brute_force(c, mm, memory or None)
    for opts in ALL_PATHS:
        sol = solve(trace, topo, method=variant, origins=origins, experts_per_gpu=m, memory=memory, **opts)
        assert sol.termination == "optimal", opts
        if opts.get("backend") == "cpsat":  # CP-SAT rounds costs to integers: its bound is near, not equal
            assert sol.gap <= 1e-8, opts
        else:
            assert sol.gap == 0.0 and sol.bound == sol.objective, opts
        assert sol.objective == pytest.approx(best, rel=1e-9, abs=1e-12), opts
        assert placed_cost(c, sol) == pytest.approx(best, rel=1e-9), opts
        check_feasible(sol, mm, memory or None)


def test_memory_binding_takes_the_flow_and_beats_nothing_less(chain_topology, skewed_trace):
    # three servers (1, 2, 1): the middle GPUs are cheapest; with m = 2 each wants 2 experts per
    # layer (4 in all) but memory = 3, so the decoupled optimum is infeasible and the flow decides
    topo = chain_topology((1, 2, 1))
    trace = skewed_trace(4, seed=5)
    c = gpu_costs(trace, topo, variant="transmission-load")
    free = solve(trace, topo, method="transmission-load", experts_per_gpu=2)
    bound = solve(trace, topo, method="transmission-load", experts_per_gpu=2, memory=3)
    assert free.info["coupling"] == "none" and bound.info["coupling"] == "binding"
    assert bound.info["path"] == "min-cost-flow" and bound.info["flow_integer_costs_exact"] is True
    assert bound.objective > free.objective
    assert bound.objective == pytest.approx(brute_force(c, 2, 3), rel=1e-12)
    lp = solve(trace, topo, method="transmission-load", experts_per_gpu=2, memory=3, solver="lp")
    assert lp.info["lp_max_fractionality"] <= 1e-6  # total unimodularity: a vertex is integral
    assert lp.objective == pytest.approx(bound.objective, rel=1e-12)


# ------------------------------------------------------------------------------------------ evaluator
@pytest.fixture(scope="module")
def moe16():
    trace = synthesize("deepseekmoe-16b", 400, seed=3, num_ranks=16, weights=False)
    return as_stats(trace)


TOPOS = ["fat-tree:2x8", "dragonfly:groups=4,routers_per_group=2,servers_per_router=1,gpus=2",
         "sparse-fat-tree:servers=4,gpus=4,servers_per_leaf=1"]


@pytest.mark.parametrize("spec", TOPOS)
def test_objective_equals_evaluator(moe16, spec):
    topo = preset(spec)
    trace = moe16.trace
    for solver in ("structured", "milp", "lp"):
        sol = solve(moe16, topo, method="transmission-load", solver=solver)
        m = evaluate(sol.placement, trace, topo, origins="uniform", dispatch="origin", dedup=False)
        assert sol.objective == pytest.approx(m.hop_transmissions, rel=1e-9)
        assert sol.gap == 0.0
        for base in ("round_robin", "contiguous", "random"):
            other = evaluate(solve(moe16, topo, method=base).placement, trace, topo, origins="uniform")
            assert m.hop_transmissions <= other.hop_transmissions * (1 + 1e-12)
    sol = solve(moe16, topo, method="transmission-load", origins="trace")
    m = evaluate(sol.placement, trace, topo, origins="trace")
    assert sol.objective == pytest.approx(m.hop_transmissions, rel=1e-9)
    rr = evaluate(solve(moe16, topo, method="round_robin").placement, trace, topo, origins="trace")
    assert m.hop_transmissions <= rr.hop_transmissions * (1 + 1e-12)


def test_relabelling_experts_keeps_the_objective(moe16):
    topo = preset(TOPOS[1])
    perm = np.random.default_rng(1).permutation(moe16.trace.num_experts)
    trace = moe16.trace
    relabelled = Trace.from_tokens(trace.model, perm[trace.experts], origin=trace.origin, num_ranks=trace.num_ranks)
    for opts in ({}, {"origins": "trace"}, {"experts_per_gpu": 6, "memory": 110}):
        a = solve(moe16, topo, method="transmission-load", **opts)
        b = solve(relabelled, topo, method="transmission-load", **opts)
        assert b.objective == pytest.approx(a.objective, rel=1e-9), opts


def test_count_traces_work(moe16):
    topo = preset(TOPOS[1])
    counts = Trace.from_counts(moe16.trace.model, moe16.load_by_origin)
    a = solve(counts, topo, method="transmission-load")
    b = solve(moe16, topo, method="transmission-load")
    assert a.objective == pytest.approx(b.objective, rel=1e-12)
    uniform = evaluate(a.placement, counts, topo, origins="uniform")
    assert a.objective == pytest.approx(uniform.hop_transmissions, rel=1e-9)
    t = solve(counts, topo, method="transmission-load", origins="trace")
    per_origin = evaluate(t.placement, counts, topo, origins="trace")
    assert t.objective == pytest.approx(per_origin.hop_transmissions, rel=1e-9)


def test_plain_ilp_equals_evaluator_when_loads_are_uniform(chain_topology):
    # tokens cycle over the expert pairs, so every expert is picked by k/E of the tokens
    spec = ModelSpec("flat", num_layers=3, num_experts=8, top_k=2)
    pairs = np.arange(8).reshape(4, 2)
    ex = np.stack([np.stack([pairs[(t + layer) % 4] for layer in range(3)]) for t in range(40)])
    trace = Trace.from_tokens(spec, ex, origin=(np.arange(40) // 4) % 4, num_ranks=4)  # origins independent
    topo = chain_topology((1, 2, 1))
    for origins in ("uniform", "trace"):
        sol = solve(trace, topo, method="transmission", origins=origins, experts_per_gpu=3)
        m = evaluate(sol.placement, trace, topo, origins=origins)
        assert sol.objective == pytest.approx(m.hop_transmissions, rel=1e-9)
        load = solve(trace, topo, method="transmission-load", origins=origins, experts_per_gpu=3)
        assert load.objective == pytest.approx(sol.objective, rel=1e-9)


def test_time_cost_equals_seconds_per_byte_of_the_evaluated_traffic(moe16):
    topo = preset(TOPOS[1])
    for origins in ("uniform", "trace"):
        sol = solve(moe16, topo, method="transmission-load", cost="time", origins=origins)
        m = evaluate(sol.placement, moe16.trace, topo, origins=origins)
        seconds = float((m.traffic * topo.seconds_per_byte).sum()) / m.num_tokens
        assert sol.objective == pytest.approx(seconds, rel=1e-9)
        assert sol.gap == 0.0
        rr = evaluate(solve(moe16, topo, method="round_robin").placement, moe16.trace, topo, origins=origins)
        assert seconds <= float((rr.traffic * topo.seconds_per_byte).sum()) / rr.num_tokens * (1 + 1e-12)


def test_time_cost_brute_force_with_rounded_flow_costs(chain_topology, skewed_trace):
    topo = chain_topology((1, 2, 1))
    trace = skewed_trace(4, seed=7)
    c = gpu_costs(trace, topo, variant="transmission-load", cost="time")
    best = brute_force(c, 2, 3)
    sol = solve(trace, topo, method="transmission-load", cost="time", experts_per_gpu=2, memory=3)
    assert sol.info["path"] == "min-cost-flow" and sol.info["flow_integer_costs_exact"] is False
    assert sol.objective == pytest.approx(best, rel=1e-9)
    assert sol.bound <= best * (1 + 1e-12) and sol.gap < 1e-6  # the rounding slack is reported, not hidden
    for solver in ("milp", "lp"):
        other = solve(trace, topo, method="transmission-load", cost="time", experts_per_gpu=2, memory=3,
                      solver=solver)
        assert other.objective == pytest.approx(best, rel=1e-9)


# ------------------------------------------------------------------------------------------ paths agree
@pytest.mark.parametrize("variant", ["transmission", "transmission-load"])
def test_all_paths_agree_with_binding_memory(moe16, variant):
    topo = preset(TOPOS[1])
    opts = dict(experts_per_gpu=6, memory=110)  # the cheap GPUs want 6 * 27 = 162 slots
    ref = solve(moe16, topo, method=variant, **opts)
    assert ref.info["coupling"] == "binding" and ref.gap == 0.0
    for path in [dict(solver="lp"), dict(solver="milp"), dict(solver="lp", aggregate="server"),
                 dict(solver="structured", aggregate="gpu")] + (
            [dict(solver="milp", backend="cpsat")] if HAVE_CPSAT else []):
        sol = solve(moe16, topo, method=variant, **opts, **path)
        assert sol.objective == pytest.approx(ref.objective, rel=1e-9), path
        assert sol.termination == "optimal" and sol.gap is not None and sol.gap <= 1e-6, path
        check_feasible(sol, 6, 110)


def test_server_aggregation_and_classes():
    topo = preset(TOPOS[1])
    trace = synthesize("deepseekmoe-16b", 50, seed=1, num_ranks=16, weights=False)
    stats = as_stats(trace)
    inst = tx.build_instance(stats, topo)
    assert inst.num_classes < topo.num_servers  # symmetric servers merge under uniform origins
    server = tx.build_instance(stats, topo, aggregate="server")
    assert server.num_classes == topo.num_servers
    gpu = tx.build_instance(stats, topo, origins="trace", aggregate="gpu")
    assert gpu.num_classes == topo.num_gpus
    # per-token origins: GPUs of one server stay equivalent under hops, not under seconds per byte
    assert tx.build_instance(stats, topo, origins="trace").num_classes == topo.num_servers
    with pytest.raises(PlacementInputError, match="server-level model is not exact here"):
        tx.build_instance(stats, topo, origins="trace", cost="time", aggregate="server")
    model = tx.build_model(inst)
    assert [b.name for b in model.row_blocks] == ["assign", "per_layer"]
    assert model.num_vars == 27 * 64 * inst.num_classes
    mem = tx.build_model(tx.build_instance(stats, topo, memory=120), relax=True)
    assert [b.name for b in mem.row_blocks] == ["assign", "per_layer", "memory"] and not mem.is_mip


def test_disaggregation_is_balanced():
    # one class of 4 GPUs, 3 layers of 6 experts, m = 2, M = 5: wrap-around gives 4 or 5 per GPU
    inst = tx.TransmissionInstance(
        variant="transmission", origins="uniform", cost_kind="hops", aggregate="class", num_gpus=4,
        class_of=np.zeros(4, dtype=np.int64), class_size=np.array([4]), experts_per_gpu=2, memory=5,
        shared_slots=0, popularity=np.ones((3, 6)), class_round_trip=np.array([1.0]), general_cost=None, scale=None)
    gpus = tx.disaggregate(inst, np.zeros((3, 6), dtype=np.int64))
    per_layer = np.stack([np.bincount(row, minlength=4) for row in gpus])
    assert per_layer.max() <= 2
    assert sorted(per_layer.sum(axis=0).tolist()) == [4, 4, 5, 5]


# ------------------------------------------------------------------------------------------ options
def test_shared_experts_take_memory(chain_topology, skewed_trace):
    topo = chain_topology((1, 2, 1))
    trace = skewed_trace(4, seed=2, shared=1)
    c = gpu_costs(trace, topo, variant="transmission-load")
    # memory 5 with 2 shared slots (2 layers x 1 shared expert) leaves 3 routed slots per GPU
    sol = solve(trace, topo, method="transmission-load", experts_per_gpu=2, memory=5, shared_experts=True)
    assert sol.info["shared_slots"] == 2 and sol.info["memory"] == 3
    assert sol.objective == pytest.approx(brute_force(c, 2, 3), rel=1e-12)
    check_feasible(sol, 2, 3)
    loose = solve(trace, topo, method="transmission-load", experts_per_gpu=2, memory=5)
    assert loose.objective < sol.objective  # without the shared experts, memory 5 does not bind
    with pytest.raises(PlacementInputError, match=r"'memory'.*2 of them for shared experts.*at least 4"):
        solve(trace, topo, method="transmission-load", memory=3, shared_experts=True)


@pytest.mark.parametrize("options,field,message", [
    ({"experts_per_gpu": 1}, "experts_per_gpu", r"gives 4 slots per layer on 4 GPUs, fewer than the 8"),
    ({"experts_per_gpu": -1}, "experts_per_gpu", r"must be >= 0"),
    ({"memory": 3}, "memory", r"leave 12 slots on 4 GPUs for the 16 routed experts; use at least 4"),
    ({"memory": -2}, "memory", r"must be >= 0"),
    ({"solver": "magic"}, "solver", r"must be one of \['structured', 'milp', 'lp'\]"),
    ({"origins": "nearest"}, "origins", r"must be one of \['uniform', 'trace'\]"),
    ({"cost": "latency"}, "cost", r"must be one of \['hops', 'time'\]"),
    ({"aggregate": "rack"}, "aggregate", r"must be one of"),
    ({"solver": "lp", "backend": "cpsat"}, None, r"integer columns only"),
])
def test_option_errors(options, field, message, chain_topology, skewed_trace):
    if options.get("backend") == "cpsat" and not HAVE_CPSAT:
        pytest.skip("cpsat unavailable")
    topo = chain_topology((1, 2, 1))
    trace = skewed_trace(4, E=8)
    with pytest.raises(PlacementInputError, match=message) as info:
        solve(trace, topo, method="transmission-load", **options)
    if field is not None:
        assert info.value.field == field


def test_trace_origins_need_matching_ranks(chain_topology, skewed_trace):
    trace = skewed_trace(4)
    with pytest.raises(PlacementInputError, match=r"needs .* 6 GPUs; this trace has origins for 4"):
        solve(trace, chain_topology((2, 2, 2)), method="transmission-load", origins="trace")
    bare = Trace.from_tokens(trace.model, trace.experts)
    with pytest.raises(PlacementInputError, match="this trace has no origin ranks"):
        solve(bare, chain_topology((1, 2, 1)), method="transmission", origins="trace")


def test_registered_methods():
    from placement.methods import METHODS

    for name, needs in (("transmission", "nothing"), ("transmission-load", "load")):
        m = METHODS[name]
        assert m.needs == needs and "2508.09229" in m.paper
        assert {"solver", "origins", "cost", "experts_per_gpu", "memory", "shared_experts", "aggregate",
                "backend", "time_limit"} <= {o.name for o in m.options}


# ------------------------------------------------------------------------------------------ CLI
def test_cli_solve(tmp_path):
    trace = synthesize("deepseekmoe-16b", 200, seed=0, num_ranks=8, weights=False)
    path = tmp_path / "t.npz"
    save_trace(trace, path)
    out = tmp_path / "p.json"
    for method, extra in (("transmission-load", ["--option", "solver=lp"]), ("transmission", [])):
        r = subprocess.run([sys.executable, "-m", "placement", "solve", "--trace", str(path), "--topology",
                            "fat-tree:2x4", "--method", method, "--out", str(out), *extra],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        assert f"method    {method} (optimal, objective" in r.stdout and "gap 0%" in r.stdout
        assert "hop_transmissions" in r.stdout
