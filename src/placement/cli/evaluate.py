"""``placement evaluate``: recompute every metric of a placement file on a trace and topology."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    Formatter,
    Subparsers,
    add_eval_options,
    add_format_option,
    echo,
    eval_kwargs,
    examples,
    format_table,
    json_text,
    load_test_trace,
    model_line,
    render_comparison,
    step_report,
)

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``placement evaluate`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "evaluate", help="evaluate a placement file", formatter_class=Formatter,
        description="Recompute every metric of a placement on a trace and topology.",
        epilog=examples("placement evaluate --placement p.json --trace data/traces/mixtral-8x7b.npz "
                        "--topology fat-tree:2x4 --dedup",
                "placement evaluate --placement current.json --trace day1.npz --test-trace day2.npz "
                "--topology rail:4x8 --reference eplb --format markdown"),
    )
    p.add_argument("--placement", required=True, help="placement file (.json or .yaml)")
    p.add_argument("--trace", required=True, help="trace file")
    p.add_argument("--topology", required=True, help="preset spec or YAML file")
    p.add_argument("--reference", default=None,
                   help="a method name or a placement file to compare with (ratios and a verdict)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table (= --format json)")
    add_format_option(p)
    add_eval_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the metrics as a table (then the serving step per layer and the verdict), or in ``--format``."""
    from ..api import as_topology, comparison_frame, verdict
    from ..evaluate import evaluate
    from ..placement import load_placement
    from ..trace import load_trace

    placement = load_placement(args.placement)
    trace = load_trace(args.trace)
    topo = as_topology(args.topology)
    test = load_test_trace(args, trace)
    kwargs = eval_kwargs(args)
    metrics = evaluate(placement, trace, topo, **kwargs)
    name = str(placement.metadata.get("method", Path(args.placement).stem))
    reference = ref_name = ref_placement = None
    if args.reference is not None:
        ref_placement, ref_name = _reference(args.reference, trace, topo)
        if ref_name == name:
            ref_name = f"{ref_name} (reference)"
        reference = evaluate(ref_placement, trace, topo, **kwargs)
    results, placements = {name: metrics}, {name: placement}
    if reference is not None:
        results[ref_name], placements[ref_name] = reference, ref_placement
    held = None if test is None else {n: evaluate(p, test, topo, **kwargs) for n, p in placements.items()}
    frame = comparison_frame(results, placements, trace.model, ref_name, test=held)
    decided = verdict(frame, ref_name)
    fmt = "json" if args.json else args.format
    if fmt == "json":
        out = {"placement": name, **metrics.as_dict(), **frame.loc[name, ["slots_per_gpu", "extra_replicas",
                                                                          "replica_GB", "replica_GB_per_gpu"]]}
        if held is not None:
            out["test"] = {"trace": args.test_trace, **held[name].as_dict()}
        if reference is not None:
            out["reference"] = {"name": ref_name, **reference.as_dict()}
            if held is not None:
                out["reference"]["test"] = held[ref_name].as_dict()
        out["verdict"] = decided.as_dict()
        echo(json_text(out))
        return 0
    if fmt != "table":
        text, err = render_comparison(frame, fmt, decided, {"placement": args.placement, "trace": args.trace})
        echo(text)
        if err:
            import sys

            sys.stderr.write(err + "\n")
        return 0
    echo(model_line(trace.model, args.hidden_size))
    echo(format_table(frame.T))
    echo("")
    echo(step_report(metrics, reference, name, ref_name or "reference"))
    if held is not None:
        line = f"out-of-sample ({args.test_trace}): {name} {held[name].step_time * 1e3:.4g} ms per step"
        if reference is not None:
            ratio = held[name].step_time / held[ref_name].step_time
            line += f", {ref_name} {held[ref_name].step_time * 1e3:.4g} ms: {ratio:.3f}x"
        echo(line)
    echo(f"verdict: {decided}")
    return 0


def _reference(spec: str, trace: object, topo: object) -> tuple[object, str]:
    """The reference placement and its label: a placement file when ``spec`` names one, else a method's solve."""
    from ..api import PLACEMENT_SUFFIXES, as_stats, parse_method_spec
    from ..methods import get_method, run_method
    from ..placement import load_placement

    if Path(spec).suffix.lower() in PLACEMENT_SUFFIXES:
        return load_placement(spec), Path(spec).stem
    method, inline = parse_method_spec(spec)
    get_method(method).parse_options(inline)
    return run_method(method, as_stats(trace), topo, **inline).placement, spec
