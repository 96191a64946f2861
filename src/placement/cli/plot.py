"""``placement plot {map,traffic,tiers,solve-time}``: draw a figure with :mod:`placement.plots` and
write it as PNG or SVG.

:func:`read_table` reads the tables the ``tiers`` and ``solve-time`` figures take (the file of
``placement compare --out``, or any CSV).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import input_error
from ._common import Formatter, Subparsers, add_eval_options, check_out, echo, eval_kwargs, examples

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["register", "run", "read_table"]


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``placement plot`` and its figures to the CLI's subparsers."""
    pp = subparsers.add_parser(
        "plot",
        help="draw placements and comparisons (PNG/SVG)",
        formatter_class=Formatter,
        description="Draw a figure and write it as .png or .svg (needs matplotlib: the notebook extra).",
        epilog=examples(
            "placement plot map --placement p.json --trace t.npz --out map.png",
            "placement plot tiers --table cmp.csv --out tiers.svg",
        ),
    )
    psub = pp.add_subparsers(dest="plot_command", metavar="FIGURE")
    psub.required = True
    p = psub.add_parser(
        "map",
        help="expert-to-GPU map per layer, shaded by load",
        formatter_class=Formatter,
        epilog=examples("placement plot map --placement p.json --trace t.npz --layer 0 --layer 5 --out map.png"),
    )
    p.add_argument("--placement", required=True, help="placement file (.json or .yaml)")
    p.add_argument("--trace", help="trace file giving the load (if omitted: shade by replica count)")
    p.add_argument("--layer", type=int, action="append", help="MoE layer to draw (repeatable; if omitted: 4 layers)")
    p.add_argument("--out", required=True, help="image file (.png or .svg)")
    p = psub.add_parser(
        "traffic",
        help="GPU-to-GPU traffic matrix of a placement",
        formatter_class=Formatter,
        epilog=examples(
            "placement plot traffic --placement p.json --trace t.npz --topology fat-tree:2x4 --out traffic.png"
        ),
    )
    p.add_argument("--placement", required=True, help="placement file (.json or .yaml)")
    p.add_argument("--trace", required=True, help="trace file")
    p.add_argument("--topology", required=True, help="preset spec or YAML file")
    p.add_argument("--out", required=True, help="image file (.png or .svg)")
    add_eval_options(p)
    p = psub.add_parser(
        "tiers",
        help="bytes per link tier and method (grouped bars)",
        formatter_class=Formatter,
        epilog=examples(
            "placement compare --trace t.npz --topology fat-tree:2x4 --methods round_robin,eplb --out cmp.csv",
            "placement plot tiers --table cmp.csv --out tiers.png",
        ),
    )
    p.add_argument("--table", required=True, help="table from `placement compare --out` (.csv or .json)")
    p.add_argument("--out", required=True, help="image file (.png or .svg)")
    p = psub.add_parser(
        "solve-time",
        help="solve time against problem size",
        formatter_class=Formatter,
        epilog=examples(
            "placement plot solve-time --table bench.csv --size-column experts --time-column solve_s --out time.svg"
        ),
    )
    p.add_argument("--table", required=True, help="CSV with a size, a time and a method column")
    p.add_argument("--size-column", default="size", help="column of problem sizes")
    p.add_argument("--time-column", default="time_s", help="column of solve times (seconds)")
    p.add_argument("--method-column", default="method", help="column naming the method ('' for one line)")
    p.add_argument("--linear", action="store_true", help="linear axes instead of log-log")
    p.add_argument("--out", required=True, help="image file (.png or .svg)")
    return pp


def run(args: argparse.Namespace) -> int:
    """Check ``--out``, draw the figure named by ``plot_command`` and write it."""
    from ..plots import IMAGE_SUFFIXES, plot_solve_time, plot_tier_bytes, save_figure

    check_out(args.out, IMAGE_SUFFIXES)
    kind = args.plot_command
    if kind in ("map", "traffic"):
        fig = _placement_figure(args)
    elif kind == "tiers":
        fig = plot_tier_bytes(read_table(args.table))
    else:
        fig = plot_solve_time(
            read_table(args.table),
            size=args.size_column,
            time=args.time_column,
            method=args.method_column or None,
            log=not args.linear,
        )
    save_figure(fig, args.out)
    echo(f"wrote {args.out}")
    return 0


def _placement_figure(args: argparse.Namespace) -> Any:
    from ..placement import load_placement
    from ..plots import plot_expert_map, plot_traffic
    from ..trace import load_trace

    placement = load_placement(args.placement)
    if args.plot_command == "map":
        trace = load_trace(args.trace) if args.trace else None
        return plot_expert_map(placement, trace, layers=args.layer)
    from ..api import as_topology
    from ..evaluate import evaluate

    metrics = evaluate(placement, load_trace(args.trace), as_topology(args.topology), **eval_kwargs(args))
    return plot_traffic(
        metrics,
        title=f"GPU-to-GPU traffic, {placement.metadata.get('method', 'placement')} ({metrics.dispatch})",
    )


def read_table(path: str) -> pd.DataFrame:
    """Read a ``.csv`` or ``.json`` table; a leading ``method`` (or unnamed) column becomes the index."""
    import pandas as pd

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise input_error(f"unsupported table extension '{p.suffix}'; use .csv or .json", path)
    if not p.is_file():
        raise input_error("file not found; check the path", path)
    try:
        if suffix == ".json":
            frame = pd.read_json(p, orient="index")
            frame.index.name = "method"
            return frame
        frame = pd.read_csv(p)
    except (ValueError, pd.errors.ParserError) as exc:
        raise input_error(f"cannot read the table ({exc})", path) from exc
    first = frame.columns[0] if len(frame.columns) else None
    if first in ("method", "Unnamed: 0"):
        frame = frame.set_index(first)
        frame.index.name = "method"
    return frame
