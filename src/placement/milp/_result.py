"""Solver-neutral parameters and results: what every backend takes and returns.

Vocabulary (after OR-Tools MathOpt): *why* a solve stopped (:class:`Termination`) is kept apart
from *which limit* stopped it (:class:`Limit`).

Gap
---
One definition for the whole project, scale-free:
``gap = |objective - bound| / |objective|`` (HiGHS's and Gurobi's relative gap). It is ``0``
when the two are equal (a proven optimum, up to the solver's tolerances; a solve that stops at
``rel_gap`` reports ``optimal`` with ``gap <= rel_gap``), ``inf`` when a solution exists but no
finite bound was proven or when the objective is 0 and the bound is not, and ``nan`` when there
is no objective value (infeasible, no solution found, error). Every :class:`SolveResult`,
:class:`Progress` line and :class:`~placement.solution.Solution` reports this gap, whatever units
the objective has (seconds per step are far below 1, token counts far above).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from ..errors import input_error
from ..progress import relative_gap  # the one definition (a leaf every layer may import)

__all__ = ["Limit", "Progress", "SolveParams", "SolveResult", "Termination", "relative_gap"]


class Termination(str, Enum):
    """Why a solve stopped."""

    OPTIMAL = "optimal"  #: a solution proven optimal (within the requested gap)
    FEASIBLE = "feasible"  #: a solution, not proven optimal; a limit stopped the search
    INFEASIBLE = "infeasible"  #: proven to have no feasible point
    UNBOUNDED = "unbounded"  #: proven to have feasible points of arbitrarily good objective
    INFEASIBLE_OR_UNBOUNDED = "infeasible_or_unbounded"  #: one of the two; the solver did not tell which
    NO_SOLUTION = "no_solution"  #: a limit stopped the search before any solution was found
    ERROR = "error"  #: the solver failed (numerics, invalid model...); see ``raw_status``/``message``
    #: no optimality claim: a baseline or heuristic answered (never returned by a backend)
    HEURISTIC = "heuristic"

    def __str__(self) -> str:
        return self.value


class Limit(str, Enum):
    """Which limit stopped the search (``NONE`` when the search ran to completion)."""

    NONE = "none"
    TIME = "time"
    NODES = "nodes"
    ITERATIONS = "iterations"
    SOLUTIONS = "solutions"
    INTERRUPTED = "interrupted"  #: Ctrl-C (SIGINT) or an explicit interrupt
    OTHER = "other"  #: memory, objective cutoff... (see ``raw_status``)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Progress:
    """One progress report from a running solve.

    Parameters
    ----------
    elapsed:
        Seconds since the solve started.
    incumbent:
        Objective of the best solution so far (``nan`` before the first one).
    bound:
        Best proven bound so far (``-inf``/``+inf`` for min/max before any).
    gap:
        :func:`relative_gap` of the two.
    """

    elapsed: float
    incumbent: float
    bound: float
    gap: float

    def line(self, backend: str) -> str:
        """The one-line text printed on stderr."""
        gap = "-" if math.isnan(self.gap) or math.isinf(self.gap) else f"{100 * self.gap:.2f}%"
        return (f"[{backend}] {self.elapsed:8.1f} s  incumbent {self.incumbent:>13.6g}  "
                f"bound {self.bound:>13.6g}  gap {gap}")


@dataclass(frozen=True, eq=False)
class SolveParams:
    """Backend-neutral solve parameters.

    Parameters
    ----------
    time_limit:
        Wall-clock limit in seconds; ``None`` for none.
    rel_gap:
        Stop when :func:`relative_gap` ``<= rel_gap`` (``None``: the solver's default, e.g.
        HiGHS 1e-4, CP-SAT 0, SCIP 1e-4).
    threads:
        Worker threads (``None``: the solver's default). Backends that cannot set it say so in
        :attr:`SolveResult.message`.
    seed:
        Random seed (``None``: the solver's default).
    verbose:
        Print a progress line (elapsed, incumbent, bound, gap) on stderr at most once per
        second, starting after the first second. Solver-native logs are per-backend
        ``options`` (``{"highs": {"output_flag": True}}``, ``{"cpsat": {"log_search_progress": True}}``).
    warm_start:
        ``float64 [n]``, a (preferably feasible) solution given to the solver as a start/hint.
    progress:
        Called with a :class:`Progress` at most once per ``progress_period`` seconds during the
        solve, starting after the first period, from the thread that called ``solve``.
    progress_period:
        Seconds between two calls of ``progress`` (default 1, the ``verbose`` line's period). A
        method that rate-limits its own reports across many sub-solves
        (:class:`placement.progress.Run`) asks for more frequent calls.
    deadline:
        ``time.perf_counter()`` value by which the solve must have returned, shared by the
        sub-solves of a multi-stage method (:class:`placement.progress.Deadline`); ``None`` for
        none. The backend caps its solver's time limit at what is left when the solve starts and
        interrupts a solver still running past it; such a stop reports ``limit = time``.
    options:
        Per-backend native options, ``{backend_name: {option: value}}``. Applied after the common
        fields above, so they win. Unknown option names raise ``ValueError`` naming the option
        and the backend; options for other backends are ignored by the backend that solves.
    """

    time_limit: float | None = None
    rel_gap: float | None = None
    threads: int | None = None
    seed: int | None = None
    verbose: bool = False
    warm_start: np.ndarray | None = None
    progress: Callable[[Progress], Any] | None = None
    progress_period: float = 1.0
    deadline: float | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        src = "SolveParams"
        if self.time_limit is not None:
            t = float(self.time_limit)
            if not t > 0 or math.isnan(t):
                raise input_error(f"must be a positive number of seconds or None, got {self.time_limit!r}",
                                  source=src, field="time_limit")
            object.__setattr__(self, "time_limit", None if math.isinf(t) else t)
        if self.rel_gap is not None:
            g = float(self.rel_gap)
            if not g >= 0 or math.isinf(g):
                raise input_error(f"must be a finite number >= 0 or None, got {self.rel_gap!r}",
                                  source=src, field="rel_gap")
            object.__setattr__(self, "rel_gap", g)
        for name in ("threads", "seed"):
            value = getattr(self, name)
            if value is not None:
                low = 1 if name == "threads" else 0
                if isinstance(value, bool) or int(value) != value or int(value) < low:
                    raise input_error(f"must be an integer >= {low} or None, got {value!r}",
                                      source=src, field=name)
                object.__setattr__(self, name, int(value))
        if self.warm_start is not None:
            ws = np.array(self.warm_start, dtype=np.float64, copy=True)
            if ws.ndim != 1 or not np.isfinite(ws).all():
                raise input_error("must be a finite 1-D array with one value per model column",
                                  source=src, field="warm_start")
            ws.setflags(write=False)
            object.__setattr__(self, "warm_start", ws)
        for name in ("progress_period", "deadline"):
            value = getattr(self, name)
            if name == "deadline" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or \
                    (name == "progress_period" and not value > 0):
                raise input_error(f"must be a {'positive ' if name == 'progress_period' else ''}number, got "
                                  f"{value!r}", source=src, field=name)
            object.__setattr__(self, name, float(value))
        if self.progress is not None and not callable(self.progress):
            raise input_error("must be callable or None", source=src, field="progress")
        if not isinstance(self.options, Mapping):
            raise input_error("must map backend names to option dicts, e.g. {'highs': {'presolve': 'off'}}",
                              source=src, field="options")
        for key, value in self.options.items():
            if not isinstance(key, str) or not isinstance(value, Mapping):
                raise input_error(f"entry {key!r} must map a backend name to a dict of options",
                                  source=src, field="options")
        object.__setattr__(self, "options", {k: dict(v) for k, v in self.options.items()})

    def options_for(self, backend: str) -> dict[str, Any]:
        """The native options given for ``backend`` (a copy; empty if none)."""
        return dict(self.options.get(backend, {}))


@dataclass(frozen=True, eq=False)
class SolveResult:
    """What a backend returns, in one vocabulary for every solver.

    Parameters
    ----------
    termination:
        Why the solve stopped.
    limit:
        Which limit stopped it (``Limit.NONE`` if none).
    objective:
        Objective of ``solution`` in model units, offset included (``nan`` without a solution;
        ``-inf``/``+inf`` for a min/max problem proven unbounded).
    bound:
        Best proven bound on the optimum (a lower bound for ``min``), offset included;
        ``-inf``/``+inf`` (min/max) when none was proven.
    gap:
        :func:`relative_gap` ``(objective, bound)``.
    wall_time:
        Seconds spent in the backend's ``solve``, model transfer included.
    nodes:
        Branch-and-bound nodes (CP-SAT: branches); ``None`` when not reported.
    solution:
        ``float64 [n]``, the best solution found, or ``None``.
    backend:
        Registry name of the backend.
    raw_status:
        The solver's own status name (``"kOptimal"``, ``"OPTIMAL"``, ``"TERMINATION_REASON_..."``).
    message:
        Solver detail and any notes from the backend (parameters it could not apply...).
    scaling_error:
        Backends that round the objective to integers (CP-SAT) report here the largest
        possible difference, over the column bounds, between the true and the rounded
        objective; ``0.0`` when the costs were represented exactly.
    interrupted:
        True when a Ctrl-C came during the solve, even when the solver finished before it could
        stop (then ``limit`` is ``Limit.NONE``): a multi-stage method stops its later stages.
    """

    termination: Termination
    limit: Limit
    objective: float
    bound: float
    gap: float
    wall_time: float
    nodes: int | None
    solution: np.ndarray | None
    backend: str
    raw_status: str
    message: str = ""
    scaling_error: float = 0.0
    interrupted: bool = False

    @property
    def has_solution(self) -> bool:
        """True when :attr:`solution` holds a feasible point."""
        return self.solution is not None

    def __repr__(self) -> str:
        return (f"SolveResult({self.backend}: {self.termination}, limit={self.limit}, "
                f"objective={self.objective:.10g}, bound={self.bound:.10g}, gap={self.gap:.3g}, "
                f"time={self.wall_time:.3f}s, nodes={self.nodes}, raw={self.raw_status!r})")
