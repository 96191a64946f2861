"""The :class:`Backend` contract, the errors backends raise, and the machinery they share.

Every backend runs its solver in a worker thread while the calling thread waits, so that the
calling thread stays able to

* receive Ctrl-C (``KeyboardInterrupt`` is only delivered to Python's main thread, between
  bytecodes) and turn it into the solver's own interrupt, after which the solve returns the
  best solution found so far with ``limit = interrupted``;
* print the progress line at most once per second and call ``SolveParams.progress`` at most once
  per ``SolveParams.progress_period``;
* stop a solver that runs past ``SolveParams.deadline`` (its own time limit is capped at what is
  left when the solve starts, but model transfer and some solver phases do not watch the clock):
  it is interrupted like on Ctrl-C and the result reports ``limit = time``.

Solver callbacks (which run on solver threads) only store numbers in a :class:`SolveMonitor`.
"""

from __future__ import annotations

import atexit
import dataclasses
import difflib
import math
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..errors import PlacementInputError, input_error
from ..milp._model import MilpModel
from ..milp._result import Limit, Progress, SolveParams, SolveResult, Termination, relative_gap

__all__ = ["Backend", "BackendUnavailableError", "ModelNotSupportedError", "SolveMonitor", "SolverAbandoned",
           "ortools_version"]


def ortools_version() -> str | None:
    """The installed OR-Tools version (shared by the CP-SAT and MathOpt backends), or ``None``."""
    try:
        import ortools
    except ImportError:
        return None
    return str(ortools.__version__)

T = TypeVar("T")

#: Seconds between two progress reports (and before the first one).
PROGRESS_PERIOD = 1.0
#: Seconds the waiting thread sleeps between checks of the worker.
_POLL = 0.05
#: Seconds past ``SolveParams.deadline`` a solver may run (its own time limit usually fires first)
#: before the waiting thread interrupts it.
DEADLINE_GRACE = 0.02
#: Seconds a solver may take to return after it was interrupted for the deadline (resp. by Ctrl-C)
#: before the waiting thread abandons it (:class:`SolverAbandoned`).
ABANDON_AFTER = 0.1
ABANDON_AFTER_CTRL_C = 0.5


class BackendUnavailableError(RuntimeError):
    """The backend's solver cannot be imported or does not work here; the message says why."""


class ModelNotSupportedError(PlacementInputError):
    """The model uses something the backend cannot represent exactly (continuous columns for
    CP-SAT, fractional coefficients...); the message names the row or column and the fix."""


class SolveMonitor:
    """Shared state between solver callbacks (any thread) and the waiting thread.

    Parameters
    ----------
    backend:
        Backend name, for the progress line.
    params:
        The solve parameters (``verbose``, ``progress``).
    sense:
        ``"min"`` or ``"max"``; fixes the "no bound yet" value.
    """

    def __init__(self, backend: str, params: SolveParams, sense: str) -> None:
        self.backend = backend
        self._params = params
        self._sign = 1.0 if sense == "min" else -1.0
        self._lock = threading.Lock()
        self._incumbent = math.nan
        self._bound = -math.inf * self._sign
        self.start = time.perf_counter()
        self._next_line = self.start + PROGRESS_PERIOD
        self._next_call = self.start + params.progress_period
        self.active = bool(params.verbose or params.progress is not None)
        #: Set by the waiting thread on Ctrl-C or past the deadline; solver callbacks poll it.
        self.stop = threading.Event()
        self.interrupted = False
        #: ``time.perf_counter()`` value past which the solver is interrupted (``SolveParams.deadline``).
        self.deadline = math.inf if params.deadline is None else params.deadline
        #: True once the waiting thread interrupted the solver for the deadline.
        self.timed_out = False

    def elapsed(self) -> float:
        """Seconds since the monitor was created."""
        return time.perf_counter() - self.start

    def update(self, incumbent: float | None = None, bound: float | None = None) -> None:
        """Record the latest incumbent objective and/or bound (model units, offset included)."""
        with self._lock:
            if incumbent is not None and math.isfinite(incumbent):
                self._incumbent = float(incumbent)
            if bound is not None and not math.isnan(bound):
                self._bound = float(bound)

    def snapshot(self) -> Progress:
        """The current :class:`Progress`."""
        with self._lock:
            inc, bnd = self._incumbent, self._bound
        return Progress(self.elapsed(), inc, bnd, relative_gap(inc, bnd))

    def tick(self) -> None:
        """Emit a progress report if one is due (called by the waiting thread)."""
        if not self.active:
            return
        now = time.perf_counter()
        line = self._params.verbose and now >= self._next_line
        call = self._params.progress is not None and now >= self._next_call
        if not (line or call):
            return
        snap = self.snapshot()
        if line:
            self._next_line = now + PROGRESS_PERIOD
            print(snap.line(self.backend), file=sys.stderr, flush=True)
        if call:
            self._next_call = now + self._params.progress_period
            self._params.progress(snap)  # type: ignore[misc]

    def past_deadline(self) -> bool:
        """True (and :attr:`timed_out` set) once the solve runs past its deadline plus the grace."""
        if not self.timed_out and time.perf_counter() > self.deadline + DEADLINE_GRACE:
            self.timed_out = True
        return self.timed_out


#: Worker threads whose solver was abandoned and may still run; joined at exit, since a native
#: solver still running while the interpreter shuts down aborts the process.
_ABANDONED: set[threading.Thread] = set()


@atexit.register
def _join_abandoned() -> None:
    for worker in list(_ABANDONED):
        worker.join(timeout=120.0)


class SolverAbandoned(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The solver did not stop within :data:`ABANDON_AFTER` seconds of an interrupt (deadline or
    Ctrl-C); its worker thread was left to finish in the background (:func:`run_interruptible`)."""


def run_interruptible(work: Callable[[], T], interrupt: Callable[[], None] | None,
                      monitor: SolveMonitor) -> T:
    """Run ``work()`` in a worker thread; on Ctrl-C call ``interrupt()`` and keep waiting.

    A Ctrl-C reaches the waiting thread as ``KeyboardInterrupt`` (caught wherever it lands here,
    thread start and join included) or, inside :func:`placement.progress.running`, as
    :func:`~placement.progress.interrupt_requested` (polled, so a Ctrl-C that the method's handler
    turned into a flag stops the solve too).  ``interrupt`` is called again at every poll until
    ``work`` returns, so an interrupt that arrives before the solver is ready to receive it is not
    lost. A second Ctrl-C, or the first one when ``interrupt`` is ``None`` (the solver cannot be
    interrupted), re-raises ``KeyboardInterrupt`` at once and abandons the worker (a daemon thread
    that runs on until its solver stops); a Ctrl-C seen as a flag by a solver that cannot be
    interrupted abandons it at once (:class:`SolverAbandoned`). Past ``monitor.deadline`` (plus
    :data:`DEADLINE_GRACE`) the solver is interrupted the same way. A solver that has not returned
    :data:`ABANDON_AFTER` seconds after it was interrupted for the deadline
    (:data:`ABANDON_AFTER_CTRL_C` after a Ctrl-C; some phases, such as HiGHS's presolve of a large
    model, watch neither the clock nor the interrupt) is abandoned: :class:`SolverAbandoned` is
    raised and the daemon worker finishes on its own. Exceptions raised by ``work`` are re-raised
    here.  ``monitor.interrupted`` tells afterwards whether a Ctrl-C came during the solve, even
    when the solver finished before it could stop.
    """
    from ..progress import interrupt_requested

    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=target, name=f"placement-{monitor.backend}", daemon=True)
    stopped_at = math.inf  # when the first interrupt was sent

    def on_ctrl_c(exc: KeyboardInterrupt) -> None:  # convert it into the solver's interrupt, or re-raise it
        nonlocal stopped_at
        monitor.stop.set()
        if interrupt is None or monitor.interrupted or worker.ident is None:
            raise exc
        monitor.interrupted = True
        stopped_at = min(stopped_at, time.perf_counter())
        interrupt()

    if interrupt_requested():  # a solve begun after the first Ctrl-C stops at once; the next one raises
        monitor.interrupted = True
    try:
        worker.start()
    except KeyboardInterrupt as exc:
        on_ctrl_c(exc)
    while True:
        try:
            wake = monitor.deadline + DEADLINE_GRACE - time.perf_counter()  # wake at the deadline, not after it
            if done.wait(min(_POLL, wake) if wake > 0.001 else _POLL):
                worker.join()
                break
            now = time.perf_counter()
            if not monitor.interrupted and interrupt_requested():
                monitor.interrupted = True
            if monitor.interrupted or monitor.past_deadline():
                stopped_at = min(stopped_at, now)
                monitor.stop.set()
                if interrupt is not None:
                    interrupt()
                patience = ABANDON_AFTER if monitor.timed_out and not monitor.interrupted else \
                    ABANDON_AFTER_CTRL_C if interrupt is not None else 0.0
                if now - stopped_at >= patience:
                    _abandon(worker, done)
                    raise SolverAbandoned(f"{monitor.backend} did not stop within {patience:g} s of the "
                                          f"{'interrupt' if monitor.interrupted else 'deadline'}")
            monitor.tick()
        except KeyboardInterrupt as exc:
            on_ctrl_c(exc)
    if "error" in box:
        raise box["error"]
    return box["value"]


def _abandon(worker: threading.Thread, done: threading.Event) -> None:
    """Leave ``worker`` to finish in the background (joined at exit while its solver still runs)."""
    _ABANDONED.difference_update([t for t in _ABANDONED if not t.is_alive()])
    if worker.ident is not None and not done.is_set():
        _ABANDONED.add(worker)


#: ``SolveParams`` field -> the capability flag a backend needs to receive it.
_PARAM_CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("warm_start", "supports_warm_start"),
    ("time_limit", "supports_time_limit"),
    ("rel_gap", "supports_gap"),
    ("threads", "supports_threads"),
)


class Backend(ABC):
    """A solver behind the neutral :class:`~placement.milp.MilpModel` / :class:`SolveResult` contract.

    Subclasses set the class attributes, implement :meth:`_probe`, :meth:`version`,
    :meth:`option_names` (or override :meth:`check_options`) and :meth:`_solve`, and run their
    solver through :meth:`_run`; the public :meth:`solve` validates once (availability, options,
    model, warm start), enforces the ``supports_*`` flags and normalises the result.

    Parameters
    ----------
    registry:
        The registry this backend belongs to (name -> backend, itself included), used to check
        the options given for the other backends; the registry module passes
        :data:`~placement.backends.BACKENDS`. ``None`` (a backend built outside the registry):
        only this backend's own options are checked, options for any other name are ignored.
    """

    #: Registry name (``"highs"``).
    name: ClassVar[str]
    #: One line for listings.
    summary: ClassVar[str]
    #: What to install when :meth:`available` is false.
    install_hint: ClassVar[str]
    # Capabilities, enforced by :meth:`check_model` (mip, lp), :meth:`solve` (the ``SolveParams``
    # fields in ``_PARAM_CAPABILITIES``: cleared before :meth:`_solve` and noted in the message)
    # and :meth:`_run` (interrupt).
    supports_mip: ClassVar[bool] = True  #: integer columns
    supports_lp: ClassVar[bool] = True  #: continuous columns
    supports_warm_start: ClassVar[bool] = False  #: ``SolveParams.warm_start``
    supports_time_limit: ClassVar[bool] = True  #: ``SolveParams.time_limit``
    supports_gap: ClassVar[bool] = True  #: ``SolveParams.rel_gap``
    supports_threads: ClassVar[bool] = True  #: ``SolveParams.threads``
    supports_interrupt: ClassVar[bool] = True  #: Ctrl-C returns the best solution so far

    def __init__(self, registry: Mapping[str, Backend] | None = None) -> None:
        self._availability: tuple[bool, str] | None = None
        self._registry: Mapping[str, Backend] | None = registry

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # ------------------------------------------------------------------ discovery
    def available(self) -> tuple[bool, str]:
        """``(True, "")`` when the solver imports and works here, else ``(False, reason)``.

        Imports the solver on first call (never at package import); the answer is cached.
        """
        if self._availability is None:
            try:
                self._availability = self._probe()
            except Exception as exc:  # noqa: BLE001 - any failure means "not usable", with the reason
                self._availability = (False, f"{type(exc).__name__}: {exc}; {self.install_hint}")
        return self._availability

    @abstractmethod
    def _probe(self) -> tuple[bool, str]:
        """Import the solver and check it works (a trivial solve where registration can fail)."""

    @abstractmethod
    def version(self) -> str | None:
        """Solver version string, ``None`` when unavailable."""

    @abstractmethod
    def option_names(self) -> Iterable[str]:
        """Names accepted in ``SolveParams.options[self.name]``."""

    def capabilities(self) -> dict[str, bool]:
        """The ``supports_*`` flags as a dict (for listings and docs)."""
        return {k: bool(getattr(self, k)) for k in dir(type(self)) if k.startswith("supports_")}

    # ------------------------------------------------------------------ checks
    def check_all_options(self, params: SolveParams) -> None:
        """Check every backend's options in ``params``, so that a typo fails even when another
        backend runs.

        ``params.options`` keys must be backends of this backend's registry; the option names
        are checked for this backend and for every other available one that is given options.
        Outside a registry only this backend's own options are checked.
        """
        registry = self._registry
        for name, options in params.options.items():
            if name == self.name:
                self.check_options(dict(options))
            elif registry is None:
                continue
            elif name not in registry:
                raise input_error(f"options given for unknown backend {name!r}; known backends: "
                                  f"{', '.join(registry)}", source="SolveParams", field="options")
            elif options and registry[name].available()[0]:
                registry[name].check_options(dict(options))

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the first unknown option and this backend."""
        known = set(self.option_names())
        for key in options:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=3)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise input_error(f"unknown option {key!r} for backend {self.name!r}{hint}",
                                  source="SolveParams", field=f"options[{self.name!r}]")

    def check_model(self, model: MilpModel) -> None:
        """Raise :class:`ModelNotSupportedError` when the backend cannot represent ``model``."""
        if model.is_mip and not self.supports_mip:
            raise ModelNotSupportedError(f"backend {self.name!r} solves LPs only, and the model has integer "
                                         f"columns; choose a MIP backend", source=model.name)
        if not self.supports_lp and not model.integrality.all():
            j = int(np.flatnonzero(~model.integrality)[0])
            raise ModelNotSupportedError(
                f"backend {self.name!r} handles integer columns only, and {model.describe_column(j)} "
                f"(column {j}) is continuous; make it integer or choose another backend", source=model.name)

    # ------------------------------------------------------------------ solve
    def solve(self, model: MilpModel, params: SolveParams | None = None) -> SolveResult:
        """Solve ``model``; return a :class:`SolveResult`.

        A ``SolveParams`` field this backend cannot apply (``warm_start`` without
        ``supports_warm_start``, ``threads`` without ``supports_threads``...) is not passed on;
        the result's ``message`` says it was ignored.

        Raises
        ------
        BackendUnavailableError
            The solver is not usable here (with the reason).
        ValueError
            Unknown option name, warm start of the wrong length, or (as
            :class:`ModelNotSupportedError`) a model this backend cannot represent.
        """
        params = params if params is not None else SolveParams()
        ok, reason = self.available()
        if not ok:
            raise BackendUnavailableError(f"backend {self.name!r} is not available: {reason}")
        self.check_all_options(params)
        if params.warm_start is not None and params.warm_start.shape != (model.num_vars,):
            raise input_error(f"has {params.warm_start.shape[0]} values but the model has {model.num_vars} "
                              f"columns", source="SolveParams", field="warm_start")
        self.check_model(model)
        if params.deadline is not None:  # the solver's own limit: what is left of the shared deadline
            left = max(params.deadline - time.perf_counter(), 1e-3)
            params = dataclasses.replace(params, time_limit=left if params.time_limit is None
                                         else min(params.time_limit, left))
        ignored = [f for f, flag in _PARAM_CAPABILITIES if getattr(params, f) is not None and not getattr(self, flag)]
        if ignored:
            params = dataclasses.replace(params, **dict.fromkeys(ignored))
        monitor = SolveMonitor(self.name, params, model.sense)
        try:
            result = self._solve(model, params, monitor)
        except SolverAbandoned as exc:
            result = self._abandoned(model, params, monitor, str(exc))
        if not ignored:
            return result
        notes = [f"SolveParams.{f} ignored: backend {self.name!r} cannot apply it" for f in ignored]
        return dataclasses.replace(result, message="; ".join(x for x in [result.message, *notes] if x))

    def _abandoned(self, model: MilpModel, params: SolveParams, monitor: SolveMonitor, why: str) -> SolveResult:
        """The result of a solve abandoned at its deadline or on Ctrl-C: the warm start when it is
        feasible (the best point known), else no solution; no bound."""
        ws = params.warm_start
        feasible = ws is not None and model.max_violation(ws) <= 1e-6
        return self._result(model, monitor, termination=None, limit=Limit.OTHER,
                            solution=ws if feasible else None,
                            objective=model.objective_value(ws) if feasible else None, bound=math.nan,
                            nodes=None, raw_status="abandoned",
                            message=f"{why}; it was left to finish in the background and its answer dropped"
                                    + ("; the warm start is returned" if feasible else ""))

    @abstractmethod
    def _solve(self, model: MilpModel, params: SolveParams, monitor: SolveMonitor) -> SolveResult:
        """Solve a validated model; build the result with :meth:`_result`.

        ``params`` holds only fields this backend supports (the others are ``None``).
        """

    @staticmethod
    def _time_limit(params: SolveParams, monitor: SolveMonitor) -> float | None:
        """The solver's time limit when it starts: ``params.time_limit`` capped at what is left of
        ``params.deadline`` now (call it after the model transfer, right before the solve)."""
        if math.isinf(monitor.deadline):
            return params.time_limit
        left = max(monitor.deadline - time.perf_counter(), 1e-3)
        return left if params.time_limit is None else min(params.time_limit, left)

    def _run(self, work: Callable[[], T], interrupt: Callable[[], None] | None, monitor: SolveMonitor) -> T:
        """:func:`run_interruptible`, with ``interrupt`` dropped unless ``supports_interrupt``."""
        return run_interruptible(work, interrupt if self.supports_interrupt else None, monitor)

    def _result(self, model: MilpModel, monitor: SolveMonitor, *, termination: Termination | None,
                limit: Limit, solution: np.ndarray | None, objective: float | None, bound: float,
                nodes: int | None, raw_status: str, message: str = "",
                scaling_error: float = 0.0) -> SolveResult:
        """Normalise what a backend read from its solver into a :class:`SolveResult`.

        ``termination=None`` means "stopped by ``limit``": ``feasible`` with a solution, else
        ``no_solution``. A Ctrl-C seen by the monitor turns a limit stop into
        ``limit = interrupted``. Infeasible/unbounded get the conventional objective and bound
        (``+inf``/``-inf`` for min), and the gap is computed here, once, for every backend.
        """
        sign = 1.0 if model.sense == "min" else -1.0
        if solution is not None:
            solution = np.asarray(solution, dtype=np.float64)
            if solution.shape != (model.num_vars,):
                solution = None
        if termination is None:
            termination = Termination.FEASIBLE if solution is not None else Termination.NO_SOLUTION
        if monitor.interrupted and termination in (Termination.FEASIBLE, Termination.NO_SOLUTION) \
                and limit in (Limit.NONE, Limit.OTHER):
            limit = Limit.INTERRUPTED
        elif monitor.timed_out and not monitor.interrupted and termination in \
                (Termination.FEASIBLE, Termination.NO_SOLUTION) and limit in (Limit.NONE, Limit.OTHER,
                                                                                Limit.INTERRUPTED):
            limit = Limit.TIME
        if termination in (Termination.OPTIMAL, Termination.FEASIBLE) and solution is None:
            termination, message = Termination.ERROR, (message + "; " if message else "") + \
                "the solver reported a solution but returned no values"
        if termination is Termination.INFEASIBLE:
            objective, bound, solution = math.nan, math.inf * sign, None
        elif termination is Termination.UNBOUNDED:
            objective, bound, solution = -math.inf * sign, -math.inf * sign, None
        elif termination is Termination.INFEASIBLE_OR_UNBOUNDED:
            objective, solution = math.nan, None
        elif solution is None or objective is None:
            objective = math.nan
        if termination is Termination.OPTIMAL and math.isnan(bound):
            bound = float(objective)  # type: ignore[arg-type]
        if math.isnan(bound):
            bound = -math.inf * sign
        objective = float(objective)  # type: ignore[arg-type]
        gap = relative_gap(objective, bound) if termination in (Termination.OPTIMAL, Termination.FEASIBLE) \
            else math.nan
        return SolveResult(termination=termination, limit=limit, objective=objective, bound=float(bound),
                           gap=gap, wall_time=monitor.elapsed(), nodes=nodes, solution=solution,
                           backend=self.name, raw_status=raw_status, message=message,
                           scaling_error=float(scaling_error), interrupted=monitor.interrupted)
