"""``python -m placement_runtime check``: replay a trace on real ranks and compare with the evaluator.

(``python -m placement_runtime record`` records a transformers model's routing as a trace:
:mod:`placement_runtime.record`.)

Exit status: 0 when measured bytes equal the evaluator's and outputs equal the reference,
1 on a mismatch, 2 on bad input (nothing is started), 3 when the run did not complete
(a rank died, failed or passed ``--timeout``).

Without ``RANK``/``WORLD_SIZE`` in the environment it spawns ``--world`` Gloo ranks on this
machine; under ``torchrun`` each process is one rank (NCCL on ``cuda:LOCAL_RANK`` when CUDA is
available) and rank 0 prints the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from placement.errors import PlacementInputError, input_error
from placement.evaluation.replica_rules import REPLICA_RULES
from placement.evaluation.transports import TRANSPORTS

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_MISMATCH, EXIT_INPUT, EXIT_RUN = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m placement_runtime",
        description="Apply placements with torch.distributed and check them with real all-to-all traffic.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "check", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="replay a trace under a placement on W ranks; compare bytes with the evaluator",
        description=__doc__,
        epilog="examples:\n"
               "  python -m placement_runtime check --placement p.json --trace t.npz --topology fat-tree:2x2 "
               "--world 4\n"
               "  python -m placement_runtime check --placement a.json --placement b.json --move "
               "--trace t.npz --topology fat-tree:2x2 --dedup\n"
               "  python -m placement_runtime check --placement p.json --trace t.npz --topology fat-tree:2x2 "
               "--replica vllm --transport deepep\n"
               "  torchrun --nnodes 2 --nproc-per-node 8 ... -m placement_runtime check --placement p.json "
               "--trace t.npz --topology fat-tree:2x8 --backend nccl   (see docs/runtime.md)",
    )
    p.add_argument("--placement", action="append", required=True,
                   help="placement file (.json/.yaml); repeat to check several in one run")
    p.add_argument("--trace", required=True, help="token trace file (.npz, .npy, .csv, .parquet)")
    p.add_argument("--topology", required=True, help="preset spec (e.g. fat-tree:2x2) or YAML file")
    p.add_argument("--world", type=int, default=None,
                   help="ranks to spawn (default and required value: the topology's GPU count)")
    p.add_argument("--dedup", action="store_true",
                   help="nccl transport: send a token once per destination GPU instead of once per expert")
    p.add_argument("--replica", choices=list(REPLICA_RULES), default="nearest",
                   help="replica rule, the evaluator's (placement.evaluate(replica=...)): "
                        + "; ".join(f"{name}: {rule.summary}" for name, rule in REPLICA_RULES.items())
                        + " (random rules are drawn with --seed and compared within a stated statistical band)")
    p.add_argument("--transport", choices=list(TRANSPORTS), default="nccl",
                   help="how tokens travel, the evaluator's (placement.evaluate(transport=...)): "
                        + "; ".join(f"{name}: {t.summary}" for name, t in TRANSPORTS.items()))
    p.add_argument("--move", action="store_true",
                   help="after the checks, move the weights from the first placement to the last and "
                        "check again")
    p.add_argument("--backend", choices=("gloo", "nccl"), default=None,
                   help="default: gloo when spawning; under torchrun nccl if CUDA is available, else gloo")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds for the whole spawned run and for every collective")
    p.add_argument("--origins", choices=("round_robin", "trace"), default="round_robin",
                   help="where tokens start: token t on rank t mod W, or the trace's origin ranks")
    p.add_argument("--tokens", type=int, default=None, help="replay only the first N tokens of the trace")
    p.add_argument("--hidden-size", type=int, default=32, help="hidden size of the replayed states")
    p.add_argument("--ffn-size", type=int, default=None, help="expert FFN width (default 2 x hidden)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="wire and compute dtype")
    p.add_argument("--atol", type=float, default=None,
                   help="output tolerance vs the float64 reference, times max(1, max|reference|) "
                        "(default 1e-5 fp32, 2e-2 fp16, 1e-1 bf16)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the expert weights, inputs, gates and the draws of random replica rules")
    from . import record

    r = sub.add_parser(
        "record", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="record the router top-k of a transformers MoE model on given texts as a token trace",
        description=record.__doc__.split("\n\n")[0] + "\n\nExit status: 0 written, 2 bad input (nothing written).",
        epilog="examples:\n"
               "  python -m placement_runtime record --model mistralai/Mixtral-8x7B-Instruct-v0.1 --device auto "
               "--dtype bf16 --text prompts.txt --lines --out mixtral.npz\n"
               "  python -m placement_runtime record --model ./my-qwen3-moe --prompt 'Hello' --out t.npz   "
               "(see docs/recording.md)",
    )
    record.build_parser(r)
    sub.add_parser("_worker", add_help=False).add_argument("directory")
    return parser


def _config(args: argparse.Namespace, world: int | None):
    from placement.api import as_topology
    from placement.placement import load_placement
    from placement.trace import load_trace

    from .check import CheckCase, CheckConfig

    topo = as_topology(args.topology)
    trace = load_trace(args.trace)
    trace.require_tokens("the runtime check")
    if args.tokens is not None:
        if args.tokens < 1:
            raise input_error(f"must be positive, got {args.tokens}", field="--tokens")
        trace = trace.head(args.tokens)
    W = topo.num_gpus
    if world is not None and world != W:
        raise input_error(f"the world has {world} ranks but the topology has {W} GPUs; one rank per GPU "
                          f"(use --world {W})", field="--world")
    cases = []
    for path in args.placement:
        p = load_placement(path)
        name = os.path.splitext(os.path.basename(path))[0]
        if sum(os.path.basename(q) == os.path.basename(path) for q in args.placement) > 1:
            name = path  # two files of the same name: keep them apart
        cases.append(CheckCase(name, p, args.dedup, args.replica, args.transport))
    if args.dedup and args.transport != "nccl":
        raise input_error(f"de-duplication is a choice of the nccl transport; {args.transport} fixes it (deepep sends "
                          "once per node and GPU, deepep-ll once per expert): drop --dedup", field="--dedup")
    if args.move and len(cases) < 2:
        raise input_error("--move needs two --placement files (from the first to the last)", field="--move")
    if args.timeout <= 0:
        raise input_error(f"must be positive, got {args.timeout}", field="--timeout")
    return CheckConfig(trace=trace, topology=topo, cases=tuple(cases), hidden_size=args.hidden_size,
                       ffn_size=args.ffn_size or 2 * args.hidden_size, dtype=args.dtype, seed=args.seed,
                       origins=args.origins, atol=args.atol,
                       move=(0, len(cases) - 1) if args.move else None)


def _finish(config, results, backend: str) -> int:
    from .check import compare, format_report

    reports, move = compare(config, results)
    print(format_report(config, reports, move, backend=backend, extra=results.extra), flush=True)
    ok = all(r.ok for r in reports) and (move is None or move.ok)
    return EXIT_OK if ok else EXIT_MISMATCH


def _check_spawned(args: argparse.Namespace) -> int:
    config = _config(args, args.world)
    from .launch import RankFailure, spawn_check

    backend = args.backend or "gloo"
    try:
        results = spawn_check(config, timeout=args.timeout, backend=backend)
    except RankFailure as exc:
        print(f"placement_runtime check: error: {exc}", file=sys.stderr)
        return EXIT_RUN
    return _finish(config, results, backend)


def _check_torchrun(args: argparse.Namespace) -> int:
    world = int(os.environ["WORLD_SIZE"])
    config = _config(args, world)  # bad input: every rank stops here before joining the group
    import torch
    import torch.distributed as dist

    from .check import run_cases
    from .launch import apply_fault, init_from_env

    rank, world, device, backend = init_from_env(args.backend, args.timeout)
    try:
        apply_fault(rank)
        results = run_cases(config, rank, device=device, backend=backend)
        nodes: list = [None] * world  # torchrun's node of every rank (GROUP_RANK), for the report
        dist.all_gather_object(nodes, int(os.environ.get("GROUP_RANK", "0")))
        results = dataclasses.replace(results, extra={**results.extra, "nodes": nodes})
        code = _finish(config, results, backend) if rank == 0 else EXIT_OK
        flag = torch.tensor([code], dtype=torch.int64, device=device)
        dist.broadcast(flag, 0)
        return int(flag.item())
    finally:
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "_worker":
        from .launch import worker_main

        return worker_main(args.directory)
    if args.command == "record":
        from .record import EXIT_INPUT as RECORD_EXIT_INPUT
        from .record import run as record_run

        try:
            return record_run(args)
        except PlacementInputError as exc:
            print(f"placement_runtime record: error: {exc}", file=sys.stderr)
            return RECORD_EXIT_INPUT
    try:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            return _check_torchrun(args)
        return _check_spawned(args)
    except PlacementInputError as exc:
        print(f"placement_runtime check: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
