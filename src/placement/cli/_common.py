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
    "format_table",
    "echo",
    "step_report",
    "json_text",
]

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


def eval_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`placement.evaluate.evaluate` given by :func:`add_eval_options`."""
    return {"dispatch": args.dispatch, "dedup": args.dedup, "origins": args.origins,
            "hidden_size": args.hidden_size, "dtype": args.dtype, "replica": args.replica,
            "transport": args.transport, "tokens_per_step": args.tokens_per_step,
            "tokens_per_gpu": args.tokens_per_gpu, "dispatch_dtype": args.dispatch_dtype,
            "combine_dtype": args.combine_dtype, "gpu": args.gpu, "overlap": args.overlap}


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


def format_table(frame: Any) -> str:
    """A pandas frame as text: every column, 200 characters wide, floats with 4 significant digits."""
    import pandas as pd

    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format",
                           lambda v: f"{v:.4g}"):
        return frame.to_string()


def echo(text: str) -> None:
    """Write ``text`` to stdout, ending it with one newline."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
