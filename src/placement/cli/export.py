"""``placement export``: write a placement file in a serving stack's format (:mod:`placement.interop`)."""

from __future__ import annotations

import argparse

from ._common import Formatter, Subparsers, check_out, echo, examples

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``placement export`` to the CLI's subparsers; its description lists the formats."""
    from ..interop import PLACEMENT_FORMATS

    formats = "\n".join(
        f"  {name:<12} {'/'.join(f.suffixes):<11} {f.summary}" for name, f in PLACEMENT_FORMATS.items()
    )
    p = subparsers.add_parser(
        "export",
        help="write a placement for vLLM, SGLang, TensorRT-LLM or EPLB",
        formatter_class=Formatter,
        description="Convert a placement file into a serving stack's format (shapes in docs/interop.md).\n\n"
        "formats:\n" + formats,
        epilog=examples(
            "placement export --placement p.json --format sglang-json --num-hidden-layers 61 "
            "--first-moe-layer 3 --out expert_location.json",
            "placement export --placement p.json --format trtllm-yaml --first-moe-layer 3 --out moe_lb.yaml",
            "placement export --placement p.json --format eplb-pt --out eplb.pt",
        ),
    )
    p.add_argument("--placement", required=True, help="placement file (.json or .yaml)")
    p.add_argument("--format", required=True, choices=list(PLACEMENT_FORMATS), help="output format")
    p.add_argument("--out", required=True, help="output file (suffix must match the format)")
    p.add_argument(
        "--num-hidden-layers",
        type=int,
        default=None,
        help="model's hidden layers, dense included (if omitted: first MoE layer + MoE layers)",
    )
    p.add_argument("--first-moe-layer", type=int, default=0, help="hidden-layer index of the first MoE layer")
    return p


def run(args: argparse.Namespace) -> int:
    """Check ``--out`` against the format, convert the placement and say what was written."""
    from ..interop import PLACEMENT_FORMATS, export_placement
    from ..placement import load_placement

    check_out(args.out, PLACEMENT_FORMATS[args.format].suffixes)
    placement = load_placement(args.placement)
    export_placement(
        placement,
        args.out,
        args.format,
        num_hidden_layers=args.num_hidden_layers,
        first_moe_layer=args.first_moe_layer,
    )
    echo(
        f"wrote {args.out} ({args.format}): {placement.num_layers} MoE layers x {placement.num_gpus} GPUs x "
        f"{placement.slots_per_gpu} slots, {placement.num_experts} experts"
    )
    return 0
