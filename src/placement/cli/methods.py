"""``placement methods``: list the registered placement methods with their options."""

from __future__ import annotations

import argparse

from ._common import Formatter, Subparsers, echo, examples

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``placement methods`` to the CLI's subparsers."""
    return subparsers.add_parser("methods", help="list the registered methods", formatter_class=Formatter,
                                 epilog=examples("placement methods"))


def run(args: argparse.Namespace) -> int:
    """Print one line per method: name, kind, what it needs, summary and options with defaults."""
    from ..methods import METHODS

    width = max(len(n) for n in METHODS)
    for name, m in METHODS.items():
        opts = ", ".join(f"{o.name}={o.default}" for o in m.options)
        echo(f"{name:<{width}}  [{m.kind}, needs {m.needs}] {m.summary}" + (f"  (options: {opts})" if opts else ""))
    return 0
