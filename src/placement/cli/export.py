"""``placement export``: write a placement file in a serving stack's format (:mod:`placement.interop`)."""

from __future__ import annotations

import argparse

from ._common import Formatter, Subparsers, check_out, echo, examples

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``placement export`` to the CLI's subparsers; its description lists the formats."""
    from ..interop import FORMAT_ALIASES, LOAD_FORMATS, PLACEMENT_FORMATS

    formats = "\n".join(
        f"  {name:<12} {'/'.join(f.suffixes):<11} {f.summary}" for name, f in PLACEMENT_FORMATS.items()
    )
    formats += "\n\nfrom a trace (--trace):\n" + "\n".join(
        f"  {name:<12} {'/'.join(f.suffixes):<11} {f.summary}" for name, f in LOAD_FORMATS.items()
    )
    p = subparsers.add_parser(
        "export",
        help="write a placement for SGLang, TensorRT-LLM, vllm-ascend or EPLB",
        formatter_class=Formatter,
        description="Convert a placement file into a serving stack's format, or a trace's expert loads into a\n"
        "file a stack balances at start (shapes in docs/interop.md).\n\n"
        "formats:\n" + formats,
        epilog=examples(
            "placement export --placement p.json --format sglang-json --out expert_location.json",
            "placement export --placement p.json --format sglang-json --model deepseek-v3 --out expert_location.json",
            "placement export --placement p.json --format trtllm-yaml --first-moe-layer 3 --out moe_lb.yaml",
            "placement export --placement p.json --format eplb-pt --out eplb.pt",
            "placement export --trace load.npz --format sglang-logical-count --out logical_count.json",
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--placement", help="placement file (.json or .yaml)")
    src.add_argument("--trace", help="trace file, for the formats of expert loads")
    choices = [*PLACEMENT_FORMATS, *FORMAT_ALIASES, *LOAD_FORMATS]
    p.add_argument("--format", required=True, choices=choices, metavar="FORMAT", help="output format (listed above)")
    p.add_argument("--out", required=True, help="output file (suffix must match the format)")
    g = p.add_argument_group("layer layout (formats indexing hidden layers; default: the placement's own)")
    g.add_argument(
        "--num-hidden-layers",
        type=int,
        default=None,
        help="model's hidden layers, dense included (with --first-moe-layer/--moe-layers, if omitted: up to the "
        "last MoE layer)",
    )
    g.add_argument("--first-moe-layer", type=int, default=None,
                   help="hidden-layer index of the first MoE layer (MoE layers contiguous from there)")
    g.add_argument("--moe-layers", default=None, help="hidden-layer index of every MoE layer: '1,3,5' or '3-60'")
    g.add_argument("--model", default=None, help="model preset giving the layout (e.g. deepseek-v3)")
    return p


def run(args: argparse.Namespace) -> int:
    """Check ``--out`` against the format, convert the placement and say what was written."""
    from ..interop import FORMAT_ALIASES, LOAD_FORMATS, PLACEMENT_FORMATS, export_placement
    from ..interop._common import export_layout
    from ..placement import load_placement

    if args.format in LOAD_FORMATS or args.trace is not None:
        return _load(args)
    name = FORMAT_ALIASES.get(args.format, args.format)
    fmt = PLACEMENT_FORMATS[name]
    check_out(args.out, fmt.suffixes)
    placement = load_placement(args.placement)
    layout = dict(num_hidden_layers=args.num_hidden_layers, first_moe_layer=args.first_moe_layer,
                  moe_layers=args.moe_layers, model=args.model)
    export_placement(placement, args.out, name, **layout)
    line = (f"wrote {args.out} ({name}): {placement.num_layers} MoE layers x {placement.num_gpus} GPUs x "
            f"{placement.slots_per_gpu} slots, {placement.num_experts} experts")
    if fmt.layers != "moe":
        used = export_layout(placement, name, args.out, need_hidden=fmt.layers == "all-hidden", **layout)
        given = any(v is not None for v in layout.values())
        line += f"; {used.describe()} ({'given' if given else 'from the placement file'})"
    if fmt.reader:
        line += f"; read by {fmt.reader}"
    if name == "vllm-ascend" or name.startswith("sglang"):
        line += f"; serve with {placement.num_gpus * placement.slots_per_gpu - placement.num_experts} redundant experts"
    if args.format != name:
        line += f"\nnote: format '{args.format}' is deprecated, use '{name}'"
    echo(line)
    return 0


def _load(args: argparse.Namespace) -> int:
    from ..errors import input_error
    from ..interop import LOAD_FORMATS, export_load
    from ..interop._common import resolve_layout
    from ..trace import load_trace

    if args.format not in LOAD_FORMATS:
        raise input_error(f"a trace exports to {list(LOAD_FORMATS)}; a placement (--placement) to the other formats",
                          field="format")
    if args.trace is None:
        raise input_error(f"{args.format} is written from a trace's expert loads: pass --trace", field="trace")
    fmt = LOAD_FORMATS[args.format]
    check_out(args.out, fmt.suffixes)
    trace = load_trace(args.trace)
    layout = dict(num_hidden_layers=args.num_hidden_layers, first_moe_layer=args.first_moe_layer,
                  moe_layers=args.moe_layers, model=args.model)
    export_load(trace, args.out, args.format, **layout)
    used = resolve_layout(trace.model.layout(), trace.num_layers, trace.num_experts, args.format, args.out,
                          "this trace", need_hidden=True, **layout)
    given = any(v is not None for v in layout.values())
    echo(f"wrote {args.out} ({args.format}): expert loads of {trace.num_layers} MoE layers x {trace.num_experts} "
         f"experts; {used.describe()} ({'given' if given else 'from the trace'}); read by {fmt.reader}")
    return 0
