"""What the runtime will send, decided in numpy before any tensor moves (no torch here).

Everything in this module is deterministic and identical on every rank, so each rank can
compute its own share of a collective (and the split sizes it should receive) without
asking the others.  The routing rule is the evaluator's: :func:`placement.evaluation.routing.route_layer`
over :func:`placement.evaluation.routing.replica_tables`, so the bytes the runtime moves are the bytes
:func:`placement.evaluate` predicts.

Shapes are written in brackets: ``N`` local tokens, ``k`` experts per token, ``G`` GPUs
(= ranks), ``L`` layers, ``E`` experts per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placement.errors import input_error
from placement.evaluation.routing import first_of_each, route_layer
from placement.placement import Placement
from placement.trace._trace import Trace

__all__ = ["DispatchPlan", "plan_dispatch", "first_of_each", "token_ranks", "MovePlan", "plan_moves",
           "expert_seed", "ORIGIN_RULES"]

ORIGIN_RULES = ("round_robin", "trace")


@dataclass(frozen=True, eq=False)
class DispatchPlan:
    """The rows one rank sends in one layer's dispatch, in send order (grouped by destination).

    Attributes
    ----------
    dest:
        ``int64 [N, k]`` GPU of the replica each selection uses (the evaluator's rule).
    row_token:
        ``int64 [rows]`` local token index of each row sent.
    row_dest:
        ``int64 [rows]`` destination rank of each row (non-decreasing).
    row_experts:
        ``int64 [rows, k]`` the experts the destination runs on the row (``-1`` = not this row's).
    row_gates:
        ``float64 [rows, k]`` their gate weights (0 where ``row_experts`` is ``-1``).
    send_counts:
        ``int64 [G]`` rows sent to each rank (the ``input_split_sizes``).
    """

    dest: np.ndarray
    row_token: np.ndarray
    row_dest: np.ndarray
    row_experts: np.ndarray
    row_gates: np.ndarray
    send_counts: np.ndarray


def plan_dispatch(experts: np.ndarray, gates: np.ndarray, src: int, tied: np.ndarray, ntied: np.ndarray,
                  num_gpus: int, dedup: bool) -> DispatchPlan:
    """Rows to send for one layer from GPU ``src``.

    Parameters
    ----------
    experts:
        ``int [N, k]`` the layer's top-k expert ids of this rank's tokens, in global token order.
    gates:
        ``float [N, k]`` their gate weights.
    src:
        The sending GPU (this rank).
    tied, ntied:
        One layer of :func:`placement.evaluation.routing.replica_tables`.
    num_gpus:
        World size ``G``.
    dedup:
        One row per distinct destination of a token (it carries every selection on that GPU)
        instead of one row per selection.
    """
    experts = np.asarray(experts, dtype=np.int64)
    gates = np.asarray(gates, dtype=np.float64)
    N, k = experts.shape
    dest = route_layer(experts, np.full(N, src, dtype=np.int64), tied, ntied)
    if dedup:
        keep = first_of_each(dest)
        tok, sel = np.nonzero(keep)
        covered = dest[tok][:, :] == dest[tok, sel][:, None]  # [rows, k] selections served by the row
    else:
        tok, sel = np.nonzero(np.ones((N, k), dtype=bool))
        covered = np.zeros((tok.size, k), dtype=bool)
        covered[np.arange(tok.size), sel] = True
    row_dest = dest[tok, sel]
    order = np.argsort(row_dest, kind="stable")  # grouped by destination, token order inside
    tok, row_dest, covered = tok[order], row_dest[order], covered[order]
    row_experts = np.where(covered, experts[tok], -1)
    row_gates = np.where(covered, gates[tok], 0.0)
    send_counts = np.bincount(row_dest, minlength=num_gpus).astype(np.int64)
    return DispatchPlan(dest=dest, row_token=tok.astype(np.int64), row_dest=row_dest.astype(np.int64),
                        row_experts=row_experts, row_gates=row_gates, send_counts=send_counts)


def token_ranks(trace: Trace, world: int, origins: str = "round_robin") -> np.ndarray:
    """``int64 [tokens]``: the rank each trace token starts on (the evaluator's ``origins`` rule).

    ``"round_robin"``: token ``t`` on rank ``t mod world``; ``"trace"``: the trace's origin rank
    (needs ``trace.num_ranks == world``).
    """
    N = trace.num_tokens
    if origins == "round_robin":
        return np.arange(N, dtype=np.int64) % world
    if origins == "trace":
        if trace.origin is None:
            raise input_error("the trace has no origin ranks; use origins='round_robin'", trace.source,
                              "origin")
        if trace.num_ranks != world:
            raise input_error(f"the trace's origins are ranks of a {trace.num_ranks}-rank run but the world "
                              f"has {world} ranks; use origins='round_robin'", trace.source, "origin")
        return trace.origin.astype(np.int64)
    raise input_error(f"unknown origins rule {origins!r}; the runtime replays {list(ORIGIN_RULES)}",
                      field="origins")


def expert_seed(seed: int, layer: int, expert: int) -> int:
    """A 63-bit seed for the weights of ``(layer, expert)``, the same on every rank and process.

    >>> expert_seed(0, 1, 2) == expert_seed(0, 1, 2) != expert_seed(0, 2, 1)
    True
    """
    state = np.random.SeedSequence([int(seed), int(layer), int(expert)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


@dataclass(frozen=True, eq=False)
class MovePlan:
    """Expert copies to move when switching from one placement to another.

    Attributes
    ----------
    layer, expert, src, dst:
        ``int64 [moves]`` one row per (layer, expert) copy ``dst`` needs and does not hold,
        fetched from ``src`` (an old holder, nearest to ``dst``); sorted by (src, dst, layer, expert).
    kept:
        ``int64 [L, G, E]`` bool-like: 1 where the rank already holds the expert and keeps it.
    """

    layer: np.ndarray
    expert: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    kept: np.ndarray

    @property
    def num_moves(self) -> int:
        return int(self.layer.size)

    def count_matrix(self, num_gpus: int) -> np.ndarray:
        """``int64 [G, G]`` expert copies sent from GPU u to GPU v."""
        m = np.zeros((num_gpus, num_gpus), dtype=np.int64)
        np.add.at(m, (self.src, self.dst), 1)
        return m


def plan_moves(old: Placement, new: Placement, distance: np.ndarray | None = None) -> MovePlan:
    """Which copies move, and from where, to go from ``old`` to ``new``.

    A GPU that holds ``(layer, expert)`` in both keeps it; otherwise it fetches the expert
    from the old holder with the smallest ``distance[src, dst]`` (``float [G, G]``, e.g.
    ``topology.hops``; lowest GPU id on ties or when ``distance`` is ``None``).

    >>> from placement.baselines.simple import contiguous, round_robin
    >>> p = plan_moves(contiguous(1, 4, 2), round_robin(1, 4, 2))
    >>> list(zip(p.expert.tolist(), p.src.tolist(), p.dst.tolist()))
    [(1, 0, 1), (2, 1, 0)]
    """
    if old.slots.shape[:2] != new.slots.shape[:2] or old.num_experts != new.num_experts:
        raise input_error(f"the placements differ in shape: {old.num_layers} layers x {old.num_gpus} GPUs "
                          f"x {old.num_experts} experts vs {new.num_layers} x {new.num_gpus} x "
                          f"{new.num_experts}", field="placement")
    G = old.num_gpus
    have = old.replica_counts() > 0  # [L, E, G]
    need = new.replica_counts() > 0
    d = np.zeros((G, G)) if distance is None else np.asarray(distance, dtype=np.float64)
    lay, exp, dst = np.nonzero(need & ~have)
    # nearest old holder: inf where the GPU does not hold it; argmin takes the lowest id on ties
    cost = np.where(have[lay, exp], d[:, dst].T, np.inf)  # [moves, G(src)]
    src = np.argmin(cost, axis=1)
    order = np.lexsort((exp, lay, dst, src))
    kept = np.transpose(have & need, (0, 2, 1)).astype(np.int64)
    return MovePlan(layer=lay[order].astype(np.int64), expert=exp[order].astype(np.int64),
                    src=src[order].astype(np.int64), dst=dst[order].astype(np.int64), kept=kept)
