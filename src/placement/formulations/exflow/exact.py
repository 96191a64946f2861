"""ExFlow's exact special cases: per-boundary matchings chained (one expert per GPU) and a dynamic
programme over whole-layer states (few states per layer).

Both return a proven optimum of the model-unit objective of
:mod:`~placement.formulations.exflow.problem`, so the driver reports them with bound = objective.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .._labels import relabel_by_first_appearance
from .problem import AffinityProblem

__all__ = ["dp_state_count", "enumerate_states", "gpu_classes", "solve_chain", "solve_dp"]


def gpu_classes(problem: AffinityProblem) -> list[np.ndarray]:
    """GPUs that no objective term can tell apart (same cost rows and columns, free between them,
    same layer-0 costs), grouped: a list of ``int64`` GPU ids per class."""
    C, F = problem.pair_cost, problem.first_layer_cost
    classes: list[list[int]] = []
    for g in range(problem.num_gpus):
        for cl in classes:
            h = cl[0]
            same = (np.array_equal(C[g], C[h]) and np.array_equal(C[:, g], C[:, h]) and C[g, h] == 0
                    and C[h, g] == 0 and (F is None or np.array_equal(F[:, g], F[:, h])))
            if same:
                cl.append(g)
                break
        else:
            classes.append([g])
    return [np.array(c) for c in classes]


def dp_state_count(num_experts: int, caps: list[int]) -> int:
    """Assignments of ``num_experts`` items to classes of the given capacities (a multinomial)."""
    out = math.factorial(num_experts)
    for c in caps:
        out //= math.factorial(c)
    return out


def enumerate_states(num_experts: int, caps: list[int]) -> np.ndarray:
    """``int64 [S, E]``: every assignment of ``E`` items to classes with the given capacities."""
    states = []

    def rec(rest: tuple[int, ...], cls: int, cur: np.ndarray) -> None:
        if cls == len(caps):
            states.append(cur.copy())
            return
        for chosen in itertools.combinations(rest, caps[cls]):
            cur[list(chosen)] = cls
            left = tuple(x for x in rest if x not in chosen)
            rec(left, cls + 1, cur)

    rec(tuple(range(num_experts)), 0, np.zeros(num_experts, dtype=np.int64))
    return np.array(states, dtype=np.int64)


def solve_dp(problem: AffinityProblem, max_states: int) -> np.ndarray | None:
    """Exact dynamic programme over whole-layer states (``None`` when there are too many states).

    A state is a layer's assignment of experts to GPU classes (:func:`gpu_classes`); the chain
    of layers is a shortest path through the state graph, so the result is a proven optimum.
    With interchangeable classes the value function is invariant under relabelling, so only
    canonical successor states (labels in order of first appearance) need a column.

    Returns ``int64 [L, E]`` (GPU of each expert) or ``None``.
    """
    L, E, m = problem.num_layers, problem.num_experts, problem.experts_per_gpu
    classes = gpu_classes(problem)
    caps = [m * len(c) for c in classes]
    S = dp_state_count(E, caps)
    if S > max_states:
        return None
    states = enumerate_states(E, caps)  # [S, E]
    K = len(classes)
    rep = np.array([c[0] for c in classes])
    Cc = problem.pair_cost[np.ix_(rep, rep)]
    onehot = np.zeros((S, E, K))
    onehot[np.arange(S)[:, None], np.arange(E)[None, :], states] = 1.0
    D = Cc[states].reshape(S, E * K)  # D[s, (i, k')] = Cc[s_i, k']
    value = np.zeros(S)
    if problem.first_layer_cost is not None:
        fc = problem.first_layer_cost[:, rep]
        value = fc[np.arange(E)[None, :], states].sum(axis=1)
    symmetric = problem.interchangeable_gpus and len(set(caps)) == 1
    if symmetric:
        relabelled = relabel_by_first_appearance(states, K)  # [S, E]
        canon = np.flatnonzero((relabelled == states).all(axis=1))
        position = {tuple(states[c]): n for n, c in enumerate(canon)}
        orbit = np.array([position[tuple(r)] for r in relabelled])  # canonical column of each state
    else:
        canon = np.arange(S)
    back = []
    for t in problem.transitions:
        TQ = np.einsum("ij,sjk->sik", t.toarray(), onehot[canon]).reshape(canon.size, E * K)  # [Q, (i, k')]
        tot = TQ @ D.T + value[None, :]  # [Q, S]
        arg = np.argmin(tot, axis=1)
        value = tot[np.arange(canon.size), arg]
        if symmetric:
            value = value[orbit]
        back.append(arg)
    s = int(np.argmin(value))
    cur = states[s]
    path_states = [cur]
    for arg in reversed(back):
        if symmetric:
            # cur = perm[canonical], and the best predecessor of perm[Q] is perm[best predecessor of Q]
            r = relabel_by_first_appearance(cur, K)
            perm = np.empty(K, dtype=np.int64)
            perm[r] = cur
            cur = perm[states[arg[position[tuple(r)]]]]
        else:
            cur = states[arg[int(np.flatnonzero((states == cur).all(axis=1))[0])]]
        path_states.append(cur)
    path_states.reverse()
    cls_assign = np.array(path_states)  # [L, E] class ids
    a = np.empty((L, E), dtype=np.int64)
    for layer in range(L):
        for c, members in enumerate(classes):
            exp = np.flatnonzero(cls_assign[layer] == c)
            a[layer, exp] = np.repeat(members, m)
    return a


def solve_chain(problem: AffinityProblem) -> np.ndarray | None:
    """Exact for one expert per GPU and interchangeable GPUs: per-boundary matchings chain up.

    Any sequence of per-boundary bijections is realisable, so each boundary independently keeps
    its maximum-weight matching of ``T[l]`` on one GPU.  Returns ``int64 [L, E]`` or ``None``
    when the case does not apply.
    """
    if problem.experts_per_gpu != 1 or not problem.interchangeable_gpus:
        return None
    from scipy.optimize import linear_sum_assignment

    a = np.empty((problem.num_layers, problem.num_experts), dtype=np.int64)
    a[0] = np.arange(problem.num_experts)
    for layer, t in enumerate(problem.transitions):
        rows, cols = linear_sum_assignment(t.toarray(), maximize=True)
        a[layer + 1, cols] = a[layer, rows]
    return a
