"""The ``placement`` command line: a thin layer over the Python API.

Each command lives in its own module of this package with ``register(subparsers)``, which adds
its parser, and ``run(args) -> int``, which carries it out; :data:`COMMANDS` lists them in the
order ``placement --help`` shows them.  Shared helpers are in :mod:`._common`.  The CLI depends on
the library, never the reverse: no module outside ``placement.cli`` imports it.

To add a command: write ``placement/cli/<name>.py`` with ``register`` and ``run`` (import the
library inside ``run`` so that ``placement --version`` stays light), add it to :data:`COMMANDS`
and regenerate ``docs/cli.md`` with ``python -m placement.cli.reference > docs/cli.md``.

Exit status: 0 on success, 2 on bad input (a message naming the file, field and fix on
stderr, no output file written), 1 on an unexpected failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from .._version import __version__
from ..errors import PlacementInputError

__all__ = ["COMMANDS", "main", "build_parser"]

#: ``(command, module of placement.cli)`` in the order of ``placement --help``.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("solve", "solve"),
    ("evaluate", "evaluate"),
    ("compare", "compare"),
    ("methods", "methods"),
    ("trace", "trace"),
    ("topology", "topology"),
    ("export", "export"),
    ("import", "import_"),
    ("plot", "plot"),
)


def _module(command: str) -> ModuleType:
    """The module implementing ``command`` (imported on first use)."""
    return importlib.import_module(f"{__name__}.{dict(COMMANDS)[command]}")


def build_parser() -> argparse.ArgumentParser:
    """The ``placement`` parser with one sub-parser per entry of :data:`COMMANDS`."""
    from ._common import Formatter, examples

    parser = argparse.ArgumentParser(
        prog="placement",
        description="Topology-aware placement of Mixture-of-Experts experts on GPUs.",
        formatter_class=Formatter,
        epilog=examples(
            "placement solve --trace data/traces/mixtral-8x7b.npz --topology fat-tree:2x4 --method round_robin",
            "placement topology show fat-tree:4x8",
            "placement methods",
        ),
    )
    parser.add_argument("--version", action="version", version=f"placement {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command, _ in COMMANDS:
        _module(command).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``placement`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from ._common import check_paths

        check_paths(args)  # unreadable inputs and unwritable outputs fail before any work
        return _module(args.command).run(args)
    except PlacementInputError as exc:
        sys.stderr.write(f"placement: error: {' '.join(str(exc).split())}\n")
        return 2
    except MemoryError:
        sys.stderr.write("placement: error: out of memory; the input is beyond what this machine holds: see the "
                         "size limits in docs/limits.md\n")
        return 1
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
