"""``placement export`` and ``placement import``: thin handlers over :mod:`placement.interop`."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register_export", "register_import"]


def register_export(subparsers: Any) -> argparse.ArgumentParser:
    from ..cli import _examples, _Formatter
    from . import PLACEMENT_FORMATS

    formats = "\n".join(
        f"  {name:<12} {'/'.join(f.suffixes):<11} {f.summary}" for name, f in PLACEMENT_FORMATS.items()
    )
    p = subparsers.add_parser(
        "export",
        help="write a placement for vLLM, SGLang, TensorRT-LLM or EPLB",
        formatter_class=_Formatter,
        description="Convert a placement file into a serving stack's format (shapes in docs/interop.md).\n\n"
        "formats:\n" + formats,
        epilog=_examples(
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
    p.set_defaults(func=_cmd_export)
    return p


def _cmd_export(args: argparse.Namespace) -> int:
    from ..cli import _check_out, _print
    from ..placement import load_placement
    from . import PLACEMENT_FORMATS, export_placement

    _check_out(args.out, PLACEMENT_FORMATS[args.format].suffixes)
    placement = load_placement(args.placement)
    export_placement(
        placement,
        args.out,
        args.format,
        num_hidden_layers=args.num_hidden_layers,
        first_moe_layer=args.first_moe_layer,
    )
    _print(
        f"wrote {args.out} ({args.format}): {placement.num_layers} MoE layers x {placement.num_gpus} GPUs x "
        f"{placement.slots_per_gpu} slots, {placement.num_experts} experts"
    )
    return 0


def register_import(subparsers: Any) -> argparse.ArgumentParser:
    from ..cli import _examples, _Formatter
    from . import PLACEMENT_FORMATS, TRACE_FORMATS

    listing = "\n".join(f"  {name:<12} trace      {summary}" for name, summary in TRACE_FORMATS.items())
    listing += "\n" + "\n".join(
        f"  {name:<12} placement  {f.summary}" for name, f in PLACEMENT_FORMATS.items()
    )
    p = subparsers.add_parser(
        "import",
        help="read SGLang/vLLM/EPLB loads, traces or placements",
        formatter_class=_Formatter,
        description="Convert a serving stack's recording into a trace (.npz, .csv, .parquet) or its "
        "placement file into a placement (.json, .yaml).\n\nformats:\n" + listing,
        epilog=_examples(
            "placement import --format sglang-dump expert_distribution_recorder_1700000000.pt "
            "--model deepseek-v3 --out load.npz",
            "placement import --format sglang-dump rec_*_0.pt rec_*_1.pt --out tokens.npz",
            "placement import --format expert-load expert_load.npy --top-k 8 --out load.npz",
            "placement import --format sglang-json expert_location.json --num-gpus 8 --first-moe-layer 3 "
            "--out p.json",
        ),
    )
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="input file(s); several only for per-rank dumps"
    )
    p.add_argument(
        "--format", required=True, choices=[*TRACE_FORMATS, *PLACEMENT_FORMATS], help="input format"
    )
    p.add_argument(
        "--out", required=True, help="trace (.npz, .csv, .parquet) or placement (.json, .yaml) file"
    )
    g = p.add_argument_group("traces")
    g.add_argument(
        "--model", default=None, help="model preset giving top-k and the MoE layers (e.g. deepseek-v3)"
    )
    g.add_argument(
        "--top-k", type=int, default=None, help="experts per token (needed for counts without --model)"
    )
    g.add_argument("--key", default=None, help="expert-load: entry of the file to read")
    g.add_argument(
        "--by-rank", action="store_true", help="expert-load: a 3-D tensor's first axis is the rank"
    )
    g = p.add_argument_group("placements")
    g.add_argument(
        "--num-gpus", type=int, default=None, help="EP size (SGLang and foreign TensorRT-LLM files)"
    )
    g.add_argument("--num-experts", type=int, default=None, help="logical experts (if omitted: max id + 1)")
    g.add_argument("--num-moe-layers", type=int, default=None, help="SGLang: MoE rows (if omitted: all)")
    p.add_argument(
        "--first-moe-layer",
        type=int,
        default=None,
        help="hidden-layer index of the first MoE layer (if omitted: detected for traces, 0 for SGLang maps)",
    )
    p.set_defaults(func=_cmd_import)
    return p


def _cmd_import(args: argparse.Namespace) -> int:
    from ..cli import _check_out, _print
    from ..errors import input_error
    from . import PLACEMENT_FORMATS, import_placement, import_trace

    if args.format in PLACEMENT_FORMATS:
        _check_out(args.out, (".json", ".yaml", ".yml"))
        if len(args.inputs) != 1:
            raise input_error(f"a placement is read from one file, got {len(args.inputs)}", field="INPUT")
        placement = import_placement(
            args.inputs[0],
            args.format,
            num_gpus=args.num_gpus,
            num_experts=args.num_experts,
            first_moe_layer=args.first_moe_layer,
            num_moe_layers=args.num_moe_layers,
        )
        placement.save(args.out)
        _print(
            f"wrote {args.out}: {placement.num_layers} MoE layers x {placement.num_gpus} GPUs x "
            f"{placement.slots_per_gpu} slots, {placement.num_experts} experts"
        )
        return 0
    from ..trace import save_trace

    _check_out(args.out, (".npz", ".csv", ".parquet"))
    trace = import_trace(
        args.inputs,
        args.format,
        model=args.model,
        top_k=args.top_k,
        first_moe_layer=args.first_moe_layer,
        key=args.key,
        by_rank=args.by_rank,
    )
    save_trace(trace, args.out)
    what = f"{trace.num_tokens} tokens" if trace.kind == "tokens" else f"counts {list(trace.counts.shape)}"
    _print(
        f"wrote {args.out}: {trace.kind} trace, {what}, {trace.num_layers} MoE layers x {trace.num_experts} "
        f"experts, top-{trace.top_k} (MoE layers from hidden layer {trace.metadata.get('first_moe_layer')})"
    )
    return 0
