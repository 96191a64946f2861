"""Generate the CLI reference (``docs/cli.md``) from the argument parser itself.

Run ``python -m placement.cli.reference > docs/cli.md`` after changing a command;
``tests/test_docs.py`` checks that every command and option of the parser is documented there.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

from . import build_parser

__all__ = ["iter_commands", "render"]


def iter_commands(parser: argparse.ArgumentParser,
                  prefix: str = "placement") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Yield ``(command line prefix, parser)`` for the parser and every sub-command, depth first."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from iter_commands(sub, f"{prefix} {name}")


def render() -> str:
    """The Markdown reference: one section per command with its ``--help`` text."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parts = ["# CLI reference", "",
                 "Generated from the parser by `python -m placement.cli.reference > docs/cli.md`.", ""]
        for name, sub in iter_commands(build_parser()):
            parts += [f"## `{name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
        return "\n".join(parts)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
