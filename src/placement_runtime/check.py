"""The check: replay a trace under placements on W ranks and compare with the evaluator.

:func:`run_cases` is the collective part (every rank calls it; rank 0 gets the results);
:func:`compare` turns the results into :class:`CaseReport` s against
:func:`placement.evaluate` (``dispatch="origin"``, the same ``dedup``, ``origins``,
``hidden_size`` and ``dtype``); :func:`format_report` prints them.

What "match" means: the runtime's bytes ``[G, G]`` summed over layers and both phases equal
``metrics.traffic * metrics.bytes_per_token`` entry by entry, *including the diagonal*: the
evaluator counts a token whose expert sits on its own GPU as a ``u -> u`` send, and the
runtime counts the rows a rank passes to itself through ``all_to_all_single``.  The same
holds layer by layer (each layer evaluated as a one-layer trace) and phase by phase
(combine = dispatch transposed).  Off-diagonal totals are reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement.costs import DTYPE_BYTES
from placement.evaluation import evaluate
from placement.placement import Placement
from placement.topology import Topology
from placement.trace._trace import Trace

from .plan import ORIGIN_RULES

__all__ = ["CheckCase", "CheckConfig", "CaseResult", "MoveResult", "CheckResults", "CaseReport", "MoveReport",
           "run_cases", "compare", "format_report", "default_atol"]

_ATOL = {"fp32": 1e-5, "float32": 1e-5, "fp16": 2e-2, "float16": 2e-2, "bf16": 1e-1, "bfloat16": 1e-1}


def default_atol(dtype: str) -> float:
    """Output tolerance against the float64 reference: 1e-5 for fp32, 2e-2 for fp16, 1e-1 for bf16."""
    return _ATOL[dtype]


@dataclass(frozen=True, eq=False)
class CheckCase:
    """One placement to replay, with or without de-duplication."""

    name: str
    placement: Placement
    dedup: bool = False


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
    max |reference|; ``output``: ``float64 [tokens, hidden]`` the runtime's outputs in token order.
    """

    name: str
    dedup: bool
    sent: np.ndarray
    received: np.ndarray
    meta_bytes: np.ndarray
    max_abs_error: float
    ref_max_abs: float
    output: np.ndarray | None = None


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
    from .replay import reference_replay, replay_rank

    trace, G = config.trace, config.world
    dtype = torch_dtype(config.dtype)
    counter = TrafficCounter(trace.num_layers, G)
    layers = build_layers(case.placement, config.topology, rank, hidden_size=config.hidden_size,
                          ffn_size=config.ffn_size, seed=config.seed, weights=weights, dedup=case.dedup,
                          group=group, device=device, dtype=dtype, counter=counter)
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
                        ref_max_abs=float(stats[1]), output=full)
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
        after_case = CheckCase(f"{dst.name} (moved)", dst.placement, dst.dedup)
        after, _ = _run_case(config, after_case, rank, group=group, device=device, weights=outcome.weights,
                             gather_output=gather_output)
        move = MoveResult(source=src.name, target=dst.name, moved=moved,
                          planned=outcome.plan.count_matrix(G) * outcome.bytes_per_expert,
                          copies=outcome.plan.num_moves, weights_exact=int(buf[-1]) == 0, after=after)
    return CheckResults(cases=results, move=move, backend=backend, world=config.world)


# ------------------------------------------------------------------------------------ comparison
@dataclass(frozen=True, eq=False)
class CaseReport:
    """One case against the evaluator.

    ``measured``/``predicted``: ``[G, G]`` bytes over all layers and phases; ``bad_layers``: layers
    whose dispatch or combine matrix differs from the one-layer evaluation.
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

    @property
    def bytes_match(self) -> bool:
        return bool(np.array_equal(self.measured, self.predicted) and not self.bad_layers and self.consistent)

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
    kw = dict(dispatch="origin", dedup=case.dedup, origins=config.origins, hidden_size=config.hidden_size,
              dtype=config.dtype)
    metrics = evaluate(case.placement, config.trace, config.topology, **kw)
    assert metrics.bytes_per_token == config.hidden_size * DTYPE_BYTES[config.dtype]
    predicted = metrics.traffic * metrics.bytes_per_token
    per_layer = metrics.layer_traffic * metrics.bytes_per_token  # dispatch phase; combine is its transpose
    bad = [layer for layer in range(config.trace.num_layers)
           if not (np.array_equal(res.sent[layer, 0], per_layer[layer])
                   and np.array_equal(res.sent[layer, 1], per_layer[layer].T))]
    return CaseReport(name=res.name, dedup=case.dedup, measured=res.sent.sum(axis=(0, 1)),
                      predicted=predicted, bad_layers=bad,
                      consistent=bool(np.array_equal(res.sent, res.received)),
                      max_abs_error=res.max_abs_error, ref_max_abs=res.ref_max_abs, atol=config.tolerance)


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


def format_report(config: CheckConfig, reports: list[CaseReport], move: MoveReport | None,
                  backend: str = "gloo") -> str:
    """The text the CLI prints."""
    t = config.trace
    lines = [f"placement_runtime check: {config.world} ranks ({backend}), {t.num_tokens} tokens x "
             f"{t.num_layers} layers x top-{t.top_k} of {t.num_experts} experts, hidden {config.hidden_size} "
             f"{config.dtype}, origins {config.origins}",
             "bytes: hidden states summed over layers, dispatch + combine, diagonal included (a rank's rows "
             "to itself: both sides count them); off-GPU = without the diagonal"]
    head = (f"{'case':<24} {'dedup':<5} {'measured B':>12} {'predicted B':>12} {'off-GPU meas.':>13} "
            f"{'off-GPU pred.':>13} {'bytes':<8} {'max|err|':>9} {'outputs':<7}")
    lines.append(head)
    rows = list(reports) + ([move.after] if move is not None else [])
    for r in rows:
        lines.append(f"{r.name[:24]:<24} {'yes' if r.dedup else 'no':<5} {int(r.measured.sum()):>12} "
                     f"{int(r.predicted.sum()):>12} {int(r.off_diagonal(r.measured)):>13} "
                     f"{int(r.off_diagonal(r.predicted)):>13} {'match' if r.bytes_match else 'MISMATCH':<8} "
                     f"{r.max_abs_error:>9.2e} {'ok' if r.outputs_match else 'BAD':<7}")
        if r.bad_layers:
            lines.append(f"  layers whose bytes differ from the evaluator: {r.bad_layers[:10]}")
        if not r.consistent:
            lines.append("  sent and received byte counts disagree between ranks")
    lines.append(f"outputs ok when max|runtime - fp64 reference| <= {config.tolerance:g} x max(1, max|ref|)")
    if move is not None:
        lines.append(f"re-placement {move.source} -> {move.target}: {move.copies} expert copies, "
                     f"{int(move.moved.sum())} bytes moved (plan {int(move.planned.sum())}), weights "
                     f"{'bit-exact' if move.weights_exact else 'DIFFER'}; "
                     f"{'ok' if move.ok else 'FAILED'}")
    ok = all(r.ok for r in reports) and (move is None or move.ok)
    lines.append("result: " + ("MATCH" if ok else "MISMATCH"))
    return "\n".join(lines)
