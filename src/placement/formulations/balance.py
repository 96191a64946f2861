r"""``balance``: the least largest GPU load of every layer, replicas allowed, with a proven bound.

EPLB's objective solved exactly.  Data: ``w[l, e]`` selections of expert ``e`` in layer ``l``
(``float64 [L, E]``), ``G`` GPUs of ``S`` slots, ``P = G S`` slots per layer, replica counts ``c[l, e]``
by D'Hondt (:func:`~placement.formulations.layer_time.replica_counts`; ``c = 1`` without redundant
experts), each replica serving ``s[l, e] = w[l, e] / c[l, e]`` (an even split, EPLB's model of load).

Per layer (layers are independent and are solved one by one)
    Variables: ``y[e, g]`` binary (GPU ``g`` holds a replica of ``e``; never two), ``T >= 0``.
    ``min T`` subject to ``sum_g y[e, g] = c[e]``, ``sum_e y[e, g] <= S``,
    ``sum_e s[e] y[e, g] <= T`` and ``T >= lb`` with the closed-form bound below.

Lower bound (valid for the fixed counts)
    ``lb = max(sum_e w[e] / G, max_e (s[e] + the S - 1 smallest shares of other experts), group)`` where the
    second term needs every slot filled (``sum_e c[e] = G S``: the GPU holding ``e`` holds ``S - 1`` other
    replicas) and ``group`` (:func:`group_bound`) lets the ``j`` largest replicas share the lightest items:
    they lie on ``m`` GPUs holding ``m S`` items, so one of them carries at least
    ``(top_j + the m S - j smallest others) / m``, maximised over ``j``, minimised over ``m``; rounded up when
    every share is a whole number of selections (then so is every GPU load, and ``T`` is an integer
    variable).  The solver's bound is at least this.

Warm start: the fast path's node-blind packing with swaps (:func:`~placement.formulations.layer_time.pack`),
then :func:`exchange` (one-for-one and two-for-two slot exchanges with the busiest GPU); a layer it brings
to the bound is proven optimal without a solve.

Objective reported: ``sum_l max_g load[l, g]`` (selections), the ``max_gpu_load`` objective of
:mod:`placement.objectives`; ``info["ratio_median"]``, ``["ratio_worst"]`` give per-layer max load over
the proven bound.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import TYPE_CHECKING

import numpy as np

from ..baselines.eplb import physical_slots
from ..milp import MilpBuilder, MilpModel, Termination
from ..placement import Placement
from ..registry import Method, Option, register
from ..solution import Solution, make_solution
from ._common import SOLVER_OPTIONS, run_params, solve_model
from .layer_time import pack, replica_counts, slot_loads

if TYPE_CHECKING:  # pragma: no cover
    from ..stats import TraceStats
    from ..topology import Topology

__all__ = ["build_balance", "cardinality_bound", "group_bound", "exchange", "balance_method"]


def cardinality_bound(share: np.ndarray, count: np.ndarray, num_gpus: int, slots_per_gpu: int) -> float:
    """The closed-form lower bound of the module docstring for one layer (``share``, ``count float/int [E]``)."""
    G, S = num_gpus, slots_per_gpu
    mean = float((share * count).sum()) / G
    best = max(mean, float(share.max()), group_bound(np.repeat(share, count), G, S))
    if int(count.sum()) != G * S or S == 1:
        return _integral(best, share, count)
    items = np.sort(np.repeat(share, count))  # every replica's load, increasing
    # for expert e: its share plus the S - 1 smallest replicas of *other* experts
    for e in np.argsort(-share)[: min(len(share), 8)]:  # the largest shares decide the maximum
        own = np.flatnonzero(np.isclose(items, share[e]))[: int(count[e])]
        mask = np.ones(items.size, dtype=bool)
        mask[own] = False
        rest = items[mask][: S - 1].sum()
        best = max(best, float(share[e]) + float(rest))
    return _integral(best, share, count)


def group_bound(items: np.ndarray, num_gpus: int, slots_per_gpu: int) -> float:
    """A lower bound of the largest GPU load when ``items float [n]`` (replica loads) fill at most
    ``slots_per_gpu`` slots on each of ``num_gpus`` GPUs (empty slots count as items of load 0).

    The ``j`` largest items lie on some ``m`` GPUs, ``ceil(j / S) <= m <= min(j, G)``, which hold ``m S`` items: the
    ``j`` and at least the ``m S - j`` smallest others, so the busiest of them carries at least
    ``(top_j + smallest_{m S - j}) / m``; the bound is ``max_j min_m`` of that.  Two hot experts that must share
    the lightest items (each needs ``S - 1`` companions) lift it above the one-expert bound.

    >>> group_bound(np.array([9.0, 9, 1, 1, 1, 1, 5, 5]), 4, 2)  # (9 + 9 + 1 + 1) / 2
    10.0
    """
    G, S = int(num_gpus), int(slots_per_gpu)
    desc = np.sort(np.asarray(items, dtype=np.float64))[::-1]
    desc = np.concatenate([desc, np.zeros(max(0, G * S - desc.size))])
    top = np.concatenate([[0.0], np.cumsum(desc)])
    low = np.concatenate([[0.0], np.cumsum(desc[::-1])])
    best = 0.0
    for j in range(1, min(desc.size, G * S) + 1):
        m = np.arange(-(-j // S), min(j, G) + 1)
        if not m.size:
            break
        best = max(best, float(((top[j] + low[m * S - j]) / m).min()))
    return best


def exchange(share: np.ndarray, slots: np.ndarray, lower: float, max_moves: int = 10_000) -> np.ndarray:
    """``int64 [G, S]``: ``slots`` (expert per slot, ``-1`` empty) after exchanges that lower the largest GPU load.

    While some GPU is above ``lower``: for a GPU at the maximum, the exchange of one of its slots with one slot
    of another GPU, or two (three) with two (three), that leaves both below the maximum (the best such pair:
    the least larger of the two new loads), never putting two replicas of an expert on one GPU; stops when none exists.
    ``share float [E]`` is each replica's load.
    """
    out = np.array(slots, dtype=np.int64, copy=True)
    G, S = out.shape
    groups = [np.array(list(itertools.combinations(range(S), k)), dtype=np.int64) for k in (2, 3) if k < S]
    for _ in range(max_moves):
        item = np.where(out >= 0, share[np.maximum(out, 0)], 0.0)
        load = item.sum(axis=1)
        top = float(load.max())
        if top <= lower * (1 + 1e-12):
            break
        holds = np.zeros((share.size + 1, G), dtype=bool)  # row E: "empty", never a conflict
        holds[np.where(out >= 0, out, share.size), np.arange(G)[:, None]] = True
        holds[share.size] = False
        moved = False
        for g in np.flatnonzero(load >= top - 1e-9):
            # one for one: slot a of g <-> slot b of h
            d = item[g][:, None, None] - item[None, :, :]  # [S, G, S]
            worst = np.maximum(load[g] - d, load[None, :, None] + d)
            eg = np.where(out[g] >= 0, out[g], share.size)  # [S]
            clash = holds[eg][:, :, None] | holds[np.where(out >= 0, out, share.size), g][None, :, :]
            same = eg[:, None, None] == np.where(out >= 0, out, -2)[None, :, :]
            bad = (d <= 0) | (clash & ~same)
            bad[:, g, :] = True
            worst[bad] = np.inf
            i = np.unravel_index(np.argmin(worst), worst.shape)
            if worst[i] < top - 1e-9:
                a, h, b = (int(v) for v in i)
                out[g, a], out[h, b] = out[h, b], out[g, a]
                moved = True
                break
            for group in groups:  # two for two, then three for three
                ps = item[:, group].sum(axis=2)  # [G, C]
                d = ps[g][:, None, None] - ps[None, :, :]
                worst = np.maximum(load[g] - d, load[None, :, None] + d)
                bad = d <= 0
                bad[:, g, :] = True
                worst[bad] = np.inf
                for _try in range(8):  # the best few candidates, skipping those that would pair two replicas
                    i = np.unravel_index(np.argmin(worst), worst.shape)
                    if not worst[i] < top - 1e-9:
                        break
                    a, h, b = (int(v) for v in i)
                    ga, hb = out[g, group[a]].copy(), out[h, group[b]].copy()
                    stay_h = np.delete(out[h], group[b])
                    stay_g = np.delete(out[g], group[a])
                    if np.intersect1d(ga[ga >= 0], stay_h[stay_h >= 0]).size or \
                            np.intersect1d(hb[hb >= 0], stay_g[stay_g >= 0]).size:
                        worst[i] = np.inf
                        continue
                    out[g, group[a]], out[h, group[b]] = hb, ga
                    moved = True
                    break
                if moved:
                    break
            if moved:
                break
        if not moved:
            break
    return out


def _integral(bound: float, share: np.ndarray, count: np.ndarray) -> float:
    """A GPU load is a sum of whole selections when every share is whole: round the bound up."""
    whole = np.all(share == np.round(share))
    return float(math.ceil(bound - 1e-9)) if whole else bound


def build_balance(share: np.ndarray, count: np.ndarray, num_gpus: int, slots_per_gpu: int,
                  lower: float) -> MilpModel:
    """The per-layer MILP of the module docstring: blocks ``y [expert, gpu]`` and ``T``."""
    E = share.size
    G = num_gpus
    b = MilpBuilder(name="balance")
    y = b.add_block("y", (E, G), ("expert", "gpu"), integer=True, upper=1)
    whole = bool(np.all(share == np.round(share)))  # then the largest load is a whole number too
    top = float(np.ceil((share * count).sum()))  # no GPU carries more than every selection (finite for CP-SAT)
    t = b.add_block("T", (1,), ("one",), cost=1.0, lower=lower, upper=max(top, lower), integer=whole)
    b.add_row_sums("replicas", y, lower=count.astype(np.float64), upper=count.astype(np.float64))
    b.add_row_sums("slots", y.T, upper=float(slots_per_gpu))
    rows = np.repeat(np.arange(G), E + 1)
    cols = np.concatenate([y.T, np.broadcast_to(t.reshape(1, 1), (G, 1))], axis=1).ravel()
    vals = np.concatenate([np.broadcast_to(share, (G, E)), -np.ones((G, 1))], axis=1).ravel()
    b.add_rows("load", G, rows, cols, vals, upper=0.0)
    return b.build()


def _slots_from_y(y: np.ndarray, S: int) -> np.ndarray:
    """``int64 [G, S]`` experts of each GPU (increasing, then empty) from ``y [E, G]``."""
    E, G = y.shape
    out = np.full((G, S), -1, dtype=np.int64)
    for g in range(G):  # G rows of at most S entries: small
        held = np.flatnonzero(y[:, g] > 0.5)
        out[g, : held.size] = held
    return out


def balance_method(stats: TraceStats, topology: Topology, redundant: int = 0, time_limit: float = 60.0,
                   rel_gap: float = 1e-6, backend: str = "highs", threads: int = 0, verbose: bool = False) -> Solution:
    """Least largest GPU load per layer (module docstring), each layer warm-started from the fast path."""
    from ..errors import input_error
    from ..progress import begin

    t0 = time.perf_counter()
    run = begin("balance", time_limit, unit="selections", verbose=verbose)
    trace = stats.trace
    E, G, L = trace.num_experts, topology.num_gpus, trace.num_layers
    redundant, P = physical_slots(E, G, redundant)
    S = P // G
    w = stats.load.astype(np.float64)
    count = replica_counts(w, P)
    if (count > G).any():
        raise input_error(f"an expert would get more than {G} replicas, one per GPU at most; use fewer redundant "
                          "slots", field="redundant")
    share = w / count
    start = pack(w, count, G, 1, S)  # node-blind: balance alone
    lbs = np.array([cardinality_bound(share[layer], count[layer], G, S) for layer in range(L)])
    start = np.stack([exchange(share[layer], start[layer], lbs[layer]) for layer in range(L)])
    slots = start.copy()
    peaks = slot_loads(start, share).sum(axis=2).max(axis=1)  # [L]
    terms: set[Termination] = set()
    bounds = np.minimum(lbs, peaks)
    with run.interruptible():
        for layer in range(L):
            run.update(incumbent=float(peaks.sum()), bound=float(bounds.sum()), stage=f"layer {layer + 1}/{L}")
            if peaks[layer] <= lbs[layer] * (1 + rel_gap):
                terms.add(Termination.OPTIMAL)
                continue
            if run.stopped:
                terms.add(Termination.FEASIBLE)
                continue
            model = run.bounded(lambda layer=layer: build_balance(share[layer], count[layer], G, S, lbs[layer]))
            if model is None:
                terms.add(Termination.FEASIBLE)
                continue
            warm = np.zeros(model.num_vars)
            yb, tb = model.block("y"), model.block("T")
            y0 = np.zeros((E, G))
            held = start[layer] >= 0
            y0[start[layer][held], np.nonzero(held)[0]] = 1.0
            warm[yb.start:yb.stop] = y0.ravel()
            warm[tb.start] = peaks[layer]
            others_inc, others_bnd = float(peaks.sum() - peaks[layer]), float(bounds.sum() - bounds[layer])
            todo = int((peaks[layer:] > lbs[layer:] * (1 + rel_gap)).sum())  # the layers left that need a solve
            params = run_params(run, rel_gap=rel_gap, threads=threads, parts=max(todo, 1), warm_start=warm,
                                convert=lambda inc, bnd, a=others_inc, b=others_bnd: (a + inc, b + bnd))
            if params is None:
                terms.add(Termination.FEASIBLE)
                continue
            res = solve_model(model, backend, params, run)
            got = _slots_from_y(model.block_values(res.solution, "y"), S)
            peak = float(slot_loads(got[None], share[layer:layer + 1]).sum(axis=2).max())
            if peak < peaks[layer]:
                slots[layer], peaks[layer] = got, peak
            solver_bound = float(res.bound) if math.isfinite(res.bound) else lbs[layer]
            bounds[layer] = min(max(lbs[layer], solver_bound), peaks[layer])
            terms.add(Termination.OPTIMAL if peaks[layer] <= bounds[layer] * (1 + rel_gap) else Termination.FEASIBLE)
    ratio = peaks / np.maximum(bounds, 1e-300)
    placement = Placement(slots, num_experts=E, metadata={"method": "balance", "num_replicas": P})
    info = {"redundant": redundant, "ratio_median": float(np.median(ratio)), "ratio_worst": float(ratio.max()),
            "layers_proven": int((ratio <= 1 + rel_gap).sum())}
    term = Termination.OPTIMAL if terms <= {Termination.OPTIMAL} else Termination.FEASIBLE
    return make_solution(placement, "balance", termination=term, objective=float(peaks.sum()),
                         bound=float(bounds.sum()), wall_time=time.perf_counter() - t0, info=info,
                         limit="none" if term is Termination.OPTIMAL else run.limit)


register(Method(
    "balance", "least largest GPU load per layer with replicas (EPLB's objective solved exactly, proven bound)",
    "placement.formulations.balance:balance_method", needs="load", kind="formulation", objective="max_gpu_load",
    options=(Option("redundant", int, 0, "extra replicas per layer (D'Hondt counts; -1: at least one per GPU)",
                    minimum=-1),
             *SOLVER_OPTIONS)))
