"""Helpers shared by the ``placement`` commands: help formatting, common options, argument checks,
table formatting and printing.

Everything here is light to import (argparse, pathlib, :mod:`placement.errors`); pandas and the
evaluator are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import input_error

__all__ = [
    "Formatter",
    "Subparsers",
    "examples",
    "add_eval_options",
    "eval_kwargs",
    "parse_kv",
    "check_out",
    "check_paths",
    "check_writable",
    "format_table",
    "echo",
    "step_report",
    "model_line",
    "json_text",
    "FORMATS",
    "add_format_option",
    "markdown_table",
    "render_comparison",
    "load_test_trace",
]

#: Report formats of ``--format``: ``table`` (text for a terminal), ``csv``, ``json``, ``markdown``.
FORMATS = ("table", "csv", "json", "markdown")

#: What ``register(subparsers)`` receives: the action returned by ``add_subparsers``.
Subparsers = Any

DISPATCH_HELP = "dispatch model: origin (tokens start on their origin GPU; dispatch + combine) or coherent (ExFlow)"
ORIGINS_HELP = "where tokens start: auto, trace, uniform or round_robin (see docs/concepts.md)"


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Help formatter of every parser: descriptions kept as written, defaults shown."""


def examples(*lines: str) -> str:
    """An ``examples:`` epilog, one indented command line per argument."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_eval_options(p: argparse.ArgumentParser) -> None:
    """Add the ``evaluation`` group (``--dispatch``, ``--dedup``, ``--origins``, ``--hidden-size``, ``--dtype``)
    and the ``serving step`` group (``--replica``, ``--transport``, ``--tokens-per-step``/``--tokens-per-gpu``,
    ``--dispatch-dtype``, ``--combine-dtype``, ``--gpu``, ``--overlap``)."""
    from ..evaluate import DISPATCH_MODELS, DTYPE_BYTES, ORIGIN_MODES
    from ..evaluation import DEFAULT_TOKENS_PER_GPU, REPLICA_RULES, TRANSPORTS
    from ..hardware import GPU_PRESETS

    g = p.add_argument_group("evaluation")
    g.add_argument("--dispatch", choices=DISPATCH_MODELS, default="origin", help=DISPATCH_HELP)
    g.add_argument("--dedup", action="store_true", help="send a token once per destination GPU, not per expert")
    g.add_argument("--origins", choices=ORIGIN_MODES, default="auto", help=ORIGINS_HELP)
    g.add_argument("--hidden-size", type=int, default=None, help="hidden size (default: the model's, else 4096)")
    g.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bf16", help="element type on the wire")
    s = p.add_argument_group("serving step (docs/cost-model.md)")
    s.add_argument("--replica", choices=list(REPLICA_RULES), default="nearest",
                   help="which replica serves a token: the serving stack's rule")
    s.add_argument("--transport", choices=list(TRANSPORTS), default="nccl",
                   help="how tokens move: NCCL all-to-all (--dedup applies), DeepEP normal or low-latency")
    size = s.add_mutually_exclusive_group()
    size.add_argument("--tokens-per-step", type=int, default=None, help="tokens of one serving step, all GPUs")
    size.add_argument("--tokens-per-gpu", type=int, default=None,
                      help=f"tokens of one serving step per GPU (default {DEFAULT_TOKENS_PER_GPU})")
    s.add_argument("--dispatch-dtype", choices=sorted(DTYPE_BYTES), default=None,
                   help="dispatch dtype (default --dtype)")
    s.add_argument("--combine-dtype", choices=sorted(DTYPE_BYTES), default=None,
                   help="combine dtype (default --dtype)")
    s.add_argument("--gpu", choices=list(GPU_PRESETS), default=None, help="GPU model (default: the topology's)")
    s.add_argument("--overlap", action="store_true", help="two micro-batches overlap communication and compute")


#: evaluation flags a step-time method (``layer-time``) takes as its own options when not set otherwise
SERVING_FLAGS = ("replica", "transport", "tokens_per_step", "tokens_per_gpu", "dispatch_dtype", "combine_dtype",
                 "gpu", "overlap")


def serving_options(method: Any, given: dict[str, str], args: argparse.Namespace) -> dict[str, str]:
    """``given`` with the evaluation flags of ``args`` added for the options ``method`` has of that name and
    ``given`` does not set: a method that optimises the serving step optimises it for the stack the report
    evaluates."""
    names = {o.name for o in method.options}
    out = dict(given)
    for key, value in eval_kwargs(args).items():
        if key in SERVING_FLAGS and key in names and key not in out and value not in (None, False):
            out[key] = str(value)
    return out


def eval_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`placement.evaluate.evaluate` given by :func:`add_eval_options`."""
    return {"dispatch": args.dispatch, "dedup": args.dedup, "origins": args.origins,
            "hidden_size": args.hidden_size, "dtype": args.dtype, "replica": args.replica,
            "transport": args.transport, "tokens_per_step": args.tokens_per_step,
            "tokens_per_gpu": args.tokens_per_gpu, "dispatch_dtype": args.dispatch_dtype,
            "combine_dtype": args.combine_dtype, "gpu": args.gpu, "overlap": args.overlap}


def model_line(model: Any, hidden_size: int | None = None) -> str:
    """``model     NAME: hidden size ..., expert groups ...``: the figures of the model a report used.

    ``hidden_size`` is an ``--hidden-size`` given to the evaluator (it overrides the model's).  A model
    without a hidden size (counts imported with ``--top-k`` alone) says which size is assumed, and one
    without expert groups that EPLB runs its global policy.
    """
    from ..costs import DEFAULT_HIDDEN_SIZE

    if hidden_size:
        size = f"hidden size {hidden_size} (--hidden-size)"
    elif getattr(model, "hidden_size", None):
        size = f"hidden size {model.hidden_size}"
    else:
        size = (f"hidden size unknown, {DEFAULT_HIDDEN_SIZE} assumed (give --hidden-size, or import the trace "
                "with --model)")
    if model.num_groups > 1:
        groups = f"{model.num_groups} expert groups" + (
            f", at most {model.topk_groups} per token" if model.topk_groups is not None else "")
    else:
        groups = "no expert groups (EPLB runs its global policy)"
    return f"model     {model.name}: top-{model.top_k}, {size}; {groups}"


def step_report(metrics: Any, reference: Any = None, name: str = "placement", ref_name: str = "reference") -> str:
    """The serving step of ``metrics`` (:class:`~placement.evaluation.Metrics`): setup, time per layer split
    into dispatch / compute / combine with what bounds each, totals, and the ratio to ``reference``."""
    import pandas as pd

    step = metrics.step
    if step is None:
        return "serving step: not modelled for the coherent dispatch model"
    setup = step.setup
    head = (f"serving step: {setup.tokens_per_step} tokens ({setup.tokens_per_step / metrics.num_gpus:g} per GPU), "
            f"replica={setup.replica}, transport={setup.transport}"
            f"{' (dedup)' if setup.transport == 'nccl' and setup.dedup else ''}, dispatch "
            f"{setup.dispatch_wire.dtype} / combine {setup.combine_wire.dtype}, gpu={setup.gpu.name}"
            f"{', overlapped' if setup.overlap else ''}; {step.num_steps} step(s) evaluated")
    rows = pd.DataFrame({"dispatch_us": step.phase_time[:, 0] * 1e6, "compute_us": step.phase_time[:, 1] * 1e6,
                         "combine_us": step.phase_time[:, 2] * 1e6, "layer_us": step.layer_time * 1e6,
                         "link (dispatch)": [c[0] for c in step.critical],
                         "gpu (compute)": [c[1] for c in step.critical],
                         "link (combine)": [c[2] for c in step.critical]})
    rows.index.name = "layer"
    totals = step.phase_totals
    lines = [head, *[f"  note: {n}" for n in step.notes], format_table(rows),
             f"step time {step.step_time * 1e3:.4g} ms = dispatch {totals['dispatch'] * 1e3:.4g} + compute "
             f"{totals['compute'] * 1e3:.4g} + combine {totals['combine'] * 1e3:.4g} ms"
             f"{' (overlapped per layer)' if setup.overlap else ''}; bound by {step.bound_by}"]
    if reference is not None and reference.step is not None and reference.step.step_time > 0:
        ratio = step.step_time / reference.step.step_time
        lines.append(f"{name}: {ratio:.3f}x the step time of {ref_name} ({reference.step.step_time * 1e3:.4g} ms)")
    return "\n".join(lines)


def json_text(value: Any) -> str:
    """``value`` as strict JSON: NaN and infinities become ``null``, numpy scalars plain numbers."""
    import json
    import math

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return json.dumps(clean(value), indent=2, allow_nan=False)


def parse_kv(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    """Parse repeated ``KEY=VALUE`` arguments of ``flag`` into a dict (stripped strings)."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise input_error(f"expected KEY=VALUE, got {item!r}", field=flag)
        out[key.strip()] = value.strip()
    return out


def check_out(path: str | None, suffixes: Sequence[str], flag: str = "--out") -> None:
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


#: ``(attribute of the parsed arguments, flag)`` of every input file a command reads
INPUT_FLAGS = (("trace", "--trace"), ("placement", "--placement"), ("table", "--table"), ("path", "PATH"),
               ("inputs", "INPUT"), ("current", "--from"))
#: suffixes that make ``--topology`` and ``--reference`` values files rather than names
_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def check_paths(args: argparse.Namespace) -> None:
    """Before any work: every input file exists, is a file and is readable; ``--topology`` is not empty; the
    folder of ``--out`` exists and is writable.  Each failure names the flag and the path."""
    for attr, flag in INPUT_FLAGS:
        value = getattr(args, attr, None)
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            if not str(item).strip():
                raise input_error("empty value; give a file name", field=flag)
            _readable(item, flag)
    topology = getattr(args, "topology", None)
    if topology is not None:
        if not str(topology).strip():
            raise input_error("empty value; give a preset spec such as fat-tree:4x8 or a .yaml/.yml file",
                              field="--topology")
        if Path(topology).suffix.lower() in _FILE_SUFFIXES:
            _readable(topology, "--topology")
    reference = getattr(args, "reference", None)
    if isinstance(reference, str) and Path(reference).suffix.lower() in _FILE_SUFFIXES:
        _readable(reference, "--reference")
    out = getattr(args, "out", None)
    if out is not None:
        check_writable(out)


def _readable(path: str, flag: str) -> None:
    """:func:`placement._input.input_path`'s checks, the error naming ``flag`` too."""
    from .._input import input_path
    from ..errors import PlacementInputError

    try:
        input_path(path)
    except PlacementInputError as exc:
        raise input_error(exc.detail, exc.source, flag) from None


def check_writable(path: str, flag: str = "--out") -> None:
    """Fail unless a file can be created in the folder of ``path`` (tried with a temporary file)."""
    import os
    import tempfile

    if not str(path).strip():
        raise input_error("empty value; give a file name", field=flag)
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise input_error(f"'{parent}' is a file, not a directory; choose another path", str(path), flag)
    if not parent.is_dir():
        raise input_error(f"directory '{parent}' does not exist; create it first", str(path), flag)
    if p.is_dir():
        raise input_error("is a directory; give a file name", str(path), flag)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=parent)
    except OSError as exc:
        raise input_error(f"directory '{parent}' is not writable ({exc.strerror or exc}); choose another folder",
                          str(path), flag) from None
    os.close(fd)
    os.unlink(tmp)


def format_table(frame: Any) -> str:
    """A pandas frame as text: every column, 200 characters wide, floats with 4 significant digits."""
    import pandas as pd

    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format",
                           lambda v: f"{v:.4g}"):
        return frame.to_string()


def echo(text: str) -> None:
    """Write ``text`` to stdout, ending it with one newline."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def add_format_option(p: argparse.ArgumentParser) -> None:
    """Add ``--format`` (:data:`FORMATS`) and ``--test-trace`` (a held-out trace: out-of-sample figures)."""
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="report format on stdout: table (text), csv (the verdict goes to stderr), json (rows and "
                        "the verdict), markdown (a table and the verdict line)")
    p.add_argument("--test-trace", default=None,
                   help="held-out trace of the same model: the placements fitted on --trace are also evaluated on "
                        "it (out-of-sample figures in the table and the verdict)")


def load_test_trace(args: argparse.Namespace, trace: Any) -> Any:
    """The ``--test-trace`` loaded (``None`` when not given), refused unless its model has ``trace``'s shape."""
    if args.test_trace is None:
        return None
    from ..trace import load_trace

    test = load_trace(args.test_trace)
    got = (test.num_layers, test.num_experts, test.top_k)
    want = (trace.num_layers, trace.num_experts, trace.top_k)
    if got != want:
        raise input_error(f"has {got[0]} layers x {got[1]} experts, top-{got[2]}, but --trace has {want[0]} x "
                          f"{want[1]}, top-{want[2]}; give a held-out trace of the same model", args.test_trace,
                          "--test-trace")
    return test


def _cell(value: Any) -> str:
    import math

    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, (int, float)) or hasattr(value, "item"):
        v = value.item() if hasattr(value, "item") else value
        if isinstance(v, float):
            return "" if not math.isfinite(v) else f"{v:.4g}"
        return str(v)
    return str(value).replace("|", "\\|")


def markdown_table(frame: Any, index_label: str = "") -> str:
    """A pandas frame as a GitHub-flavoured markdown table (floats with 4 significant digits, NaN empty)."""
    head = [index_label, *map(str, frame.columns)]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] + ["---:"] * len(frame.columns)) + " |"]
    for label, row in frame.iterrows():
        lines.append("| " + " | ".join([_cell(label), *(_cell(v) for v in row.tolist())]) + " |")
    return "\n".join(lines)


def render_comparison(frame: Any, fmt: str, verdict: Any, extra: dict[str, Any] | None = None) -> tuple[str, str]:
    """``(stdout, stderr)`` text of a comparison table (one row per placement) and its verdict in ``fmt``.

    ``table`` and ``markdown`` put the methods in columns and end with the verdict line; ``csv`` writes the
    rows only (the verdict goes to stderr, so that stdout parses as CSV); ``json`` writes
    ``{**extra, "rows": {name: {...}}, "verdict": {...}}`` as strict JSON.
    """
    if fmt == "csv":
        return frame.to_csv(index_label="method"), f"verdict: {verdict}"
    if fmt == "json":
        rows = {str(name): row.to_dict() for name, row in frame.iterrows()}
        return json_text({**(extra or {}), "rows": rows, "verdict": verdict.as_dict()}), ""
    if fmt == "markdown":
        return f"{markdown_table(frame.T, 'metric')}\n\n**verdict:** {verdict}", ""
    return f"{format_table(frame.T)}\nverdict: {verdict}", ""
