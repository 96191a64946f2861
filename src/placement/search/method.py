"""The ``layer-time`` method: least serving-step time with replicas, for the replica rule that will run.

Decisions: how many replicas each expert gets (within ``redundant`` extra slots per layer), where
each lives, and -- through the stack's ``replica`` rule, which the placement is optimised *for* --
which replica serves which token.  Objective: the serving-step model's seconds per step summed over
MoE layers (:func:`placement.evaluate`'s ``step_time`` with the same ``replica``, ``transport``,
``tokens_per_*``, wire dtypes, ``gpu`` and ``overlap``); the reported objective *is* that figure.

``solver="fast"``
    The numpy fast path (:mod:`placement.formulations.layer_time`): D'Hondt replica counts,
    group-aware node packing, GPU LPT and swaps; tens of milliseconds; evaluated once.
``solver="search"`` (default)
    Seeds, per layer, with the fastest of several starts under the step model (the fast path with
    and without group-aware packing, DeepSeek's EPLB as the ``eplb`` method runs it and its global
    policy, with the same slots, and the fast path and contiguous layout without extra replicas, their spare slots left
    empty), then runs the evaluator-scored local search of :mod:`placement.search.local` until no
    layer improves or ``time_limit`` seconds pass.  Because every start is scored exactly and the
    search only accepts what the evaluator confirms, the result is never slower than any start on
    the trace it was fitted to (in-sample).  No optimality claim (termination ``heuristic``, no bound).

``replica="split"``
    The optimiser also chooses the routing fractions: the placement is searched under an even split over
    replicas (vLLM's rule), then each layer's fractions come from the LP of
    :mod:`placement.formulations.split_routing` (least dispatch + combine link time, no GPU busier than
    under the even split), kept where the evaluator's ``split`` rule finds them faster, and written into
    :attr:`Placement.routing`.  Not with DeepEP (its per-token de-duplication is not linear in them).

Options beyond the step model's
    ``current`` (a placement file) with ``max_moves`` (experts per layer that may change GPUs,
    ``-1`` unlimited): the migration budget; the search starts from ``current`` and only exchanges
    that keep each layer within the budget are ranked, and the answer reports the experts moved
    and the bytes of weights that moves.  ``windows = K`` fits ``K`` successive windows of the trace
    at once (load shift): ``robust="mean"`` minimises the mean step time, ``"max"`` per layer the
    worst window (an upper bound of the worst window's step time).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import numpy as np

from ..baselines.eplb import physical_slots
from ..errors import input_error
from ..formulations.layer_time import _place, load_lower_bound, pack, replica_counts
from ..placement import Placement, load_placement
from ..registry import Method, Option, register, used_only_with
from ..solution import Solution, Termination, make_solution
from .local import improve, max_gpu_load, moved_experts
from .objective import StepObjective

if TYPE_CHECKING:  # pragma: no cover
    from ..stats import TraceStats
    from ..topology import Topology
    from ..trace import Trace

__all__ = ["layer_time_method", "MultiObjective", "window_traces"]


class MultiObjective:
    """Several :class:`StepObjective` at once (load shift): per-layer ``mean`` or ``max`` of their layer
    times; the first objective's figures guide the search."""

    def __init__(self, objectives: list[StepObjective], robust: str) -> None:
        self.objectives = objectives
        self.robust = robust
        first = objectives[0]
        self.trace, self.topology, self.setup = first.trace, first.topology, first.setup
        self.sent = np.mean([o.sent for o in objectives], axis=0)
        self.evaluations = [0]

    def times(self, slots: np.ndarray, routing: np.ndarray | None = None):
        self.evaluations[0] += 1
        return self.objectives[0].times(slots, routing)

    def eval_seconds(self) -> float:
        return float(sum(o.eval_seconds() for o in self.objectives))

    def layer_times(self, slots: np.ndarray, routing: np.ndarray | None = None) -> np.ndarray:
        self.evaluations[0] += len(self.objectives)
        per = np.stack([o.layer_times(slots, routing) for o in self.objectives])
        return per.mean(axis=0) if self.robust == "mean" else per.max(axis=0)

    def assess(self, slots: np.ndarray):
        """``(the first window's step times, float64 [L] the combined objective per layer)``."""
        per = [o.times(slots) for o in self.objectives]
        self.evaluations[0] += len(per)
        stack = np.stack([st.layer_time for st in per])
        return per[0], stack.mean(axis=0) if self.robust == "mean" else stack.max(axis=0)


def window_traces(trace: Trace, windows: int) -> list[Trace]:
    """``windows`` successive, equal slices of a token trace (the remainder is dropped)."""
    from ..trace import Trace as _Trace

    experts = trace.require_tokens("windows (load shift)")
    n = experts.shape[0] // windows
    if n < 1:
        raise input_error(f"the trace holds {experts.shape[0]} tokens, fewer than windows={windows}", trace.source,
                          "windows")
    out = []
    for w in range(windows):
        sl = slice(w * n, (w + 1) * n)
        out.append(_Trace.from_tokens(trace.model, experts[sl],
                                      weights=None if trace.weights is None else trace.weights[sl],
                                      origin=None if trace.origin is None else trace.origin[sl],
                                      num_ranks=trace.num_ranks, source=f"{trace.source}[window {w}]"))
    return out


def _also_traces(also: str, trace: Trace) -> list[Trace]:
    """The traces named by ``also`` (comma-separated files), each of ``trace``'s model shape."""
    from ..trace import load_trace

    out = []
    for path in [p.strip() for p in also.split(",") if p.strip()]:
        other = load_trace(path)
        if (other.num_layers, other.num_experts, other.top_k) != (trace.num_layers, trace.num_experts, trace.top_k):
            raise input_error(f"has {other.num_layers} layers x {other.num_experts} experts, top-{other.top_k}; the "
                              f"trace fitted has {trace.num_layers} x {trace.num_experts}, top-{trace.top_k}: fit "
                              "traces of one model together", path, "also")
        out.append(other)
    return out


def _nodes(topology: Topology) -> int:
    G, servers = topology.num_gpus, topology.num_servers
    even = G % servers == 0 and np.all(np.bincount(topology.server_of) == G // servers)
    return servers if even else 1


def eplb_slots(w: np.ndarray, P: int, G: int, nodes: int, groups: int) -> np.ndarray:
    """``int64 [L, G, P / G]``: what the ``eplb`` method places with these slots (hierarchical when the groups
    divide over the nodes, else global)."""
    from ..baselines.eplb import rebalance_experts

    return np.asarray(rebalance_experts(w, P, groups, nodes, G).slots(G), dtype=np.int64)


def fill_slots(slots: np.ndarray, w: np.ndarray, node_of_gpu: np.ndarray | None = None) -> np.ndarray:
    """``slots int64 [L, G, S]`` with every empty slot given a replica: each, in turn, to the expert with the
    most selections per replica that its GPU does not hold yet (D'Hondt, as EPLB adds replicas), among the
    experts held on the GPU's node (``node_of_gpu int [G]``) when there are any.  What a
    serving stack can load: SGLang, TensorRT-LLM and vllm-ascend address every physical slot."""
    out = np.array(slots, dtype=np.int64, copy=True)
    L, G, S = out.shape
    E = w.shape[1]
    node = np.zeros(G, dtype=np.int64) if node_of_gpu is None else np.asarray(node_of_gpu)
    for layer, g, j in np.argwhere(out < 0):  # empty slots only (at most a few per GPU)
        count = np.bincount(out[layer][out[layer] >= 0], minlength=E)
        per = w[layer] / np.maximum(count, 1)
        per[out[layer, g][out[layer, g] >= 0]] = -np.inf  # never a second copy on this GPU
        # prefer an expert already on this GPU's node: its tokens then split inside the node
        near = np.zeros(E, dtype=bool)
        here = out[layer][node == node[g]]
        near[here[here >= 0]] = True
        pick = np.where(near & np.isfinite(per), per, -np.inf)
        out[layer, g, j] = int(np.argmax(pick)) if np.isfinite(pick).any() else int(np.argmax(per))
    return out


def _seeds(w: np.ndarray, E: int, G: int, P: int, nodes: int, groups: int) -> dict[str, np.ndarray]:
    """Starting placements ``int64 [L, G, P / G]`` (spare slots empty)."""
    from ..baselines.eplb import rebalance_experts

    L = w.shape[0]
    S = P // G
    seeds: dict[str, np.ndarray] = {"eplb": eplb_slots(w, P, G, nodes, groups)}
    seeds["fast"] = _place(w, P, G, nodes, groups)[0]
    seeds["fast-node-blind"] = pack(w, replica_counts(w, P), G, nodes, S)
    if groups > 1 and nodes > 1 and groups % nodes == 0:  # "eplb" above ran the hierarchical policy
        seeds["eplb-global"] = np.asarray(rebalance_experts(w, P, 1, 1, G).slots(G), dtype=np.int64)
    if E % G == 0 and P > E:
        base = E // G
        pad = np.full((L, G, S - base), -1, dtype=np.int64)
        seeds["fast-no-redundant"] = np.concatenate([_place(w, E, G, nodes, groups)[0], pad], axis=2)
        contiguous = np.broadcast_to(np.arange(E).reshape(1, G, base), (L, G, base))
        seeds["contiguous"] = np.concatenate([contiguous, pad], axis=2)
    return seeds


def _full_seeds(seeds: dict[str, np.ndarray], w: np.ndarray, node_of_gpu: np.ndarray) -> dict[str, np.ndarray]:
    """The starts with every empty slot filled (:func:`fill_slots`)."""
    return {name: fill_slots(s, w, node_of_gpu) if (s < 0).any() else s for name, s in seeds.items()}


def _pick_starts(objective, seeds: dict[str, np.ndarray], cap, load: np.ndarray, run):
    """Score the starts in order (EPLB first: there is always one) while time lasts; per layer the fastest within
    the cap.  ``(start [L, G, S], seconds per start {name: [L]}, pick [L], names)``."""
    per: dict[str, np.ndarray] = {}
    with run.interruptible():
        for name, start_slots in seeds.items():
            if per and (run.stopped or run.deadline.budget() < 1.5 * objective.eval_seconds()):
                break  # (at scale one evaluator call takes seconds: stop before the one that would overrun)
            per[name] = objective.layer_times(start_slots)
            run.update(incumbent=float(np.min(list(per.values()), axis=0).sum()), stage=f"start {name}")
    if not per:  # Ctrl-C before the first start was scored
        first = next(iter(seeds))
        per[first] = objective.layer_times(seeds[first])
    names = list(per)
    table = np.stack([per[n] for n in names])  # [starts, L]
    if cap is not None:  # a start above the cap in a layer is not a start there (EPLB's own never is)
        over = np.stack([max_gpu_load(seeds[n], load) > cap * (1 + 1e-12) for n in names])
        table = np.where(over, np.inf, table)
    pick = np.argmin(table, axis=0)
    L = table.shape[1]
    start = np.stack([seeds[names[pick[lay]]][lay] for lay in range(L)])
    return start, per, pick, names


def _alltoall_start(stats, topology: Topology, S: int, seconds: float, run) -> np.ndarray | None:
    """``alltoall-time``'s heuristic placement (one copy per expert, least busiest-link time), its spare slots
    empty, within ``seconds``; ``None`` when the experts do not divide over the GPUs."""
    from ..formulations.alltoall import alltoall_time_method

    E, G = stats.trace.num_experts, topology.num_gpus
    if E % G or seconds <= 0.05:
        return None
    sol = alltoall_time_method(stats, topology, solver="heuristic", time_limit=seconds)
    if getattr(sol.limit, "value", sol.limit) == "interrupted":  # its own run saw the Ctrl-C: so does ours
        run.interrupted = True
    base = sol.placement.slots.astype(np.int64)
    pad = np.full(base.shape[:2] + (S - base.shape[2],), -1, dtype=np.int64)
    return np.concatenate([base, pad], axis=2)


def _choose_start(stats, topology: Topology, objective, w: np.ndarray, P: int, nodes: int, cap: np.ndarray | None,
                  load: np.ndarray, lean_ok: bool, full: bool, run, info: dict) -> np.ndarray:
    """``int64 [L, G, S]``: per layer the fastest start within the cap (module docstring), with ``P / G`` slots per
    GPU, or ``E / G`` when ``lean_ok`` and the starts that use no spare slot are faster as such."""
    E, G = w.shape[1], topology.num_gpus
    seeds = _seeds(w, E, G, P, nodes, stats.trace.model.num_groups)
    # the congestion-aware one-copy placement, for half the time: on rail-optimised clusters which GPU of a
    # server holds an expert decides which NIC its tokens cross (fitted on the trace's own loads; with several
    # traces it is one more start, scored on all of them)
    a2a = _alltoall_start(stats, topology, P // G, 0.5 * run.deadline.budget(), run)
    if a2a is not None:
        seeds["alltoall-time"] = a2a
    S0 = E // G if E % G == 0 else 0
    lean: dict[str, np.ndarray] = {}
    if lean_ok and S0 and P > E:  # the starts that use no spare slot, as placements of E / G slots per GPU
        lean = {n: s[:, :, :S0] for n, s in seeds.items() if (s[:, :, S0:] < 0).all() and (s[:, :, :S0] >= 0).all()}
    if full:
        seeds = _full_seeds(seeds, w, topology.server_of)
    start, per, pick, names = _pick_starts(objective, seeds, cap, load, run)
    info["seeds"] = {n: float(per[n].sum()) for n in names}
    info["seed_of_layer"] = {n: int((pick == i).sum()) for i, n in enumerate(names)}
    if not lean or run.stopped:
        return start
    lstart, lper, lpick, lnames = _pick_starts(objective, lean, cap, load, run)
    lbest = np.min(np.stack([lper[n] for n in lnames]), axis=0)
    if cap is not None:
        lbest = np.where(max_gpu_load(lstart, load) > cap * (1 + 1e-12), np.inf, lbest)
    if np.isfinite(lbest).all() and lbest.sum() < np.min(np.stack([per[n] for n in names]), axis=0).sum():
        info["seeds"] = {f"{n} (no spare slot)": float(lper[n].sum()) for n in lnames}
        info["seed_of_layer"] = {n: int((lpick == i).sum()) for i, n in enumerate(lnames)}
        return lstart
    return start


def layer_time_method(stats: TraceStats, topology: Topology, redundant: int = -1, solver: str = "search",
                      replica: str = "vllm", transport: str = "nccl", tokens_per_step: int = 0,
                      tokens_per_gpu: int = 0, dispatch_dtype: str = "bf16", combine_dtype: str = "bf16",
                      gpu: str = "", overlap: bool = False, time_limit: float = 60.0, current: str = "",
                      max_moves: int = -1, windows: int = 1, robust: str = "mean", max_load: str = "free",
                      also: str = "", full: bool = True, fewer_slots: bool = True, jobs: int = 1,
                      backend: str = "highs", rel_gap: float = 1e-6) -> Solution:
    """The ``layer-time`` method (module docstring)."""
    from ..progress import begin

    t0 = time.perf_counter()
    run = begin("layer-time", time_limit, unit="s")
    trace = stats.trace
    E, G, L = trace.num_experts, topology.num_gpus, trace.num_layers
    redundant, P = physical_slots(E, G, redundant)
    workers = jobs or (os.cpu_count() or 1)
    serving = {"replica": replica, "transport": transport, "tokens_per_step": tokens_per_step or None,
               "tokens_per_gpu": tokens_per_gpu or None, "dispatch_dtype": dispatch_dtype,
               "combine_dtype": combine_dtype, "gpu": gpu or None, "overlap": overlap}
    split = replica == "split"
    if split and transport == "deepep" and solver != "milp":
        raise input_error("replica='split' optimises routing fractions on expected flows without de-duplication; "
                          "DeepEP de-duplicates per token: use transport nccl or deepep-ll, a stack's rule, or "
                          "solver='milp' (which routes each sender's selections of an expert to one replica)",
                          field="replica")
    if solver == "milp":
        if windows > 1 or also:
            raise input_error("solver='milp' fits one trace; windows and also (load shift) are solver='search' "
                              "options", field="solver")
        if max_moves >= 0 or max_load != "free":
            raise input_error("solver='milp' has no migration budget or load cap in its model; max_moves and "
                              "max_load are solver='search' options", field="solver")
    if max_moves >= 0 and not current:
        raise input_error("max_moves bounds the experts that move from the deployed placement; give it with "
                          "current=<placement file>", field="max_moves")
    nodes = _nodes(topology)
    w = stats.load.astype(np.float64)
    info: dict = {"redundant": redundant, "nodes": nodes, "groups": trace.model.num_groups, "solver": solver,
                  **{k: v for k, v in serving.items() if v is not None}}
    origin = None
    if current:
        deployed = load_placement(current)
        if deployed.slots.shape[:2] != (L, G) or deployed.num_experts != E:
            raise input_error(f"the deployed placement is {deployed.num_layers} layers x {deployed.num_gpus} GPUs x "
                              f"{deployed.num_experts} experts; this solve is {L} x {G} x {E}", current, "slots")
        if deployed.slots_per_gpu != P // G:
            raise input_error(f"the deployed placement has {deployed.slots_per_gpu} slots per GPU; this solve has "
                              f"{P // G} (redundant={redundant}); set redundant={deployed.slots_per_gpu * G - E}",
                              current, "slots_per_gpu")
        origin = deployed.slots.astype(np.int64)
    traces = window_traces(trace, windows) if windows > 1 else [trace]
    traces += _also_traces(also, trace)
    # with split routing the placement is searched under an even split (vLLM's rule), then routed by the LP
    searched = dict(serving, replica="vllm") if split else serving
    objectives = [StepObjective.build(t, topology, **searched) for t in traces]
    objective = _combined(objectives, robust)
    load = objective.sent.sum(axis=1)  # [L, E] selections per step, the search's unit of GPU load
    if len(objectives) > 1:
        w = load  # the starts balance the combined load of every trace fitted
    cap = None
    if max_load == "eplb":  # note: EPLB with the budget's slots; starts without spare slots must meet it too
        cap = max_gpu_load(eplb_slots(load, P, G, nodes, trace.model.num_groups), load)
        if origin is not None:  # the deployed placement is where the search starts: it may stay as busy
            cap = np.maximum(cap, max_gpu_load(origin, load))
    exact_fits = None  # the exact path: is every layer's full model exact and small enough (else the server bound)
    server_bound = None
    if solver == "milp":
        from ..formulations.step_time import MAX_NONZEROS
        from .exact import estimate_nonzeros, layer_instances

        served = StepObjective.build(trace, topology, **serving)
        instances = layer_instances(served, P // G)
        linear = split or P == E  # the full model is exact: split routing, or one copy (every rule routes alike)
        size = max(estimate_nonzeros(inst, "split" if split else "one-copy") for inst in instances)
        exact_fits = linear and size <= MAX_NONZEROS
        info.update({"exact_model": "full" if exact_fits else "server-bound", "exact_model_entries_estimate": size})
        why = (f"the exact model of a layer would hold about {size:,} entries, over the {MAX_NONZEROS:,} it builds"
               if linear else f"replica={replica!r} with {P - E} redundant slots is not linear in the placement (the "
               "full model is exact for replica='split' or redundant=0)")
        if not exact_fits and instances[0].dedups:
            raise input_error(f"solver='milp': {why}, and the server bound it then proves needs a transport without "
                              "de-duplication: use solver='search', replica='split' or redundant=0, or fewer tokens "
                              "per step", field="solver")
        if not exact_fits:  # the server relaxation's bound, first (the search then takes the time left)
            from .exact import server_bounds

            info["exact_model_why_not"] = why
            server_bound = server_bounds(served, P // G, backend=backend, rel_gap=rel_gap, run=run, jobs=workers)
            info["exact_server_bound_layers"] = int(np.isfinite(server_bound).sum())
    if solver == "fast":
        slots = origin if origin is not None and max_moves == 0 else _place(w, P, G, nodes, trace.model.num_groups)[0]
        if origin is not None and max_moves >= 0 and (moved_experts(slots, origin, E) > max_moves).any():
            raise input_error("solver='fast' re-places every layer and cannot keep a migration budget; use "
                              "solver='search'", field="max_moves")
        times = objective.layer_times(slots)
    else:
        start = origin if origin is not None else _choose_start(stats, topology, objective, w, P, nodes, cap, load,
                                                                full and fewer_slots, full, run, info)
        budget = None if max_moves < 0 else np.full(L, max_moves)
        share = 0.3 if exact_fits else 0.7 if split else 1.0
        res = improve(objective, start, deadline=run.deadline.until(share=share), origin=origin,
                      max_moves=budget, load_cap=cap, run=run, load=load, full=full, jobs=workers)
        slots, times = res.slots, res.layer_time
        info.update({"rounds": res.rounds, "evaluations": objective.evaluations[0], "timed_out": res.timed_out})
    info["redundant_used"] = int(slots.shape[1] * slots.shape[2] - E)
    routing = None
    exact = None
    if exact_fits:  # on the whole slot budget (the search may have left the spare slots out)
        pad = np.full(slots.shape[:2] + (P // G - slots.shape[2],), -1, dtype=np.int64)
        slots, routing, times, exact = _exact(instances, np.concatenate([slots, pad], axis=2), served, w, topology,
                                              split, backend, rel_gap, run, workers, info, full)
    else:
        if split:  # now scored under the split rule itself
            objectives = [StepObjective.build(t, topology, **serving) for t in traces]
            routing, times = _route(slots, _combined(objectives, robust), topology, load, run, info)
        if solver == "milp":  # at scale: the search's answer, the server relaxation's proven bound
            exact = {"bound": server_bound, "optimal": False}
    if origin is not None:
        moved = moved_experts(slots, origin, E)
        expert_bytes = objectives[0].setup.expert.weight_bytes if objectives[0].setup.expert is not None else 0
        info.update({"experts_moved": int(moved.sum()), "experts_moved_max_layer": int(moved.max()),
                     "bytes_moved": float(_bytes_moved(slots, origin, E) * expert_bytes)})
    placement = Placement(slots, num_experts=E, routing=routing,
                          metadata={"method": "layer-time", "solver": solver,
                                    "num_replicas": slots.shape[1] * slots.shape[2],
                                    **{k: v for k, v in serving.items() if v is not None}})
    count = np.maximum(placement.num_replicas(), 1)
    ratio = max_gpu_load(slots, w) / np.maximum(load_lower_bound(w, count, G), 1e-300)
    info.update({"max_load_over_bound_median": float(np.median(ratio)),
                 "max_load_over_bound_worst": float(ratio.max())})
    if len(objectives) > 1:
        info.update({"windows": windows, "robust": robust, "traces_fitted": len(objectives)})
    objective_value = float(times.sum())
    bound = _bound(traces, topology, objectives, P // G, robust, per_layer=exact is not None)
    termination = Termination.HEURISTIC
    if exact is not None:  # the layers' proven MILP bounds, each at least the cut bound where that is valid
        cut = np.full(L, -np.inf) if bound is None else bound
        bound = float(np.maximum(exact["bound"], cut).sum())
        termination = Termination.OPTIMAL if exact["optimal"] else Termination.FEASIBLE
    return make_solution(placement, "layer-time", termination=termination, objective=objective_value,
                         bound=bound, wall_time=time.perf_counter() - t0, info=info, limit=run.limit)


def _bound(traces: list, topology: Topology, objectives: list[StepObjective], slots_per_gpu: int,
           robust: str, per_layer: bool = False):
    """The proven lower bound of :mod:`placement.search.bounds` for the slot budget, combined over the traces
    fitted as the objective combines them (mean or per-layer max); ``None`` under de-duplicating transports.
    ``per_layer``: the ``float64 [L]`` bounds of the layers instead of their sum."""
    from .bounds import step_time_bound

    per = [step_time_bound(t, topology, o.setup, slots_per_gpu) for t, o in zip(traces, objectives, strict=True)]
    if any(b is None for b in per):
        return None
    stack = np.stack(per)
    layers = stack.mean(axis=0) if robust == "mean" or len(per) == 1 else stack.max(axis=0)
    return layers if per_layer else float(layers.sum())


def _exact(instances: list, start: np.ndarray, objective: StepObjective, w: np.ndarray, topology: Topology,
           split: bool, backend: str, rel_gap: float, run, jobs: int, info: dict, full: bool):
    """The exact path (:mod:`placement.search.exact`) on the layers' ``instances`` from the search's ``start
    [L, G, S]``: ``(slots, routing, seconds per layer [L], {"bound": float64 [L], "optimal": bool})``;
    ``objective`` scores the answer under the rule that will run."""
    from .exact import LayerSolve, slots_and_routing, solve_layers, start_routing
    from .local import _holds

    L, G, S = start.shape
    E = w.shape[1]
    routing_mode = "split" if split else "one-copy"
    integral = split and instances[0].dedups
    x0 = list(_holds(start, E))  # [E, G] per layer
    r0 = [start_routing(start[layer], E, integral, np.asarray(topology.latency)) if split else None
          for layer in range(L)]

    def from_start(i: int, bound: float = -np.inf) -> LayerSolve:
        pairs = np.argwhere(instances[i].counts.sum(axis=0) > 0)
        return LayerSolve(x=x0[i], r=r0[i][pairs[:, 0], pairs[:, 1]] if split else None, pairs=pairs,
                          objective=np.nan, bound=bound, termination="not solved", nonzeros=0)

    fill = fill_slots if full else (lambda s, *_: s)

    def decoded(layers: list) -> tuple:
        slots, routing = slots_and_routing(layers, S, G, E, fill, w, topology.server_of, split)
        return slots, routing, objective.layer_times(slots, routing)

    starts = [from_start(i) for i in range(L)]
    start_times = decoded(starts)[2]
    results = solve_layers(instances, routing_mode, x0, r0, backend=backend, rel_gap=rel_gap, run=run, jobs=jobs,
                           start_seconds=start_times)
    solved = np.array([res is not None for res in results])
    filled = [res if res is not None else starts[i] for i, res in enumerate(results)]
    slots, routing, times = decoded(filled)
    worse = times > start_times * (1 + 1e-12)  # a solver that lost its warm start: the start stays
    if worse.any():
        filled = [from_start(i, filled[i].bound) if worse[i] else filled[i] for i in range(L)]
        slots, routing, times = decoded(filled)
    model = np.array([r.objective for r in filled])
    info.update({"exact_layers_solved": int(solved.sum()),
                 "exact_layers_optimal": int(sum(r.termination == "optimal" for r in filled)),
                 "exact_layers_kept_start": int(worse.sum()),
                 "exact_model_nonzeros_max": int(max(r.nonzeros for r in filled)),
                 "exact_model_minus_evaluator_max": (float(np.nanmax(np.abs(model - times)[solved & ~worse]))
                                                     if (solved & ~worse).any() else None),
                 "exact_start_seconds": float(start_times.sum()), "exact_routing": routing_mode})
    bound = np.array([r.bound for r in filled])
    return slots, routing, times, {"bound": bound, "optimal": all(r.termination == "optimal" for r in filled)}


def _combined(objectives: list[StepObjective], robust: str):
    """One objective for the traces fitted: the objective itself, or their :class:`MultiObjective`."""
    return objectives[0] if len(objectives) == 1 else MultiObjective(objectives, robust)


def _route(slots: np.ndarray, objective, topology: Topology, load: np.ndarray, run,
           info: dict) -> tuple[np.ndarray, np.ndarray]:
    """Routing fractions of ``replica='split'``: per layer the LP of :mod:`placement.formulations.split_routing`
    (no GPU above the layer's busiest under an even split), kept where ``objective`` (the split rule's)
    finds it faster than the even split; ``(routing [L, G, E, R], seconds per layer)``."""
    from ..formulations.split_routing import solve_split_routing

    holder = Placement(slots, num_experts=load.shape[1])
    rs = holder.replica_slots()  # [L, E, R]
    count = np.maximum(holder.num_replicas(), 1)
    peak = max_gpu_load(slots, load)  # [L] busiest GPU, even split
    G = slots.shape[1]
    setup = objective.setup
    routing, seconds = solve_split_routing(slots, objective.sent, topology, setup.dispatch_wire.bytes_per_token,
                                           setup.combine_wire.bytes_per_token,
                                           np.broadcast_to(peak[:, None], (len(peak), G)), rs, run=run)
    even = np.where(rs >= 0, 1.0, 0.0) / count[..., None]
    even = np.broadcast_to(even[:, None], routing.shape).copy()
    t_lp = objective.layer_times(slots, routing)
    t_even = objective.layer_times(slots, even)
    use = t_lp < t_even
    routing = np.where(use[:, None, None, None], routing, even)
    info.update({"routing_lp_layers": int(use.sum()), "routing_lp_seconds": float(np.nansum(seconds))})
    return routing, np.where(use, t_lp, t_even)


def _bytes_moved(slots: np.ndarray, origin: np.ndarray, E: int) -> int:
    """Replicas that a GPU must load: expert copies present in ``slots`` on a GPU that did not hold them."""
    from .local import _holds

    return int((_holds(slots, E) & ~_holds(origin, E)).sum())


_RULES = ("vllm", "trtllm", "sglang-static", "sglang-dynamic", "nearest", "split")
register(Method(
    "layer-time", "least serving-step time with replicas, for the stack's replica rule and transport "
    "(evaluator-scored search from EPLB and fast-path starts)",
    "placement.search.method:layer_time_method", needs="load", kind="formulation", objective="step_time",
    options=used_only_with(used_only_with((
             Option("redundant", int, -1, "extra replicas per layer (-1: at least one per GPU, rounded up so slots "
                    "divide over GPUs)", minimum=0, auto=-1),
             Option("solver", str, "search", "fast (numpy, ~25 ms), search (evaluator-scored local search) or "
                    "milp (the exact path: each layer's step model as a MILP, warm-started from the search, "
                    "with a proven bound, for replica=split or redundant=0; otherwise, or at scale, the search's "
                    "placement with a server relaxation's bound)", choices=("fast", "search", "milp")),
             Option("replica", str, "vllm", "the serving stack's replica rule the placement is for",
                    choices=_RULES),
             Option("transport", str, "nccl", "how tokens move: nccl, deepep, deepep-ll",
                    choices=("nccl", "deepep", "deepep-ll")),
             Option("tokens_per_step", int, 0, "tokens of one serving step over all GPUs (0: tokens_per_gpu)",
                    minimum=0),
             Option("tokens_per_gpu", int, 0, "tokens per GPU per step (0: the evaluator's default)", minimum=0),
             Option("dispatch_dtype", str, "bf16", "wire dtype of dispatch (e.g. fp8)"),
             Option("combine_dtype", str, "bf16", "wire dtype of combine"),
             Option("gpu", str, "", "GPU model for expert compute (empty: the topology's)"),
             Option("overlap", bool, False, "two micro-batches overlap communication and compute"),
             Option("time_limit", float, 60.0, "seconds for the search", minimum=0),
             Option("current", str, "", "the deployed placement file (migration budget)"),
             Option("max_moves", int, -1, "experts per layer that may change GPUs from current (-1: any)",
                    minimum=-1),
             Option("windows", int, 1, "fit this many successive windows of the trace at once (load shift)",
                    minimum=1),
             Option("robust", str, "mean", "over windows: mean step time, or per layer the worst window",
                    choices=("mean", "max")),
             Option("also", str, "", "more traces or load snapshots (comma-separated files) fitted together with "
                    "the trace, combined by robust (load shift)"),
             Option("full", bool, True, "every slot holds an expert, as SGLang, TensorRT-LLM and vllm-ascend need "
                    "(false: slots may stay empty, which no serving stack loads)"),
             Option("fewer_slots", bool, True, "with full slots, the method may leave the redundant slots out "
                    "(E / G slots per GPU) when that is faster; info['redundant_used'] says"),
             Option("max_load", str, "free", "eplb: no GPU of a layer busier than under EPLB with the same slots "
                    "(even split over replicas); free: step time alone decides", choices=("eplb", "free")),
             Option("jobs", int, 1, "worker processes scoring trial placements (search) or solving layers (milp) "
                    "in parallel (0: one per CPU core)", minimum=0),
             Option("backend", str, "highs", "solver backend of the exact path (see placement.backends.BACKENDS)"),
             Option("rel_gap", float, 1e-6, "the exact path stops each layer at this relative gap", minimum=0.0)),
        ("time_limit", "full", "fewer_slots", "max_load", "jobs"), "solver", ("search", "milp")),
        ("backend", "rel_gap"), "solver", ("milp",))))
