"""What the runtime will send, decided in numpy before any tensor moves (no torch here).

Everything in this module is deterministic and identical on every rank, so each rank can
compute its own share of a collective (and the split sizes it should receive) without
asking the others.  The replica rule is the evaluator's: :class:`Router` calls
``REPLICA_RULES[name].route`` of :mod:`placement.evaluation.replica_rules` and turns its candidate
slots into GPUs with :func:`placement.evaluation.transports.destination_probability`, so the bytes
the runtime moves are the bytes :func:`placement.evaluate` predicts.

A rule sees one serving step of the tokens one GPU sends (the token's *local index* is its
position in that batch), so a rank routes its own tokens, in global token order, with
``src = rank``; the evaluator routes every GPU's batch in one call and gets the same choices.
Rules that pick at random (``sglang-dynamic``, ``split``) give a selection several candidate
GPUs; :meth:`Router.route` draws one from the rule's probabilities with a generator keyed by
``(seed, layer, step, sender)``, so every rank and the check draw the same numbers.

Shapes are written in brackets: ``N`` local tokens, ``k`` experts per token, ``G`` GPUs
(= ranks), ``L`` layers, ``E`` experts per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placement.errors import input_error
from placement.evaluation.replica_rules import REPLICA_RULES, ReplicaRule, RoutingContext, get_rule
from placement.evaluation.routing import first_of_each
from placement.evaluation.transports import TRANSPORTS, destination_probability, rail_peer
from placement.placement import Placement
from placement.topology import Topology
from placement.trace._trace import Trace

__all__ = ["DispatchPlan", "plan_dispatch", "first_of_each", "token_ranks", "MovePlan", "plan_moves",
           "expert_seed", "ORIGIN_RULES", "Router", "RUNTIME_TRANSPORTS", "check_transport", "rdma_targets",
           "REPLICA_RULES", "TRANSPORTS", "rail_peer"]

ORIGIN_RULES = ("round_robin", "trace")
#: Transports the runtime replays (every one of the evaluator's :data:`TRANSPORTS`) and their legs (all-to-alls
#: per phase, in the order of ``TRANSPORTS[name].legs``): ``nccl`` one all-to-all (``dedup`` applies),
#: ``deepep-ll`` one all-to-all of (token, expert) rows, ``deepep`` two (the RDMA leg to the rail peer in each
#: destination node, then the NVLink leg inside the node).
RUNTIME_TRANSPORTS = {"nccl": 1, "deepep": 2, "deepep-ll": 1}
#: A selection whose most likely GPU has at least this probability is deterministic (no draw is used).
_SURE = 1.0 - 1e-9
_DRAW_TAG = 0x5E1EC7


def check_transport(transport: str, dedup: bool) -> None:
    """Refuse a transport the runtime cannot replay, or ``dedup`` where the transport fixes it."""
    if transport not in RUNTIME_TRANSPORTS:
        raise input_error(f"unknown transport {transport!r}; the runtime replays {list(RUNTIME_TRANSPORTS)}",
                          field="transport")
    if dedup and transport != "nccl":
        raise input_error(f"de-duplication is a choice of the 'nccl' transport only; {transport!r} fixes it "
                          "(deepep sends once per node and GPU, deepep-ll once per expert): drop dedup",
                          field="dedup")


@dataclass(frozen=True, eq=False)
class Router:
    """The evaluator's replica rule ``replica`` for one placement on one topology.

    Attributes
    ----------
    rule:
        ``REPLICA_RULES[replica]`` (the evaluator's object, not a copy).
    ctx:
        Its :class:`~placement.evaluation.replica_rules.RoutingContext`.
    seed:
        Seed of the draws of random rules.
    """

    rule: ReplicaRule
    ctx: RoutingContext
    seed: int = 0

    @classmethod
    def build(cls, placement: Placement, topology: Topology, replica: str = "nearest", seed: int = 0) -> Router:
        """The router of ``replica``; the rule's own input errors (``split`` without routing fractions)
        surface here, before any tensor moves."""
        rule = get_rule(replica)
        ctx = RoutingContext.build(placement, topology)
        none = np.zeros(0, dtype=np.int64)
        rule.route(ctx, 0, np.zeros((0, 1), dtype=np.int64), none, none)  # probe: raises the rule's refusals
        return cls(rule, ctx, int(seed))

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def num_gpus(self) -> int:
        return self.ctx.topology.num_gpus

    def probabilities(self, layer: int, experts: np.ndarray, src: np.ndarray, step: np.ndarray) -> np.ndarray:
        """``float64 [n, k, G]``: the probability the rule serves each selection on each GPU.

        ``experts int [n, k]`` of layer ``layer``, ``src int [n]`` sending GPU, ``step int [n]`` serving step.
        """
        experts = np.asarray(experts, dtype=np.int64)
        slots, weights = self.rule.route(self.ctx, int(layer), experts, np.asarray(src, dtype=np.int64),
                                         np.asarray(step, dtype=np.int64))
        return destination_probability(slots, weights, self.ctx.slots_per_gpu, self.num_gpus)

    def route(self, layer: int, experts: np.ndarray, src: np.ndarray,
              step: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(dest int64 [n, k], q float64 [n, k, G])``: the GPU serving each selection, and the rule's
        probabilities it was drawn from.

        A selection with one possible GPU takes it; any other is drawn from ``q`` by inverse CDF with a
        uniform number from the generator of its batch ``(seed, layer, step, src)`` (one ``[tokens, k]``
        block per batch, tokens in the order given), independently across selections, as the
        evaluator's expectation assumes.
        """
        experts = np.asarray(experts, dtype=np.int64)
        src = np.asarray(src, dtype=np.int64)
        step = np.zeros(src.shape, dtype=np.int64) if step is None else np.asarray(step, dtype=np.int64)
        q = self.probabilities(layer, experts, src, step)
        dest = np.argmax(q, axis=2).astype(np.int64)
        drawn = q.max(axis=2) < _SURE
        if drawn.any():
            u = np.empty(experts.shape)
            batch = step * self.num_gpus + src
            for b in np.unique(batch):
                rows = np.flatnonzero(batch == b)
                s, g = divmod(int(b), self.num_gpus)
                rng = np.random.default_rng(np.random.SeedSequence([_DRAW_TAG, self.seed, int(layer), s, g]))
                u[rows] = rng.random((rows.size, experts.shape[1]))
            cdf = np.cumsum(q, axis=2)
            pick = (cdf <= u[..., None]).sum(axis=2)
            last = q.shape[2] - 1 - np.argmax(q[..., ::-1] > 0, axis=2)  # rounding: never past the last candidate
            dest = np.where(drawn, np.minimum(pick, last), dest)
        return dest, q


@dataclass(frozen=True, eq=False)
class DispatchPlan:
    """The rows one rank sends in one all-to-all, in send order (grouped by destination).

    Attributes
    ----------
    dest:
        ``int64 [N, k]`` destination rank of each selection (``-1``: not sent in this all-to-all).
    row_token:
        ``int64 [rows]`` local token (item) index of each row sent.
    row_dest:
        ``int64 [rows]`` destination rank of each row (non-decreasing).
    row_experts:
        ``int64 [rows, k]`` the experts the destination runs on the row (``-1`` = not this row's).
    row_gates:
        ``float64 [rows, k]`` their gate weights (0 where ``row_experts`` is ``-1``).
    covered:
        ``bool [rows, k]`` which of the token's selections the row carries.
    send_counts:
        ``int64 [G]`` rows sent to each rank (the ``input_split_sizes``).
    """

    dest: np.ndarray
    row_token: np.ndarray
    row_dest: np.ndarray
    row_experts: np.ndarray
    row_gates: np.ndarray
    covered: np.ndarray
    send_counts: np.ndarray


def plan_dispatch(experts: np.ndarray, gates: np.ndarray, dest: np.ndarray, num_gpus: int,
                  dedup: bool) -> DispatchPlan:
    """Rows to send in one all-to-all.

    Parameters
    ----------
    experts:
        ``int [N, k]`` the top-k expert ids of this rank's tokens (or forwarded items), in order.
    gates:
        ``float [N, k]`` their gate weights.
    dest:
        ``int [N, k]`` the rank each selection goes to in this all-to-all (:meth:`Router.route`),
        ``-1`` for selections it does not carry.
    num_gpus:
        World size ``G``.
    dedup:
        One row per distinct destination of a token (it carries every selection on that GPU)
        instead of one row per selection (the evaluator's :func:`first_of_each` rule).
    """
    experts = np.asarray(experts, dtype=np.int64)
    gates = np.asarray(gates, dtype=np.float64)
    dest = np.asarray(dest, dtype=np.int64)
    N, k = experts.shape
    live = dest >= 0
    if dedup:
        tok, sel = np.nonzero(first_of_each(dest) & live)
        covered = (dest[tok] == dest[tok, sel][:, None]) & live[tok]  # [rows, k] selections served by the row
    else:
        tok, sel = np.nonzero(live)
        covered = np.zeros((tok.size, k), dtype=bool)
        covered[np.arange(tok.size), sel] = True
    row_dest = dest[tok, sel]
    order = np.argsort(row_dest, kind="stable")  # grouped by destination, token order inside
    tok, row_dest, covered = tok[order], row_dest[order], covered[order]
    row_experts = np.where(covered, experts[tok], -1)
    row_gates = np.where(covered, gates[tok], 0.0)
    send_counts = np.bincount(row_dest, minlength=num_gpus).astype(np.int64)
    return DispatchPlan(dest=dest, row_token=tok.astype(np.int64), row_dest=row_dest.astype(np.int64),
                        row_experts=row_experts, row_gates=row_gates, covered=covered, send_counts=send_counts)


def rdma_targets(dest: np.ndarray, src: int, server_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeepEP normal mode's two hops for the selections of GPU ``src``.

    Returns ``(rdma int64 [N, k], local int64 [N, k])``: the rail peer of ``src`` in the node of a
    selection's GPU when that node is another one (the RDMA leg; ``-1`` for the sender's own node),
    and the selection's GPU when it is in the sender's own node (``-1`` otherwise), which ``src``
    forwards over NVLink itself.

    >>> rdma, local = rdma_targets(np.array([[1, 3], [2, 2]]), 0, np.array([0, 0, 1, 1]))
    >>> rdma.tolist(), local.tolist()
    ([[-1, 2], [2, 2]], [[1, -1], [-1, -1]])
    """
    dest = np.asarray(dest, dtype=np.int64)
    server_of = np.asarray(server_of, dtype=np.int64)
    node = server_of[dest]
    remote = node != server_of[src]
    return (np.where(remote, rail_peer(server_of)[src][node], -1).astype(np.int64),
            np.where(remote, -1, dest).astype(np.int64))


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
