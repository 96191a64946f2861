"""``placement import``: read a serving stack's expert loads, routing or placement file
(:mod:`placement.interop`) into a trace or a placement.

The module is named ``import_`` because ``import`` is a keyword; the command is ``placement import``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import input_error
from ._common import Formatter, Subparsers, check_out, echo, examples, model_line

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``placement import`` to the CLI's subparsers; its description lists the formats."""
    from ..interop import FORMAT_ALIASES, PLACEMENT_FORMATS, TRACE_FORMATS

    listing = "\n".join(f"  {name:<12} trace      {summary}" for name, summary in TRACE_FORMATS.items())
    listing += "\n" + "\n".join(f"  {name:<12} placement  {f.summary}" for name, f in PLACEMENT_FORMATS.items())
    p = subparsers.add_parser(
        "import",
        help="read SGLang/vLLM/EPLB loads, traces or placements",
        formatter_class=Formatter,
        description="Convert a serving stack's recording into a trace (.npz, .csv, .parquet) or its "
        "placement file into a placement (.json, .yaml).\n\nformats:\n" + listing,
        epilog=examples(
            "placement import --format sglang-dump expert_distribution_recorder_1700000000.pt "
            "--model deepseek-v3 --out load.npz",
            "placement import --format sglang-dump rec_*_0.pt rec_*_1.pt --out tokens.npz",
            "placement import --format expert-load expert_load.npy --top-k 8 --hidden-size 7168 --out load.npz",
            "placement import --format trtllm-stats expert_statistic/ --model deepseek-v3 --out load.npz",
            "placement import --format sglang-json expert_location.json --num-gpus 8 --model deepseek-v3 "
            "--out p.json",
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input file(s); several only for per-rank dumps")
    p.add_argument("--format", required=True, choices=[*TRACE_FORMATS, *PLACEMENT_FORMATS, *FORMAT_ALIASES],
                   metavar="FORMAT", help="input format (listed above)")
    p.add_argument("--out", required=True, help="trace (.npz, .csv, .parquet) or placement (.json, .yaml) file")
    g = p.add_argument_group("traces")
    g.add_argument("--model", default=None,
                   help="model preset giving top-k and the MoE layers (e.g. deepseek-v3); SGLang maps: the MoE rows")
    g.add_argument("--top-k", type=int, default=None, help="experts per token (needed for counts without --model)")
    g.add_argument("--hidden-size", type=int, default=None,
                   help="without --model: the model's hidden size (bytes per token; if omitted: unknown, the "
                   "evaluator assumes 4096 and says so)")
    g.add_argument("--num-groups", type=int, default=None,
                   help="without --model: expert groups of group-limited routing (EPLB's hierarchical policy; "
                   "if omitted: 1, no groups)")
    g.add_argument("--topk-groups", type=int, default=None, help="without --model: groups a token may use")
    g.add_argument("--key", default=None, help="expert-load: entry of the file to read")
    g.add_argument("--by-rank", action="store_true", help="expert-load: a 3-D tensor's first axis is the rank")
    g.add_argument("--recorded", choices=["sent", "received", "replicated"], default=None,
                   help="sglang-dump per_pass/per_token: what each rank recorded, the tokens it sent, those its "
                   "experts received (DeepEP low-latency) or the same tokens as every rank (tensor-parallel "
                   "attention); if omitted: detected, refused when it cannot be")
    g = p.add_argument_group("placements")
    g.add_argument("--num-gpus", type=int, default=None, help="EP size (SGLang and foreign TensorRT-LLM files)")
    g.add_argument("--num-experts", type=int, default=None, help="logical experts (if omitted: max id + 1)")
    g.add_argument("--num-moe-layers", type=int, default=None,
                   help="SGLang: MoE rows from --first-moe-layer (if omitted: all from there)")
    g.add_argument("--moe-layers", default=None, help="SGLang: hidden-layer index of every MoE row, '1,3,5' or '3-60'")
    p.add_argument(
        "--first-moe-layer",
        type=int,
        default=None,
        help="hidden-layer index of the first MoE layer (traces: checked against the layers with routing; "
        "SGLang maps: needed unless --moe-layers or --model)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Import a placement (placement formats) or a trace (trace formats) and say what was written."""
    from ..interop import FORMAT_ALIASES, PLACEMENT_FORMATS

    if args.format in FORMAT_ALIASES:
        echo(f"note: format '{args.format}' is deprecated, use '{FORMAT_ALIASES[args.format]}'")
        args.format = FORMAT_ALIASES[args.format]
    return _placement(args) if args.format in PLACEMENT_FORMATS else _trace(args)


def _placement(args: argparse.Namespace) -> int:
    from ..interop import import_placement

    check_out(args.out, (".json", ".yaml", ".yml"))
    if len(args.inputs) != 1:
        raise input_error(f"a placement is read from one file, got {len(args.inputs)}", field="INPUT")
    placement = import_placement(
        args.inputs[0],
        args.format,
        num_gpus=args.num_gpus,
        num_experts=args.num_experts,
        first_moe_layer=args.first_moe_layer,
        num_moe_layers=args.num_moe_layers,
        moe_layers=args.moe_layers,
        model=args.model,
    )
    placement.save(args.out)
    layout = placement.layout.describe() if placement.layout is not None else "layer layout unknown"
    echo(
        f"wrote {args.out}: {placement.num_layers} MoE layers x {placement.num_gpus} GPUs x "
        f"{placement.slots_per_gpu} slots, {placement.num_experts} experts; {layout}"
    )
    return 0


def _trace(args: argparse.Namespace) -> int:
    from ..interop import import_trace
    from ..trace import save_trace

    check_out(args.out, (".npz", ".csv", ".parquet"))
    _with_model_figures(args, None)  # a contradicting flag fails before reading
    trace = import_trace(
        args.inputs,
        args.format,
        model=args.model,
        top_k=args.top_k,
        first_moe_layer=args.first_moe_layer,
        key=args.key,
        by_rank=args.by_rank,
        recorded=args.recorded,
    )
    trace = _with_model_figures(args, trace)
    save_trace(trace, args.out)
    what = f"{trace.num_tokens} tokens" if trace.kind == "tokens" else f"counts {list(trace.counts.shape)}"
    layout = trace.model.layout()
    lines = [
        f"wrote {args.out}: {trace.kind} trace, {what}, {trace.num_layers} MoE layers x {trace.num_experts} "
        f"experts, top-{trace.top_k} (MoE layers from hidden layer {trace.metadata.get('first_moe_layer')})",
        "layer layout: " + (layout.describe() if layout is not None else "unknown (hidden-layer exports ask)"),
    ]
    source = f"preset {args.model}" if args.model else "the recording"
    lines.append(model_line(trace.model) + f" (from {source})")
    recorded = trace.metadata.get("recorded")
    if recorded is not None:
        how = "detected" if trace.metadata.get("recorded_detected") else "given"
        origins = "per-rank origins kept" if recorded == "sent" else "origins unknown (not invented)"
        lines.append(f"recorder: each rank recorded the tokens {RECORDED_WORDS[recorded]} ({how}); {origins}")
    echo("\n".join(lines))
    return 0


def _with_model_figures(args: argparse.Namespace, trace: Any) -> Any:
    """The trace with ``--hidden-size``/``--num-groups``/``--topk-groups`` set on its model (not with ``--model``)."""
    from dataclasses import replace

    given = {k: v for k, v in (("hidden_size", args.hidden_size), ("num_groups", args.num_groups),
                                ("topk_groups", args.topk_groups)) if v is not None}
    if not given:
        return trace
    if args.model is not None:
        flag = "--" + next(iter(given)).replace("_", "-")
        raise input_error(f"comes from the model preset {args.model!r}; drop {flag} or --model", field=flag)
    if trace is None:
        return None
    return replace(trace, model=replace(trace.model, **given))  # Trace and ModelSpec validate them


RECORDED_WORDS = {"sent": "it routed", "received": "its experts received", "replicated": "of every rank"}
