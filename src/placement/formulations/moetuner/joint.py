r"""MoETuner's objective with load balance as a constraint, in one model (method ``moetuner-joint``).

ILP2's objective over expert placements directly instead of ILP1's clusters.

Data
    ``n[l, e]`` selections; ``T[l][i, j] / k`` tokens between experts of consecutive layers;
    pair weights ``D[u, v]`` in model units (:mod:`.problem`); ``m = E / G``; ``eps`` the load
    tolerance; ``M_li`` the sum of the ``m`` largest entries of row ``i`` of ``T[l] / k`` (GPU
    ``v`` holds ``m`` experts of layer ``l + 1``).
Variables
    ``x[l, e, g]`` binary (expert ``e`` of layer ``l`` on GPU ``g``); ``r[l, i, u, v] >= 0``;
    ``z[l]``.
Objective
    ``min sum_l z[l]`` (model units; times ``cost_unit`` it is tokens, token-hops or seconds).
Constraints
    ``sum_g x[l, e, g] = 1``; ``sum_e x[l, e, g] = m``;
    ``sum_e n[l, e] x[l, e, g] <= (1 + eps) mean_l`` with ``mean_l = sum_e n[l, e] / G``;
    ``r[l, i, u, v] >= sum_j T[l][i, j] / k x[l+1, j, v] - M_li (1 - x[l, i, u])``;
    ``z[l] >= D[u, v] sum_i r[l, i, u, v]`` for ``u != v``; with interchangeable GPUs
    ``x[0, e, g] = 0`` for ``g > e`` (GPUs labelled by their first layer-0 expert).

The product and bottleneck rows are :mod:`.ilp2`'s, with experts as rows.
"""

from __future__ import annotations

import numpy as np

from ...milp import MilpBuilder, MilpModel
from .ilp2 import add_bottleneck_rows, add_product_rows
from .problem import TunerProblem

__all__ = ["build_joint", "joint_traffic"]


def joint_traffic(problem: TunerProblem) -> tuple[np.ndarray, np.ndarray]:
    """``W float64 [L-1, E, E]`` tokens between experts and the big-M ``M float64 [L-1, E]``."""
    W = np.stack([t.toarray() for t in problem.token_transitions])
    M = -np.sort(-W, axis=2)[:, :, :problem.experts_per_gpu].sum(axis=2)
    return W, M


def build_joint(problem: TunerProblem, eps: float) -> MilpModel:
    """The joint model of the module docstring.

    Blocks ``x [layer, expert, gpu]``, ``r`` and ``z``; row families ``one_gpu``, ``per_gpu``,
    ``load``, ``r_link`` and ``bottleneck``.
    """
    L, E, G, m = problem.num_layers, problem.num_experts, problem.num_gpus, problem.experts_per_gpu
    b = MilpBuilder(name="moetuner-joint")
    upper = np.ones((L, E, G))
    if problem.interchangeable_gpus:
        upper[0][np.arange(G)[None, :] > np.arange(E)[:, None]] = 0.0
    x = b.add_block("x", (L, E, G), ("layer", "expert", "gpu"), integer=True, upper=upper)
    b.add_row_sums("one_gpu", x.reshape(L * E, G), lower=1, upper=1)
    b.add_row_sums("per_gpu", x.transpose(0, 2, 1).reshape(L * G, E), lower=m, upper=m)
    cap = (1.0 + eps) * problem.load.sum(axis=1) / G
    b.add_row_sums("load", x.transpose(0, 2, 1).reshape(L * G, E), np.repeat(problem.load, G, axis=0),
                   upper=np.repeat(cap, G))
    W, M = joint_traffic(problem)
    r, z = add_product_rows(b, x, W, M, G)
    add_bottleneck_rows(b, r, z, problem.pair_weight)
    return b.build()
