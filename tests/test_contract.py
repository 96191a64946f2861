"""The contract every registered method keeps, with the evaluator as the oracle.

Parametrised from :data:`placement.METHODS`, so a new method is covered without editing this file.
Each method runs with its default options on every tiny instance it can read (count traces only
for methods that need loads or nothing), with a few option variants that change what its
objective measures, and, when it has a ``backend`` option, once per backend of
:data:`placement.backends.BACKENDS` on the smallest instance (its MILP path forced where a
``solver`` or ``strategy`` option offers ``milp``; a backend that is not installed, or that cannot
represent the method's model, skips with the reason).  For every run:

(a) **feasible**: the placement's shape is the trace's layers and experts on the topology's GPUs;
    every expert of every layer is placed; slot ids are valid; ``experts_per_gpu`` and ``memory``
    hold; the evaluator accepts it and serves every selection exactly once;
(b) **objective = evaluator**: the reported objective equals
    :func:`placement.objectives.objective_value` of the method's declared ``Method.objective``
    (recomputed from :func:`placement.evaluate` metrics) to 1e-9 relative; a method that declares
    no objective reports none (and no bound); a ``baseline`` claims nothing (``HEURISTIC``);
(c) **claimed optima are optima**: with termination ``OPTIMAL`` no placement of the method's
    feasible set has a smaller objective (brute force, below), up to the method's ``rel_gap``,
    and the reported gap is within ``rel_gap``;
(d) **bounds are valid**: ``bound <= brute-force optimum`` (1e-9 relative) and
    ``gap == relative_gap(objective, bound)``.

Brute force.  A method's feasible set is, by default, every assignment with at most
``m = experts_per_gpu or ceil(E/G)`` experts of a layer per GPU and at most ``memory`` slots per
GPU: per layer, the ``E``-tuples over ``G`` GPUs with every count ``<= m``; over layers their
product.  With ``E = 4`` on ``G = 4`` (``m = 1``) these are the ``4! = 24`` permutations per layer,
``24**2 = 576`` placements for 2 layers; with ``E = 4`` on ``G = 2`` (``m = 2``) the
``C(4, 2) = 6`` balanced rows per layer, ``6**3 = 216`` placements for 3 layers.  Methods with
other constraints declare them in ``FEASIBLE`` below: ``moetuner`` solves MoETuner's two stages,
balance first (ILP1: least ``sum_g |GPU load - mean|`` per layer), then communication (ILP2), so
its set is the default one restricted to each layer's least-deviation assignments;
``moetuner-joint`` adds ``max GPU load <= (1 + eps) * mean`` per layer (``eps`` as reported in
``info``).  Each placement's
value comes from the evaluator, memoised per (instance, objective, options it reads).
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import placement
from placement import METHODS, Placement, evaluate
from placement.api import as_stats
from placement.backends import BACKENDS, ModelNotSupportedError, get_backend
from placement.methods import run_method
from placement.milp import relative_gap
from placement.objectives import OBJECTIVES, objective_value, step_metrics
from placement.registry import Method
from placement.solution import Solution, Termination
from placement.topology import Topology, preset
from placement.trace import Trace

# ------------------------------------------------------------------------------------------ instances
#: name -> what it is; built by the ``instances`` fixture from the shared factories of conftest.py
INSTANCES = {
    "nic-top1": "4 GPUs on 2 servers, unequal NICs; 2 layers x 4 experts, top-1, 40 tokens, origins on 4 ranks",
    "chain-top2": "4 GPUs on 2 servers (1 + 3); 2 layers x 4 experts, top-2, 40 tokens, origins on 4 ranks",
    "chain-counts": "the chain-top2 trace as per-rank counts [ranks, layers, experts]",
    "pair-top2": "2 GPUs on 2 servers; 3 layers x 4 experts (m = 2), top-2, 40 tokens, origins on 2 ranks",
    "pair-top1": "2 GPUs on 2 servers; 3 layers x 4 experts (m = 2), top-1, 30 tokens, origins on 2 ranks; "
                 "layer 1's loads [1, 1, 10, 18] give two balanced clusterings of equal deviation",
}
#: the smallest instance (216 placements): every backend runs here
SMALLEST = "pair-top2"
#: option variants that change what a method's objective measures (or how its claim is made)
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "transmission": [{"origins": "trace"}, {"cost": "time"}],
    "transmission-load": [{"origins": "trace"}, {"cost": "time"}, {"origins": "trace", "cost": "time"},
                          {"solver": "lp"}],
    "alltoall-time": [{"dtype": "fp8", "hidden_size": 100}, {"solver": "heuristic"}, {"rel_gap": 1e-9}],
    "exflow": [{"cost": "hops"}, {"cost": "time"}, {"strategy": "dp"}, {"strategy": "local", "local_time": 0.1}],
    "moetuner": [{"cost": "cross"}, {"cost": "hops"}],
    "moetuner-joint": [{"cost": "cross"}, {"eps": 1.0}],
    "eplb": [{"faithful": True}],
    "layer-time": [{"replica": "sglang-static"}, {"overlap": True}],
}
VARIANT_INSTANCES = ("chain-top2", SMALLEST, "pair-top1")
#: options that put a method on its MILP path, so the backend under test is used
MILP_SWITCHES = ("solver", "strategy")
#: what a method's MILP path needs besides the switch (layer-time's is exact for one copy per expert or split)
MILP_EXTRA: dict[str, dict[str, Any]] = {"layer-time": {"redundant": 0}}


@pytest.fixture(scope="session")
def instances(chain_topology, nic_topology, sticky_trace) -> dict[str, tuple[Trace, Topology]]:
    chain = chain_topology((1, 3))
    chain_trace = sticky_trace(2, 4, 2, 40, seed=2, ranks=4)
    counts = Trace.from_counts(chain_trace.model, as_stats(chain_trace).load_by_origin)
    return {
        "nic-top1": (sticky_trace(2, 4, 1, 40, seed=1, ranks=4), nic_topology()),
        "chain-top2": (chain_trace, chain),
        "chain-counts": (counts, chain),
        "pair-top2": (sticky_trace(3, 4, 2, 40, seed=3, ranks=2), preset("fat-tree:2x1")),
        "pair-top1": (sticky_trace(3, 4, 1, 30, seed=2, ranks=2), preset("fat-tree:2x1")),
    }


def _milp_options(method: Method, backend: str) -> dict[str, Any]:
    opts: dict[str, Any] = {"backend": backend}
    for option in method.options:
        if option.name in MILP_SWITCHES and option.choices and "milp" in option.choices:
            opts[option.name] = "milp"
    if any(v == "milp" for v in opts.values()):
        opts.update(MILP_EXTRA.get(method.name, {}))
    return opts


def _cases() -> Iterator[Any]:
    for name, method in METHODS.items():
        for inst in INSTANCES:
            if inst.endswith("counts") and method.needs == "tokens":
                continue  # test_methods checks that token methods refuse count traces
            yield pytest.param(name, inst, {}, id=f"{name}-{inst}")
        for opts in VARIANTS.get(name, []):
            for inst in VARIANT_INSTANCES:
                label = ",".join(f"{k}={v}" for k, v in opts.items())
                yield pytest.param(name, inst, opts, id=f"{name}-{inst}-{label}")
        if any(o.name == "backend" for o in method.options):
            for backend in BACKENDS:
                yield pytest.param(name, SMALLEST, _milp_options(method, backend),
                                   id=f"{name}-{SMALLEST}-backend={backend}")


# ------------------------------------------------------------------------------------------ brute force
def _rows(E: int, G: int, cap: int) -> np.ndarray:
    """``int [R, E]``: every assignment of one layer's experts with at most ``cap`` per GPU."""
    rows = np.array(list(itertools.product(range(G), repeat=E)), dtype=np.int64)
    counts = np.stack([np.bincount(r, minlength=G) for r in rows])
    return rows[(counts <= cap).all(axis=1)]


def per_gpu_cap(method: Method, opts: dict, trace: Trace, topo: Topology, sol: Solution) -> Iterator[np.ndarray]:
    """At most ``m`` experts of a layer per GPU, at most ``memory`` slots per GPU (the default set)."""
    L, E, G = trace.num_layers, trace.num_experts, topo.num_gpus
    m = int(opts.get("experts_per_gpu") or -(-E // G))
    memory = int(opts.get("memory") or 0)
    rows = _rows(E, G, m)
    for combo in itertools.product(range(len(rows)), repeat=L):
        a = rows[list(combo)]
        if memory and np.bincount(a.ravel(), minlength=G).max() > memory:
            continue
        yield a


def least_deviation(method: Method, opts: dict, trace: Trace, topo: Topology, sol: Solution) -> Iterator[np.ndarray]:
    """MoETuner's two-stage problem: the default set restricted, layer by layer, to the assignments of
    least ILP1 deviation ``sum_g |GPU load - mean load|`` (ILP1's optima); ILP2 then picks among them."""
    L, E, G = trace.num_layers, trace.num_experts, topo.num_gpus
    load = as_stats(trace).load.astype(np.float64)
    rows = _rows(E, G, int(opts.get("experts_per_gpu") or -(-E // G)))
    onehot = np.eye(G)[rows]  # [R, E, G]
    per_layer = []
    for layer in range(L):
        gpu = np.einsum("e,reg->rg", load[layer], onehot)  # [R, G] GPU loads of each row
        dev = np.abs(gpu - load[layer].sum() / G).sum(axis=1)
        per_layer.append(rows[dev <= dev.min() + 1e-9 * max(1.0, dev.min())])
    for combo in itertools.product(*per_layer):
        yield np.stack(combo)


def balanced_load_cap(method: Method, opts: dict, trace: Trace, topo: Topology,
                      sol: Solution) -> Iterator[np.ndarray]:
    """The default set with every layer's max GPU load <= (1 + eps) * mean (eps as the solution used)."""
    eps = float(sol.info["eps"])
    load = as_stats(trace).load.astype(np.float64)
    G = topo.num_gpus
    for a in per_gpu_cap(method, opts, trace, topo, sol):
        gpu = np.stack([np.bincount(a[layer], weights=load[layer], minlength=G) for layer in range(len(a))])
        if np.all(gpu.max(axis=1) <= (1 + eps) * gpu.mean(axis=1) + 1e-9):
            yield a


#: methods whose objective is a sum over layers brute-forced layer by layer (placements with replicas)
SEPARABLE: dict[str, Callable[..., float]] = {"layer-time": lambda *a: separable_optimum(*a)}
#: methods whose feasible set is not the default :func:`per_gpu_cap` (see the module docstring)
FEASIBLE: dict[str, Callable[..., Iterator[np.ndarray]]] = {
    "moetuner": least_deviation,
    "moetuner-joint": balanced_load_cap,
}

_VALUES: dict[tuple, dict[bytes, float]] = {}


def slot_rows(E: int, G: int, S: int) -> np.ndarray:
    """``int [R, G, S]``: every layer of ``S`` slots per GPU holding each of ``E`` experts at least once,
    no expert twice on one GPU, each GPU's experts increasing then empty slots (every distinct layer up to
    the order of slots within a GPU, which no replica rule reads when a GPU holds one copy per expert)."""
    per_gpu = [tuple(c) + (-1,) * (S - len(c)) for n in range(S + 1) for c in itertools.combinations(range(E), n)]
    rows = np.array(list(itertools.product(per_gpu, repeat=G)), dtype=np.int64)  # [R, G, S]
    covered = np.stack([(rows == e).any(axis=(1, 2)) for e in range(E)], axis=1).all(axis=1)
    return rows[covered]


def separable_optimum(method: Method, opts: dict, trace: Trace, topo: Topology, sol: Solution) -> float:
    """Brute force of a per-layer separable objective (``step_time``: a step is the sum of its layers, each
    layer's time depends on that layer's slots only): the sum over layers of the least value over
    :func:`slot_rows`, every row of a layer evaluated at once as the layers of a trace repeating that layer."""
    objective = OBJECTIVES[method.objective]
    E, G, S = trace.num_experts, topo.num_gpus, sol.placement.slots_per_gpu
    rows = slot_rows(E, G, S)
    total = 0.0
    for layer in range(trace.num_layers):
        least = math.inf
        for a in range(0, len(rows), 2048):  # batches of rows stay within the trace's layer limit
            batch = rows[a:a + 2048]
            model = placement.ModelSpec(trace.model.name, len(batch), E, trace.top_k)
            if trace.kind == "tokens":
                ex = np.repeat(trace.experts[:, layer:layer + 1], len(batch), axis=1)
                one = Trace.from_tokens(model, ex, origin=trace.origin, num_ranks=trace.num_ranks)
            else:
                one = Trace.from_counts(model, np.repeat(trace.counts[..., layer:layer + 1, :], len(batch), axis=-2))
            m = step_metrics(Placement(batch, num_experts=E), one, topo,
                             {k: v for k, v in opts.items() if k in objective.reads})
            least = min(least, float(m.step.layer_time.min()))
        total += least
    return total


def brute_force_optimum(method: Method, opts: dict, inst: str, trace: Trace, topo: Topology,
                        sol: Solution) -> float:
    """Least value of the method's objective over its feasible set (evaluator values, memoised)."""
    if method.name in SEPARABLE:
        return SEPARABLE[method.name](method, opts, trace, topo, sol)
    objective = OBJECTIVES[method.objective]
    key = (inst, objective.name, tuple(sorted((k, v) for k, v in opts.items() if k in objective.reads)))
    values = _VALUES.setdefault(key, {})
    best = math.inf
    for a in FEASIBLE.get(method.name, per_gpu_cap)(method, opts, trace, topo, sol):
        code = a.tobytes()
        if code not in values:
            values[code] = objective(Placement.from_assignment(a, topo.num_gpus), trace, topo, opts)
        best = min(best, values[code])
    return best


# ------------------------------------------------------------------------------------------ checks
def assert_feasible(method: Method, opts: dict, sol: Solution, trace: Trace, topo: Topology) -> None:
    p = sol.placement
    L, E, G = trace.num_layers, trace.num_experts, topo.num_gpus
    assert (p.num_layers, p.num_experts, p.num_gpus) == (L, E, G)
    assert p.slots.shape[:2] == (L, G)
    assert ((p.slots >= -1) & (p.slots < E)).all()
    assert (p.num_replicas() >= 1).all(), "an expert of some layer is not placed"
    per_layer = (p.slots >= 0).sum(axis=2)  # [L, G] experts of a layer per GPU
    if not p.has_replicas:
        assert per_layer.max() <= int(opts.get("experts_per_gpu") or -(-E // G))
    if opts.get("memory"):
        assert p.slots_used().max() <= opts["memory"]
    m = evaluate(p, trace, topo)  # the evaluator validates the shape; every selection is served once
    selections = trace.layer_counts().sum(axis=1)
    np.testing.assert_allclose(m.gpu_load.sum(axis=1), selections, rtol=1e-12)


def _close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def _leq(a: float, b: float, rel: float) -> bool:
    return a <= b + rel * max(abs(a), abs(b))


#: known discrepancies, each a finding kept visible: (method, instance, options as JSON) -> the discrepancy.
#: (moetuner used to claim optimal on pair-top1, where ILP1 has tied optima and the other clustering
#: communicates less; it now reports its two-stage answer without an optimality claim or bound.)
XFAIL: dict[tuple[str, str, str], str] = {}


@pytest.mark.parametrize("name,inst,options", list(_cases()))
def test_contract(name, inst, options, instances, request):
    method = METHODS[name]
    backend = options.get("backend")
    if backend is not None:
        ok, why = get_backend(backend).available()
        if not ok:
            pytest.skip(f"backend {backend!r} is not available here: {why}")
    reason = XFAIL.get((name, inst, json.dumps(options, sort_keys=True)))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    trace, topo = instances[inst]
    try:
        sol = run_method(name, as_stats(trace), topo, **options)
    except ModelNotSupportedError as exc:
        pytest.skip(f"backend {backend!r} cannot represent {name}'s model: {exc}")
    opts = method.parse_options(options)

    # (a) feasible
    assert_feasible(method, opts, sol, trace, topo)

    # (b) the reported objective is the evaluator's figure of the declared objective
    if method.kind == "baseline":
        assert sol.termination is Termination.HEURISTIC, "a baseline makes no optimality claim"
    if method.objective is None:
        assert sol.objective is None and sol.bound is None, "no declared objective, yet one is reported"
        return
    assert sol.objective is not None, f"{name} declares objective {method.objective!r} but reports none"
    value = objective_value(method.objective, sol.placement, trace, topo, opts)
    assert _close(sol.objective, value, 1e-9), (
        f"{name}: reported objective {sol.objective!r} != evaluator's {method.objective} {value!r}")

    # (c) a claimed optimum is the brute-force optimum of the method's feasible set
    best = brute_force_optimum(method, opts, inst, trace, topo, sol)
    assert _leq(best, sol.objective, 1e-9), "the solution is not in the declared feasible set"
    if sol.termination is Termination.OPTIMAL:
        tol = max(float(opts.get("rel_gap", 0.0)), 1e-9)
        assert _leq(sol.objective, best, tol), (
            f"{name} claims optimal {sol.objective!r} but brute force finds {best!r}")
        # optimal means proven within the requested gap (placement.milp.Termination)
        assert sol.bound is not None and sol.gap <= tol, f"{name} claims optimal with gap {sol.gap!r}"

    # (d) the bound is valid and the gap is the project's gap
    if sol.bound is not None:
        assert _leq(sol.bound, best, 1e-9), f"{name}: bound {sol.bound!r} exceeds the brute-force optimum {best!r}"
        assert sol.gap == pytest.approx(relative_gap(sol.objective, sol.bound), rel=1e-9, abs=1e-12)
    else:
        assert sol.gap is None


# ------------------------------------------------------------------------------------------ the registry
def test_every_declared_objective_exists():
    declared = {name: m.objective for name, m in METHODS.items() if m.objective is not None}
    assert declared, "no method declares an objective"
    unknown = {name: obj for name, obj in declared.items() if obj not in OBJECTIVES}
    assert not unknown, f"methods declare objectives that placement.objectives does not define: {unknown}"
    # a formulation is an optimisation model: it must say what it optimises
    assert all(m.objective is not None for m in METHODS.values() if m.kind == "formulation")


def test_every_method_is_in_the_contract():
    covered = {p.values[0] for p in _cases()}
    assert covered == set(METHODS)


def test_registry_is_the_catalogue():
    # a fresh interpreter's catalogue: what `import placement` registers, in order
    code = ("import json, placement; print(json.dumps([[n, m.target, m.objective] "
            "for n, m in placement.METHODS.items()]))")
    fresh = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                      timeout=120).stdout)
    here = [[n, m.target, m.objective] for n, m in placement.METHODS.items()]
    assert here == fresh


def test_restore_registry_puts_the_catalogue_back(restore_registry):
    from placement.registry import register

    register(Method("contract-probe", "test", "placement.baselines.methods:contiguous_method"))
    assert "contract-probe" in restore_registry
