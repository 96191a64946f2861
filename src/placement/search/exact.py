"""``layer-time``'s exact path (``solver="milp"``): the step model of each layer solved as a MILP.

Each layer's model (:mod:`placement.formulations.step_time`) is built from the evaluator's own serving
steps (:class:`StepObjective`: the same steps, senders, scale, wire bytes and compute model), warm-started
from the search's placement, solved through the backends within the time left, and decoded into slots
and (``replica="split"``) routing fractions.  The reported objective is the evaluator's figure of the
decoded placement; the bound is the sum of the layers' proven MILP bounds, so the gap is proven for the
model's placements (one replica per expert, or split routing; see the formulation's docstring).
Layers are independent, so ``jobs`` worker processes solve them side by side.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation.serving import _steps_and_senders
from ..evaluation.transports import rail_peer
from ..formulations.step_time import StepInstance, build_step_milp, decode, warm_start

if TYPE_CHECKING:  # pragma: no cover
    from .objective import StepObjective

__all__ = ["layer_instances", "estimate_nonzeros", "solve_layers", "LayerSolve", "slots_and_routing"]


def layer_instances(objective: StepObjective, slots_per_gpu: int) -> list[StepInstance]:
    """One :class:`StepInstance` per MoE layer, cut into steps exactly as the evaluator cuts them."""
    trace, topology, setup = objective.trace, objective.topology, objective.setup
    G, E, L = topology.num_gpus, trace.num_experts, trace.num_layers
    senders = objective.senders if objective.senders != "uniform" else "round_robin"
    dedups = setup.transport == "deepep" or (setup.transport == "nccl" and setup.dedup)
    if setup.expert is None:
        read = per_token = base = 0.0
    else:
        read = setup.expert.weight_bytes / setup.gpu.hbm_bandwidth
        per_token = setup.expert.flops_per_token / (setup.gpu.peak(setup.expert.weight_dtype) * setup.gpu.efficiency)
        base = per_token * setup.gpu.half_rows
    common = {"route": topology.route_matrix.tocsr(),
              "dispatch_s": setup.dispatch_wire.bytes_per_token / topology.arc_bandwidth,
              "combine_s": setup.combine_wire.bytes_per_token / topology.arc_bandwidth,
              "latency": np.asarray(topology.latency, dtype=np.float64),
              "server_of": np.asarray(topology.server_of, dtype=np.int64),
              "rail_peer": rail_peer(np.asarray(topology.server_of, dtype=np.int64)), "expert_read": read,
              "expert_per_token": per_token, "expert_base": base, "slots_per_gpu": int(slots_per_gpu),
              "transport": setup.transport, "dedup": bool(setup.dedup), "overlap": bool(setup.overlap)}
    out = []
    if trace.kind == "tokens":
        keep, step, src, S, scale = _steps_and_senders(trace, G, setup.tokens_per_step, senders)
        experts = trace.experts[: int(keep)].astype(np.int64)
        held = np.bincount(step * G + src, minlength=S * G).reshape(S, G) * scale
        shared = setup.num_shared_experts * setup.expert_time(held)
        for layer in range(L):
            ex = experts[:, layer, :]
            k = ex.shape[1]
            codes = ((np.repeat(step, k) * G + np.repeat(src, k)) * E + ex.ravel())
            counts = np.bincount(codes, minlength=S * G * E).reshape(S, G, E) * scale
            out.append(StepInstance(counts=counts, tokens=ex if dedups else None, token_src=src if dedups else None,
                                    token_step=step if dedups else None, token_weight=scale, shared=shared,
                                    **common))
        return out
    if dedups:
        trace.require_tokens(f"transport '{setup.transport}' with de-duplication")
    from ..stats import TraceStats

    stats = TraceStats(trace)
    if senders == "trace":
        by_origin = stats.load_by_origin.astype(np.float64)  # [G, L, E]
    else:
        by_origin = np.broadcast_to(stats.load.astype(np.float64) / G, (G, L, E))
    scale = setup.tokens_per_step / max(stats.load.sum(axis=1).max() / trace.top_k, 1e-300)
    shared = setup.num_shared_experts * setup.expert_time(np.full((1, G), setup.tokens_per_step / G))
    for layer in range(L):
        out.append(StepInstance(counts=(by_origin[:, layer, :] * scale)[None], tokens=None, token_src=None,
                                token_step=None, token_weight=1.0, shared=shared, **common))
    return out


def estimate_nonzeros(inst: StepInstance, routing: str) -> int:
    """A close upper estimate of the entries of the layer's model (decides before building it)."""
    S, G, E = inst.shape
    nz = int(np.count_nonzero(inst.counts))
    legs = 2 if inst.transport == "deepep" else 1
    est = 2 * nz * G + legs * 2 * S * inst.route.nnz + 4 * legs * S * G * G + 2 * E * G
    if routing == "split":
        est += 3 * nz * G + 6 * S * E * G + 2 * nz * G
    if inst.tokens is not None:
        n, k = inst.tokens.shape
        est += 2 * n * k * G + (2 * n * k * G if inst.transport == "deepep" else 0)
    return est


@dataclass(frozen=True)
class LayerSolve:
    """One layer's exact-path outcome: ``x bool [E, G]``, ``r float64 [P, G]`` or ``None``, ``pairs``, the
    model's objective and proven bound (seconds), the backend's termination and the model's entries."""

    x: np.ndarray
    r: np.ndarray | None
    pairs: np.ndarray
    objective: float
    bound: float
    termination: str
    nonzeros: int


def _build(inst: StepInstance, routing: str, x0: np.ndarray, r0_gpu: np.ndarray | None):
    """``(model, index, warm start)`` of one layer."""
    model, index = build_step_milp(inst, routing)
    r0 = None if r0_gpu is None else r0_gpu[index.pairs[:, 0], index.pairs[:, 1]]
    return model, index, warm_start(model, index, inst, x0, r0)


def _decoded(model, index, res) -> LayerSolve:
    x, r = decode(model, res.solution, index)
    bound = res.bound * index.unit if res.bound is not None and math.isfinite(res.bound) else -math.inf
    return LayerSolve(x=x, r=r, pairs=index.pairs, objective=float(res.objective) * index.unit,
                      bound=float(bound), termination=str(getattr(res.termination, "value", res.termination)),
                      nonzeros=model.nnz)


def _solve_one(inst: StepInstance, routing: str, x0: np.ndarray, r0_gpu: np.ndarray | None, backend: str,
               time_limit: float | None, rel_gap: float, deadline: float | None) -> LayerSolve:
    """Build, warm-start and solve one layer in a worker process (``jobs > 1``)."""
    from ..formulations._common import solve_model, solver_params

    model, index, ws = _build(inst, routing, x0, r0_gpu)
    params = solver_params(time_limit=time_limit or 0.0, rel_gap=rel_gap, threads=1, warm_start=ws,
                           deadline=deadline)
    return _decoded(model, index, solve_model(model, backend, params))


def start_routing(slots: np.ndarray, E: int, integral: bool, latency: np.ndarray) -> np.ndarray:
    """``float64 [G, E, G]`` per (sender, expert) the share served on each GPU for a start placement
    ``slots int [G, S]``: an even split over the GPUs holding the expert; with ``integral`` one GPU each (the
    sender's own, else the nearest by latency ``float64 [G, G]``)."""
    from .local import _holds

    G = slots.shape[0]
    holds = _holds(slots[None], E)[0]  # [E, G]
    share = np.broadcast_to(holds[None].astype(np.float64), (G, E, G))
    share = share / np.maximum(share.sum(axis=2, keepdims=True), 1.0)
    if integral:
        near = np.where(holds[None, :, :], latency[:, None, :] + np.eye(G)[:, None, :] * -1.0, np.inf)  # own first
        pick = np.argmin(near, axis=2)  # [G, E]
        share = np.zeros((G, E, G))
        share[np.arange(G)[:, None], np.arange(E)[None, :], pick] = 1.0
    return share


def slots_and_routing(results: list[LayerSolve], S: int, G: int, E: int, fill, weight: np.ndarray,
                      node_of_gpu: np.ndarray, split: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(slots int64 [L, G, S], routing float64 [L, G, E, R] or None)`` of the layers' solutions; spare slots
    are filled by ``fill`` (copies that the split routing gives no share, so the objective is unchanged)."""
    from ..placement import Placement

    L = len(results)
    slots = np.full((L, G, S), -1, dtype=np.int64)
    for layer, res in enumerate(results):
        for g in range(G):
            held = np.flatnonzero(res.x[:, g])
            slots[layer, g, : held.size] = held
    if (slots < 0).any():
        slots = fill(slots, weight, node_of_gpu)
    if not split:
        return slots, None
    rs = Placement(slots, num_experts=E).replica_slots()  # [L, E, R]
    R = rs.shape[2]
    routing = np.zeros((L, G, E, R))
    for layer, res in enumerate(results):
        share = np.zeros((G, E, G))
        share[res.pairs[:, 0], res.pairs[:, 1]] = res.r
        gpu = np.where(rs[layer] >= 0, rs[layer] // S, -1)  # [E, R]
        first = np.ones_like(gpu, dtype=bool)  # only the first slot of an expert on a GPU takes its share
        for j in range(1, R):
            first[:, j] = ~(gpu[:, :j] == gpu[:, j:j + 1]).any(axis=1)
        ok = (gpu >= 0) & first
        routing[layer] = np.where(ok[None], share[:, np.arange(E)[:, None], np.maximum(gpu, 0)], 0.0)
        none = routing[layer].sum(axis=2) <= 0  # a (sender, expert) with no selections: an even split
        even = (rs[layer] >= 0) / np.maximum((rs[layer] >= 0).sum(axis=1, keepdims=True), 1)
        routing[layer] = np.where(none[..., None], even[None], routing[layer])
    return slots, routing


def solve_layers(instances: list[StepInstance], routing: str, x0: list[np.ndarray], r0: list[np.ndarray | None],
                 *, backend: str, rel_gap: float, run, jobs: int,
                 start_seconds: np.ndarray | None = None) -> list[LayerSolve]:
    """Solve every layer (``jobs`` worker processes), each within an equal share of the time left; the caller
    has checked the models' sizes (:func:`estimate_nonzeros`).

    Progress reports the whole placement: solved layers at their model objective, the others at
    ``start_seconds float64 [L]`` (their starts' times), and the bound of the solved layers (0 for the rest)."""
    L = len(instances)
    results: list[LayerSolve | None] = [None] * L
    workers = max(1, min(int(jobs), L))

    from ..formulations._common import MIN_SOLVE_S, run_params, solve_model

    def report(layer: int) -> None:
        start = np.zeros(L) if start_seconds is None else start_seconds
        inc = sum(r.objective if r is not None else float(start[i]) for i, r in enumerate(results))
        bnd = sum(max(r.bound, 0.0) for r in results if r is not None)
        run.update(incumbent=inc if start_seconds is not None else math.nan, bound=bnd,
                   stage=f"exact layer {layer + 1}/{L}")

    if workers == 1:  # in this process: the run's deadline, progress and Ctrl-C reach the solver
        for layer, inst in enumerate(instances):
            if run.stopped or run.deadline.budget() < MIN_SOLVE_S:  # the layers left keep their starts
                run.time_cut = run.time_cut or not run.interrupted
                break
            built = run.bounded(lambda layer=layer, inst=inst: _build(inst, routing, x0[layer], r0[layer]))
            if built is None:  # the deadline or a Ctrl-C came while building
                break
            model, index, ws = built
            params = run_params(run, rel_gap=rel_gap, parts=L - layer, warm_start=ws)
            if params is None:
                break
            results[layer] = _decoded(model, index, solve_model(model, backend, params, run))
            report(layer)
        return results  # type: ignore[return-value]
    limit = _round_limit(run, L, workers)
    calls = [(_solve_one, (inst, routing, x0[layer], r0[layer], backend, limit, rel_gap, None))
             for layer, inst in enumerate(instances)]
    for layer, value in _in_workers(calls, workers, run):
        results[layer] = value
        report(layer)
    return results  # type: ignore[return-value]


def _round_limit(run, calls: int, workers: int) -> float | None:
    """Seconds each of ``calls`` solves may take when ``workers`` processes run them in equal rounds."""
    left = run.deadline.budget()
    return None if not math.isfinite(left) else max(0.05, left / math.ceil(calls / workers))


def _in_workers(calls: list, workers: int, run):
    """Yield ``(i, fn(*args))`` for ``calls[i] = (fn, args)`` run in ``workers`` processes, in order, until the
    run stops (time or Ctrl-C: the calls left are cancelled, and ``run`` is marked interrupted on Ctrl-C)."""
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        with run.interruptible():
            futures = [pool.submit(fn, *args) for fn, args in calls]
            for i, future in enumerate(futures):
                if run.stopped:
                    break
                yield i, future.result()
    finally:
        pool.shutdown(wait=not run.stopped, cancel_futures=True)


def _bound_one(model, unit: float, backend: str, time_limit: float | None, rel_gap: float) -> float:
    """A worker's solve of one layer's server bound: its proven bound in seconds (``-inf`` without one)."""
    from ..formulations._common import solve_for_bound, solver_params

    params = solver_params(time_limit=time_limit or 0.0, rel_gap=rel_gap, threads=1)
    params = dataclasses.replace(params, options=_LP_OPTIONS)
    bound = solve_for_bound(model, backend, params)
    return -math.inf if bound is None else bound * unit


#: HiGHS's interior point method: a third faster than simplex on the server relaxation at 256 GPUs
_LP_OPTIONS = {"highs": {"solver": "ipm"}}


def server_bounds(objective: StepObjective, slots_per_gpu: int, *, backend: str, rel_gap: float,
                  run, jobs: int = 1) -> np.ndarray:
    """``float64 [L]`` proven lower bounds of every placement's layer times from the server relaxation
    (:mod:`placement.formulations.server_bound`, an LP per layer; ``jobs`` worker processes); ``-inf`` for a
    layer the time left no bound for.  Only for transports without de-duplication."""
    from ..formulations._common import run_params, solve_for_bound
    from ..formulations.server_bound import build_server_bound
    from .bounds import _step_counts, compute_floor, groupings, server_cuts

    trace, topology, setup = objective.trace, objective.topology, objective.setup
    G, L = topology.num_gpus, trace.num_layers
    server = np.asarray(topology.server_of, dtype=np.int64)
    N = int(server.max()) + 1
    size = np.bincount(server, minlength=N)
    first = np.array([np.flatnonzero(server == n)[0] for n in range(N)])  # a GPU of each server
    groups, group_counts = [], []
    for group in groupings(topology):  # each server's group (itself, its rack) and the cut's bandwidths
        counts, held = _step_counts(trace, topology, setup, group)  # [S, L, groups, E], [S, G]
        groups.append((group[first], *server_cuts(topology, group)))
        group_counts.append(counts)
    floor = compute_floor(setup, group_counts[0], held, G)  # [S, L]
    out = np.full(L, -np.inf)

    def build(layer: int):
        return build_server_bound([c[:, layer] for c in group_counts], size, slots_per_gpu, groups,
                                  setup.dispatch_wire.bytes_per_token, setup.combine_wire.bytes_per_token,
                                  floor[:, layer], setup.overlap)

    def report(layer: int) -> None:
        run.update(bound=float(np.where(np.isfinite(out), out, 0).sum()), stage=f"server bound {layer + 1}/{L}")

    workers = max(1, min(int(jobs), L))
    if workers == 1:
        for layer in range(L):
            model, unit = build(layer)
            params = run_params(run, rel_gap=rel_gap, parts=L - layer)
            if params is None:
                break
            bound = solve_for_bound(model, backend, dataclasses.replace(params, options=_LP_OPTIONS), run)
            if bound is not None:
                out[layer] = bound * unit
            report(layer)
        return out
    limit = _round_limit(run, L, workers)
    for layer, value in _in_workers([(_bound_one, (*build(layer), backend, limit, rel_gap)) for layer in range(L)],
                                    workers, run):
        out[layer] = value
        report(layer)
    return out
