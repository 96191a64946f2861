"""Plumbing shared by the formulation methods: solve a :class:`~placement.milp.MilpModel` through a
backend, refuse to hide a failed solve, and turn the result into a :class:`~placement.solution.Solution`.

Formulation modules build models from statistics and topology arrays and never import a solver;
they call :func:`solve_model`, which reaches the solver only through :mod:`placement.backends`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from ..errors import PlacementInputError, SolveFailedError, input_error
from ..milp import MilpModel, SolveParams, SolveResult, relative_gap
from ..progress import Run
from ..registry import Option

__all__ = ["SOLVER_OPTIONS", "MIN_SOLVE_S", "SolveFailedError", "solve_model", "solve_for_bound", "solver_params",
           "run_params",
           "assignment_from_x",
           "experts_per_gpu_cap", "power_of_two_near", "proven_gap"]


#: Options every MILP-backed method accepts (``--option backend=cpsat`` etc. on the CLI).
SOLVER_OPTIONS: tuple[Option, ...] = (
    Option("backend", str, "highs", "solver backend (see placement.backends.BACKENDS)"),
    Option("time_limit", float, 60.0, "wall-clock limit of the solve in seconds (0: none)", minimum=0.0),
    Option("rel_gap", float, 1e-6, "stop at this relative gap between objective and bound", minimum=0.0),
    Option("threads", int, 0, "solver threads (0: the solver's default)", minimum=0),
    Option("verbose", bool, False, "print a progress line (incumbent, bound and gap in the objective's units, "
           "stage) on stderr about once a second (the CLI does unless --quiet)"),
)

#: A sub-solve is skipped when less than this many seconds are left for it.
MIN_SOLVE_S = 0.05


def solver_params(time_limit: float = 60.0, rel_gap: float = 1e-6, threads: int = 0, verbose: bool = False,
                  warm_start: np.ndarray | None = None, seed: int | None = None,
                  deadline: float | None = None) -> SolveParams:
    """:class:`SolveParams` from the method options (0 means "not set"; ``deadline`` is a
    ``time.perf_counter()`` value, ``inf`` or ``None`` for none)."""
    return SolveParams(time_limit=time_limit if time_limit and time_limit > 0 else None, rel_gap=rel_gap,
                       threads=threads or None, verbose=verbose, warm_start=warm_start, seed=seed,
                       deadline=deadline if deadline is not None and math.isfinite(deadline) else None)


def run_params(run: Run, *, rel_gap: float | None, threads: int = 0, share: float = 1.0, parts: int = 1,
               warm_start: np.ndarray | None = None, seed: int | None = None,
               convert: Callable[[float, float], tuple[float | None, float | None]] | None = None
               ) -> SolveParams | None:
    """:class:`SolveParams` for one sub-solve of ``run`` (:class:`placement.progress.Run`).

    Its time limit is ``run.solve_limit(share, parts)`` (``share`` of the time left, split over
    ``parts`` solves still to come), its ``deadline`` the run's own (less the reserve kept for the
    work after the last solve), so model transfer counts and a solver that overruns is stopped;
    ``convert(incumbent, bound)`` maps the solver's model-unit values to the whole problem's
    reported ``(incumbent, bound)`` for the run's progress reports (:meth:`Run.follow`).  ``None``,
    with the run's answer marked cut short by time, when less than :data:`MIN_SOLVE_S` seconds are left or the run
    is stopped: the caller skips the solve.
    """
    limit = run.solve_limit(share, parts)
    if run.stopped or (limit is not None and limit < MIN_SOLVE_S):
        run.time_cut = run.time_cut or not run.interrupted
        return None
    at = run.deadline.at - run.deadline.reserve
    deadline = at if run.deadline.limit is not None and run.deadline.clock is time.perf_counter else None
    follow = run.follow(convert) if convert is not None else None
    return SolveParams(time_limit=limit, rel_gap=rel_gap, threads=threads or None, warm_start=warm_start, seed=seed,
                       deadline=deadline, progress=follow, progress_period=0.1 if follow is not None else 1.0)


def _solve(model: MilpModel, backend: str, params: SolveParams, run: Run | None) -> SolveResult:
    """The named backend's result for ``model``, its limit noted on ``run`` (see :func:`solve_model`)."""
    from ..backends import get_backend

    b = get_backend(backend)
    ok, why = b.available()
    if not ok:
        raise PlacementInputError(f"backend {backend!r} is not available here: {why}", field="backend")
    result = b.solve(model, params)
    if run is not None:
        run.note(result.limit)
        if result.interrupted:  # a Ctrl-C the solver outran (it finished first) still stops the method
            run.note("interrupted")
    return result


def solve_model(model: MilpModel, backend: str, params: SolveParams, run: Run | None = None) -> SolveResult:
    """Solve ``model`` with the named backend; raise :class:`SolveFailedError` without a solution.

    The raised message carries the backend's termination, limit and raw status, so a failed or
    infeasible solve is never mistaken for a placement.  With ``run`` the limit the solve stopped
    at is noted on it (:meth:`placement.progress.Run.note`: a Ctrl-C the backend turned into an
    interrupt stops the method's later stages, also when the solver finished before it could
    stop), whether or not a solution came back.
    """
    result = _solve(model, backend, params, run)
    if result.solution is None:
        raise SolveFailedError(f"{backend} found no solution: termination={result.termination}, "
                               f"limit={result.limit}, status={result.raw_status} {result.message}".strip())
    return result


def solve_for_bound(model: MilpModel, backend: str, params: SolveParams, run: Run | None = None) -> float | None:
    """The proven bound of ``model``'s optimum from a (time-limited) solve, in model units; ``None`` when the solver
    proved none.  For models solved only for their bound (a relaxation): a solve that stops without a solution is
    no failure here, as no placement is read from it."""
    result = _solve(model, backend, params, run)
    bound = result.bound
    if result.termination.value == "optimal" and result.objective is not None:
        bound = result.objective if bound is None or not math.isfinite(bound) else bound
    return float(bound) if bound is not None and math.isfinite(bound) else None


def assignment_from_x(x: np.ndarray) -> np.ndarray:
    """``int64 [..., experts]`` the GPU index of the largest entry of ``x [..., experts, gpus]``.

    ``x`` is a (near-)binary solution block; entries are rounded, so solver tolerances do not
    matter, but a row that is not one-hot after rounding is an error.
    """
    r = np.rint(x)
    if not np.all(r.sum(axis=-1) == 1):
        bad = np.argwhere(r.sum(axis=-1) != 1)[0]
        raise SolveFailedError(f"solution row {tuple(int(i) for i in bad)} is not a one-hot assignment")
    return np.argmax(r, axis=-1).astype(np.int64)


def experts_per_gpu_cap(experts_per_gpu: int, num_experts: int, num_gpus: int) -> int:
    """The per-layer expert cap ``m`` of a GPU from the ``experts_per_gpu`` option (0: ``ceil(E/G)``).

    >>> experts_per_gpu_cap(0, 256, 32), experts_per_gpu_cap(10, 256, 32)
    (8, 10)
    """
    E, G = int(num_experts), int(num_gpus)
    if experts_per_gpu < 0:
        raise input_error(f"must be >= 0 (0: ceil(E/G)), got {experts_per_gpu}", field="experts_per_gpu")
    m = int(experts_per_gpu) or -(-E // G)
    if m * G < E:
        raise input_error(f"experts_per_gpu={m} gives {m * G} slots per layer on {G} GPUs, fewer than the "
                          f"{E} experts of a layer; use at least {-(-E // G)}", field="experts_per_gpu")
    return m


def power_of_two_near(value: float) -> float:
    """``2 ** round(log2(value))``, or 1 for a value that is not positive and finite.

    Formulations divide costs by it so that the numbers a solver sees are near 1 (seconds per byte
    are ~1e-11, which solvers take for zero); dividing or multiplying by a power of two is exact
    in floating point, so the reported objective is the model's times this unit, with no rounding.

    >>> power_of_two_near(1e-7), power_of_two_near(3.0), power_of_two_near(0.0)
    (1.1920928955078125e-07, 4.0, 1.0)
    """
    if not (value > 0 and math.isfinite(value)):
        return 1.0
    return float(2.0 ** round(math.log2(value)))


def proven_gap(objective: float, bound: float | None) -> float | None:
    """:func:`~placement.milp.relative_gap` of ``objective`` and a proven lower ``bound``.

    A bound above the objective is rounding and counts as the objective; ``None`` without a finite
    bound.

    >>> proven_gap(4.0, 3.0), proven_gap(4.0, 4.5), proven_gap(4.0, None)
    (0.25, 0.0, None)
    """
    if bound is None or not math.isfinite(bound):
        return None
    return relative_gap(objective, min(bound, objective))
