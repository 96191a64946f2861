"""MoETuner heuristics: greedy balanced clusters (ILP1's warm start) and swap descent (ILP2's and the
joint model's warm starts).  Notation of :mod:`.problem`: ``n`` loads, ``m`` experts per GPU."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import numpy as np

from .problem import TunerProblem, boundary_bottleneck

if TYPE_CHECKING:  # pragma: no cover
    from ...progress import Run

__all__ = ["lpt_clusters", "swap_descent"]


def lpt_clusters(problem: TunerProblem) -> np.ndarray:
    """``int64 [L, E]`` balanced greedy clusters: heaviest expert to the lightest cluster with room
    (``m`` experts per cluster, ``G`` clusters per layer)."""
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    out = np.empty((L, E), dtype=np.int64)
    for layer in range(L):
        load = np.zeros(G)
        room = np.full(G, problem.experts_per_gpu)
        for e in np.argsort(-problem.load[layer], kind="stable"):
            q = int(np.argmin(np.where(room > 0, load, np.inf)))
            out[layer, e] = q
            load[q] += problem.load[layer, e]
            room[q] -= 1
    return out


def swap_descent(problem: TunerProblem, a: np.ndarray, deadline: float, *, experts: bool,
                 cap: np.ndarray | None = None, run: Run | None = None) -> np.ndarray:
    """First-improvement swaps within a layer until none gains (or ``deadline``, a ``perf_counter`` value).

    ``experts=False``: swap the GPUs of two whole clusters (ILP2's move: loads unchanged);
    ``experts=True``: swap two experts between GPUs, keeping GPU load <= ``cap[l]`` (``float64 [L]``
    selections; the joint model's move).  Returns ``int64 [L, E]``; the objective never increases.
    With ``run`` (:class:`placement.progress.Run`) it also stops when the run is stopped, and a
    Ctrl-C ends it (the run marked interrupted) with the assignment so far (every state is feasible).
    """
    a = a.copy()
    with run.interruptible() if run is not None else contextlib.nullcontext():
        _swaps(problem, a, deadline, experts, cap, run)
    return a


def _swaps(problem: TunerProblem, a: np.ndarray, deadline: float, experts: bool, cap: np.ndarray | None,
           run: Run | None) -> None:
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for layer in range(L):
            near = [b for b in (layer - 1, layer) if 0 <= b < L - 1]
            base = sum(boundary_bottleneck(problem, a, b) for b in near)
            if experts:
                cand = [(i, j) for i in range(E) for j in range(i + 1, E) if a[layer, i] != a[layer, j]]
            else:
                cand = [(u, v) for u in range(G) for v in range(u + 1, G)]
            for n, (i, j) in enumerate(cand):
                if n % 64 == 0 and (time.perf_counter() > deadline or (run is not None and run.stopped)):
                    return
                row = a[layer].copy()
                if experts:
                    row[i], row[j] = row[j], row[i]
                    if cap is not None:
                        load = np.bincount(row, weights=problem.load[layer], minlength=G)
                        if load.max() > cap[layer] + 1e-9:
                            continue
                else:
                    row = np.where(a[layer] == i, j, np.where(a[layer] == j, i, a[layer]))
                old = a[layer].copy()
                a[layer] = row
                new = sum(boundary_bottleneck(problem, a, b) for b in near)
                if new < base - 1e-12 * max(1.0, base):
                    base = new
                    improved = True
                else:
                    a[layer] = old
            if run is not None:
                run.tick()
            if time.perf_counter() > deadline:
                break
