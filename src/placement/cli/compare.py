"""``placement compare``: solve with several methods and print one table of their metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import input_error
from ._common import (
    Formatter,
    Subparsers,
    add_eval_options,
    add_format_option,
    check_out,
    echo,
    eval_kwargs,
    examples,
    load_test_trace,
    model_line,
    parse_kv,
    render_comparison,
    serving_options,
)

__all__ = ["register", "run", "split_methods"]


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``placement compare`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "compare", help="solve with several methods and tabulate their metrics", formatter_class=Formatter,
        description="Solve with each method and print one table of evaluator metrics with ratios to a reference.",
        epilog=examples("placement compare --trace data/traces/deepseek-v3.npz --topology fat-tree:4x8 "
                        "--methods contiguous,round_robin,random --out cmp.csv",
                        "placement compare --trace data/traces/deepseek-v3.npz --topology fat-tree:4x8 "
                        "--methods 'eplb,eplb(faithful=true)'",
                        "placement compare --trace day1.npz --test-trace day2.npz --topology rail:4x8 "
                        "--methods eplb,current.json --reference current.json --format markdown"),
    )
    p.add_argument("--trace", required=True, help="trace file")
    p.add_argument("--topology", required=True, help="preset spec or YAML file")
    p.add_argument("--methods", required=True,
                   help="comma-separated method names, each optionally with inline options: eplb(faithful=true), "
                        "and placement files (.json/.yaml, labelled by their stem): the deployed placement")
    p.add_argument("--reference", default="contiguous",
                   help="method or placement file the ratios are taken against")
    p.add_argument("--option", action="append", metavar="METHOD.KEY=VALUE", help="method option (repeatable)")
    p.add_argument("--out", help="also write the table (.csv or .json)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr during long solves")
    add_format_option(p)
    add_eval_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Check every method and option first, then solve, print the table and write ``--out``."""
    from ..api import PLACEMENT_SUFFIXES, as_stats, as_topology, compare, parse_method_spec, verdict
    from ..methods import get_method
    from ..placement import load_placement
    from ..trace import load_trace

    check_out(args.out, (".csv", ".json"))
    names = split_methods(args.methods)
    if not names:
        raise input_error("give at least one method", field="--methods")
    per_method: dict[str, dict[str, str]] = {}
    for key, value in parse_kv(args.option, "--option").items():
        method, dot, opt = key.partition(".")
        if not dot:
            raise input_error(f"expected METHOD.KEY=VALUE, got {key}={value}", field="--option")
        per_method.setdefault(method, {})[opt] = value
    compared = {parse_method_spec(spec)[0] for spec in [*names, args.reference]}
    for method in per_method:
        if method not in compared:
            get_method(method)  # a misspelt name gets the list of methods
            raise input_error(f"names method '{method}', which is not compared (compared: {sorted(compared)}); add it "
                              "to --methods or drop the option", field="--option")
    for spec in [*names, args.reference]:
        if spec.lower().endswith(PLACEMENT_SUFFIXES):
            load_placement(spec)  # a missing or malformed file fails here, before any solve
            continue
        name, inline = parse_method_spec(spec)
        method = get_method(name)
        # a step-time method is optimised for the stack the table evaluates (unless its options say otherwise)
        per_method[name] = {k: v for k, v in serving_options(method, {**per_method.get(name, {}), **inline},
                                                             args).items() if k not in inline}
        method.parse_options({**per_method[name], **inline})
    trace = load_trace(args.trace)
    test = load_test_trace(args, trace)
    from ..progress import print_report

    frame = compare(as_stats(trace), as_topology(args.topology), names, reference=args.reference,
                    test_trace=test, options=per_method, progress=None if args.quiet else print_report,
                    **eval_kwargs(args))
    ref = args.reference
    reference = Path(ref).stem if ref.lower().endswith(PLACEMENT_SUFFIXES) else ref  # a file is labelled by its stem
    out, err = render_comparison(frame, args.format, verdict(frame, reference),
                                 {"trace": args.trace, "test_trace": args.test_trace, "reference": reference})
    if args.format == "table":
        echo(model_line(trace.model, args.hidden_size))
    echo(out)
    if err:
        _note(err)
    if args.out:
        from .._io import atomic_path

        with atomic_path(args.out) as tmp:
            if args.out.lower().endswith(".csv"):
                frame.to_csv(tmp, index_label="method")
            else:
                frame.to_json(tmp, orient="index", indent=2)
        (echo if args.format == "table" else _note)(f"wrote {args.out}")
    return 0


def split_methods(text: str) -> list[str]:
    """Split a comma-separated method list, keeping commas inside ``name(k=v, k=v)`` together."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [m for m in out if m]


def _note(text: str) -> None:
    """A side note on stderr, keeping stdout one parseable document (csv/json/markdown formats)."""
    import sys

    sys.stderr.write(text + "\n")
