"""``placement evaluate``: recompute every metric of a placement file on a trace and topology."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    Formatter,
    Subparsers,
    add_eval_options,
    echo,
    eval_kwargs,
    examples,
    format_table,
    json_text,
    step_report,
)

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``placement evaluate`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "evaluate", help="evaluate a placement file", formatter_class=Formatter,
        description="Recompute every metric of a placement on a trace and topology.",
        epilog=examples("placement evaluate --placement p.json --trace data/traces/mixtral-8x7b.npz "
                        "--topology fat-tree:2x4 --dedup"),
    )
    p.add_argument("--placement", required=True, help="placement file (.json or .yaml)")
    p.add_argument("--trace", required=True, help="trace file")
    p.add_argument("--topology", required=True, help="preset spec or YAML file")
    p.add_argument("--reference", default=None,
                   help="a method name or a placement file to compare with (ratios and a verdict)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_eval_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the metrics as a table (then the serving step per layer), or as JSON with ``--json``."""
    from ..api import as_topology
    from ..evaluate import evaluate
    from ..placement import load_placement
    from ..trace import load_trace

    placement = load_placement(args.placement)
    trace = load_trace(args.trace)
    topo = as_topology(args.topology)
    kwargs = eval_kwargs(args)
    metrics = evaluate(placement, trace, topo, **kwargs)
    name = str(placement.metadata.get("method", Path(args.placement).stem))
    reference = ref_name = None
    if args.reference is not None:
        reference, ref_name = _reference(args.reference, trace, topo, kwargs)
    if args.json:
        out = {"placement": name, **metrics.as_dict()}
        if reference is not None:
            out["reference"] = {"name": ref_name, **reference.as_dict()}
        echo(json_text(out))
        return 0
    frames = [metrics.to_frame(name)] + ([reference.to_frame(ref_name)] if reference is not None else [])
    import pandas as pd

    echo(format_table(pd.concat(frames).T))
    echo("")
    echo(step_report(metrics, reference, name, ref_name or "reference"))
    return 0


def _reference(spec: str, trace: object, topo: object, kwargs: dict) -> tuple[object, str]:
    """Metrics of the reference: a placement file when ``spec`` names an existing file, else a method."""
    from ..api import as_stats, parse_method_spec
    from ..evaluate import evaluate
    from ..methods import get_method, run_method
    from ..placement import load_placement

    if Path(spec).suffix.lower() in (".json", ".yaml", ".yml"):
        other = load_placement(spec)
        return evaluate(other, trace, topo, **kwargs), Path(spec).stem
    method, inline = parse_method_spec(spec)
    get_method(method).parse_options(inline)
    sol = run_method(method, as_stats(trace), topo, **inline)
    return evaluate(sol.placement, trace, topo, **kwargs), spec
