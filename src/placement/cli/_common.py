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
    """Add the ``evaluation`` group (``--dispatch``, ``--dedup``, ``--origins``, ``--hidden-size``, ``--dtype``)."""
    from ..evaluate import DISPATCH_MODELS, DTYPE_BYTES, ORIGIN_MODES

    g = p.add_argument_group("evaluation")
    g.add_argument("--dispatch", choices=DISPATCH_MODELS, default="origin", help=DISPATCH_HELP)
    g.add_argument("--dedup", action="store_true", help="send a token once per destination GPU, not per expert")
    g.add_argument("--origins", choices=ORIGIN_MODES, default="auto", help=ORIGINS_HELP)
    g.add_argument("--hidden-size", type=int, default=None, help="hidden size (default: the model's, else 4096)")
    g.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bf16", help="element type on the wire")


def eval_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`placement.evaluate.evaluate` given by :func:`add_eval_options`."""
    return {"dispatch": args.dispatch, "dedup": args.dedup, "origins": args.origins,
            "hidden_size": args.hidden_size, "dtype": args.dtype}


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
