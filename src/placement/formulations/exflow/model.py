r"""ExFlow's model in a compact exact form (ExFlow, arXiv 2401.08383), as a :class:`~placement.milp.MilpModel`.

Data
    ``T[l][i, j]`` transition counts (:attr:`placement.stats.TraceStats.transitions`: every
    one of a token's ``k x k`` (layer ``l``, layer ``l + 1``) expert pairs counted once);
    ``m = E / G``; a pair cost ``C[g, h]`` in model units
    (:mod:`~placement.formulations.exflow.problem`: ``cost="cross"``: ``1 - I``; ``"hops"``:
    links on the route; ``"time"``: seconds per token over a power of two) written as a
    hierarchy ``C >= sum_k w_k [group_k(g) != group_k(h)]`` over the levels GPU, server, rack
    (exact for the presets: GPUs first, then servers, as the paper stages it); for
    ``hops``/``time`` a layer-0 term ``F[e, g]`` (dispatch from the token origins).
Variables
    ``x[l, e, g]`` binary (expert ``e`` of layer ``l`` on GPU ``g``); one continuous
    ``y_k[p] in [0, 1]`` per level and per *non-zero* transition ``p = (l, i, j)``, instead
    of the paper's one indicator per token.
Objective
    ``min sum_k w_k sum_p T_p y_k[p] + sum_{e, g} F[e, g] x[0, e, g]`` (model units; divided by
    :attr:`~placement.formulations.exflow.problem.AffinityProblem.scale` it is the reported
    objective: ``boundary_cross_fraction``, hop-transmissions per token or seconds per token).
Constraints
    ``sum_g x[l, e, g] = 1``; ``sum_e x[l, e, g] = m``;
    ``y_k[p] >= sum_{g in h} x[l, i, g] - sum_{g in h} x[l+1, j, g]`` for every group ``h``
    of level ``k`` (so ``y_k[p] = 1`` exactly when the pair's groups differ, at the optimum);
    valid degree cuts ``sum_{j: T_lij > 0} y_k[l, i, j] >= deg(i) - m |group|`` (and the
    same over ``i`` for each ``j``): a group holds ``m |group|`` experts of the next layer;
    with interchangeable GPUs, ``x[0, e, g] = 0`` for ``g > e`` (relabel GPUs by their
    first layer-0 expert: :func:`canonical_gpus`).

Same optimum as the paper's per-token model: all tokens with the same pair share the value of
their indicator, so they are aggregated into the weight ``T_p``.  When the levels under-estimate
``C`` (``exact_levels`` false) the MILP value is a lower bound and the driver reports the true
objective of the decoded placement.
"""

from __future__ import annotations

import numpy as np

from ...milp import MilpBuilder, MilpModel
from .._common import assignment_from_x
from .._labels import relabel_by_first_appearance
from .problem import AffinityProblem, nonzero_pairs

__all__ = ["build_model", "canonical_gpus", "decode", "warm_start"]


def build_model(problem: AffinityProblem, *, symmetry: bool = True, cuts: bool = True) -> MilpModel:
    """The compact exact ExFlow MILP of the module docstring.

    Blocks ``x [layer, expert, gpu]`` and ``y<k> [pair]`` per level; row families ``one_gpu``,
    ``per_gpu``, ``cross<k>`` and (with ``cuts``) ``degree_out<k>``/``degree_in<k>``; ``symmetry``
    fixes the labels of interchangeable GPUs.
    """
    L, E, G, m = problem.num_layers, problem.num_experts, problem.num_gpus, problem.experts_per_gpu
    b = MilpBuilder(name=f"exflow-{problem.cost}")
    xcost = np.zeros((L, E, G))
    if problem.first_layer_cost is not None:
        xcost[0] = problem.first_layer_cost
    xupper = np.ones((L, E, G))
    if symmetry and problem.interchangeable_gpus:
        # relabel GPUs by their first layer-0 expert: expert e of layer 0 sits on a GPU <= e
        xupper[0][np.arange(G)[None, :] > np.arange(E)[:, None]] = 0.0
    x = b.add_block("x", (L, E, G), ("layer", "expert", "gpu"), integer=True, upper=xupper, cost=xcost)
    b.add_row_sums("one_gpu", x.reshape(L * E, G), lower=1, upper=1)
    b.add_row_sums("per_gpu", x.transpose(0, 2, 1).reshape(L * G, E), lower=m, upper=m)
    pl, pi, pj, pw = nonzero_pairs(problem)
    n = pl.size
    for lev, (w, grp) in enumerate(problem.levels):
        H = int(grp.max()) + 1
        y = b.add_block(f"y{lev}", n, "pair", upper=1.0, cost=w * pw)
        # y[p] >= sum_{g in h} x[l, i, g] - sum_{g in h} x[l+1, j, g] for every group h
        row_y = np.repeat(np.arange(n) * H, H) + np.tile(np.arange(H), n)
        row_x = (np.arange(n)[:, None] * H + grp[None, :]).ravel()
        xi = x[pl, pi].ravel()  # [n*G]
        xj = x[pl + 1, pj].ravel()
        b.add_rows(f"cross{lev}", n * H, np.concatenate([row_y, row_x, row_x]),
                   np.concatenate([np.repeat(y, H), xi, xj]),
                   np.concatenate([np.ones(n * H), -np.ones(n * G), np.ones(n * G)]), lower=0.0)
        if cuts:
            cap = m * int(np.bincount(grp).max())
            for side, key in (("out", pl * E + pi), ("in", pl * E + pj)):
                deg = np.bincount(key, minlength=(L - 1) * E)
                keep = deg > cap
                if not keep.any():
                    continue
                rid = -np.ones(deg.size, dtype=np.int64)
                rid[keep] = np.arange(int(keep.sum()))
                sel = keep[key]
                b.add_rows(f"degree_{side}{lev}", int(keep.sum()), rid[key[sel]], y[sel],
                           lower=(deg[keep] - cap).astype(np.float64))
    return b.build()


def canonical_gpus(problem: AffinityProblem, assignment: np.ndarray) -> np.ndarray:
    """``assignment`` (``int64 [L, E]``) with interchangeable GPUs relabelled by first appearance in
    layer 0, what the symmetry bounds of :func:`build_model` demand; unchanged otherwise."""
    if not problem.interchangeable_gpus:
        return assignment
    return relabel_by_first_appearance(assignment, problem.num_gpus, by_first_row=True)


def warm_start(problem: AffinityProblem, model: MilpModel, assignment: np.ndarray) -> np.ndarray:
    """``float64 [num_vars]``: the full column vector of :func:`build_model` for ``assignment``
    (``int64 [L, E]``; pass it through :func:`canonical_gpus` to respect the symmetry bounds)."""
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    v = np.zeros(model.num_vars)
    xb = model.block("x")
    x = np.zeros((L, E, G))
    x[np.arange(L)[:, None], np.arange(E)[None, :], assignment] = 1.0
    v[xb.start:xb.stop] = x.ravel()
    pl, pi, pj, _ = nonzero_pairs(problem)
    for lev, (_, grp) in enumerate(problem.levels):
        yb = model.block(f"y{lev}")
        v[yb.start:yb.stop] = (grp[assignment[pl, pi]] != grp[assignment[pl + 1, pj]]).astype(np.float64)
    return v


def decode(model: MilpModel, solution: np.ndarray) -> np.ndarray:
    """``int64 [L, E]``: the GPU of each expert in a solution vector of :func:`build_model`."""
    return assignment_from_x(model.block_values(solution, "x"))
