"""``placement solve``: compute a placement, print its metrics against a baseline, optionally write it."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import (
    Formatter,
    Subparsers,
    add_eval_options,
    add_format_option,
    check_out,
    echo,
    eval_kwargs,
    examples,
    format_table,
    load_test_trace,
    model_line,
    parse_kv,
    render_comparison,
    serving_options,
    step_report,
)

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``placement solve`` to the CLI's subparsers."""
    from ..methods import METHODS

    p = subparsers.add_parser(
        "solve", help="compute a placement and compare it with a baseline", formatter_class=Formatter,
        description="Solve a placement for a trace on a topology, print its summary and metrics against the "
                    "baseline, and optionally write it.",
        epilog=examples(
            "placement solve --trace data/traces/mixtral-8x7b.npz --topology fat-tree:2x4 --method round_robin",
            "placement solve --trace t.npz --topology cluster.yaml --method random --option seed=3 --out p.json",
            "placement solve --trace day1.npz --test-trace day2.npz --topology rail:4x8 --method eplb --format json",
        ),
    )
    p.add_argument("--trace", required=True, help="trace file (.npz, ExFlow .npy, .csv, .parquet)")
    p.add_argument("--topology", required=True, help="preset spec (e.g. fat-tree:4x8) or YAML file")
    p.add_argument("--method", default="contiguous", choices=list(METHODS), help="placement method")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="method option (repeatable)")
    p.add_argument("--baseline", default="contiguous", choices=list(METHODS), help="method to compare against")
    p.add_argument("--out", help="write the placement here (.json, .yaml, .yml)")
    p.add_argument("--from", dest="current", metavar="PLACEMENT",
                   help="the deployed placement, for a migration budget (layer-time: --option max_moves=B)")
    p.add_argument("--quiet", action="store_true",
                   help="print nothing but errors (no progress lines on stderr during long solves)")
    add_format_option(p)
    add_eval_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Solve, evaluate against the baseline, write ``--out`` and print the report."""
    from ..api import as_stats, as_topology
    from ..evaluate import evaluate
    from ..methods import get_method, run_method
    from ..trace import load_trace

    check_out(args.out, (".json", ".yaml", ".yml"))
    method = get_method(args.method)
    given = parse_kv(args.option, "--option")
    names = {o.name for o in method.options}
    if args.current:
        if "current" not in names:
            from ..errors import input_error

            raise input_error(f"method '{args.method}' keeps no migration budget; use --method layer-time",
                              field="--from")
        given.setdefault("current", args.current)
    given = serving_options(method, given, args)
    method.parse_options(given)  # every option checked before the files are read
    trace = load_trace(args.trace)
    topo = as_topology(args.topology)
    stats = as_stats(trace)
    from ..progress import print_report

    # progress lines (incumbent, bound, gap, layer) on stderr about once a second; none with --quiet
    solution = run_method(args.method, stats, topo, progress=None if args.quiet else print_report, **given)
    kwargs = eval_kwargs(args)
    test = load_test_trace(args, trace)
    mine = evaluate(solution.placement, trace, topo, **kwargs)
    base_placement = solution.placement if args.baseline == args.method else \
        run_method(args.baseline, stats, topo).placement
    base = mine if args.baseline == args.method else evaluate(base_placement, trace, topo, **kwargs)
    frame = _frame(args, trace, solution, mine, base_placement, base, test, kwargs, topo)
    if args.out:
        solution.placement.save(args.out)
    if args.quiet:
        return 0
    from ..api import verdict

    decided = verdict(frame, args.baseline)
    if args.format == "table":
        echo(_report(args, trace, topo, solution, mine, base, frame))
        echo(f"verdict: {decided}")
        if args.out:
            echo(f"wrote {args.out}")
        return 0
    out, err = render_comparison(frame, args.format, decided,
                                 {"trace": args.trace, "test_trace": args.test_trace, "method": args.method,
                                  "baseline": args.baseline, "solution": solution.summary(), "out": args.out})
    echo(out)
    if err:
        import sys

        sys.stderr.write(err + "\n")
    return 0


def _frame(args: argparse.Namespace, trace: Any, solution: Any, mine: Any, base_placement: Any, base: Any,
           test: Any, kwargs: dict[str, Any], topo: Any) -> Any:
    """The one- or two-row comparison table (method, baseline) with out-of-sample columns for ``test``."""
    from ..api import comparison_frame
    from ..evaluate import evaluate

    metrics = {args.method: mine}
    placements = {args.method: solution.placement}
    if args.baseline != args.method:
        metrics[args.baseline], placements[args.baseline] = base, base_placement
    held = None if test is None else {n: evaluate(p, test, topo, **kwargs) for n, p in placements.items()}
    solved = {args.method: {"solve_s": solution.wall_time, "termination": solution.termination.value,
                            "gap": solution.gap}}
    return comparison_frame(metrics, placements, trace.model, args.baseline, test=held, solved=solved)


def _report(args: argparse.Namespace, trace: Any, topo: Any, solution: Any, mine: Any, base: Any, frame: Any) -> str:
    import pandas as pd

    lines = [f"trace     {trace.source}: {trace.model.name}, {trace.num_tokens} tokens, {trace.num_layers} MoE "
             f"layers x {trace.num_experts} experts, top-{trace.top_k}",
             model_line(trace.model, args.hidden_size),
             f"topology  {topo.name}: {topo.num_gpus} GPUs on {topo.num_servers} "
             f"server{'s' if topo.num_servers != 1 else ''}, diameter {topo.diameter:g} hops"]
    s = solution.summary()
    opts = solution.placement.metadata.get("options", {})
    model = f" (origins={opts['origins']})" if "origins" in opts else ""
    bound = "-" if solution.bound is None else f"{solution.bound:.6g}"
    gap = "-" if solution.gap is None else f"{100 * solution.gap:.3g}%"
    proof = "" if solution.objective is None else (
        f", objective{model} {solution.objective:.6g}, bound {bound}, gap {gap}")
    lines.append(f"method    {args.method} ({solution.termination}{proof}) in {s['wall_time_s']:.3g} s")
    ps = solution.placement.summary()
    lines.append(f"placement {ps['layers']} layers x {ps['gpus']} GPUs x {ps['slots_per_gpu']} slots; experts per GPU "
                 f"{ps['experts_per_gpu_min']}-{ps['experts_per_gpu_max']}; {ps['extra_replicas']} extra replicas")
    lines.append(f"metrics   dispatch={mine.dispatch}, dedup={mine.dedup}, origins={mine.origins}, "
                 f"{mine.bytes_per_token} bytes/token")
    a, b = mine.as_dict(), base.as_dict()
    rows = []
    for key, value in a.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "tokens":
            ref = b.get(key)
            ratio = value / ref if isinstance(ref, (int, float)) and ref else float("nan")
            rows.append((key, value, ref, ratio))
    table = pd.DataFrame(rows, columns=["metric", args.method, f"{args.baseline} (baseline)", "ratio"])
    table = table.set_index("metric")
    lines.append("")
    lines.append(format_table(table))
    lines.append(f"\nbusiest link: {mine.busiest_link} ({args.method}) vs {base.busiest_link} ({args.baseline})")
    lines.append("")
    lines.append(step_report(mine, base, args.method, args.baseline))
    if "test_step_time_ms" in frame.columns:
        t = frame["test_step_time_ms"]
        held = f"out-of-sample ({args.test_trace}): {args.method} {t[args.method]:.4g} ms per step"
        if args.baseline != args.method:
            held += f", {args.baseline} {t[args.baseline]:.4g} ms: {t[args.method] / t[args.baseline]:.3f}x"
        lines.append(held)
    return "\n".join(lines)
