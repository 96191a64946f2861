"""``layer-time``'s exact path (``solver="milp"``): the step model as a MILP, checked by the evaluator and by
brute force on tiny instances (replica counts, routing and de-duplication included).

* **model = evaluator**: for random placements (and routings) the model's feasible point built from them has
  the evaluator's layer time as its objective, for every transport, with and without overlap;
* **optimal = brute force**: the method's optimum equals the least evaluator time over every placement of
  its set -- one copy per expert under each transport (all replica rules route alike there), split routing
  with de-duplication over every placement with replicas and every one-replica-per-sender routing, and
  fractional split routing over every placement with its optimal routing (an LP, where the step is the link
  time alone);
* the bound is at most that optimum; refusals name the option to change.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from placement import ModelSpec, Placement, evaluate
from placement.api import as_stats
from placement.errors import PlacementInputError
from placement.formulations.split_routing import solve_split_routing
from placement.formulations.step_time import build_step_milp, warm_start
from placement.methods import run_method
from placement.search.exact import layer_instances
from placement.search.objective import StepObjective
from placement.topology import preset
from placement.trace import Trace


def _trace(sticky_trace, *, L: int, E: int, k: int, n: int, G: int, seed: int, compute: bool = True,
           shared: int = 1) -> Trace:
    t = sticky_trace(L, E, k, n, seed, ranks=G)
    spec = ModelSpec("tiny", L, E, k, hidden_size=64, intermediate_size=256 if compute else None,
                     num_shared_experts=shared if compute else 0)
    return Trace.from_tokens(spec, t.experts, origin=t.origin, num_ranks=G)


def _slot_rows(E: int, G: int, S: int) -> np.ndarray:
    """``int [R, G, S]`` every layer with each expert at least once, at most once per GPU (ordered per GPU)."""
    per_gpu = [tuple(c) + (-1,) * (S - len(c)) for n in range(S + 1) for c in itertools.combinations(range(E), n)]
    rows = np.array(list(itertools.product(per_gpu, repeat=G)), dtype=np.int64)
    covered = np.stack([(rows == e).any(axis=(1, 2)) for e in range(E)], axis=1).all(axis=1)
    return rows[covered]


def _repeat_layer(trace: Trace, layer: int, times: int) -> Trace:
    """The trace's ``layer`` repeated ``times`` times (each candidate layer is one layer of it)."""
    spec = ModelSpec(trace.model.name, times, trace.num_experts, trace.top_k, hidden_size=trace.model.hidden_size,
                     intermediate_size=trace.model.intermediate_size,
                     num_shared_experts=trace.model.num_shared_experts)
    ex = np.repeat(trace.experts[:, layer:layer + 1], times, axis=1)
    return Trace.from_tokens(spec, ex, origin=trace.origin, num_ranks=trace.num_ranks)


def _least(trace: Trace, topo, serving: dict, candidates: np.ndarray, routing=None) -> list[float]:
    """Per layer of ``trace``, the least evaluator layer time over ``candidates int [R, G, S]`` (with
    ``routing [R, G, E, Rmax]`` when given)."""
    out = []
    for layer in range(trace.num_layers):
        best = np.inf
        for a in range(0, len(candidates), 1024):
            batch = candidates[a:a + 1024]
            rep = _repeat_layer(trace, layer, len(batch))
            obj = StepObjective.build(rep, topo, **serving)
            best = min(best, float(obj.layer_times(batch, None if routing is None else routing[a:a + 1024]).min()))
        out.append(best)
    return out


SERVING_CASES = [
    pytest.param("fat-tree:2x2", {"transport": "nccl"}, id="nccl"),
    pytest.param("fat-tree:2x2", {"transport": "deepep"}, id="deepep"),
    pytest.param("fat-tree:2x2", {"transport": "deepep-ll", "overlap": True}, id="deepep-ll-overlap"),
    pytest.param("fat-tree:2x2", {"transport": "nccl", "replica": "sglang-static"}, id="nccl-sglang"),
]


# ------------------------------------------------------------------------------------------ model = evaluator
@pytest.mark.parametrize("transport", ["nccl", "deepep", "deepep-ll"])
@pytest.mark.parametrize("overlap", [False, True])
def test_model_objective_is_the_evaluators_layer_time(sticky_trace, transport, overlap):
    """The model's point of a random placement (and routing) scores what the evaluator says, and is feasible."""
    topo = preset("fat-tree:2x2")
    trace = _trace(sticky_trace, L=2, E=8, k=2, n=48, G=4, seed=5)
    rng = np.random.default_rng(1)
    for routing_mode in ("one-copy", "split"):
        serving = {"replica": "split" if routing_mode == "split" else "vllm", "transport": transport,
                   "tokens_per_step": 16, "overlap": overlap}
        S = 2 if routing_mode == "one-copy" else 3
        obj = StepObjective.build(trace, topo, **serving)
        insts = layer_instances(obj, S)
        for _ in range(3):
            slots = np.full((2, 4, S), -1, dtype=np.int64)
            slots[:, :, :2] = np.stack([rng.permutation(8).reshape(4, 2) for _ in range(2)])
            if S == 3:
                for layer in range(2):
                    for g in range(4):
                        slots[layer, g, 2] = rng.choice(np.setdiff1d(np.arange(8), slots[layer, g, :2]))
            placement = Placement(slots, num_experts=8)
            rs = placement.replica_slots()
            routing = None
            if routing_mode == "split":
                R = rs.shape[2]
                share = rng.random((2, 4, 8, R)) * (rs[:, None] >= 0)
                if insts[0].dedups:  # one replica per (sender, expert): the model's integral routing
                    share = (share == share.max(axis=3, keepdims=True)) * (rs[:, None] >= 0)
                routing = share / share.sum(axis=3, keepdims=True)
            times = obj.layer_times(slots, routing)
            for layer in range(2):
                model, index = build_step_milp(insts[layer], routing_mode)
                x = np.zeros((8, 4), dtype=bool)
                live = slots[layer] >= 0
                x[slots[layer][live], np.nonzero(live)[0]] = True
                r = None
                if routing_mode == "split":
                    per_gpu = np.zeros((4, 8, 4))
                    gpu = np.where(rs[layer] >= 0, rs[layer] // S, 0)
                    for j in range(rs.shape[2]):
                        ok = rs[layer, :, j] >= 0
                        np.add.at(per_gpu, (slice(None), np.flatnonzero(ok), gpu[ok, j]), routing[layer][:, ok, j])
                    r = per_gpu[index.pairs[:, 0], index.pairs[:, 1]]
                point = warm_start(model, index, insts[layer], x, r)
                assert model.max_violation(point) <= 1e-7
                assert model.objective_value(point) * index.unit == pytest.approx(times[layer], rel=1e-9)


# ------------------------------------------------------------------------------------------ brute force
@pytest.mark.parametrize("preset_name, serving", SERVING_CASES)
def test_one_copy_optimum_is_the_brute_force_optimum(sticky_trace, preset_name, serving):
    """One replica per expert (redundant=0): every placement of 4 experts on 4 GPUs, 3 serving steps, expert
    compute and a shared expert modelled; de-duplication (DeepEP) and overlap included."""
    topo = preset(preset_name)
    trace = _trace(sticky_trace, L=2, E=4, k=2, n=48, G=4, seed=3)
    serving = {"tokens_per_step": 16, **serving}
    sol = run_method("layer-time", as_stats(trace), topo, solver="milp", redundant=0, time_limit=60, **serving)
    least = _least(trace, topo, serving, _slot_rows(4, 4, 1))
    assert sol.termination.value == "optimal"
    assert sol.objective == pytest.approx(sum(least), rel=1e-7)
    assert sol.bound <= sum(least) * (1 + 1e-7)
    m = evaluate(sol.placement, trace, topo, **{k: v for k, v in serving.items() if k != "replica"},
                 replica=serving.get("replica", "vllm"))
    assert m.step.step_time == pytest.approx(sol.objective, rel=1e-12)


def test_split_with_dedup_optimum_is_the_brute_force_optimum(sticky_trace):
    """Replica counts, placement and routing at once under DeepEP (de-duplication per node): every layer of 3
    slots on each of 2 GPUs holding each of 4 experts, and every routing that sends each sender's selections of
    an expert to one of its replicas."""
    topo = preset("fat-tree:2x1")
    trace = _trace(sticky_trace, L=2, E=4, k=2, n=40, G=2, seed=7)
    serving = {"replica": "split", "transport": "deepep", "tokens_per_step": 20}
    sol = run_method("layer-time", as_stats(trace), topo, solver="milp", redundant=2, time_limit=60, **serving)
    rows = _slot_rows(4, 2, 3)
    cands, routes = [], []
    for row in rows:
        p = Placement(row[None], num_experts=4)
        rs = p.replica_slots()[0]  # [E, R]
        n_rep = (rs >= 0).sum(axis=1)
        for pick in itertools.product(*[range(n_rep[e]) for e in range(4) for _ in range(2)]):
            table = np.zeros((2, 4, rs.shape[1]))
            pick = np.array(pick).reshape(4, 2)
            for e in range(4):
                for u in range(2):
                    table[u, e, pick[e, u]] = 1.0
            cands.append(row)
            routes.append(table)
    R = max(t.shape[2] for t in routes)
    routing = np.stack([np.pad(t, ((0, 0), (0, 0), (0, R - t.shape[2]))) for t in routes])
    least = _least(trace, topo, serving, np.stack(cands), routing)
    assert sol.termination.value == "optimal"
    assert sol.objective == pytest.approx(sum(least), rel=1e-7)
    assert sol.bound <= sum(least) * (1 + 1e-7)
    assert sol.placement.routing is not None


def test_fractional_split_optimum_is_the_brute_force_optimum(sticky_trace, chain_topology):
    """Fractional routing (NCCL, no de-duplication) on a cluster without latency and an expert shape unknown
    (the step is the link time alone): the optimum over every placement of 3 experts in 2 slots on each of 3
    GPUs, each with its optimal routing (the split-routing LP, an independent model), equals the method's."""
    topo = chain_topology((1, 2))
    trace = _trace(sticky_trace, L=2, E=3, k=2, n=30, G=3, seed=2, compute=False)
    serving = {"replica": "split", "transport": "nccl", "tokens_per_step": 30}
    sol = run_method("layer-time", as_stats(trace), topo, solver="milp", redundant=3, time_limit=60, **serving)
    rows = _slot_rows(3, 3, 2)
    total = 0.0
    for layer in range(2):
        rep = _repeat_layer(trace, layer, len(rows))
        obj = StepObjective.build(rep, topo, **serving)
        rs = Placement(rows, num_experts=3).replica_slots()
        routing, _ = solve_split_routing(rows, obj.sent, topo, obj.setup.dispatch_wire.bytes_per_token,
                                         obj.setup.combine_wire.bytes_per_token, np.full((len(rows), 3), np.inf), rs)
        total += float(obj.layer_times(rows, routing).min())
    assert sol.termination.value == "optimal"
    assert sol.objective == pytest.approx(total, rel=1e-6)
    assert sol.bound <= total * (1 + 1e-6)


def test_parallel_layers_give_the_same_answer(sticky_trace):
    topo = preset("fat-tree:2x2")
    trace = _trace(sticky_trace, L=3, E=4, k=2, n=32, G=4, seed=4)
    one = run_method("layer-time", as_stats(trace), topo, solver="milp", redundant=0, time_limit=60, jobs=1)
    two = run_method("layer-time", as_stats(trace), topo, solver="milp", redundant=0, time_limit=60, jobs=2)
    assert two.objective == pytest.approx(one.objective, rel=1e-9)
    assert two.termination.value == "optimal"


# ------------------------------------------------------------------------------------------ at scale
@pytest.mark.parametrize(("replica", "jobs"), [("vllm", 1), ("sglang-static", 2)])
def test_server_bound_is_below_every_placement(sticky_trace, monkeypatch, replica, jobs):
    """Where a layer's full model is too large the method reports the search's placement with the server
    relaxation's proven bound: below the brute-force optimum under the stack's rule (every layer of 3 slots on
    each of 2 GPUs), and at least the cut bound of :mod:`placement.search.bounds`."""
    import placement.formulations.step_time as step_time
    from placement.evaluation import serving_setup
    from placement.search.bounds import step_time_bound

    monkeypatch.setattr(step_time, "MAX_NONZEROS", 10)
    topo = preset("fat-tree:2x1")
    trace = _trace(sticky_trace, L=2, E=4, k=2, n=40, G=2, seed=7)
    serving = {"replica": replica, "transport": "nccl", "tokens_per_step": 20}
    sol = run_method("layer-time", as_stats(trace), topo, solver="milp", time_limit=30, replica="split",
                     transport="nccl", tokens_per_step=20, jobs=jobs)
    assert sol.info["exact_model"] == "server-bound"
    assert sol.termination.value == "feasible"
    least = sum(_least(trace, topo, serving, _slot_rows(4, 2, 3)))
    assert sol.bound <= least * (1 + 1e-9)
    setup = serving_setup(trace, topo, replica=replica, transport="nccl", dedup=False, tokens_per_step=20)
    assert sol.bound >= step_time_bound(trace, topo, setup, 3).sum() * (1 - 1e-9)
    assert sol.objective == pytest.approx(evaluate(sol.placement, trace, topo, replica="split", transport="nccl",
                                                   tokens_per_step=20).step.step_time, rel=1e-12)


# ------------------------------------------------------------------------------------------ refusals
def test_refusals_name_the_option(sticky_trace, monkeypatch):
    topo = preset("fat-tree:2x2")
    trace = _trace(sticky_trace, L=2, E=4, k=2, n=32, G=4, seed=1)
    stats = as_stats(trace)
    with pytest.raises(PlacementInputError, match="replica='split' or redundant=0"):
        run_method("layer-time", stats, topo, solver="milp", replica="vllm", transport="deepep")
    # a stack's rule with replicas: not linear, so the search's placement with the server bound
    sol = run_method("layer-time", stats, topo, solver="milp", replica="vllm", time_limit=5)
    assert sol.info["exact_model"] == "server-bound" and "not linear" in sol.info["exact_model_why_not"]
    assert sol.bound is not None and sol.bound <= sol.objective
    with pytest.raises(PlacementInputError, match="windows and also"):
        run_method("layer-time", stats, topo, solver="milp", redundant=0, windows=2)
    with pytest.raises(PlacementInputError, match="max_moves and max_load"):
        run_method("layer-time", stats, topo, solver="milp", redundant=0, max_load="eplb")
    import placement.formulations.step_time as step_time

    monkeypatch.setattr(step_time, "MAX_NONZEROS", 10)
    with pytest.raises(PlacementInputError, match="entries.*without de-duplication"):
        run_method("layer-time", stats, topo, solver="milp", redundant=0, transport="deepep", time_limit=5)
