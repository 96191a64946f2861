"""Exception types of `placement`.

Every error caused by user input is a :class:`PlacementInputError` (a ``ValueError``)
whose message names the source (file or argument), the field and the fix. The CLI
turns it into exit status 2 without a traceback.
"""

from __future__ import annotations

__all__ = ["PlacementInputError", "NeedsTokenTraceError", "input_error", "SolveFailedError"]


class PlacementInputError(ValueError):
    """Bad user input: a trace, topology, placement file or argument that cannot be used.

    Parameters
    ----------
    message:
        What is wrong and how to fix it.
    source:
        The file or argument the bad value came from (``None`` for in-memory values).
    field:
        The field inside that source (``None`` where the whole input is wrong).
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        self.detail = message
        where = ""
        if source:
            where += f"{source}: "
        if field:
            where += f"field '{field}': "
        super().__init__(where + message)


class NeedsTokenTraceError(PlacementInputError):
    """A statistic or method needs per-token routing, but the trace only holds counts."""


def input_error(message: str, source: str | None = None, field: str | None = None) -> PlacementInputError:
    """Build a :class:`PlacementInputError` (a small helper so call sites stay one line)."""
    return PlacementInputError(message, source=source, field=field)


class SolveFailedError(RuntimeError):
    """A solve ended without a usable solution (infeasible, solver error, or a limit before any solution).

    Raised instead of returning a placement, so a failed solve is never mistaken for an answer; the
    message carries the backend's termination, limit and raw status.
    """
