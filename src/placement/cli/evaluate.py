"""``placement evaluate``: recompute every metric of a placement file on a trace and topology."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import Formatter, Subparsers, add_eval_options, echo, eval_kwargs, examples, format_table

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
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_eval_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the metrics as a table, or as JSON with ``--json``."""
    import json

    from ..api import as_topology
    from ..evaluate import evaluate
    from ..placement import load_placement
    from ..trace import load_trace

    placement = load_placement(args.placement)
    trace = load_trace(args.trace)
    topo = as_topology(args.topology)
    metrics = evaluate(placement, trace, topo, **eval_kwargs(args))
    if args.json:
        echo(json.dumps(metrics.as_dict(), indent=2, default=float))
    else:
        name = str(placement.metadata.get("method", Path(args.placement).stem))
        echo(format_table(metrics.to_frame(name).T))
    return 0
