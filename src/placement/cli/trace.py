"""``placement trace synth`` and ``placement trace info``: generate a synthetic trace, describe a trace file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import input_error
from ._common import Formatter, Subparsers, check_out, echo, examples

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``placement trace {synth,info}`` to the CLI's subparsers."""
    pt = subparsers.add_parser("trace", help="trace tools (synth, info)", formatter_class=Formatter,
                               epilog=examples("placement trace info data/traces/mixtral-8x7b.npz"))
    tsub = pt.add_subparsers(dest="trace_command", metavar="SUBCOMMAND")
    tsub.required = True
    p = tsub.add_parser(
        "synth", help="generate a synthetic trace", formatter_class=Formatter,
        epilog=examples("placement trace synth --model deepseek-v3 --tokens 4096 --seed 0 --out ds.npz",
                        "placement trace synth --model deepseek-v3 --tokens 2048 --ranks 32 --no-weights --seed 0 "
                        "--token-seed 1 --out held-out.npz",
                        "placement trace synth --model mixtral-8x7b --tokens 10000 --affinity 0.8 --out mx.npz"),
    )
    p.add_argument("--model", help="model preset (see --list)")
    p.add_argument("--list", action="store_true", help="list the model presets and exit")
    p.add_argument("--tokens", type=int, help="number of tokens")
    p.add_argument("--seed", type=int, default=0, help="random seed (the model: expert popularity, layouts, and the "
                   "tokens unless --token-seed is given)")
    p.add_argument("--token-seed", type=int, default=None,
                   help="seed of the tokens only: the same model as --seed, other tokens (a held-out trace)")
    p.add_argument("--skew", type=float, default=None, help="expert popularity skew (default: preset's)")
    p.add_argument("--affinity", type=float, default=None, help="inter-layer affinity in [0, 1] (default: preset's)")
    p.add_argument("--ranks", type=int, default=None, help="give tokens origin ranks 0..RANKS-1")
    p.add_argument("--skew-spread", type=float, default=None, help="per-layer variation of the skew")
    p.add_argument("--no-weights", action="store_true", help="do not generate gate weights")
    p.add_argument("--out", help="output file (.npz, .csv, .parquet; .npy for top-1 models)")
    p = tsub.add_parser("info", help="describe a trace file", formatter_class=Formatter,
                        epilog=examples("placement trace info data/traces/deepseek-v3.npz"))
    p.add_argument("path", help="trace file")
    p.add_argument("--json", action="store_true", help="print JSON")
    return pt


def run(args: argparse.Namespace) -> int:
    """Run ``synth`` or ``info``."""
    return _synth(args) if args.trace_command == "synth" else _info(args)


def _synth(args: argparse.Namespace) -> int:
    from ..trace import save_trace
    from ..trace.synthesize import MODEL_PRESETS, synthesize

    if args.list:
        for name, p in MODEL_PRESETS.items():
            m = p.spec
            echo(f"{name:<18} {m.num_layers} layers x {m.num_experts} experts, top-{m.top_k}, "
                 f"skew {p.skew}, affinity {p.affinity}")
        return 0
    for flag in ("model", "tokens", "out"):
        if getattr(args, flag) is None:
            raise input_error(f"--{flag} is required (or use --list)", field=f"--{flag}")

    suffix = Path(args.out).suffix.lower()
    check_out(args.out, (".npz", ".npy", ".csv", ".parquet"))
    kwargs: dict[str, Any] = {"seed": args.seed, "weights": not args.no_weights}
    for name in ("skew", "skew_spread", "affinity"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    if args.ranks is not None:
        kwargs["num_ranks"] = args.ranks
    if args.token_seed is not None:
        kwargs["token_seed"] = args.token_seed
    trace = synthesize(args.model, args.tokens, **kwargs)
    save_trace(trace, args.out, format=suffix.lstrip("."))
    echo(f"wrote {args.out}: {trace.num_tokens} tokens x {trace.num_layers} layers x top-{trace.top_k}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    from ..trace import load_trace

    info = load_trace(args.path).summary()
    if args.json:
        echo(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            echo(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return 0
