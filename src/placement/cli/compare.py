"""``placement compare``: solve with several methods and print one table of their metrics."""

from __future__ import annotations

import argparse

from ..errors import input_error
from ._common import (
    Formatter,
    Subparsers,
    add_eval_options,
    check_out,
    echo,
    eval_kwargs,
    examples,
    format_table,
    parse_kv,
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
                        "--methods 'eplb,eplb(faithful=true)'"),
    )
    p.add_argument("--trace", required=True, help="trace file")
    p.add_argument("--topology", required=True, help="preset spec or YAML file")
    p.add_argument("--methods", required=True,
                   help="comma-separated method names, each optionally with inline options: eplb(faithful=true)")
    p.add_argument("--reference", default="contiguous", help="method the ratios are taken against")
    p.add_argument("--option", action="append", metavar="METHOD.KEY=VALUE", help="method option (repeatable)")
    p.add_argument("--out", help="also write the table (.csv or .json)")
    add_eval_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Check every method and option first, then solve, print the table and write ``--out``."""
    from ..api import as_stats, as_topology, compare, parse_method_spec
    from ..methods import get_method
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
    for spec in [*names, args.reference]:
        name, inline = parse_method_spec(spec)
        get_method(name).parse_options({**per_method.get(name, {}), **inline})
    frame = compare(as_stats(load_trace(args.trace)), as_topology(args.topology), names, reference=args.reference,
                    options=per_method, **eval_kwargs(args))
    from ..api import verdict

    echo(format_table(frame.T))
    echo(f"verdict: {verdict(frame, args.reference)}")
    if args.out:
        from .._io import atomic_path

        with atomic_path(args.out) as tmp:
            if args.out.lower().endswith(".csv"):
                frame.to_csv(tmp, index_label="method")
            else:
                frame.to_json(tmp, orient="index", indent=2)
        echo(f"wrote {args.out}")
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
