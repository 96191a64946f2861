"""The check: replay a trace under placements on W ranks and compare with the evaluator.

:func:`run_cases` is the collective part (every rank calls it; rank 0 gets the results);
:func:`compare` turns the results into :class:`CaseReport` s against the evaluator
(:func:`expected_counts`); :func:`format_report` prints them.

The oracle.  For each layer the evaluator's replica rule (``REPLICA_RULES[replica].route``, on
every token at once, senders and step as :func:`placement.evaluate` resolves them: ``origins``
``"trace"`` or ``"round_robin"``, the whole replay one serving step) gives each selection's
probabilities over GPUs; the transport's ``TRANSPORTS[transport].legs`` turns them into expected
tokens ``u -> v`` per leg (``nccl`` and ``deepep-ll``: one leg; ``deepep``: the RDMA leg, then the
NVLink leg).  These legs are themselves checked against :func:`placement.evaluate` (``Metrics.layer_traffic``
for one-leg transports, the per-GPU arrivals for ``deepep``, ``Metrics.gpu_load`` always); a
disagreement fails the case.

What "match" means: for every layer, leg and entry ``u -> v`` *including the diagonal* (the
evaluator counts a token whose expert sits on its own GPU as a ``u -> u`` send, the runtime the rows
a rank passes to itself through ``all_to_all_single``), the measured dispatch bytes equal the
oracle's tokens times ``hidden_size * bytes(dtype)``; the combine is the dispatch transposed, leg by
leg; senders and receivers agree; each rank computed the oracle's selections (``gpu_load``).

* Deterministic rules (``nearest``, ``vllm``, ``trtllm``, ``sglang-static``): every equality is exact.
* Random rules (``sglang-dynamic``; ``split`` unless its fractions are 0/1): the ranks draw each
  selection's GPU from the rule's probabilities (:meth:`~placement_runtime.plan.Router.route`, seeded).
  Two checks: (1) exact: the measured counts equal the transport's legs of the *realised* draws, which
  the check reproduces from the seed; (2) statistical: every count ``X`` (tokens; leg entries and
  loads) is within ``t = l/3 + sqrt(l**2/9 + 2 mu l)``, ``l = ln(2 m / alpha)``, of the evaluator's
  expectation ``mu``, where ``m`` is the number of counts compared.  Each count is a sum of independent
  Bernoulli indicators (one per token or selection; selections draw independently), so its variance is
  at most ``mu`` and Bernstein's inequality bounds the chance that *any* count of a correct runtime
  falls outside by ``alpha`` (default ``1e-6``).  A runtime that routed by another rule is caught when
  the difference outgrows ``t``, about ``sqrt(2 mu l)``: replay enough tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement.costs import DTYPE_BYTES
from placement.evaluation import evaluate
from placement.evaluation.transports import TRANSPORTS
from placement.placement import Placement
from placement.topology import Topology
from placement.trace._trace import Trace

from .plan import ORIGIN_RULES, Router, check_transport, token_ranks

__all__ = ["CheckCase", "CheckConfig", "CaseResult", "MoveResult", "CheckResults", "CaseReport", "MoveReport",
           "Expected", "expected_counts", "bernstein_tolerance", "run_cases", "compare", "format_report",
           "default_atol", "DEFAULT_ALPHA"]

#: False-alarm probability of the statistical comparison of random replica rules (all counts together).
DEFAULT_ALPHA = 1e-6

_ATOL = {"fp32": 1e-5, "float32": 1e-5, "fp16": 2e-2, "float16": 2e-2, "bf16": 1e-1, "bfloat16": 1e-1}


def default_atol(dtype: str) -> float:
    """Output tolerance against the float64 reference: 1e-5 for fp32, 2e-2 for fp16, 1e-1 for bf16."""
    return _ATOL[dtype]


@dataclass(frozen=True, eq=False)
class CheckCase:
    """One placement to replay under a replica rule and a transport (``dedup``: ``nccl`` only)."""

    name: str
    placement: Placement
    dedup: bool = False
    replica: str = "nearest"
    transport: str = "nccl"


@dataclass(frozen=True, eq=False)
class CheckConfig:
    """Everything the ranks need (pickled to the spawned workers).

    ``move = (i, j)``: after the cases, move the weights from case ``i``'s placement to case
    ``j``'s and replay case ``j`` again with the moved weights.
    """

    trace: Trace
    topology: Topology
    cases: tuple[CheckCase, ...]
    hidden_size: int = 32
    ffn_size: int = 64
    dtype: str = "fp32"
    seed: int = 0
    origins: str = "round_robin"
    atol: float | None = None
    move: tuple[int, int] | None = None
    alpha: float = DEFAULT_ALPHA

    def __post_init__(self) -> None:
        from placement.errors import input_error

        if not self.cases:
            raise input_error("give at least one placement", field="cases")
        G = self.topology.num_gpus
        for case in self.cases:
            p = case.placement
            if p.num_gpus != G:
                raise input_error(f"placement {case.name!r} is for {p.num_gpus} GPUs but the topology has "
                                  f"{G}", p.source, "num_gpus")
            if p.num_layers != self.trace.num_layers or p.num_experts != self.trace.num_experts:
                raise input_error(f"placement {case.name!r} has {p.num_layers} layers x {p.num_experts} "
                                  f"experts but the trace has {self.trace.num_layers} x "
                                  f"{self.trace.num_experts}", p.source, "slots")
            check_transport(case.transport, case.dedup)
            Router.build(p, self.topology, case.replica)  # unknown rule, or 'split' without fractions
        self.trace.require_tokens("the runtime check")
        if self.dtype not in _ATOL:
            raise input_error(f"unknown dtype {self.dtype!r}; choose one of {sorted(_ATOL)}", field="dtype")
        if self.origins not in ORIGIN_RULES:
            raise input_error(f"unknown origins {self.origins!r}; choose one of {list(ORIGIN_RULES)}",
                              field="origins")
        if self.origins == "trace" and self.trace.num_ranks != G:
            raise input_error(f"origins='trace' needs a trace recorded on {G} ranks (it has "
                              f"{self.trace.num_ranks})", self.trace.source, "origin")
        if self.hidden_size < 1 or self.ffn_size < 1:
            raise input_error("hidden_size and ffn_size must be positive", field="hidden_size")
        if not 0.0 < float(self.alpha) < 1.0:
            raise input_error(f"must be in (0, 1), got {self.alpha}", field="alpha")
        if self.move is not None:
            i, j = self.move
            if not (0 <= i < len(self.cases) and 0 <= j < len(self.cases)):
                raise input_error(f"move {self.move} names a case outside [0, {len(self.cases)})",
                                  field="move")

    @property
    def world(self) -> int:
        return self.topology.num_gpus

    @property
    def tolerance(self) -> float:
        return default_atol(self.dtype) if self.atol is None else float(self.atol)


@dataclass(frozen=True, eq=False)
class CaseResult:
    """Measured on the ranks (complete on rank 0).

    ``sent``/``received``: ``int64 [layers, 2, G, G]`` hidden-state bytes (phase 0 dispatch, 1 combine);
    ``max_abs_error``: max over tokens and ranks of |runtime - float64 reference|; ``ref_max_abs``:
    max |reference|; ``output``: ``float64 [tokens, hidden]`` the runtime's outputs in token order;
    ``leg_sent``/``leg_received``: ``int64 [layers, 2, legs, G, G]`` the same per leg (``None``: one leg);
    ``computed``: ``int64 [layers, G]`` selections each rank computed (``None``: not recorded).
    """

    name: str
    dedup: bool
    sent: np.ndarray
    received: np.ndarray
    meta_bytes: np.ndarray
    max_abs_error: float
    ref_max_abs: float
    output: np.ndarray | None = None
    leg_sent: np.ndarray | None = None
    leg_received: np.ndarray | None = None
    computed: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class MoveResult:
    """A re-placement: ``moved int64 [G, G]`` bytes measured, ``planned`` from the plan, copies moved,
    whether every moved weight equals the seeded original bit for bit, and the replay after it."""

    source: str
    target: str
    moved: np.ndarray
    planned: np.ndarray
    copies: int
    weights_exact: bool
    after: CaseResult


@dataclass(frozen=True, eq=False)
class CheckResults:
    cases: list[CaseResult]
    move: MoveResult | None = None
    backend: str = "gloo"
    world: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ collective part
def _run_case(config: CheckConfig, case: CheckCase, rank: int, *, group, device, weights=None,
              gather_output: bool = True):
    import torch
    import torch.distributed as dist

    from .moe import TrafficCounter, build_layers, torch_dtype
    from .plan import RUNTIME_TRANSPORTS
    from .replay import reference_replay, replay_rank

    trace, G = config.trace, config.world
    dtype = torch_dtype(config.dtype)
    counter = TrafficCounter(trace.num_layers, G, RUNTIME_TRANSPORTS[case.transport])
    layers = build_layers(case.placement, config.topology, rank, hidden_size=config.hidden_size,
                          ffn_size=config.ffn_size, seed=config.seed, weights=weights, dedup=case.dedup,
                          replica=case.replica, transport=case.transport, group=group, device=device,
                          dtype=dtype, counter=counter)
    with torch.no_grad():
        rep = replay_rank(trace, layers, rank, G, hidden_size=config.hidden_size, seed=config.seed,
                          origins=config.origins, device=device, dtype=dtype)
        ref = reference_replay(trace, hidden_size=config.hidden_size, ffn_size=config.ffn_size,
                               seed=config.seed, tokens=rep.tokens)
    out = rep.output.detach().to("cpu", torch.float64)
    err = float((out - ref).abs().max()) if out.numel() else 0.0
    big = float(ref.abs().max()) if ref.numel() else 0.0
    stats = torch.tensor([err, big], dtype=torch.float64, device=device)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX, group=group)
    total = counter.all_reduce(group, device)
    full = None
    if gather_output:  # every rank's outputs, in token order (small runs only)
        gathered: list[Any] = [None] * G
        dist.all_gather_object(gathered, (rep.tokens, out.numpy()), group=group)
        full = np.zeros((trace.num_tokens, config.hidden_size))
        for tokens, o in gathered:
            full[tokens] = o
    result = CaseResult(name=case.name, dedup=case.dedup, sent=total.sent, received=total.received,
                        meta_bytes=total.meta_bytes, max_abs_error=float(stats[0]),
                        ref_max_abs=float(stats[1]), output=full, leg_sent=total.leg_sent,
                        leg_received=total.leg_received, computed=total.computed)
    return result, layers


def run_cases(config: CheckConfig, rank: int, *, group=None, device="cpu", backend: str = "gloo",
              gather_output: bool = False) -> CheckResults:
    """Collective: replay every case (and the move); every rank returns the same results."""
    import torch
    import torch.distributed as dist

    from .moe import expert_weights, torch_dtype
    from .relocate import move_experts

    results = []
    kept_layers = {}
    for i, case in enumerate(config.cases):
        res, layers = _run_case(config, case, rank, group=group, device=device, gather_output=gather_output)
        results.append(res)
        if config.move is not None and i == config.move[0]:
            kept_layers[i] = layers
    move = None
    if config.move is not None:
        i, j = config.move
        src, dst = config.cases[i], config.cases[j]
        outcome = move_experts(kept_layers[i], src.placement, dst.placement, rank,
                               distance=config.topology.hops, group=group)
        dtype = torch_dtype(config.dtype)
        exact = True
        for layer, mods in enumerate(outcome.weights):
            for e, m in mods.items():
                w = expert_weights(config.seed, layer, e, config.hidden_size, config.ffn_size, dtype)
                exact &= torch.equal(m.w1.cpu(), w["w1"]) and torch.equal(m.w2.cpu(), w["w2"])
        G = config.world
        buf = torch.zeros(G * G + 1, dtype=torch.int64, device=device)
        buf[rank * G:(rank + 1) * G] = torch.from_numpy(outcome.sent_bytes)
        buf[-1] = 0 if exact else 1
        dist.all_reduce(buf, group=group)
        moved = buf[:-1].cpu().numpy().reshape(G, G)
        after_case = CheckCase(f"{dst.name} (moved)", dst.placement, dst.dedup, dst.replica, dst.transport)
        after, _ = _run_case(config, after_case, rank, group=group, device=device, weights=outcome.weights,
                             gather_output=gather_output)
        move = MoveResult(source=src.name, target=dst.name, moved=moved,
                          planned=outcome.plan.count_matrix(G) * outcome.bytes_per_expert,
                          copies=outcome.plan.num_moves, weights_exact=int(buf[-1]) == 0, after=after)
    return CheckResults(cases=results, move=move, backend=backend, world=config.world)


# ------------------------------------------------------------------------------------ the oracle
@dataclass(frozen=True, eq=False)
class Expected:
    """What the evaluator predicts for one case, in tokens (not bytes).

    Attributes
    ----------
    legs:
        ``float64 [layers, legs, G, G]`` expected dispatch tokens ``u -> v`` per leg (``TRANSPORTS[...].legs``).
    load:
        ``float64 [layers, G]`` expected selections computed per GPU.
    realised, realised_load:
        The same for the replica choices the ranks draw (equal to the above for deterministic rules).
    random:
        Some selection has more than one possible GPU.
    evaluator_agrees:
        The legs and loads agree with :func:`placement.evaluate` (see the module docstring).
    bytes_per_token:
        ``hidden_size * bytes(dtype)``, the evaluator's ``Metrics.bytes_per_token``.
    """

    legs: np.ndarray
    load: np.ndarray
    realised: np.ndarray
    realised_load: np.ndarray
    random: bool
    evaluator_agrees: bool
    bytes_per_token: int


def expected_counts(config: CheckConfig, case: CheckCase) -> Expected:
    """The oracle of ``case``: the evaluator's rule and transport legs, for every layer (module docstring)."""
    trace, topo, G = config.trace, config.topology, config.world
    experts = trace.require_tokens("the runtime check")
    N, L, k = experts.shape
    src = token_ranks(trace, G, config.origins)
    step = np.zeros(N, dtype=np.int64)
    router = Router.build(case.placement, topo, case.replica, config.seed)
    legs_of = TRANSPORTS[case.transport].legs
    server_of = np.asarray(topo.server_of, dtype=np.int64)
    # deepep de-duplicates per GPU by construction: the evaluator's whole-trace traffic follows the transport
    metrics = evaluate(case.placement, trace, topo, dispatch="origin", dedup=case.dedup and case.transport == "nccl",
                       origins=config.origins, hidden_size=config.hidden_size, dtype=config.dtype,
                       replica=case.replica, transport=case.transport)
    bpt = int(config.hidden_size * DTYPE_BYTES[config.dtype])
    if metrics.bytes_per_token != bpt:  # the evaluator's wire is ours
        raise RuntimeError(f"the evaluator weighs a token {metrics.bytes_per_token} B, the runtime {bpt} B")
    legs, real, load, real_load = [], [], np.zeros((L, G)), np.zeros((L, G))
    random = False
    agrees = True
    for layer in range(L):
        dest, q = router.route(layer, experts[:, layer, :], src, step)
        random |= bool((q.max(axis=2) < 1.0 - 1e-9).any())
        onehot = np.zeros_like(q)
        np.put_along_axis(onehot, dest[..., None], 1.0, axis=2)
        legs.append(np.stack([leg[0] for leg in legs_of(q, src, step, 1, server_of, case.dedup)]))
        real.append(np.stack([leg[0] for leg in legs_of(onehot, src, step, 1, server_of, case.dedup)]))
        load[layer] = q.sum(axis=(0, 1))
        real_load[layer] = np.bincount(dest.ravel(), minlength=G)
        arrivals = legs[-1].sum(axis=0) if legs[-1].shape[0] == 1 else legs[-1][-1]
        if case.transport == "deepep":  # NVLink leg: (forwarder, v); the evaluator: (sender, v); same arrivals
            agrees &= bool(np.allclose(arrivals.sum(axis=0), metrics.layer_traffic[layer].sum(axis=0), atol=1e-6))
        else:
            agrees &= bool(np.allclose(arrivals, metrics.layer_traffic[layer], atol=1e-6))
        agrees &= bool(np.allclose(load[layer], metrics.gpu_load[layer], atol=1e-6))
    exp_legs, exp_load = np.stack(legs), load
    if not random:  # exact integers (co-located replicas share by 1/count: undo the rounding)
        exp_legs, exp_load = np.rint(exp_legs), np.rint(exp_load)
    return Expected(legs=exp_legs, load=exp_load, realised=np.rint(np.stack(real)), realised_load=real_load,
                    random=random, evaluator_agrees=agrees, bytes_per_token=bpt)


def bernstein_tolerance(mu: np.ndarray, num_counts: int, alpha: float) -> np.ndarray:
    """``float64``: half-width ``t`` such that a sum ``X`` of independent Bernoulli indicators with mean ``mu``
    leaves ``[mu - t, mu + t]`` with probability at most ``alpha / num_counts``.

    Bernstein: ``P(|X - mu| >= t) <= 2 exp(-t**2 / (2 (var + t / 3)))`` with ``var <= mu``; solved for ``t``.

    >>> round(float(bernstein_tolerance(np.array(100.0), 1, 0.05)), 2)
    28.42
    """
    lg = math.log(2.0 * num_counts / alpha)
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 0.0)
    return lg / 3.0 + np.sqrt(lg * lg / 9.0 + 2.0 * mu * lg)


# ------------------------------------------------------------------------------------ comparison
@dataclass(frozen=True, eq=False)
class CaseReport:
    """One case against the evaluator.

    ``measured``/``predicted``: ``[G, G]`` bytes over all layers, phases and legs (``predicted`` is the
    expectation: fractional for random rules); ``bad_layers``: layers where a measured count differs from
    the realised choices or leaves the statistical band; ``worst``: the largest ``|X - mu| / t`` over the
    counts (random rules; ``<= 1`` passes).
    """

    name: str
    dedup: bool
    measured: np.ndarray
    predicted: np.ndarray
    bad_layers: list[int]
    consistent: bool
    max_abs_error: float
    ref_max_abs: float
    atol: float
    replica: str = "nearest"
    transport: str = "nccl"
    random: bool = False
    exact: bool = True
    within: bool = True
    worst: float = 0.0
    evaluator_agrees: bool = True
    alpha: float = DEFAULT_ALPHA
    num_counts: int = 0

    @property
    def bytes_match(self) -> bool:
        return bool(self.exact and self.within and not self.bad_layers and self.consistent
                    and self.evaluator_agrees)

    @property
    def tolerance(self) -> float:
        """``atol * max(1, max|reference|)``: fp32 rounding grows with the values and the layers."""
        return self.atol * max(1.0, self.ref_max_abs)

    @property
    def outputs_match(self) -> bool:
        return bool(self.max_abs_error <= self.tolerance)

    @property
    def ok(self) -> bool:
        return self.bytes_match and self.outputs_match

    def off_diagonal(self, m: np.ndarray) -> float:
        return float(m.sum() - np.trace(m))


@dataclass(frozen=True, eq=False)
class MoveReport:
    source: str
    target: str
    moved: np.ndarray
    planned: np.ndarray
    copies: int
    weights_exact: bool
    after: CaseReport

    @property
    def ok(self) -> bool:
        return bool(np.array_equal(self.moved, self.planned) and self.weights_exact and self.after.ok)


def _report(config: CheckConfig, case: CheckCase, res: CaseResult) -> CaseReport:
    exp = expected_counts(config, case)
    bpt = exp.bytes_per_token
    L, nlegs = exp.legs.shape[:2]
    leg_sent = res.sent[:, :, None] if res.leg_sent is None else res.leg_sent  # [L, 2, legs, G, G]
    leg_recv = res.received[:, :, None] if res.leg_received is None else res.leg_received
    consistent = bool(np.array_equal(res.sent, res.received) and np.array_equal(leg_sent, leg_recv)
                      and leg_sent.shape[2] == nlegs)
    bad: set[int] = set()
    exact = within = True
    worst = 0.0
    num_counts = exp.legs.size + (exp.load.size if res.computed is not None else 0)
    if leg_sent.shape[2] != nlegs:
        exact = False
        bad.update(range(L))
    else:
        dispatch = leg_sent[:, 0]  # [L, legs, G, G]
        combine_ok = np.array_equal(leg_sent[:, 1], np.swapaxes(dispatch, 2, 3))
        counts = dispatch / bpt
        real_ok = (dispatch == exp.realised * bpt).all(axis=(1, 2, 3))  # [L]
        if res.computed is not None:
            real_ok &= (res.computed == exp.realised_load).all(axis=1)
        exact = bool(real_ok.all() and combine_ok)
        bad.update(np.flatnonzero(~real_ok).tolist())
        if not combine_ok:
            bad.update(np.flatnonzero(~(leg_sent[:, 1] == np.swapaxes(dispatch, 2, 3)).all(axis=(1, 2, 3))).tolist())
        if exp.random:
            t = bernstein_tolerance(exp.legs, num_counts, config.alpha)
            dev = np.abs(counts - exp.legs) / t
            per_layer = dev.max(axis=(1, 2, 3))
            if res.computed is not None:
                t_load = bernstein_tolerance(exp.load, num_counts, config.alpha)
                per_layer = np.maximum(per_layer, (np.abs(res.computed - exp.load) / t_load).max(axis=1))
            worst = float(per_layer.max())
            within = bool(worst <= 1.0)
            bad.update(np.flatnonzero(per_layer > 1.0).tolist())
    predicted = (exp.legs.sum(axis=(0, 1)) * bpt)  # dispatch over layers and legs; combine is its transpose
    predicted = predicted + predicted.T
    return CaseReport(name=res.name, dedup=case.dedup, measured=res.sent.sum(axis=(0, 1)), predicted=predicted,
                      bad_layers=sorted(bad), consistent=consistent, max_abs_error=res.max_abs_error,
                      ref_max_abs=res.ref_max_abs, atol=config.tolerance, replica=case.replica,
                      transport=case.transport, random=exp.random, exact=exact, within=within, worst=worst,
                      evaluator_agrees=exp.evaluator_agrees, alpha=config.alpha, num_counts=num_counts)


def compare(config: CheckConfig, results: CheckResults) -> tuple[list[CaseReport], MoveReport | None]:
    """Reports of every case (and the move) against :func:`placement.evaluate`."""
    reports = [_report(config, case, res) for case, res in zip(config.cases, results.cases, strict=True)]
    move = None
    if results.move is not None:
        mv = results.move
        target = config.cases[config.move[1]]  # type: ignore[index]
        after = _report(config, target, mv.after)
        move = MoveReport(source=mv.source, target=mv.target, moved=mv.moved, planned=mv.planned,
                          copies=mv.copies, weights_exact=mv.weights_exact, after=after)
    return reports, move


def _grouping(groups: list[int]) -> list[list[int]]:
    """Ranks grouped by their group id, groups in order of first appearance."""
    out: dict[int, list[int]] = {}
    for rank, g in enumerate(groups):
        out.setdefault(int(g), []).append(rank)
    return list(out.values())


def format_report(config: CheckConfig, reports: list[CaseReport], move: MoveReport | None,
                  backend: str = "gloo", extra: dict[str, Any] | None = None) -> str:
    """The text the CLI prints (``extra["nodes"]``: the launcher's node of each rank, when known)."""
    t = config.trace
    lines = [f"placement_runtime check: {config.world} ranks ({backend}), {t.num_tokens} tokens x "
             f"{t.num_layers} layers x top-{t.top_k} of {t.num_experts} experts, hidden {config.hidden_size} "
             f"{config.dtype}, origins {config.origins}, one serving step"]
    nodes = (extra or {}).get("nodes")
    if nodes is not None:
        ranks, servers = _grouping(nodes), _grouping(list(config.topology.server_of))
        same = "the topology's servers" if ranks == servers else f"NOT the topology's servers {servers}"
        lines.append(f"launcher: {len(ranks)} node(s), ranks {ranks} = {same}")
    lines += ["bytes: hidden states summed over layers, legs, dispatch + combine, diagonal included (a rank's rows "
              "to itself: both sides count them); off-GPU = without the diagonal",
              "replica rule and transport are the evaluator's (REPLICA_RULES, TRANSPORTS); random rules: "
              "predicted = expectation"]
    head = (f"{'case':<24} {'replica':<14} {'transport':<9} {'dedup':<5} {'measured B':>12} {'predicted B':>12} "
            f"{'off-GPU meas.':>13} {'off-GPU pred.':>13} {'bytes':<8} {'max|err|':>9} {'outputs':<7}")
    lines.append(head)
    rows = list(reports) + ([move.after] if move is not None else [])
    for r in rows:
        lines.append(f"{r.name[:24]:<24} {r.replica:<14} {r.transport:<9} {'yes' if r.dedup else 'no':<5} "
                     f"{round(float(r.measured.sum())):>12} {round(float(r.predicted.sum())):>12} "
                     f"{round(r.off_diagonal(r.measured)):>13} {round(r.off_diagonal(r.predicted)):>13} "
                     f"{'match' if r.bytes_match else 'MISMATCH':<8} "
                     f"{r.max_abs_error:>9.2e} {'ok' if r.outputs_match else 'BAD':<7}")
        if r.random:
            lines.append(f"  random rule: counts equal the transport's legs of the seeded draws "
                         f"({'yes' if r.exact else 'NO'}); every count within the Bernstein band of the "
                         f"expectation at false alarm {r.alpha:g} over {r.num_counts} counts "
                         f"({'yes' if r.within else 'NO'}; worst |X - mu| / t = {r.worst:.2f})")
        if r.bad_layers:
            lines.append(f"  layers whose counts differ from the evaluator: {r.bad_layers[:10]}")
        if not r.consistent:
            lines.append("  sent and received byte counts disagree between ranks")
        if not r.evaluator_agrees:
            lines.append("  the rule's transport legs disagree with placement.evaluate (an evaluator bug)")
    lines.append(f"outputs ok when max|runtime - fp64 reference| <= {config.tolerance:g} x max(1, max|ref|)")
    if move is not None:
        lines.append(f"re-placement {move.source} -> {move.target}: {move.copies} expert copies, "
                     f"{int(move.moved.sum())} bytes moved (plan {int(move.planned.sum())}), weights "
                     f"{'bit-exact' if move.weights_exact else 'DIFFER'}; "
                     f"{'ok' if move.ok else 'FAILED'}")
    ok = all(r.ok for r in reports) and (move is None or move.ok)
    lines.append("result: " + ("MATCH" if ok else "MISMATCH"))
    return "\n".join(lines)
