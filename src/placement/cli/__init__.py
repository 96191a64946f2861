"""The ``placement`` command line: a thin layer over the Python API.

Exit status: 0 on success, 2 on bad input (a message naming the file, field and fix on
stderr, no output file written), 1 on an unexpected failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import PlacementInputError, input_error

__all__ = ["main", "build_parser"]

_DISPATCH_HELP = "dispatch model: origin (tokens start on their origin GPU; dispatch + combine) or coherent (ExFlow)"
_ORIGINS_HELP = "where tokens start: auto, trace, uniform or round_robin (see docs/concepts.md)"


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    from ..evaluate import DISPATCH_MODELS, DTYPE_BYTES, ORIGIN_MODES

    g = p.add_argument_group("evaluation")
    g.add_argument("--dispatch", choices=DISPATCH_MODELS, default="origin", help=_DISPATCH_HELP)
    g.add_argument("--dedup", action="store_true", help="send a token once per destination GPU, not per expert")
    g.add_argument("--origins", choices=ORIGIN_MODES, default="auto", help=_ORIGINS_HELP)
    g.add_argument("--hidden-size", type=int, default=None, help="hidden size (default: the model's, else 4096)")
    g.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bf16", help="element type on the wire")


def _parse_kv(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise input_error(f"expected KEY=VALUE, got {item!r}", field=flag)
        out[key.strip()] = value.strip()
    return out


def _check_out(path: str | None, suffixes: Sequence[str], flag: str = "--out") -> None:
    """Fail before any work when the output path cannot be written."""
    if path is None:
        return
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise input_error(f"unsupported extension '{p.suffix}'; use one of {list(suffixes)}", path, flag)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise input_error(f"directory '{parent}' does not exist; create it first", path, flag)
    if p.is_dir():
        raise input_error("is a directory; give a file name", path, flag)


def build_parser() -> argparse.ArgumentParser:
    from ..methods import METHODS

    parser = argparse.ArgumentParser(
        prog="placement",
        description="Topology-aware placement of Mixture-of-Experts experts on GPUs.",
        formatter_class=_Formatter,
        epilog=_examples(
            "placement solve --trace data/traces/mixtral-8x7b.npz --topology fat-tree:2x4 --method round_robin",
            "placement topology show fat-tree:4x8",
            "placement methods",
        ),
    )
    parser.add_argument("--version", action="version", version=f"placement {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # -- solve
    p = sub.add_parser(
        "solve", help="compute a placement and compare it with a baseline", formatter_class=_Formatter,
        description="Solve a placement for a trace on a topology, print its summary and metrics against the "
                    "baseline, and optionally write it.",
        epilog=_examples(
            "placement solve --trace data/traces/mixtral-8x7b.npz --topology fat-tree:2x4 --method round_robin",
            "placement solve --trace t.npz --topology cluster.yaml --method random --option seed=3 --out p.json",
        ),
    )
    p.add_argument("--trace", required=True, help="trace file (.npz, ExFlow .npy, .csv, .parquet)")
    p.add_argument("--topology", required=True, help="preset spec (e.g. fat-tree:4x8) or YAML file")
    p.add_argument("--method", default="contiguous", choices=list(METHODS), help="placement method")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="method option (repeatable)")
    p.add_argument("--baseline", default="contiguous", choices=list(METHODS), help="method to compare against")
    p.add_argument("--out", help="write the placement here (.json, .yaml, .yml)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    _add_eval_options(p)

    # -- evaluate
    p = sub.add_parser(
        "evaluate", help="evaluate a placement file", formatter_class=_Formatter,
        description="Recompute every metric of a placement on a trace and topology.",
        epilog=_examples("placement evaluate --placement p.json --trace data/traces/mixtral-8x7b.npz "
                         "--topology fat-tree:2x4 --dedup"),
    )
    p.add_argument("--placement", required=True, help="placement file (.json or .yaml)")
    p.add_argument("--trace", required=True, help="trace file")
    p.add_argument("--topology", required=True, help="preset spec or YAML file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_eval_options(p)

    # -- compare
    p = sub.add_parser(
        "compare", help="solve with several methods and tabulate their metrics", formatter_class=_Formatter,
        description="Solve with each method and print one table of evaluator metrics with ratios to a reference.",
        epilog=_examples("placement compare --trace data/traces/deepseek-v3.npz --topology fat-tree:4x8 "
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
    _add_eval_options(p)

    # -- methods
    sub.add_parser("methods", help="list the registered methods", formatter_class=_Formatter,
                   epilog=_examples("placement methods"))

    # -- trace
    pt = sub.add_parser("trace", help="trace tools (synth, info)", formatter_class=_Formatter,
                        epilog=_examples("placement trace info data/traces/mixtral-8x7b.npz"))
    tsub = pt.add_subparsers(dest="trace_command", metavar="SUBCOMMAND")
    tsub.required = True
    p = tsub.add_parser(
        "synth", help="generate a synthetic trace", formatter_class=_Formatter,
        epilog=_examples("placement trace synth --model deepseek-v3 --tokens 4096 --seed 0 --out ds.npz",
                         "placement trace synth --model mixtral-8x7b --tokens 10000 --affinity 0.8 --out mx.npz"),
    )
    p.add_argument("--model", help="model preset (see --list)")
    p.add_argument("--list", action="store_true", help="list the model presets and exit")
    p.add_argument("--tokens", type=int, help="number of tokens")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--skew", type=float, default=None, help="expert popularity skew (default: preset's)")
    p.add_argument("--affinity", type=float, default=None, help="inter-layer affinity in [0, 1] (default: preset's)")
    p.add_argument("--ranks", type=int, default=None, help="give tokens origin ranks 0..RANKS-1")
    p.add_argument("--skew-spread", type=float, default=None, help="per-layer variation of the skew")
    p.add_argument("--no-weights", action="store_true", help="do not generate gate weights")
    p.add_argument("--out", help="output file (.npz, .csv, .parquet; .npy for top-1 models)")
    p = tsub.add_parser("info", help="describe a trace file", formatter_class=_Formatter,
                        epilog=_examples("placement trace info data/traces/deepseek-v3.npz"))
    p.add_argument("path", help="trace file")
    p.add_argument("--json", action="store_true", help="print JSON")

    # -- topology
    pg = sub.add_parser("topology", help="topology tools (show)", formatter_class=_Formatter,
                        epilog=_examples("placement topology show fat-tree:4x8"))
    gsub = pg.add_subparsers(dest="topology_command", metavar="SUBCOMMAND")
    gsub.required = True
    p = gsub.add_parser("show", help="summarise a topology (GPUs, servers, tiers, diameter)",
                        formatter_class=_Formatter,
                        epilog=_examples("placement topology show dgx-h100",
                                         "placement topology show examples/topologies/two-servers.yaml"))
    p.add_argument("topology", help="preset spec or YAML file")
    p.add_argument("--json", action="store_true", help="print JSON")

    # -- export, import, plot: their modules add the parsers and set `func`
    from ..interop import register_export_cli, register_import_cli
    from ..plots import register_plot_cli

    register_export_cli(sub)
    register_import_cli(sub)
    register_plot_cli(sub)
    return parser


# ------------------------------------------------------------------------------------ commands
def _print(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _eval_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"dispatch": args.dispatch, "dedup": args.dedup, "origins": args.origins,
            "hidden_size": args.hidden_size, "dtype": args.dtype}


def _format_table(frame: Any) -> str:
    import pandas as pd

    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format",
                           lambda v: f"{v:.4g}"):
        return frame.to_string()


def _cmd_solve(args: argparse.Namespace) -> int:
    from ..api import as_stats, as_topology
    from ..evaluate import evaluate
    from ..methods import get_method, run_method
    from ..trace import load_trace

    _check_out(args.out, (".json", ".yaml", ".yml"))
    method = get_method(args.method)
    given = _parse_kv(args.option, "--option")
    if "verbose" in {o.name for o in method.options} and "verbose" not in given:
        given["verbose"] = str(not args.quiet)  # the progress line of long solves, off with --quiet
    options = method.parse_options(given)
    trace = load_trace(args.trace)
    topo = as_topology(args.topology)
    stats = as_stats(trace)
    solution = run_method(args.method, stats, topo, **options)
    kwargs = _eval_kwargs(args)
    mine = evaluate(solution.placement, trace, topo, **kwargs)
    if args.baseline == args.method:
        base = mine
    else:
        base = evaluate(run_method(args.baseline, stats, topo).placement, trace, topo, **kwargs)
    if args.out:
        solution.placement.save(args.out)
    if not args.quiet:
        _print(_solve_report(args, trace, topo, solution, mine, base))
    return 0


def _solve_report(args: argparse.Namespace, trace: Any, topo: Any, solution: Any, mine: Any, base: Any) -> str:
    import pandas as pd

    lines = [f"trace     {trace.source}: {trace.model.name}, {trace.num_tokens} tokens, {trace.num_layers} MoE "
             f"layers x {trace.num_experts} experts, top-{trace.top_k}",
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
    lines.append(_format_table(table))
    lines.append(f"\nbusiest link: {mine.busiest_link} ({args.method}) vs {base.busiest_link} ({args.baseline})")
    if args.out:
        lines.append(f"wrote {args.out}")
    return "\n".join(lines)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from ..api import as_topology
    from ..evaluate import evaluate
    from ..placement import load_placement
    from ..trace import load_trace

    placement = load_placement(args.placement)
    trace = load_trace(args.trace)
    topo = as_topology(args.topology)
    metrics = evaluate(placement, trace, topo, **_eval_kwargs(args))
    if args.json:
        _print(json.dumps(metrics.as_dict(), indent=2, default=float))
    else:
        name = str(placement.metadata.get("method", Path(args.placement).stem))
        _print(_format_table(metrics.to_frame(name).T))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..api import as_stats, as_topology, compare
    from ..methods import get_method
    from ..trace import load_trace

    _check_out(args.out, (".csv", ".json"))
    names = _split_methods(args.methods)
    if not names:
        raise input_error("give at least one method", field="--methods")
    per_method: dict[str, dict[str, str]] = {}
    for key, value in _parse_kv(args.option, "--option").items():
        method, dot, opt = key.partition(".")
        if not dot:
            raise input_error(f"expected METHOD.KEY=VALUE, got {key}={value}", field="--option")
        per_method.setdefault(method, {})[opt] = value
    from ..api import parse_method_spec

    for spec in [*names, args.reference]:
        name, inline = parse_method_spec(spec)
        get_method(name).parse_options({**per_method.get(name, {}), **inline})
    frame = compare(as_stats(load_trace(args.trace)), as_topology(args.topology), names, reference=args.reference,
                    options=per_method, **_eval_kwargs(args))
    _print(_format_table(frame.T))
    if args.out:
        from .._io import atomic_path

        with atomic_path(args.out) as tmp:
            if args.out.lower().endswith(".csv"):
                frame.to_csv(tmp, index_label="method")
            else:
                frame.to_json(tmp, orient="index", indent=2)
        _print(f"wrote {args.out}")
    return 0


def _split_methods(text: str) -> list[str]:
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


def _cmd_methods(args: argparse.Namespace) -> int:
    from ..methods import METHODS

    width = max(len(n) for n in METHODS)
    for name, m in METHODS.items():
        opts = ", ".join(f"{o.name}={o.default}" for o in m.options)
        _print(f"{name:<{width}}  [{m.kind}, needs {m.needs}] {m.summary}" + (f"  (options: {opts})" if opts else ""))
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    import json

    from ..trace import load_trace, save_trace

    if args.trace_command == "synth":
        from ..trace.synthesize import MODEL_PRESETS, synthesize

        if args.list:
            for name, p in MODEL_PRESETS.items():
                m = p.spec
                _print(f"{name:<18} {m.num_layers} layers x {m.num_experts} experts, top-{m.top_k}, "
                       f"skew {p.skew}, affinity {p.affinity}")
            return 0
        for flag in ("model", "tokens", "out"):
            if getattr(args, flag) is None:
                raise input_error(f"--{flag} is required (or use --list)", field=f"--{flag}")

        suffix = Path(args.out).suffix.lower()
        _check_out(args.out, (".npz", ".npy", ".csv", ".parquet"))
        kwargs: dict[str, Any] = {"seed": args.seed, "weights": not args.no_weights}
        for name in ("skew", "skew_spread", "affinity"):
            if getattr(args, name) is not None:
                kwargs[name] = getattr(args, name)
        if args.ranks is not None:
            kwargs["num_ranks"] = args.ranks
        trace = synthesize(args.model, args.tokens, **kwargs)
        save_trace(trace, args.out, format=suffix.lstrip("."))
        _print(f"wrote {args.out}: {trace.num_tokens} tokens x {trace.num_layers} layers x top-{trace.top_k}")
        return 0
    info = load_trace(args.path).summary()
    if args.json:
        _print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            _print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return 0


def _cmd_topology(args: argparse.Namespace) -> int:
    import json

    from ..api import as_topology

    info = as_topology(args.topology).summary()
    if args.json:
        _print(json.dumps(info, indent=2, default=str))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            _print(f"{key:<{width}}  {value}")
    return 0


_COMMANDS = {"solve": _cmd_solve, "evaluate": _cmd_evaluate, "compare": _cmd_compare, "methods": _cmd_methods,
             "trace": _cmd_trace, "topology": _cmd_topology}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``placement`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args) if args.command in _COMMANDS else args.func(args)
    except PlacementInputError as exc:
        sys.stderr.write(f"placement: error: {exc}\n")
        return 2
    except RuntimeError as exc:
        from ..errors import SolveFailedError

        if not isinstance(exc, SolveFailedError):
            raise
        sys.stderr.write(f"placement: solve failed: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("placement: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
