"""Local search on the serving-step model: exchange slots between GPUs while a layer gets faster.

Every layer is searched at once (layers are independent in the step model).  One *round*:

1. **Guide.** For each layer still searched, read what bounds it in the current placement (the
   evaluator's critical link of the slower communication phase, or the slowest GPU) and rank every
   exchange of two slots on different GPUs (an empty slot is an item of no load; a replica never
   lands on a GPU that already holds its expert) by a linear estimate of what it does to that bound:
   the selections that cross the critical link (even split over replicas), or the busiest GPU's load.
   Re-targets follow: a spare replica (its expert keeps another) or an empty slot takes one of the
   hottest experts per replica, or a spare replica is dropped (fewer weights to read on a
   memory-bound GPU; not when every slot must stay filled); then exchanges without an improving estimate fill ``width``.
2. **Decide.** Apply the ``k``-th move of every layer, ``k = 0 .. width - 1``, one evaluator
   call per ``k`` (the exact step-model figure, all layers in one call), and keep per layer the
   fastest if it beats the current layer time by more than ``1e-9`` relative.
3. A layer with no improving move in ``patience`` rounds in a row tries twice as many moves per round,
   up to eight times ``width``; then it is finished.

The estimates only order the candidates; the evaluator decides, so the search never accepts a
change the step model does not confirm.  ``max_moves [L]`` bounds, per layer, how many experts may
leave the GPUs they hold in ``origin`` (the migration budget); exchanges that would exceed it are not
ranked.  ``load_cap [L]`` bounds each GPU's selections (even split over replicas): an exchange that
would raise a GPU above it is not ranked.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np

from ..formulations.layer_time import slot_loads as _slot_loads
from .objective import StepObjective

__all__ = ["SearchResult", "improve", "moved_experts", "max_gpu_load"]


@dataclass(frozen=True)
class SearchResult:
    """What :func:`improve` ends with.

    Attributes
    ----------
    slots:
        ``int64 [L, G, S]`` the improved placement.
    layer_time:
        ``float64 [L]`` its evaluator seconds per layer.
    rounds, evaluations:
        Search rounds run and evaluator calls made.
    timed_out:
        The time limit stopped the search before every layer finished.
    """

    slots: np.ndarray
    layer_time: np.ndarray
    rounds: int
    evaluations: int
    timed_out: bool


def max_gpu_load(slots: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``float64 [L]``: each layer's largest GPU load, every replica of expert ``e`` serving ``w[l, e] / count``
    (EPLB's model of load)."""
    L, G, S = slots.shape
    E = w.shape[1]
    count = np.zeros((L, E + 1))
    np.add.at(count, (np.repeat(np.arange(L), G * S), slots.reshape(L, -1).ravel() + 1), 1.0)
    share = w / np.maximum(count[:, 1:], 1.0)
    return _slot_loads(slots, share).sum(axis=2).max(axis=1)


def moved_experts(slots: np.ndarray, origin: np.ndarray, num_experts: int) -> np.ndarray:
    """``int64 [L]``: experts of each layer whose set of GPUs differs between ``slots`` and ``origin``
    (both ``int [L, G, S]``; an expert that gains, loses or changes a replica counts once)."""
    return _holds(slots, num_experts).__ne__(_holds(origin, num_experts)).any(axis=1).sum(axis=1)


def _holds(slots: np.ndarray, E: int) -> np.ndarray:
    """``bool [L, E, G]``: GPU ``g`` holds a replica of expert ``e`` in layer ``l``."""
    L, G, S = slots.shape
    out = np.zeros((L, E + 1, G), dtype=bool)
    out[np.repeat(np.arange(L), G * S), (slots + 1).reshape(L, -1).ravel(),
        np.tile(np.repeat(np.arange(G), S), L)] = True
    return out[:, 1:]


def _copies(slots_l: np.ndarray, E: int) -> np.ndarray:
    """``float64 [G, E]`` replicas of each expert on each GPU (one layer)."""
    G, S = slots_l.shape
    h = np.zeros((G, E + 1))
    np.add.at(h, (np.repeat(np.arange(G), S), slots_l.ravel() + 1), 1.0)
    return h[:, 1:]


class _Guide:
    """Per-topology tables the ranking needs."""

    def __init__(self, objective: StepObjective) -> None:
        topo = objective.topology
        self.G = topo.num_gpus
        self.arc_index = {name: i for i, name in enumerate(topo.arc_names)}
        self.route_csc = topo.route_matrix.tocsc()
        setup = objective.setup
        bw = topo.arc_bandwidth
        self.sec_per_token = (setup.dispatch_wire.bytes_per_token / bw, setup.combine_wire.bytes_per_token / bw)

    def pairs(self, arc: int) -> np.ndarray:
        """``bool [G, G]``: the (sender, receiver) pairs whose route uses ``arc``."""
        rows = self.route_csc.indices[self.route_csc.indptr[arc]:self.route_csc.indptr[arc + 1]]
        m = np.zeros(self.G * self.G, dtype=bool)
        m[rows] = True
        return m.reshape(self.G, self.G)


def _rank(slots_l: np.ndarray, sent_l: np.ndarray, step: dict, guide: _Guide, cap: float,
          allowed_movers: np.ndarray | None, width: int, full: bool = False) -> list[tuple]:
    """About ``width`` moves of one layer: exchanges ``("x", g1, s1, g2, s2)`` with an improving estimate,
    best first, then re-targets ``("r", g, s, expert or -1)``, then the other exchanges."""
    G, S = slots_l.shape
    E = sent_l.shape[1]
    h = _copies(slots_l, E)  # [G, E]
    count = np.maximum(h.sum(axis=0), 1.0)  # [E]
    total = sent_l.sum(axis=0)  # [E]
    e = slots_l.ravel()  # [P]
    P = e.size
    live = e >= 0
    ec = np.maximum(e, 0)
    g_of = np.repeat(np.arange(G), S)
    item = np.where(live, total[ec] / count[ec], 0.0)  # selections each slot serves (even split)
    gpu_load = np.bincount(g_of, weights=item, minlength=G)
    # estimate of the bound: the critical link of the slower phase (seconds), or the busiest GPU (selections)
    score = np.zeros((P, P))
    if step["kind"] == "link":
        arc, phase = step["arc"], step["phase"]
        pairs = guide.pairs(arc)  # [u, v] dispatch pairs over the arc
        weight = guide.sec_per_token[phase][arc]
        if phase == 0:  # dispatch u -> g crosses the arc
            A = pairs.T.astype(np.float64) @ sent_l  # [g, e] selections of e headed to g over the arc
        else:  # combine g -> u crosses the arc
            A = pairs.astype(np.float64) @ sent_l
        move = (A[:, ec].T - A[g_of, ec][:, None]) / count[ec][:, None]  # [P, G]: slot i's expert moved to GPU g
        move = np.where(live[:, None], move, 0.0) * weight
        score = move[:, g_of] + move[:, g_of].T
    # load after the exchange on the two GPUs
    d = item[:, None] - item[None, :]  # load leaving g1 (slot i) minus arriving (slot j)
    new1 = gpu_load[g_of][:, None] - d
    new2 = gpu_load[g_of][None, :] + d
    peak = gpu_load.max()
    if step["kind"] == "gpu":
        top = int(np.argmax(gpu_load))
        on_top = g_of == top
        score = np.where(on_top[:, None], np.maximum(new1, new2) - peak, np.inf)
    limit = max(cap, peak) if step["kind"] == "link" else cap
    bad = (g_of[:, None] == g_of[None, :]) | (~live[:, None] & ~live[None, :])
    bad |= (np.maximum(new1, new2) > limit * (1 + 1e-12)) & (d != 0)
    # no second replica of an expert on one GPU
    held = h > 0
    bad |= live[:, None] & held[g_of[None, :], ec[:, None]] & (e[:, None] != e[None, :])
    bad |= live[None, :] & held[g_of[:, None], ec[None, :]] & (e[:, None] != e[None, :])
    bad |= e[:, None] == e[None, :]
    if allowed_movers is not None:
        bad |= ~allowed_movers[:, None] | ~allowed_movers[None, :]
    score = np.where(bad, np.inf, score)
    score = np.triu(score, 1) + np.tril(np.full((P, P), np.inf))
    flat = score.ravel()
    finite = np.flatnonzero(np.isfinite(flat))
    first = finite[np.argsort(flat[finite], kind="stable")]
    moves: list[tuple] = []
    for b in first[flat[first] < 0][:width]:
        i, j = divmod(int(b), P)
        moves.append(("x", i // S, i % S, j // S, j % S))
    # re-target a slot: a spare replica (its expert keeps another) or an empty slot takes another expert, or
    # a spare replica is dropped; ranked after the improving exchanges (no linear estimate)
    spare = live & (count[ec] >= 2) | ~live
    if allowed_movers is not None:
        spare &= allowed_movers
    hot = np.argsort(-(total / count), kind="stable")[: E if width >= P * P else 4]
    retarget: list[tuple] = []
    order = np.argsort(-gpu_load[g_of], kind="stable")  # busiest GPUs' slots first
    for i in order[spare[order]]:
        g, sl = divmod(int(i), S)
        if live[i] and not full:
            retarget.append(("r", g, sl, -1))
        for x in hot:
            if not held[g, x] and x != e[i] and gpu_load[g] - item[i] + total[x] / (count[x] + 1) <= cap:
                retarget.append(("r", g, sl, int(x)))
    moves += retarget[: max(0, width - len(moves)) + 2]
    if width >= P * P:  # a small layer: its whole neighbourhood
        moves += retarget[max(0, width - len(moves)) + 2:]
    for b in first[flat[first] >= 0][: max(0, width - len(moves))]:
        i, j = divmod(int(b), P)
        moves.append(("x", i // S, i % S, j // S, j % S))
    return moves


def _apply(slots_l: np.ndarray, move: tuple) -> None:
    """Apply one move to ``slots_l int [G, S]`` in place."""
    if move[0] == "x":
        _, g1, s1, g2, s2 = move
        slots_l[g1, s1], slots_l[g2, s2] = slots_l[g2, s2], slots_l[g1, s1]
    else:
        _, g, sl, x = move
        slots_l[g, sl] = x


def _bottleneck(st, layer: int, guide: _Guide, overlap: bool) -> dict:
    d, c, comp = st.phase_time[layer]
    if (comp >= max(d, c) and not overlap) or (overlap and comp >= d + c):
        return {"kind": "gpu"}
    phase = 0 if d >= c else 1
    name = st.critical[layer][0 if phase == 0 else 2]
    if name not in guide.arc_index:
        return {"kind": "gpu"}
    return {"kind": "link", "arc": guide.arc_index[name], "phase": phase}


def improve(objective: StepObjective, slots: np.ndarray, *, time_limit: float = 60.0, width: int | None = None,
            patience: int = 2, max_rounds: int = 10_000, load_cap: np.ndarray | None = None,
            origin: np.ndarray | None = None, max_moves: np.ndarray | None = None,
            deadline: float | None = None, run=None, load: np.ndarray | None = None,
            full: bool = False, jobs: int = 1) -> SearchResult:
    """Improve ``slots int [L, G, S]`` on ``objective`` (module docstring); stops at ``time_limit`` seconds.

    ``width``: moves evaluated per layer and round (default: every move of a layer of at most 16 slots,
    else 6).  ``run`` (a :class:`placement.progress.Run`): progress reports (seconds per step), its
    deadline, and Ctrl-C, after which the last whole round's placement is returned.  ``load float64
    [L, E]``: the selections ``load_cap`` bounds (default: ``objective.sent`` summed over senders);
    every accepted move keeps each layer's busiest GPU, even split over replicas, within the cap.  ``jobs``:
    worker processes scoring that many trial placements at once (the same answer as one process).  ``full``:
    never empty a slot (no replica is dropped; exchanges and re-targets keep every slot filled)."""
    slots = np.array(slots, dtype=np.int64, copy=True)
    L, G, S = slots.shape
    search = _Search(objective=objective, guide=_Guide(objective),
                     end=deadline if deadline is not None else time.perf_counter() + time_limit,
                     width=width if width is not None else ((G * S) ** 2 if G * S <= 16 else 6),
                     patience=patience, max_rounds=max_rounds,
                     cap=np.full(L, np.inf) if load_cap is None else np.asarray(load_cap, dtype=np.float64),
                     capped=load_cap is not None, weight=objective.sent.sum(axis=1) if load is None else load,
                     origin=origin, max_moves=max_moves, full=full, run=run, slots=slots)
    guard = run.interruptible() if run is not None else contextlib.nullcontext()
    pool = _Pool(objective, jobs) if jobs > 1 else None
    try:
        with guard:
            search.rounds_until_done(pool)
    finally:
        if pool is not None:
            pool.close()
    stopped = search.stopped or (run is not None and run.stopped)
    return SearchResult(slots=search.slots, layer_time=search.best, rounds=search.rounds,
                        evaluations=objective.evaluations[0], timed_out=bool(stopped))


class _Search:
    """The state of :func:`improve`: the placement and layer times of the last whole round (what a Ctrl-C
    returns), which layers are still searched, and the settings."""

    def __init__(self, *, objective, guide: _Guide, end: float, width: int, patience: int, max_rounds: int,
                 cap: np.ndarray, capped: bool, weight: np.ndarray, origin: np.ndarray | None,
                 max_moves: np.ndarray | None, full: bool, run, slots: np.ndarray) -> None:
        self.objective, self.guide, self.end, self.width = objective, guide, end, width
        self.patience, self.max_rounds, self.cap, self.capped, self.weight = patience, max_rounds, cap, capped, weight
        self.origin, self.max_moves, self.full, self.run = origin, max_moves, full, run
        self.L = slots.shape[0]
        self.E = objective.trace.num_experts
        self.slots = slots
        self.st, self.best = objective.assess(slots)
        self.stale = np.zeros(self.L, dtype=np.int64)
        self.active = np.ones(self.L, dtype=bool)
        #: moves tried per layer and round; a layer that stops improving tries twice as many, up to 8 x
        self.widths = np.full(self.L, width, dtype=np.int64)
        self.max_width = 8 * width
        self.rounds = 0
        self.stopped = False

    def out_of_time(self) -> bool:
        """The deadline would pass during the next evaluator call (seconds each at 256 GPUs), or Ctrl-C came."""
        late = time.perf_counter() + self.objective.eval_seconds() >= self.end
        return late or (self.run is not None and self.run.stopped)

    def rounds_until_done(self, pool) -> None:
        """Search rounds until no layer is searched, the round limit, the deadline or Ctrl-C."""
        while self.active.any() and self.rounds < self.max_rounds:
            if self.out_of_time():
                self.stopped = True
                return
            if not self.one_round(pool):
                return

    def candidates(self) -> list[list[tuple]]:
        """The ranked moves of every searched layer (:func:`_rank`)."""
        cands: list[list[tuple]] = [[] for _ in range(self.L)]
        overlap = self.objective.setup.overlap
        for layer in np.flatnonzero(self.active):
            movers = None
            if self.origin is not None and self.max_moves is not None:
                movers = _movers(self.slots[layer], self.origin[layer], self.E, int(self.max_moves[layer]))
            cands[layer] = _rank(self.slots[layer], self.objective.sent[layer],
                                 _bottleneck(self.st, layer, self.guide, overlap), self.guide, float(self.cap[layer]),
                                 movers, int(self.widths[layer]), self.full)
        return cands

    def one_round(self, pool) -> bool:
        """One round (module docstring); ``False`` when no layer has a move left."""
        L = self.L
        self.rounds += 1
        cands = self.candidates()
        depth = max((len(c) for c in cands), default=0)
        if depth == 0:
            return False
        best_slots, new_best = self.slots.copy(), self.best.copy()
        improved = np.zeros(L, dtype=bool)
        batch = max(1, pool.workers if pool is not None else 1)
        for k0 in range(0, depth, batch):
            if self.out_of_time():
                self.stopped = True
                break
            trials, touches = [], []
            for k in range(k0, min(depth, k0 + batch)):
                trial = self.slots.copy()
                touched = np.zeros(L, dtype=bool)
                for layer in range(L):
                    if k < len(cands[layer]):
                        _apply(trial[layer], cands[layer][k])
                        touched[layer] = True
                trials.append(trial)
                touches.append(touched)
            if pool is not None:
                results = pool.map(trials)
                self.objective.evaluations[0] += len(trials)
            else:
                results = [self.objective.layer_times(t) for t in trials]
            for trial, touched, times in zip(trials, touches, results, strict=True):
                _keep(trial, touched, times, new_best, best_slots, improved, self.capped, self.weight, self.cap)
        if self.origin is not None and self.max_moves is not None:
            over = moved_experts(best_slots, self.origin, self.E) > self.max_moves
            best_slots[over], new_best[over], improved[over] = self.slots[over], self.best[over], False
        self.stale = np.where(improved, 0, self.stale + 1)
        widen = (self.stale >= self.patience) & (self.widths < self.max_width)
        self.widths[widen] *= 2  # a wider neighbourhood before giving the layer up
        self.stale[widen] = 0
        self.active &= self.stale < self.patience
        if improved.any() and time.perf_counter() + self.objective.eval_seconds() < self.end:
            self.st, new_best = self.objective.assess(best_slots)  # what guides the next round
        self.slots, self.best = best_slots, new_best  # a whole round: what an interrupt returns
        if self.run is not None:
            self.run.update(incumbent=float(self.best.sum()),
                            stage=f"round {self.rounds}: {int(self.active.sum())} of {L} layers searched")
        return True


def _keep(trial: np.ndarray, touched: np.ndarray, times: np.ndarray, new_best: np.ndarray, best_slots: np.ndarray,
          improved: np.ndarray, capped: bool, weight: np.ndarray, cap: np.ndarray) -> None:
    """Keep, per layer, ``trial``'s layer when it beats the best so far this round (and keeps the load cap)."""
    better = touched & (times < new_best * (1 - 1e-9))
    if capped:
        better &= max_gpu_load(trial, weight) <= cap * (1 + 1e-12)
    best_slots[better] = trial[better]
    new_best[better] = times[better]
    improved |= better


class _Pool:
    """Worker processes that score trial placements on one objective (``jobs`` > 1), ignoring Ctrl-C (the main
    process handles it and stops the pool)."""

    def __init__(self, objective, jobs: int) -> None:
        import concurrent.futures
        import multiprocessing

        self.workers = jobs
        ctx = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
        self.executor = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                                                               initializer=_worker_init, initargs=(objective,))

    def map(self, trials: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.executor.map(_worker_times, trials))

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


_WORKER_OBJECTIVE = None


def _worker_init(objective) -> None:
    import signal

    global _WORKER_OBJECTIVE
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_OBJECTIVE = objective


def _worker_times(trial: np.ndarray) -> np.ndarray:
    return _WORKER_OBJECTIVE.layer_times(trial)


def _movers(slots_l: np.ndarray, origin_l: np.ndarray, E: int, budget: int) -> np.ndarray:
    """``bool [P]``: slots whose expert may take part in an exchange: all while the layer has budget for two
    more moved experts, else only experts already moved (moving them again costs nothing more)."""
    moved = _holds(slots_l[None], E)[0] != _holds(origin_l[None], E)[0]  # [E, G]
    moved_e = moved.any(axis=1)
    if moved_e.sum() + 2 <= budget:
        return np.ones(slots_l.size, dtype=bool)
    e = slots_l.ravel()
    return (e < 0) | moved_e[np.maximum(e, 0)]
