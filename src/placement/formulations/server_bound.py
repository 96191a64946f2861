r"""A proven lower bound of one MoE layer's step time at scale: the step model relaxed to servers (a MILP).

``layer-time``'s exact path (:mod:`placement.formulations.step_time`) models every GPU pair; at hundreds of
GPUs a layer's model is too large.  This model keeps what couples the servers -- each expert must live
somewhere, and a server holds at most ``S G_n`` experts -- and relaxes the rest, so its optimum is below the
evaluator's time of *every* placement with at most ``S`` slots per GPU, under *every* replica rule (the
routing may even change from step to step), for transports that send one copy per (token, expert)
(``nccl`` without de-duplication, ``deepep-ll``):

Data (one layer; steps ``s``, servers ``n``; groups ``p`` of servers: the servers themselves, and racks when
racks hold several servers)
    ``c[s, p, e]`` selections of ``e`` sent from group ``p`` in step ``s``; ``G_n`` GPUs of server ``n``;
    ``out[p]``, ``in[p]`` the bandwidth of the arcs leaving and entering what group ``p`` owns
    (:func:`placement.search.bounds.server_cuts`); ``bd``, ``bc`` bytes per token of dispatch and combine;
    ``c0[s]`` the compute bound every placement meets (:mod:`placement.search.bounds`).
Variables
    ``y[e, n]`` binary (server ``n`` holds ``e``); per group ``p`` (racks: ``y_p[e, p] <= sum_{n in p} y[e, n]``,
    ``<= 1``) ``k[s, p, e] >= 0``, the selections of ``e`` sent from ``p`` that stay inside ``p``;
    ``D[s], M[s], C[s]`` (seconds).
Constraints
    ``sum_n y[e, n] >= 1`` (every expert lives somewhere); ``sum_e y[e, n] <= S G_n``;
    ``k[s, p, e] <= c[s, p, e] y_p[e, p]``; the selections leaving ``p`` cross its cut out in dispatch and
    in in combine: ``D[s] >= bd * sum_e (c - k)[s, p, e] / out[p]``, ``M[s] >= bc * sum_e (c - k) / in[p]``;
    ``C[s] >= c0[s]``.
Objective
    ``(1 / steps) sum_s (D + C + M)`` (with overlap ``max(D + M, C)``).

Solved as its LP relaxation (``y`` in ``[0, 1]``; its optimum is a bound too): on DeepSeek-V3 at 64 GPUs
the relaxation takes 0.1 s per layer and the integral model's bound moves by less than 1e-5 relative in
10 s of branch and bound.

Why it is a bound: any placement and routing give a feasible point (``y``: the servers holding each expert;
``k``: what each step kept inside), and the evaluator's busiest arc carries at least the mean load of any
cut its bytes cross, latencies only add, and ``c0`` bounds compute.  The MILP's own proven bound is
therefore a lower bound of the evaluator's step time of every placement.  It is at least the cut bound of
:mod:`placement.search.bounds` (which lets every server keep its ``S G_n`` busiest experts at once) where
the solve ends optimal: here the servers share the experts, each of which needs a home.
"""

from __future__ import annotations

import numpy as np

from ..milp import MilpBuilder, MilpModel
from ._common import power_of_two_near

__all__ = ["build_server_bound"]


def build_server_bound(counts: list[np.ndarray], gpus_per_server: np.ndarray, slots_per_gpu: int,
                       groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]], dispatch_bytes: float,
                       combine_bytes: float, compute_floor: np.ndarray, overlap: bool,
                       integral: bool = False) -> tuple[MilpModel, float]:
    """The model of the module docstring for one layer, and its unit (seconds per model unit).

    ``groups``: per grouping ``(group_of_server int [N], out_bw float64 [P], in_bw float64 [P])`` (bytes/s,
    ``inf`` for a cut no route crosses), the servers themselves first; ``counts``: per grouping ``float64
    [S, P, E]`` selections each group sends; ``gpus_per_server int [N]``; ``compute_floor float64 [S]``.
    """
    S, N, E = counts[0].shape
    size = np.asarray(gpus_per_server, dtype=np.float64)
    finite = [bw[np.isfinite(bw)] for _, out, inn in groups for bw in (out, inn)]
    least_bw = min((float(b.min()) for b in finite if b.size), default=1.0)
    typical = max(dispatch_bytes * counts[0].sum() / max(S, 1) / max(N, 1) / least_bw,
                  float(np.max(compute_floor, initial=0.0)), 1e-12)
    unit = power_of_two_near(typical)
    b = MilpBuilder(name="server-bound")
    y = b.add_block("y", (E, N), ("expert", "server"), integer=integral, upper=1.0)
    cost = 0.0 if overlap else 1.0 / S
    D = b.add_block("D", (S,), ("step",), cost=cost)
    M = b.add_block("M", (S,), ("step",), cost=cost)
    C = b.add_block("C", (S,), ("step",), cost=cost, lower=np.asarray(compute_floor) / unit)
    b.add_row_sums("cover", y, lower=1.0)
    b.add_row_sums("capacity", y.T, upper=slots_per_gpu * size)
    for gi, ((group_of, out_bw, in_bw), c) in enumerate(zip(groups, counts, strict=True)):
        P = int(np.max(group_of)) + 1
        if gi == 0:
            held = y  # [E, N]: the servers themselves
        else:  # a rack holds e when one of its servers does
            held = b.add_block(f"y{gi}", (E, P), ("expert", "group"), upper=1.0)
            rows = np.arange(E)[:, None] * P + group_of[None, :]  # [E, N]
            b.add_rows(f"held{gi}", E * P, np.r_[rows.ravel(), np.arange(E * P)], np.r_[y.ravel(), held.ravel()],
                       np.r_[-np.ones(E * N), np.ones(E * P)], upper=0.0)
        k = b.add_block(f"k{gi}", (S, P, E), ("step", "group", "expert"), upper=np.asarray(c, dtype=np.float64))
        hs = np.broadcast_to(held.T[None], (S, P, E))  # [S, P, E] column of "p holds e"
        n = S * P * E
        b.add_rows(f"inside{gi}", n, np.r_[np.arange(n), np.arange(n)], np.r_[k.ravel(), hs.ravel()],
                   np.r_[np.ones(n), -np.asarray(c, dtype=np.float64).ravel()], upper=0.0)
        sent = np.asarray(c, dtype=np.float64).sum(axis=2)  # [S, P]
        for name, T, per_byte, bw in (("dispatch", D, dispatch_bytes, out_bw), ("combine", M, combine_bytes, in_bw)):
            coef = per_byte / np.asarray(bw, dtype=np.float64) / unit  # [P] seconds per selection leaving p
            ok = coef > 0
            if not ok.any():
                continue
            # T[s] >= coef[p] * (sent[s, p] - sum_e k[s, p, e])  <=>  -coef k - T <= -coef sent
            rows = np.broadcast_to(np.arange(S * P).reshape(S, P, 1), (S, P, E))
            mask = np.broadcast_to(ok[None, :, None], (S, P, E))
            kc = np.broadcast_to(coef[None, :, None], (S, P, E))
            b.add_rows(f"{name}{gi}", S * P, np.r_[rows[mask], np.arange(S * P)],
                       np.r_[k[mask], np.repeat(T, P)], np.r_[-kc[mask], -np.ones(S * P)],
                       upper=np.where(np.broadcast_to(ok[None], (S, P)), -coef[None] * sent, 0.0).ravel())
    if overlap:
        Y = b.add_block("Y", (S,), ("step",), cost=1.0 / S)
        b.add_rows("overlap_comm", S, np.r_[np.arange(S), np.arange(S), np.arange(S)], np.r_[D, M, Y],
                   np.r_[np.ones(2 * S), -np.ones(S)], upper=0.0)
        b.add_rows("overlap_compute", S, np.r_[np.arange(S), np.arange(S)], np.r_[C, Y],
                   np.r_[np.ones(S), -np.ones(S)], upper=0.0)
    return b.build(), unit
