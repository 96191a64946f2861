"""``placement plot {step,layers,map,traffic,tiers,solve-time}``: draw a figure with :mod:`placement.plots`
and write it as PNG or SVG.

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
            "placement compare --trace t.npz --topology rail:4x8 --methods round_robin,eplb --out cmp.csv",
            "placement plot step --table cmp.csv --out step.png",
            "placement plot map --placement p.json --trace t.npz --out map.png",
            "placement plot tiers --table cmp.csv --reference contiguous --out tiers.svg",
        ),
    )
    psub = pp.add_subparsers(dest="plot_command", metavar="FIGURE")
    psub.required = True
    p = psub.add_parser(
        "step",
        help="step time per method over the reference's, split into dispatch / compute / combine",
        formatter_class=Formatter,
        epilog=examples("placement plot step --table cmp.csv --out step.png"),
    )
    p.add_argument("--table", required=True, help="table from `placement compare --out` (.csv or .json)")
    p.add_argument("--reference", default=None, help="row the ratios are taken against (default: the table's)")
    p.add_argument("--out", required=True, help="image file (.png or .svg)")
    p = psub.add_parser(
        "layers",
        help="modelled time of every MoE layer in a serving step, one line per method",
        formatter_class=Formatter,
        epilog=examples("placement plot layers --trace t.npz --topology rail:4x8 --methods eplb,current.json "
                        "--reference contiguous --out layers.png"),
    )
    p.add_argument("--trace", required=True, help="trace file")
    p.add_argument("--topology", required=True, help="preset spec or YAML file")
    p.add_argument("--methods", required=True, help="comma-separated method names and placement files")
    p.add_argument("--reference", default=None,
                   help="method or placement file to divide by in a second panel (added to --methods if missing)")
    p.add_argument("--out", required=True, help="image file (.png or .svg)")
    add_eval_options(p)
    p = psub.add_parser(
        "map",
        help="expert-to-GPU map, shaded by load (aggregated views beyond 64 experts)",
        formatter_class=Formatter,
        epilog=examples("placement plot map --placement p.json --trace t.npz --layer 0 --layer 5 --out map.png",
                        "placement plot map --placement p.json --trace t.npz --topology rail:4x8 --out map.png"),
    )
    p.add_argument("--placement", required=True, help="placement file (.json or .yaml)")
    p.add_argument("--trace", help="trace file giving the load (if omitted: every expert weighs 1)")
    p.add_argument("--layer", type=int, action="append", help="MoE layer to draw (repeatable; if omitted: 4 layers)")
    p.add_argument("--view", choices=("auto", "detail", "summary"), default="auto",
                   help="detail: GPU x expert heatmap per layer; summary: load per GPU, replicas, hottest experts; "
                        "auto: detail up to 64 experts")
    p.add_argument("--topology", default=None, help="preset spec or YAML file: server boundaries in the summary")
    p.add_argument("--out", required=True, help="image file (.png or .svg)")
    p = psub.add_parser(
        "traffic",
        help="GPU-to-GPU traffic matrices of placements on one colour scale",
        formatter_class=Formatter,
        epilog=examples(
            "placement plot traffic --placement p.json --trace t.npz --topology fat-tree:2x4 --out traffic.png",
            "placement plot traffic --placement a.json --placement b.json --trace t.npz --topology rail:4x8 "
            "--out traffic.png",
        ),
    )
    p.add_argument("--placement", required=True, action="append",
                   help="placement file (.json or .yaml); repeat for side-by-side panels on one scale")
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
    p.add_argument("--reference", default=None,
                   help="row to divide by: ratios on an axis around 1 instead of MB from 0")
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
    p.add_argument("--status-column", default="termination",
                   help="column of Termination values: runs stopped by a limit (feasible, no_solution) drawn hollow")
    p.add_argument("--time-limit", type=float, default=None, help="draw the time limit (seconds) as a dashed line")
    p.add_argument("--linear", action="store_true", help="linear axes instead of log-log")
    p.add_argument("--out", required=True, help="image file (.png or .svg)")
    return pp


def run(args: argparse.Namespace) -> int:
    """Check ``--out``, draw the figure named by ``plot_command`` and write it."""
    from ..plots import IMAGE_SUFFIXES, plot_solve_time, plot_step_breakdown, plot_tier_bytes, save_figure

    check_out(args.out, IMAGE_SUFFIXES)
    kind = args.plot_command
    if kind in ("map", "traffic"):
        fig = _placement_figure(args)
    elif kind == "layers":
        fig = _layers_figure(args)
    elif kind == "step":
        fig = plot_step_breakdown(read_table(args.table), reference=args.reference)
    elif kind == "tiers":
        fig = plot_tier_bytes(read_table(args.table), reference=args.reference)
    else:
        fig = plot_solve_time(
            read_table(args.table),
            size=args.size_column,
            time=args.time_column,
            method=args.method_column or None,
            log=not args.linear,
            status=args.status_column or None,
            time_limit=args.time_limit,
        )
    save_figure(fig, args.out)
    echo(f"wrote {args.out}")
    return 0


def _placement_figure(args: argparse.Namespace) -> Any:
    from ..placement import load_placement
    from ..plots import plot_expert_map, plot_traffic
    from ..trace import load_trace

    if args.plot_command == "map":
        placement = load_placement(args.placement)
        trace = load_trace(args.trace) if args.trace else None
        return plot_expert_map(placement, trace, layers=args.layer, view=args.view, topology=args.topology)
    from ..api import as_topology
    from ..evaluate import evaluate

    trace, topo = load_trace(args.trace), as_topology(args.topology)
    panels = {}
    for path in args.placement:
        placement = load_placement(path)
        label = str(placement.metadata.get("method", Path(path).stem))
        label = label if label not in panels else Path(path).stem
        panels[label] = evaluate(placement, trace, topo, **eval_kwargs(args))
    dispatch = next(iter(panels.values())).dispatch
    return plot_traffic(panels, topology=topo, title=f"GPU-to-GPU traffic ({dispatch} dispatch)")


def _layers_figure(args: argparse.Namespace) -> Any:
    """Evaluate every method (solved on the trace) and placement file, and draw their per-layer times."""
    from ..api import PLACEMENT_SUFFIXES, as_stats, as_topology, parse_method_spec, resolve_entry
    from ..evaluate import evaluate
    from ..methods import get_method, run_method
    from ..trace import load_trace
    from .compare import split_methods

    names = split_methods(args.methods)
    if not names:
        raise input_error("give at least one method", field="--methods")
    if args.reference is not None and args.reference not in names:
        names.append(args.reference)
    for spec in names:  # every name checked before any solve
        if not spec.lower().endswith(PLACEMENT_SUFFIXES):
            method, inline = parse_method_spec(spec)
            get_method(method).parse_options(inline)
    trace, topo = load_trace(args.trace), as_topology(args.topology)
    stats = as_stats(trace)
    metrics = {}
    for spec in names:
        label, what = resolve_entry(spec)
        if isinstance(what, str):
            method, inline = parse_method_spec(what)
            what = run_method(method, stats, topo, **inline).placement
        metrics[label] = evaluate(what, trace, topo, **eval_kwargs(args))
    reference = args.reference
    if reference is not None and reference.lower().endswith(PLACEMENT_SUFFIXES):
        reference = Path(reference).stem
    from ..plots import plot_layer_times

    return plot_layer_times(metrics, reference=reference)


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
