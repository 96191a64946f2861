r"""``layer-time``'s exact path: the serving-step model of one MoE layer as a MILP.

The evaluator's step model (:mod:`placement.evaluation.serving`) written as a mixed-integer program
for one layer, so that a backend proves the optimum (or a bound and gap) of *the evaluator's own
figure*: the decoded placement's :func:`placement.evaluate` step time equals the model's objective
(``tests/test_step_milp.py`` checks it on every instance it solves, and brute-forces optimality).

Data (one layer; the evaluator's serving steps ``s``, senders ``u``, GPUs ``g``, arcs ``a``)
    ``c[s, u, e]`` selections of expert ``e`` sent from GPU ``u`` in step ``s`` (the evaluator's scale
    applied); for de-duplicating transports the tokens themselves (``k`` experts each, sender, step);
    ``R[(u, v), a]`` the route matrix; ``d[a]``, ``m[a]`` seconds per token over arc ``a`` at the
    dispatch and combine dtypes; ``lat[u, v]`` the route's latency; an expert that receives
    ``n > 0`` tokens in a step costs ``max(read, alpha n + beta)`` seconds (:meth:`GpuSpec.expert_time`:
    ``n * flops / (peak * eff * n / (n + half))`` is linear in ``n``), ``h[s, g]`` the shared experts'
    seconds; ``S`` slots per GPU.
Variables
    ``x[e, g]`` binary: a replica of ``e`` on GPU ``g``.  ``routing="split"``: ``r[u, e, g] in [0, 1]``,
    the share of ``u``'s selections of ``e`` served on ``g`` (the ``split`` rule's fractions, one per
    sender and expert for all steps; binary with ``integral``); ``routing="one-copy"``: every expert has
    one replica and ``r[u, e, g] = x[e, g]`` (every replica rule then routes the same way).
    Flows ``F_l[s, u, v]`` of each leg ``l`` of the transport; with de-duplication ``y[t, v]``
    (token ``t`` reaches GPU ``v``) and, for DeepEP, ``z[t, m]`` (it reaches node ``m``); indicators
    ``b_l[s, u, v]`` of pairs that send (latency); per step the busiest arc ``Bd[s]``, ``Bc[s]``, the
    latencies ``Ld[s, l]``, ``Lc[s, l]`` and the slowest GPU ``C[s]``; for split routing the slot
    activity ``act[s, e, g]`` and seconds ``tau[s, e, g]``.
Objective
    ``(1 / steps) sum_s (Bd + sum_l Ld + C + Bc + sum_l Lc)``, or with ``overlap``
    ``(1 / steps) sum_s Y[s]``, ``Y >= Bd + Ld + Bc + Lc``, ``Y >= C``: the evaluator's mean layer time.
Constraints
    ``sum_e x[e, g] <= S``; ``sum_g x[e, g] >= 1`` (``= 1`` for one-copy); ``sum_g r[u, e, g] = 1``,
    ``r <= x``;
    flows: NCCL without de-duplication ``F[s, u, v] = sum_e c[s, u, e] r[u, e, v]``; with it
    ``y[t, v] >= r[u_t, e_tj, v]`` for each of the token's experts and ``F[s, u, v] = sum_t y[t, v]``;
    DeepEP (normal mode) ``z[t, m] >= sum_{g in m} r[u_t, e_tj, g]``, the RDMA leg
    ``F_0[s, u, peer(u, m)] = sum_t z[t, m]`` for ``m`` not ``u``'s node and the NVLink leg
    ``F_1[s, fwd(u, v), v] = sum_t y[t, v]`` (the rail peer forwards; :mod:`placement.evaluation.transports`);
    arcs: ``Bd[s] >= d[a] sum_l sum_{u, v} R[(u, v), a] F_l[s, u, v]``, ``Bc[s] >= m[a] sum_l sum R[(v, u), a] F_l``;
    latency: ``F_l[s, u, v] <= M_l[s, u, v] b_l[s, u, v]`` (``M``: the pair's flow with every share at 1),
    ``Ld[s, l] >= lat[u, v] b_l``, ``Lc[s, l] >= lat[v, u] b_l``;
    compute, one-copy: ``C[s] >= sum_e time(c[s, ., e]) x[e, g] + h[s, g]``; split:
    ``sum_u c[s, u, e] r[u, e, g] <= c[s, ., e] act[s, e, g]`` and (tighter, valid) ``act[s, e, g] >= r[u, e, g]``
    for every sender ``u`` of ``e`` in step ``s``, ``tau >= read act``,
    ``tau >= alpha sum_u c r + beta act``, ``C[s] >= sum_e tau[s, e, g] + h[s, g]``.

Exactness
    One-copy: exact for every replica rule and transport (each rule sends all of ``e``'s selections to its
    one replica).  Split: exact for the ``split`` rule's expected flows under NCCL without de-duplication
    and DeepEP low-latency; with a de-duplicating transport (``nccl`` with ``dedup``, ``deepep``) the
    evaluator's reach probability ``1 - prod (1 - q)`` is not linear in fractional shares, so the routing
    is made integral (each sender sends each expert to one replica: what SGLang's static map does) and
    the model is exact over those routings.  A slot holds one replica (a second copy of an expert on one
    GPU only adds a weight read).  Sizes grow with steps x GPUs^2 and, with de-duplication, tokens x GPUs:
    the model is for small and medium instances (the method refuses above :data:`MAX_NONZEROS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import input_error
from ..milp import MilpBuilder, MilpModel
from ._common import power_of_two_near

__all__ = ["StepInstance", "StepIndex", "build_step_milp", "warm_start", "decode", "MAX_NONZEROS", "ROUTINGS"]

#: Routing modes of the model (module docstring).
ROUTINGS = ("one-copy", "split")
#: The largest model (constraint-matrix entries) the method builds.
MAX_NONZEROS = 4_000_000


@dataclass(frozen=True, eq=False)
class StepInstance:
    """One MoE layer's serving steps, as the evaluator cuts them, and the cluster's figures (arrays).

    Attributes
    ----------
    counts:
        ``float64 [steps, G, E]`` selections of each expert sent from each GPU per step (scaled).
    tokens, token_src, token_step:
        ``int64 [n, k]``, ``[n]``, ``[n]``: each token's experts, sending GPU and step (de-duplicating
        transports need them; ``None`` otherwise).
    token_weight:
        Tokens each trace token stands for (the evaluator's scale, 1 for a trace of whole steps).
    shared:
        ``float64 [steps, G]`` seconds of the shared experts per step and GPU.
    route:
        ``[G*G, A]`` CSR, 1 where the route from ``u`` to ``v`` (row ``u * G + v``) uses arc ``a``.
    dispatch_s, combine_s:
        ``float64 [A]`` seconds per token over each arc at the dispatch and combine dtype.
    latency:
        ``float64 [G, G]`` seconds of each route.
    server_of:
        ``int64 [G]``.
    rail_peer:
        ``int64 [G, servers]``: the GPU of each server with the sender's local index (DeepEP's RDMA target).
    expert_read, expert_per_token, expert_base:
        Seconds: an expert run costs ``max(read, per_token * n + base)`` for ``n > 0`` tokens (0: not modelled).
    slots_per_gpu:
        Slots per GPU.
    transport, dedup, overlap:
        As :class:`placement.evaluation.serving.ServingSetup`.
    """

    counts: np.ndarray
    tokens: np.ndarray | None
    token_src: np.ndarray | None
    token_step: np.ndarray | None
    token_weight: float
    shared: np.ndarray
    route: sp.csr_matrix
    dispatch_s: np.ndarray
    combine_s: np.ndarray
    latency: np.ndarray
    server_of: np.ndarray
    rail_peer: np.ndarray
    expert_read: float
    expert_per_token: float
    expert_base: float
    slots_per_gpu: int
    transport: str
    dedup: bool
    overlap: bool

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(steps, G, E)``."""
        return self.counts.shape  # type: ignore[return-value]

    @property
    def dedups(self) -> bool:
        """Whether the transport sends a token once per GPU or node (not once per selection)."""
        return self.transport == "deepep" or (self.transport == "nccl" and self.dedup)

    def expert_time(self, n: np.ndarray) -> np.ndarray:
        """Seconds of one expert run on ``n`` tokens (0 where ``n`` is 0)."""
        n = np.asarray(n, dtype=np.float64)
        return np.where(n > 0, np.maximum(self.expert_read, self.expert_per_token * n + self.expert_base), 0.0)


@dataclass(frozen=True, eq=False)
class StepIndex:
    """What decodes a solution: the routing mode, the ``(sender, expert)`` pairs of ``r`` and the unit.

    ``pairs int64 [P, 2]`` rows of ``r [P, G]`` (split); ``unit`` seconds per model unit; ``legs`` the
    flow legs' ``(source column, F column, coefficient)`` triplets (warm starts recompute the flows).
    """

    routing: str
    integral: bool
    pairs: np.ndarray
    unit: float
    legs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def build_step_milp(inst: StepInstance, routing: str = "split") -> tuple[MilpModel, StepIndex]:
    """The MILP of the module docstring for one layer; ``routing`` one of :data:`ROUTINGS`."""
    if routing not in ROUTINGS:
        raise input_error(f"unknown routing {routing!r}; choose one of {list(ROUTINGS)}", field="routing")
    S, G, E = inst.shape
    counts = np.asarray(inst.counts, dtype=np.float64)
    Sg = int(inst.slots_per_gpu)
    integral = routing == "split" and inst.dedups
    route = inst.route.tocoo()
    A = inst.route.shape[1]
    tot = counts.sum(axis=1)  # [S, E]
    # the model's unit of time: numbers near 1 for the solver (a power of two: exact scaling)
    sel = counts.sum(axis=(1, 2)).mean() if counts.size else 1.0
    typical = max(float(inst.dispatch_s.max(initial=0.0)) * sel / max(G, 1), inst.expert_read,
                  float(inst.latency.max(initial=0.0)), float(inst.expert_time(tot.max(initial=0.0)).max(initial=0.0)))
    unit = power_of_two_near(typical)
    b = MilpBuilder(name=f"step-time-{routing}")
    x = b.add_block("x", (E, G), ("expert", "gpu"), integer=True, upper=1.0)
    b.add_row_sums("slots", x.T, upper=Sg)
    if routing == "one-copy":
        b.add_row_sums("one_copy", x, lower=1.0, upper=1.0)
        pairs = np.zeros((0, 2), dtype=np.int64)
        pid = None
    else:
        b.add_row_sums("replicated", x, lower=1.0)
        demand = counts.sum(axis=0)  # [G, E]
        pairs = np.argwhere(demand > 0).astype(np.int64)
        pid = np.full((G, E), -1, dtype=np.int64)
        pid[pairs[:, 0], pairs[:, 1]] = np.arange(len(pairs))
        r = b.add_block("r", (len(pairs), G), ("pair", "gpu"), integer=integral, upper=1.0)
        b.add_row_sums("route_all", r, lower=1.0, upper=1.0)
        P = len(pairs)
        if P:
            b.add_rows("route_held", P * G, np.r_[np.arange(P * G), np.arange(P * G)],
                       np.r_[r.ravel(), x[pairs[:, 1]].ravel()], np.r_[np.ones(P * G), -np.ones(P * G)], upper=0.0)

    def choice(u: np.ndarray, e: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Column of "u's selections of e are served on g" (same shapes)."""
        if pid is None:
            return x[e, g]
        return r[pid[u, e], g]

    # ------------------------------------------------------------------ flows per leg: F_l[s, u, v]
    # each leg is given as triplets (F position s*G*G + u*G + v, source column, coefficient)
    off = ~np.eye(G, dtype=bool)
    leg_triplets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    w = float(inst.token_weight)
    if not inst.dedups:
        s_, u_, e_ = np.nonzero(counts)
        v_ = np.arange(G)
        keep = off[u_[:, None], v_[None, :]]  # [nnz, G]
        ss, uu, ee = (np.broadcast_to(a[:, None], keep.shape)[keep] for a in (s_, u_, e_))
        vv = np.broadcast_to(v_[None, :], keep.shape)[keep]
        leg_triplets.append(((ss * G + uu) * G + vv, choice(uu, ee, vv), counts[ss, uu, ee]))
    else:
        tok = np.asarray(inst.tokens, dtype=np.int64)
        src = np.asarray(inst.token_src, dtype=np.int64)
        stp = np.asarray(inst.token_step, dtype=np.int64)
        n, k = tok.shape
        node = np.asarray(inst.server_of, dtype=np.int64)
        if inst.transport == "nccl":
            reach = off[src]  # [n, G]: y[t, v] for v not the sender
            fwd = np.broadcast_to(src[:, None], (n, G))
        else:
            peer = np.asarray(inst.rail_peer, dtype=np.int64)  # [G, M]
            fwd = peer[src][:, node]  # [n, G]
            fwd = np.where(node[None, :] == node[src][:, None], src[:, None], fwd)
            reach = fwd != np.arange(G)[None, :]
        t_i, v_i = np.nonzero(reach)
        y = b.add_block("y", (len(t_i),), ("token_gpu",), upper=1.0)
        # y >= choice(u_t, e_tj, v) for every expert j of the token
        tj = np.repeat(np.arange(len(t_i)), k)
        cols = choice(src[t_i][tj], tok[t_i].ravel(), v_i[tj])
        b.add_rows("reach_gpu", len(tj), np.r_[np.arange(len(tj)), np.arange(len(tj))], np.r_[cols, y[tj]],
                   np.r_[np.ones(len(tj)), -np.ones(len(tj))], upper=0.0)
        if inst.transport == "nccl":
            leg_triplets.append(((stp[t_i] * G + src[t_i]) * G + v_i, y, np.full(len(t_i), w)))
        else:
            M = int(node.max()) + 1
            remote = np.arange(M)[None, :] != node[src][:, None]  # [n, M]
            tz, mz = np.nonzero(remote)
            z = b.add_block("z", (len(tz),), ("token_node",), upper=1.0)
            members = [np.flatnonzero(node == m) for m in range(M)]
            rows, cols_, vals = [], [], []
            for j in range(k):  # z >= sum_{g in m} choice(u_t, e_tj, g): one row per (token, node, j)
                base = j * len(tz)
                for m in range(M):
                    sel = np.flatnonzero(mz == m)
                    gm = members[m]
                    if not sel.size:
                        continue
                    rr = np.repeat(base + sel, gm.size)
                    cc = choice(np.repeat(src[tz[sel]], gm.size), np.repeat(tok[tz[sel], j], gm.size),
                                np.tile(gm, sel.size))
                    rows += [rr, base + sel]
                    cols_ += [cc, z[sel]]
                    vals += [np.ones(rr.size), -np.ones(sel.size)]
            b.add_rows("reach_node", k * len(tz), np.concatenate(rows), np.concatenate(cols_),
                       np.concatenate(vals), upper=0.0)
            leg_triplets.append(((stp[tz] * G + src[tz]) * G + peer[src[tz], mz], z, np.full(len(tz), w)))
            leg_triplets.append(((stp[t_i] * G + fwd[t_i, v_i]) * G + v_i, y, np.full(len(t_i), w)))
    nlegs = len(leg_triplets)
    F = b.add_block("F", (nlegs, S, G, G), ("leg", "step", "from", "to"))
    for leg, (pos, col, coef) in enumerate(leg_triplets):
        Fl = F[leg].ravel()
        used = np.unique(pos)
        b.add_rows(f"flow{leg}", used.size, np.r_[np.searchsorted(used, pos), np.arange(used.size)],
                   np.r_[col, Fl[used]], np.r_[-coef, np.ones(used.size)], lower=0.0, upper=0.0)
        unused = np.setdiff1d(np.arange(S * G * G), used)
        b.add_rows(f"noflow{leg}", unused.size, np.arange(unused.size), Fl[unused], 1.0, upper=0.0)
    # ------------------------------------------------------------------ arcs and latency
    Bd = b.add_block("Bd", (S,), ("step",), cost=1.0 / S if not inst.overlap else 0.0)
    Bc = b.add_block("Bc", (S,), ("step",), cost=1.0 / S if not inst.overlap else 0.0)
    Ld = b.add_block("Ld", (S, nlegs), ("step", "leg"), cost=1.0 / S if not inst.overlap else 0.0)
    Lc = b.add_block("Lc", (S, nlegs), ("step", "leg"), cost=1.0 / S if not inst.overlap else 0.0)
    pair, arc, val = route.row.astype(np.int64), route.col.astype(np.int64), route.data
    pu, pv = pair // G, pair % G
    if A:
        for phase, (busy, per_tok, rev) in enumerate(((Bd, inst.dispatch_s, False), (Bc, inst.combine_s, True))):
            rows, cols, vals = [], [], []
            for leg in range(nlegs):
                fpair = (pv * G + pu) if rev else pair  # combine: the route of (v, u) carries F[u, v]
                for s in range(S):
                    rows.append(s * A + arc)
                    cols.append(F[leg, s].ravel()[fpair])
                    vals.append(val * per_tok[arc] / unit)
            rows.append(np.arange(S * A))
            cols.append(np.repeat(busy, A))
            vals.append(-np.ones(S * A))
            b.add_rows(("arcs_dispatch", "arcs_combine")[phase], S * A, np.concatenate(rows), np.concatenate(cols),
                       np.concatenate(vals), upper=0.0)
    lat = np.asarray(inst.latency, dtype=np.float64) / unit
    sends = off & ((lat > 0) | (lat.T > 0))
    su, sv = np.nonzero(sends)
    if su.size:
        ind = b.add_block("b", (nlegs, S, su.size), ("leg", "step", "pair"), integer=True, upper=1.0)
        for leg in range(nlegs):
            pos, _, coef = leg_triplets[leg]
            # the most a pair can carry: every source column of its flow at its upper bound, 1 (a tight big-M)
            most = np.bincount(pos, weights=coef, minlength=S * G * G).reshape(S, G, G)
            for s in range(S):
                fcol = F[leg, s][su, sv]
                m = su.size
                b.add_rows(f"sends{leg}_{s}", m, np.r_[np.arange(m), np.arange(m)], np.r_[fcol, ind[leg, s]],
                           np.r_[np.ones(m), -most[s][su, sv]], upper=0.0)
                for name, L_, lv in (("lat_d", Ld, lat[su, sv]), ("lat_c", Lc, lat[sv, su])):
                    b.add_rows(f"{name}{leg}_{s}", m, np.r_[np.arange(m), np.arange(m)],
                               np.r_[ind[leg, s], np.full(m, L_[s, leg])], np.r_[lv, -np.ones(m)], upper=0.0)
    # ------------------------------------------------------------------ compute
    C = b.add_block("C", (S,), ("step",), cost=1.0 / S if not inst.overlap else 0.0)
    shared = np.asarray(inst.shared, dtype=np.float64) / unit  # [S, G]
    modelled = inst.expert_read > 0 or inst.expert_per_token > 0
    if not modelled:
        b.add_rows("compute", S * G, np.arange(S * G), np.repeat(C, G), -1.0, upper=-shared.ravel())
    elif routing == "one-copy":
        cost = inst.expert_time(tot) / unit  # [S, E]
        s_, e_ = np.nonzero(cost)
        rows = (s_[:, None] * G + np.arange(G)[None, :]).ravel()
        cols = x[e_][:, :].ravel() if s_.size else np.zeros(0, dtype=np.int64)
        vals = np.repeat(cost[s_, e_], G)
        b.add_rows("compute", S * G, np.r_[rows, np.arange(S * G)], np.r_[cols, np.repeat(C, G)],
                   np.r_[vals, -np.ones(S * G)], upper=-shared.ravel())
    else:
        act = b.add_block("act", (S, E, G), ("step", "expert", "gpu"), integer=True, upper=1.0)
        tau = b.add_block("tau", (S, E, G), ("step", "expert", "gpu"))
        # tokens of slot (e, g) in step s: sum_u c[s, u, e] r[u, e, g]
        s_, u_, e_ = np.nonzero(counts)
        g_ = np.arange(G)
        ss, uu, ee = (np.repeat(a, G) for a in (s_, u_, e_))
        gg = np.tile(g_, s_.size)
        slot_row = (ss * E + ee) * G + gg
        rcol = choice(uu, ee, gg)
        cval = counts[ss, uu, ee]
        n_rows = S * E * G
        b.add_rows("active", n_rows, np.r_[slot_row, np.arange(n_rows)], np.r_[rcol, act.ravel()],
                   np.r_[cval, -np.repeat(tot.ravel(), G)], upper=0.0)
        # tighter: a slot any sender routes a share to is active at least that share (valid, cuts the relaxation)
        m_ = slot_row.size
        b.add_rows("active_share", m_, np.r_[np.arange(m_), np.arange(m_)], np.r_[rcol, act.ravel()[slot_row]],
                   np.r_[np.ones(m_), -np.ones(m_)], upper=0.0)
        b.add_rows("read", n_rows, np.r_[np.arange(n_rows), np.arange(n_rows)], np.r_[act.ravel(), tau.ravel()],
                   np.r_[np.full(n_rows, inst.expert_read / unit), -np.ones(n_rows)], upper=0.0)
        b.add_rows("flops", n_rows, np.r_[slot_row, np.arange(n_rows), np.arange(n_rows)],
                   np.r_[rcol, act.ravel(), tau.ravel()],
                   np.r_[cval * inst.expert_per_token / unit, np.full(n_rows, inst.expert_base / unit),
                         -np.ones(n_rows)], upper=0.0)
        # C[s] >= sum_e tau[s, e, g] + h[s, g]
        rows = np.broadcast_to((np.arange(S)[:, None, None] * G + np.arange(G)[None, None, :]), (S, E, G)).ravel()
        b.add_rows("compute", S * G, np.r_[rows, np.arange(S * G)], np.r_[tau.ravel(), np.repeat(C, G)],
                   np.r_[np.ones(n_rows), -np.ones(S * G)], upper=-shared.ravel())
    if inst.overlap:
        Y = b.add_block("Y", (S,), ("step",), cost=1.0 / S)
        comm = [Bd, Bc] + [Ld[:, leg] for leg in range(nlegs)] + [Lc[:, leg] for leg in range(nlegs)]
        rows = np.concatenate([np.arange(S)] * (len(comm) + 1))
        b.add_rows("overlap_comm", S, rows, np.concatenate(comm + [Y]),
                   np.r_[np.ones(S * len(comm)), -np.ones(S)], upper=0.0)
        b.add_rows("overlap_compute", S, np.r_[np.arange(S), np.arange(S)], np.r_[C, Y],
                   np.r_[np.ones(S), -np.ones(S)], upper=0.0)
    model = b.build()
    return model, StepIndex(routing=routing, integral=integral, pairs=pairs, unit=unit, legs=leg_triplets)


def decode(model: MilpModel, solution: np.ndarray, index: StepIndex) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x bool [E, G], r float64 [P, G] or None)`` of a solution (``r`` rounded when integral)."""
    x = np.rint(model.block_values(solution, "x")) > 0.5
    if index.routing == "one-copy":
        return x, None
    r = np.clip(model.block_values(solution, "r"), 0.0, 1.0) * x[index.pairs[:, 1]]
    if index.integral:
        r = (r == r.max(axis=1, keepdims=True)).astype(np.float64)
        r = r * (np.cumsum(r, axis=1) == 1)  # one replica (the first of ties)
    sums = r.sum(axis=1, keepdims=True)
    return x, r / np.where(sums > 0, sums, 1.0)


def warm_start(model: MilpModel, index: StepIndex, inst: StepInstance, x: np.ndarray,
               r: np.ndarray | None = None) -> np.ndarray:
    """``float64 [columns]``: the feasible point of ``model`` for placement ``x bool [E, G]`` (and routing
    ``r [P, G]``, shares over ``x``'s replicas, for split), every other column at its least value; its
    objective is the evaluator's layer time of that placement (divided by ``index.unit``)."""
    S, G, E = inst.shape
    vals = np.zeros(model.num_vars)
    names = {blk.name for blk in model.blocks}

    def put(name: str, value: np.ndarray) -> None:
        blk = model.block(name)
        vals[blk.start:blk.stop] = np.asarray(value, dtype=np.float64).reshape(-1)

    put("x", x)
    if index.routing == "split":
        if r is None:
            raise input_error("split routing needs the routing shares r", field="r")
        put("r", r)
    # derived columns in dependency order: y and z (ORs over the token's experts), then flows
    rows_of = {blk.name: blk for blk in model.row_blocks}
    for name, family in (("y", "reach_gpu"), ("z", "reach_node")):
        if name not in names:
            continue
        fam, blk = rows_of[family], model.block(name)
        A_rows = model.A.tocsr()[fam.start:fam.stop]  # each row: sum of choice columns - (y or z) <= 0
        lhs = A_rows[:, :blk.start] @ vals[:blk.start]
        own = A_rows[:, blk.start:blk.stop].tocsr()
        value = np.zeros(blk.size)
        np.maximum.at(value, own.indices, np.clip(lhs, 0.0, 1.0))  # one own column per row
        vals[blk.start:blk.stop] = value
    Fblk = model.block("F")
    F = np.zeros(Fblk.stop - Fblk.start)
    per_leg = S * G * G
    for leg, (pos, col, coef) in enumerate(index.legs):
        F[leg * per_leg:(leg + 1) * per_leg] = np.bincount(pos, weights=coef * vals[col], minlength=per_leg)
    vals[Fblk.start:Fblk.stop] = F
    nlegs = len(index.legs)
    Fr = F.reshape(nlegs, S, G, G)
    unit = index.unit
    A = inst.route.shape[1]
    if A:
        for name, per_tok, rev in (("Bd", inst.dispatch_s, False), ("Bc", inst.combine_s, True)):
            flows = Fr.sum(axis=0)  # [S, G, G]
            flat = (np.transpose(flows, (0, 2, 1)) if rev else flows).reshape(S, G * G)
            busy = (inst.route.T @ flat.T).T * per_tok[None, :] / unit
            put(name, busy.max(axis=1))
    lat = np.asarray(inst.latency, dtype=np.float64) / unit
    off = ~np.eye(G, dtype=bool)
    sends = off & ((lat > 0) | (lat.T > 0))
    su, sv = np.nonzero(sends)
    if su.size:
        on = Fr[:, :, su, sv] > 0  # [legs, S, pairs]
        put("b", on)
        put("Ld", np.transpose(np.where(on, lat[su, sv], 0.0).max(axis=2, initial=0.0)))
        put("Lc", np.transpose(np.where(on, lat[sv, su], 0.0).max(axis=2, initial=0.0)))
    shared = np.asarray(inst.shared, dtype=np.float64)
    counts = inst.counts
    if index.routing == "one-copy":
        tokens = counts.sum(axis=1)[:, :, None] * x[None].astype(np.float64)  # [S, E, G]
    else:
        share = np.zeros((G, E, G))
        share[index.pairs[:, 0], index.pairs[:, 1]] = r
        tokens = np.einsum("sue,ueg->seg", counts, share)
    run = inst.expert_time(tokens)  # [S, E, G]
    if "act" in names:
        put("act", tokens > 0)
        put("tau", run / unit)
    comp = (run.sum(axis=1) + shared).max(axis=1) / unit
    put("C", comp)
    if "Y" in names:
        comm = (model.block_values(vals, "Bd") + model.block_values(vals, "Bc")
                + model.block_values(vals, "Ld").sum(axis=1) + model.block_values(vals, "Lc").sum(axis=1))
        put("Y", np.maximum(comm, comp))
    return vals
