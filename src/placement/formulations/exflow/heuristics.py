"""ExFlow local search: balanced per-layer assignments, block-coordinate descent, suffix relabelling.

Every move keeps ``m`` experts of each layer on every GPU and never increases the model-unit
objective (:func:`~placement.formulations.exflow.problem.objective`).  Notation: ``a int64 [L, E]``
is an assignment (GPU of each expert of each layer), ``C`` the pair cost, ``T[l]`` the transition
counts, ``F`` the layer-0 cost of :class:`~placement.formulations.exflow.problem.AffinityProblem`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .problem import AffinityProblem, objective

if TYPE_CHECKING:  # pragma: no cover
    from ...progress import Run

__all__ = ["balanced_layer_assignment", "descend", "greedy_chain", "id_order_assignment", "improve", "layer_cost",
           "local_search", "relabel_suffixes"]


def id_order_assignment(problem: AffinityProblem) -> np.ndarray:
    """``int64 [L, E]``: experts in id order, ``m`` per GPU (expert ``e`` on GPU ``e // m``)."""
    return np.broadcast_to(np.arange(problem.num_experts) // problem.experts_per_gpu,
                           (problem.num_layers, problem.num_experts)).copy()


def balanced_layer_assignment(cost: np.ndarray, experts_per_gpu: int) -> np.ndarray:
    """``int64 [E]`` minimising ``sum_e cost[e, gpu(e)]`` with exactly ``experts_per_gpu`` rows per GPU.

    Exact: a linear sum assignment over ``E x (G m)`` slots (column ``g m + r`` is slot ``r`` of
    GPU ``g``).

    Parameters
    ----------
    cost:
        ``float64 [E, G]``.
    experts_per_gpu:
        ``m`` with ``G m = E``.
    """
    from scipy.optimize import linear_sum_assignment

    E = cost.shape[0]
    wide = np.repeat(cost, experts_per_gpu, axis=1)
    rows, cols = linear_sum_assignment(wide)
    out = np.empty(E, dtype=np.int64)
    out[rows] = cols // experts_per_gpu
    return out


def layer_cost(problem: AffinityProblem, a: np.ndarray, layer: int, use_prev: bool = True,
               use_next: bool = True) -> np.ndarray:
    """``float64 [E, G]``: model-unit cost of expert ``j`` of ``layer`` on GPU ``g`` given the other
    layers of ``a`` (``T[l-1]^T C[a[l-1]]`` + ``T[l] C[:, a[l+1]]^T`` + ``F`` on layer 0)."""
    out = np.zeros((problem.num_experts, problem.num_gpus))
    if layer == 0 and problem.first_layer_cost is not None:
        out += problem.first_layer_cost
    if use_prev and layer > 0:
        out += np.asarray(problem.transitions[layer - 1].T @ problem.pair_cost[a[layer - 1]])
    if use_next and layer < problem.num_layers - 1:
        out += np.asarray(problem.transitions[layer] @ problem.pair_cost[:, a[layer + 1]].T)
    return out


def descend(problem: AffinityProblem, a: np.ndarray, deadline: float,
            max_sweeps: int = 50) -> tuple[np.ndarray, float]:
    """Block-coordinate descent: re-place one layer at a time optimally given its neighbours.

    Forward and backward sweeps until a sweep gains nothing (or ``deadline``, a
    ``time.perf_counter()`` value); returns the assignment and its model-unit objective.
    """
    a = a.copy()
    E = problem.num_experts
    best = objective(problem, a)
    for sweep in range(max_sweeps):
        order = range(problem.num_layers) if sweep % 2 == 0 else range(problem.num_layers - 1, -1, -1)
        for layer in order:
            cost = layer_cost(problem, a, layer)
            new = balanced_layer_assignment(cost, problem.experts_per_gpu)
            if cost[np.arange(E), new].sum() < cost[np.arange(E), a[layer]].sum() - 1e-9:
                a[layer] = new
            if time.perf_counter() > deadline:
                break
        value = objective(problem, a)
        if value >= best - 1e-9 * max(1.0, abs(best)) or time.perf_counter() > deadline:
            best = min(best, value)
            break
        best = value
    return a, best


def greedy_chain(problem: AffinityProblem, first_layer: np.ndarray) -> np.ndarray:
    """``int64 [L, E]``: layer 0 from ``first_layer``, then each layer placed optimally given only the
    previous one."""
    a = np.empty((problem.num_layers, problem.num_experts), dtype=np.int64)
    a[0] = first_layer
    for layer in range(1, problem.num_layers):
        a[layer] = balanced_layer_assignment(layer_cost(problem, a, layer, use_next=False), problem.experts_per_gpu)
    return a


def relabel_suffixes(problem: AffinityProblem, a: np.ndarray) -> tuple[np.ndarray, bool]:
    """For interchangeable GPUs: at each boundary, permute the GPU labels of all later layers so
    that the boundary's agreement is largest (an assignment problem); later boundaries keep
    their cost, so the objective never increases.  A move no single-layer step can make.

    Returns the assignment and whether it changed.
    """
    from scipy.optimize import linear_sum_assignment

    if not problem.interchangeable_gpus:
        return a, False
    E, G = problem.num_experts, problem.num_gpus
    a = a.copy()
    changed = False
    for layer, t in enumerate(problem.transitions):
        here = np.zeros((E, G))
        here[np.arange(E), a[layer]] = 1.0
        there = np.zeros((E, G))
        there[np.arange(E), a[layer + 1]] = 1.0
        agree = here.T @ np.asarray(t @ there)  # [G(l), G(l+1)]
        rows, cols = linear_sum_assignment(agree, maximize=True)
        if agree[rows, cols].sum() > np.trace(agree) + 1e-9:
            perm = np.empty(G, dtype=np.int64)
            perm[cols] = rows  # label h of layer l+1 becomes rows[...] of layer l
            a[layer + 1:] = perm[a[layer + 1:]]
            changed = True
    return a, changed


def improve(problem: AffinityProblem, a: np.ndarray, deadline: float) -> tuple[np.ndarray, float]:
    """Alternate :func:`descend` and :func:`relabel_suffixes` until neither gains."""
    a, v = descend(problem, a, deadline)
    while time.perf_counter() < deadline:
        b, changed = relabel_suffixes(problem, a)
        if not changed:
            break
        b, w = descend(problem, b, deadline)
        if w >= v - 1e-9 * max(1.0, abs(v)):
            break
        a, v = b, w
    return a, v


def local_search(problem: AffinityProblem, time_budget: float, seed: int = 0,
                 starts: list[np.ndarray] | None = None, target: float = -math.inf,
                 on_improve: Callable[[float], None] | None = None,
                 run: Run | None = None) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Multi-start improvement plus perturbation, within ``time_budget`` seconds.

    Starts: a greedy chain from the id-order layer 0, ``starts`` (e.g. a bisection), the id
    order itself; then, alternately, greedy chains from random layer-0 placements and
    perturbations of the incumbent (a window of layers re-drawn), each improved by
    :func:`improve`.  Stops early at ``target`` (a proven bound, model units).
    ``on_improve(value)`` is called with each new best model-unit objective.  With ``run``
    (:class:`placement.progress.Run`), the search also stops when the run is stopped, and a
    Ctrl-C ends it (the run marked interrupted) with the best assignment so far.

    Returns the best assignment, its model-unit objective and counters for the solution's info.
    """
    t0 = time.perf_counter()
    deadline = t0 + max(time_budget, 0.0)
    rng = np.random.default_rng(seed)
    L, E, m = problem.num_layers, problem.num_experts, problem.experts_per_gpu
    base = id_order_assignment(problem)
    best_a, best = base, objective(problem, base)
    tries = improved = 0
    guard = run.interruptible() if run is not None else contextlib.nullcontext()
    with guard:
        if on_improve is not None:
            on_improve(best)
        for a in [greedy_chain(problem, base[0])] + list(starts or []) + [base]:
            a2, v = improve(problem, a, deadline)
            if v < best:
                best_a, best = a2, v
                if on_improve is not None:
                    on_improve(best)
        while time.perf_counter() < deadline and best > target + 1e-9 * max(1.0, abs(target)):
            if run is not None and run.stopped:
                break
            tries += 1
            if tries % 2:
                a = greedy_chain(problem, rng.permutation(np.arange(E) // m))
            else:
                a = best_a.copy()
                width = int(rng.integers(1, max(2, L // 4) + 1))
                lo = int(rng.integers(0, L - width + 1))
                for layer in range(lo, lo + width):
                    a[layer] = rng.permutation(np.arange(E) // m)
            a, v = improve(problem, a, deadline)
            if v < best - 1e-9 * max(1.0, best):
                best_a, best, improved = a, v, improved + 1
                if on_improve is not None:
                    on_improve(best)
            elif run is not None:
                run.tick()
    best = objective(problem, best_a)  # consistent with best_a whatever interrupted the search
    return best_a, best, {"restarts": tries, "improvements": improved,
                          "local_search_s": time.perf_counter() - t0}
