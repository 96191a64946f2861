r"""Routing fractions over replicas that minimise a layer's communication time, for a fixed placement (an LP).

What the evaluator's ``split`` replica rule follows (:attr:`placement.Placement.routing`): each sender
GPU ``u`` sends a share ``f[u, p]`` of its selections of expert ``e`` to each physical slot ``p`` that
holds ``e``.  Given the placement of one layer, the expected traffic of a serving step is linear in ``f``,
and so is every link's load; this LP picks ``f`` to minimise the dispatch plus combine time.

Data (one layer)
    ``n[u, e]`` selections of expert ``e`` sent from GPU ``u`` in one step; live slots ``p`` with expert
    ``e_p`` on GPU ``g_p``; ``R[(u, v), a]`` 1 when the route from ``u`` to ``v`` uses arc ``a``;
    ``d[a]``, ``c[a]`` seconds per token over arc ``a`` in dispatch and combine (bytes / bandwidth);
    ``cap[g]`` the selections GPU ``g`` may serve.
Variables
    ``f[u, p] >= 0`` (one per sender and live slot), ``Td, Tc >= 0`` (seconds).
Objective
    ``min Td + Tc``.
Constraints
    ``sum_{p : e_p = e} f[u, p] = 1`` for every sender ``u`` and expert ``e``;
    ``Td >= d[a] sum_{u, p} n[u, e_p] R[(u, g_p), a] f[u, p]`` for every arc (dispatch ``u -> g_p``);
    ``Tc >= c[a] sum_{u, p} n[u, e_p] R[(g_p, u), a] f[u, p]`` (combine ``g_p -> u``);
    ``sum_{u, p : g_p = g} n[u, e_p] f[u, p] <= cap[g]`` (no GPU busier than the cap).

The optimum is exact for the expected flows of the ``split`` rule without de-duplication (the evaluator's
per-leg latency terms are left out); it is a lower bound of the busiest-link time of every other replica
rule on the same placement (each is one feasible ``f``) under the same cap.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..milp import MilpBuilder, MilpModel

__all__ = ["build_split_routing", "routing_table", "solve_split_routing"]


def build_split_routing(slots: np.ndarray, sent: np.ndarray, route: sp.csr_matrix, dispatch_s: np.ndarray,
                        combine_s: np.ndarray, cap: np.ndarray) -> tuple[MilpModel, np.ndarray]:
    """The LP of the module docstring for one layer.

    ``slots int [G, S]`` (``-1`` empty), ``sent float64 [G, E]``, ``route`` ``[G*G, A]``,
    ``dispatch_s``/``combine_s float64 [A]`` seconds per token, ``cap float64 [G]``.  Returns the model
    (blocks ``f [sender, slot]``, ``T [phase]``) and ``live int64 [P_live]``, the flat slot index of
    each column of ``f``.
    """
    G, S = slots.shape
    E = sent.shape[1]
    flat = slots.ravel()
    live = np.flatnonzero(flat >= 0)
    e_p, g_p = flat[live].astype(np.int64), live // S
    n_live = live.size
    b = MilpBuilder(name="split-routing")
    f = b.add_block("f", (G, n_live), ("sender", "slot"), upper=1.0)
    t = b.add_block("T", (2,), ("phase",), cost=1.0)
    u = np.repeat(np.arange(G), n_live)  # sender of each column, flattened [G * n_live]
    ee, gg = np.tile(e_p, G), np.tile(g_p, G)
    cols = f.ravel()
    b.add_rows("assign", G * E, u * E + ee, cols, 1.0, lower=1.0, upper=1.0)
    coef = sent[u, ee]
    for phase, (pair, per_token) in enumerate(((u * G + gg, dispatch_s), (gg * G + u, combine_s))):
        arcs = (sp.diags(coef) @ route[pair]).tocoo()  # [columns, A]: selections of each column over each arc
        keep = arcs.data != 0
        rows, vars_, vals = arcs.col[keep], cols[arcs.row[keep]], arcs.data[keep] * per_token[arcs.col[keep]]
        A = route.shape[1]
        b.add_rows(f"arc_{('dispatch', 'combine')[phase]}", A, np.r_[rows, np.arange(A)],
                   np.r_[vars_, np.full(A, t[phase])], np.r_[vals, -np.ones(A)], upper=0.0)
    b.add_rows("load", G, gg, cols, coef, upper=cap)
    return b.build(), live


def routing_table(f: np.ndarray, live: np.ndarray, slots: np.ndarray, replica_slots: np.ndarray) -> np.ndarray:
    """``float64 [G, E, R]``: the fractions ``f [G, P_live]`` of one layer as :attr:`Placement.routing` rows,
    replicas in ``replica_slots int [E, R]`` order (flat slot ids, ``-1`` padded)."""
    col_of_slot = np.full(slots.size, -1, dtype=np.int64)
    col_of_slot[live] = np.arange(live.size)
    idx = np.where(replica_slots >= 0, col_of_slot[np.maximum(replica_slots, 0)], -1)  # [E, R]
    table = np.where(idx[None] >= 0, f[:, np.maximum(idx, 0)], 0.0)  # [G, E, R]
    table = np.maximum(table, 0.0)
    sums = table.sum(axis=2, keepdims=True)
    return table / np.where(sums > 0, sums, 1.0)


def solve_split_routing(slots: np.ndarray, sent: np.ndarray, topology, dispatch_bytes: int, combine_bytes: int,
                        cap: np.ndarray, replica_slots: np.ndarray, *, backend: str = "highs", run=None,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Solve the LP layer by layer: ``(routing float64 [L, G, E, R], seconds float64 [L])`` (``Td + Tc`` of
    each layer's optimum; ``nan`` for a layer whose LP was skipped, whose routing is then an even split).

    ``slots int [L, G, S]``, ``sent float64 [L, G, E]``, ``cap float64 [L, G]``, ``replica_slots int [L, E, R]``.
    """
    from ._common import run_params, solve_model, solver_params

    L, G, _ = slots.shape
    E, R = replica_slots.shape[1:]
    route = topology.route_matrix.tocsr()
    bw = topology.arc_bandwidth
    even = np.where(replica_slots >= 0, 1.0, 0.0)
    even = even / np.maximum(even.sum(axis=2, keepdims=True), 1.0)
    routing = np.broadcast_to(even[:, None], (L, G, E, R)).copy()
    seconds = np.full(L, np.nan)
    for layer in range(L):
        model, live = build_split_routing(slots[layer], sent[layer], route, dispatch_bytes / bw, combine_bytes / bw,
                                          cap[layer])
        params = run_params(run, rel_gap=1e-9, parts=L - layer) if run is not None else solver_params(rel_gap=1e-9)
        if params is None:
            break
        res = solve_model(model, backend, params, run)
        f = model.block_values(res.solution, "f")
        routing[layer] = routing_table(f, live, slots[layer].ravel(), replica_slots[layer])
        seconds[layer] = float(res.objective)
    return routing, seconds
