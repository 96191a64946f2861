"""One progress channel and one deadline for a method run: :class:`Run`, :class:`Deadline`, :class:`Report`.

A leaf module (standard library only), so that formulations, baselines, the catalogue and the
CLI can all use it without importing each other.

How a method uses it
--------------------
:func:`placement.methods.run_method` opens a :class:`Run` for the method (``with running(...)``:
its deadline starts *before* the method builds anything, so model building counts against the
time limit) and makes it current; the method picks it up with :func:`begin` (which, when the
method is called directly, outside the catalogue, opens a detached run of its own)::

    run = begin("alltoall-time", time_limit, unit="s", verbose=verbose)
    run.update(incumbent=objs.sum(), bound=bounds.sum(), stage=f"layer {l + 1}/{L}: search")
    limit = run.solve_limit(parts=L - l)          # None (no limit), or the seconds this solve may use
    params = solver_params(..., deadline=run.deadline.at,
                           progress=run.follow(lambda p: (rest + p.incumbent * unit, ...)))
    with run.interruptible():                     # Ctrl-C: the solve or the loop stops, the method
        result = solve_model(model, backend, params)  # goes on to return its best answer so far
    run.note(result.limit)                        # "time" / "interrupted" stop the later stages
    if run.stopped: ...                           # deadline passed or Ctrl-C seen: wrap up
    return make_solution(..., limit=run.limit)

Units
-----
Everything a :class:`Run` receives and reports is in the **method's reported units** (seconds per
step, fractions, tokens...), for the *whole* problem: a method that solves layer by layer reports
the sum over layers of its current per-layer incumbents and bounds, and a sub-solve's callback
(:meth:`Run.follow`) converts the solver's model units (scaled, one layer) back with the
formulation's own scaling.  The gap is :func:`relative_gap`, the project's one definition.

Reports reach the run's ``callback`` (the API's ``progress=`` argument) and, with ``verbose``,
stderr as one line, at most once per ``period`` seconds (1 s), the first after one period.

Ctrl-C
------
Python raises ``KeyboardInterrupt`` wherever the main thread happens to be, which may be between
two stages, inside a backend's wait or in a thread join: code that is not ready for it would let
it escape and lose every answer found so far.  So :func:`running` (used by
:func:`placement.methods.run_method`), in the main thread and while SIGINT has Python's default
handler, installs its own for the block:

* the first Ctrl-C marks every :class:`Run` of the block :attr:`~Run.interrupted` (and
  :func:`interrupt_requested` true, which the backends' waiting loops poll to stop their
  solver); it raises ``KeyboardInterrupt`` only inside an :meth:`Run.interruptible` block of
  the main thread, which catches it, so a long computation there ends at once and the method
  wraps up with its best complete answer (``limit = "interrupted"``);
* a second Ctrl-C raises ``KeyboardInterrupt`` wherever it lands, and no block catches it: the
  user insists.

The previous handler is back when the block ends.  Outside such a block (a method called directly,
another thread, a handler of the application's own) a first ``KeyboardInterrupt`` is caught by
the :meth:`Run.interruptible` block it lands in, as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["PERIOD", "Cancelled", "Deadline", "Report", "Run", "begin", "check_cancelled", "current",
           "interrupt_requested", "print_report", "relative_gap", "running"]

#: Seconds between two progress reports (and before the first one).
PERIOD = 1.0
#: Held back from the sub-solves, ``RESERVE_SHARE * limit + RESERVE_FIXED`` seconds (at most
#: :data:`MAX_RESERVE`): the share covers the work after the last solve (decoding, the objective of
#: the answer, building the placement), the fixed part the time a backend takes to stop a solver that
#: runs past its deadline (interrupted, then abandoned ~0.1 s later: :mod:`placement.backends`).
RESERVE_SHARE = 0.03
RESERVE_FIXED = 0.1
MAX_RESERVE = 1.0


def relative_gap(objective: float, bound: float) -> float:
    """Relative gap ``|objective - bound| / |objective|``: ``0`` when they are equal, ``inf`` when either is
    infinite or the objective is 0 (and the bound not), ``nan`` when either is; the project's one gap
    (:mod:`placement.milp` re-exports it).

    >>> relative_gap(110.0, 100.0)
    0.09090909090909091
    >>> relative_gap(0.5, 0.25), relative_gap(3.0, 3.0), relative_gap(3.0, -math.inf)
    (0.5, 0.0, inf)
    >>> relative_gap(2e-6, 1e-6), relative_gap(0.0, 0.0), relative_gap(0.0, -1.0)
    (0.5, 0.0, inf)
    """
    if math.isnan(objective) or math.isnan(bound):
        return math.nan
    if objective == bound:
        return 0.0
    if math.isinf(objective) or math.isinf(bound) or objective == 0.0:
        return math.inf
    return abs(objective - bound) / abs(objective)


def _num(value: float, unit: str) -> str:
    if math.isnan(value) or math.isinf(value):
        return "-"
    return f"{value:.6g}{' ' + unit if unit else ''}"


@dataclass(frozen=True)
class Report:
    """One progress report of a method run, in the method's reported units.

    Attributes
    ----------
    method:
        Registry name of the method.
    elapsed:
        Seconds since the run started (model building included).
    incumbent:
        Objective of the best complete answer so far (``nan`` before the first).
    bound:
        Best proven bound on the optimum so far (``-inf`` before the first, or for a method that
        proves none).
    gap:
        :func:`relative_gap` of the two (``inf`` without a finite bound, ``nan`` without an incumbent).
    unit:
        Unit of ``incumbent`` and ``bound`` (``"s"``, ``"fraction"``, ``"tokens"``...).
    stage:
        What the method is doing: ``"layer 3/58: MILP"``, ``"local search"``...
    time_limit:
        The run's limit in seconds, ``None`` when it has none.
    """

    method: str
    elapsed: float
    incumbent: float
    bound: float
    gap: float
    unit: str = ""
    stage: str = ""
    time_limit: float | None = None

    def line(self) -> str:
        """The one line printed on stderr.

        >>> Report("exflow", 3.04, 0.25, 0.2, 0.2, "fraction", "MILP", 15.0).line()
        '[exflow] 3.0/15 s  incumbent 0.25 fraction  bound 0.2 fraction  gap 20.00%  MILP'
        """
        limit = "" if self.time_limit is None else f"/{self.time_limit:g}"
        gap = "-" if math.isnan(self.gap) or math.isinf(self.gap) else f"{100 * self.gap:.2f}%"
        text = (f"[{self.method}] {self.elapsed:.1f}{limit} s  incumbent {_num(self.incumbent, self.unit)}  "
                f"bound {_num(self.bound, self.unit)}  gap {gap}")
        return f"{text}  {self.stage}" if self.stage else text


def print_report(report: Report) -> None:
    """Print ``report.line()`` on stderr (the CLI's progress channel)."""
    print(report.line(), file=sys.stderr, flush=True)


class Deadline:
    """A wall-clock limit shared by every stage and sub-solve of one method run.

    Parameters
    ----------
    limit:
        Seconds from ``start``; ``None`` (or 0, or a negative number) for no limit.
    clock:
        A ``time.perf_counter``-like function (tests pass a fake one).
    start:
        The clock value the limit counts from (default: now).

    >>> d = Deadline(10.0, clock=lambda: 4.0, start=0.0)
    >>> d.left(), d.expired(), round(d.solve_limit(parts=2), 6)
    (6.0, False, 2.8)
    >>> Deadline(None).solve_limit() is None
    True
    """

    def __init__(self, limit: float | None, *, clock: Callable[[], float] = time.perf_counter,
                 start: float | None = None) -> None:
        self.clock = clock
        self.start = clock() if start is None else float(start)
        self.limit = float(limit) if limit is not None and limit > 0 and math.isfinite(limit) else None
        #: The clock value at which the time is up (``inf`` without a limit).
        self.at = math.inf if self.limit is None else self.start + self.limit
        #: Seconds kept back from the sub-solves for the work after the last one.
        self.reserve = 0.0 if self.limit is None else min(RESERVE_SHARE * self.limit + RESERVE_FIXED, MAX_RESERVE,
                                                          self.limit / 4)

    def elapsed(self) -> float:
        """Seconds since the start."""
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds until the deadline (``inf`` without a limit, never negative)."""
        return max(self.at - self.clock(), 0.0)

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self.clock() >= self.at

    def budget(self, share: float = 1.0, parts: int = 1) -> float:
        """Seconds for the next piece of work: ``share`` of the time left (less the reserve), split
        into ``parts`` equal pieces (``inf`` without a limit)."""
        if self.limit is None:
            return math.inf
        return max(self.left() - self.reserve, 0.0) * share / max(int(parts), 1)

    def until(self, share: float = 1.0, parts: int = 1) -> float:
        """The clock value at which the next piece (:meth:`budget`) must stop (``inf`` without a limit)."""
        b = self.budget(share, parts)
        return math.inf if math.isinf(b) else self.clock() + b

    def solve_limit(self, share: float = 1.0, parts: int = 1) -> float | None:
        """The ``time_limit`` of the next sub-solve: ``None`` without a limit, else :meth:`budget`
        seconds (0 when none is left: skip the solve)."""
        return None if self.limit is None else self.budget(share, parts)


class Run:
    """The progress channel and deadline of one method run (module docstring).

    Parameters
    ----------
    method:
        Registry name, for the progress line.
    time_limit:
        Seconds for the whole run (``None`` or 0: none); see :class:`Deadline`.
    callback:
        Called with each :class:`Report` (at most once per ``period``), from the thread that runs
        the method; ``None`` for none.
    verbose:
        Also print each report's line on stderr.
    unit:
        Unit of the reported objective (the method may set :attr:`unit` later).
    sense:
        ``"min"`` or ``"max"``: which bound "no bound yet" is.
    period:
        Seconds between reports (default :data:`PERIOD`).
    clock:
        ``time.perf_counter``-like; shared with the deadline.
    """

    def __init__(self, method: str, time_limit: float | None = None, *,
                 callback: Callable[[Report], Any] | None = None, verbose: bool = False, unit: str = "",
                 sense: str = "min", period: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.method = method
        self.deadline = Deadline(time_limit, clock=clock)
        self.unit = unit
        self.stage = ""
        self.period = float(PERIOD if period is None else period)
        printer = print_report if verbose and callback is not print_report else None
        self._callbacks = [c for c in (callback, printer) if c is not None]
        self._sign = 1.0 if sense == "min" else -1.0
        self.incumbent = math.nan
        self.bound = -math.inf * self._sign
        self._next = self.deadline.start + self.period
        self._interrupted = False
        #: The Ctrl-C handler of the :func:`running` block the run was made in (``None``: none).
        self._ctrl_c: _CtrlC | None = _CTRL_C.get()
        #: True once the deadline passed (the method wraps up).
        self.timed_out = False
        #: True once a stage or sub-solve stopped at its share of the time (the answer is not proven).
        self.time_cut = False
        #: Reports emitted so far.
        self.reports = 0

    # ------------------------------------------------------------------ state
    @property
    def interrupted(self) -> bool:
        """True once Ctrl-C was seen (by the handler of :func:`running`, a backend or
        :meth:`interruptible`)."""
        return self._interrupted or (self._ctrl_c is not None and self._ctrl_c.count > 0)

    @interrupted.setter
    def interrupted(self, value: bool) -> None:
        self._interrupted = bool(value)

    @property
    def stopped(self) -> bool:
        """True when the method should wrap up: Ctrl-C was seen or the deadline has passed."""
        if not self.interrupted and not self.timed_out and self.deadline.expired():
            self.timed_out = True
        return self.interrupted or self.timed_out

    @property
    def limit(self) -> str:
        """What cut the run short: ``"interrupted"``, ``"time"`` or ``"none"`` (a
        :class:`placement.milp.Limit` value)."""
        return "interrupted" if self.interrupted else "time" if self.timed_out or self.time_cut else "none"

    def note(self, limit: Any) -> None:
        """Record the ``limit`` a sub-solve stopped at (a :class:`~placement.milp.Limit` or its value):
        ``"interrupted"`` marks the run interrupted (:attr:`stopped`); ``"time"`` marks the answer
        cut short by time (:attr:`limit`), and the run timed out when the deadline has passed."""
        value = getattr(limit, "value", limit)
        if value == "interrupted":
            self.interrupted = True
        elif value == "time":
            self.time_cut = True
            _ = self.stopped  # sets timed_out once the deadline has passed

    def solve_limit(self, share: float = 1.0, parts: int = 1) -> float | None:
        """:meth:`Deadline.solve_limit`, and 0 once the run is :attr:`stopped`."""
        if self.stopped:
            return 0.0
        return self.deadline.solve_limit(share, parts)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Run the block; a first Ctrl-C (``KeyboardInterrupt``) ends the block and marks the run
        interrupted instead of propagating, so the method returns its best answer so far.  A
        Ctrl-C after the run was already interrupted propagates (the user insists).

        In the main thread, inside :func:`running`, the block also tells the Ctrl-C handler that a
        ``KeyboardInterrupt`` may be raised here (module docstring)."""
        already = self.interrupted
        handler = _CTRL_C.get() if threading.current_thread() is threading.main_thread() else None
        if handler is not None:
            handler.guarded += 1
        try:
            yield
        except KeyboardInterrupt:
            if already or (handler is not None and handler.count > 1):
                raise
            self.interrupted = True
        finally:
            if handler is not None:
                handler.guarded -= 1

    def bounded(self, work: Callable[[], T], until: float = math.inf, poll: float = 0.02) -> T | None:
        """``work()`` (building a model, say) under the deadline: its value, or ``None`` when the
        deadline (less the reserve), or the clock value ``until`` (a stage's own end), passes or
        Ctrl-C comes first.

        ``work`` runs in a daemon worker thread while this thread waits, reports progress and
        watches the clock; a worker overtaken by the deadline or a Ctrl-C is abandoned (it
        finishes in the background and its value is dropped) and the run is marked timed out or
        interrupted.  Without a limit and without listeners ``work()`` is simply called.
        Exceptions raised by ``work`` are re-raised here.
        """
        if self.stopped:
            return None
        if self.deadline.limit is None and math.isinf(until) and not self._callbacks:
            with self.interruptible():
                return work()
            return None
        box: dict[str, Any] = {}
        done = threading.Event()
        cancel = threading.Event()

        def target() -> None:
            _CANCEL.set(cancel)
            try:
                box["value"] = work()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                box["error"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=contextvars.copy_context().run, args=(target,),
                                  name=f"placement-{self.method}-build", daemon=True)
        end = min(self.deadline.at - self.deadline.reserve, until)
        with self.interruptible():
            worker.start()
            while not done.wait(poll):
                self.tick()
                if self.interrupted:  # a Ctrl-C seen by a handler that raised nothing here
                    break
                if self.deadline.clock() >= end:
                    cancel.set()
                    self.time_cut = True
                    _ = self.stopped  # timed out when it was the run's deadline
                    return None
        if not done.is_set():  # Ctrl-C
            cancel.set()
            self.interrupted = True
            return None
        if "error" in box:
            raise box["error"]
        return box["value"]

    # ------------------------------------------------------------------ progress
    def update(self, incumbent: float | None = None, bound: float | None = None, stage: str | None = None) -> None:
        """Record the whole problem's incumbent and/or bound (reported units) and the stage, then
        :meth:`tick`.  ``None`` leaves a value as it is; an incumbent is the objective of a complete
        answer, a bound a proven one."""
        if incumbent is not None and not math.isnan(incumbent):
            self.incumbent = float(incumbent)
        if bound is not None and not math.isnan(bound):
            self.bound = float(bound)
        if stage is not None:
            self.stage = stage
        self.tick()

    def report(self) -> Report:
        """The current :class:`Report`."""
        return Report(self.method, self.deadline.elapsed(), self.incumbent, self.bound,
                      relative_gap(self.incumbent, self.bound), self.unit, self.stage, self.deadline.limit)

    def tick(self) -> None:
        """Emit a report if one is due (long loops call this; :meth:`update` does)."""
        if not self._callbacks:
            return
        now = self.deadline.clock()
        if now < self._next:
            return
        self._next = now + self.period
        rep = self.report()
        self.reports += 1
        for callback in self._callbacks:
            callback(rep)

    def follow(self, convert: Callable[[float, float], tuple[float | None, float | None]]
               ) -> Callable[[Any], None] | None:
        """A ``SolveParams.progress`` callback for a sub-solve.

        ``convert(incumbent, bound)`` receives the solver's values (model units, ``nan`` /
        ``-inf`` before the first) and returns the whole problem's ``(incumbent, bound)`` in
        reported units (``None`` to keep a value).  ``None`` when nobody listens.
        """
        if not self._callbacks:
            return None

        def on_progress(progress: Any) -> None:
            inc, bnd = convert(float(progress.incumbent), float(progress.bound))
            self.update(incumbent=inc, bound=bnd)

        return on_progress


_CURRENT: ContextVar[Run | None] = ContextVar("placement_run", default=None)
#: Set in the worker of :meth:`Run.bounded`; set (the event) once the worker is abandoned.
_CANCEL: ContextVar[threading.Event | None] = ContextVar("placement_cancel", default=None)


class Cancelled(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by :func:`check_cancelled` in a worker of :meth:`Run.bounded` that was abandoned."""


class _CtrlC:
    """The SIGINT handler :func:`running` installs in the main thread (module docstring).

    ``count`` is the number of Ctrl-Cs seen, ``guarded`` the number of :meth:`Run.interruptible`
    blocks open in the main thread.  Signal handlers run in the main thread, between bytecodes.
    """

    def __init__(self) -> None:
        self.count = 0
        self.guarded = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1 or self.guarded > 0:
            raise KeyboardInterrupt


#: The handler of the :func:`running` block (the context of the method run and of its worker threads).
_CTRL_C: ContextVar[_CtrlC | None] = ContextVar("placement_ctrl_c", default=None)


def interrupt_requested() -> bool:
    """True once Ctrl-C was seen in the current :func:`running` block (its handler installed);
    backends poll it while their solver runs, so that a Ctrl-C that raised nothing stops the solve."""
    handler = _CTRL_C.get()
    return handler is not None and handler.count > 0


def _install_ctrl_c() -> tuple[_CtrlC, Any] | None:
    """A new :class:`_CtrlC` as SIGINT's handler and the previous one; ``None`` outside the main
    thread or when SIGINT's handler is not Python's default (ignored, or the application's own)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None
        handler = _CtrlC()
        return handler, signal.signal(signal.SIGINT, handler)
    except (ValueError, OSError):  # not the main interpreter
        return None


def check_cancelled() -> None:
    """Raise :class:`Cancelled` in an abandoned worker of :meth:`Run.bounded` (model builders call
    it between their steps, so an abandoned build stops instead of competing for the CPU)."""
    event = _CANCEL.get()
    if event is not None and event.is_set():
        raise Cancelled("abandoned at the deadline")


@contextlib.contextmanager
def running(run: Run) -> Iterator[Run]:
    """Make ``run`` current for the block (what :func:`begin` returns to the method called inside).

    In the main thread, while SIGINT has Python's default handler, a first Ctrl-C in the block
    interrupts the run instead of raising wherever it lands (module docstring); the previous
    handler is restored at the end, after any Ctrl-C still pending was handled."""
    installed = None if _CTRL_C.get() is not None else _install_ctrl_c()
    ctrl_c_token = _CTRL_C.set(installed[0]) if installed is not None else None
    if run._ctrl_c is None:
        run._ctrl_c = _CTRL_C.get()
    token = _CURRENT.set(run)
    try:
        yield run
    finally:
        _CURRENT.reset(token)
        if installed is not None:
            try:
                # signal.signal first runs the handler of a signal still pending: a late first
                # Ctrl-C marks the run, a second one raises here, before the handler is replaced
                signal.signal(signal.SIGINT, installed[1])
            except KeyboardInterrupt:
                signal.signal(signal.SIGINT, installed[1])
                raise
            finally:
                _CTRL_C.reset(ctrl_c_token)


def current() -> Run | None:
    """The current :class:`Run`, or ``None``."""
    return _CURRENT.get()


def begin(method: str, time_limit: float | None = None, *, unit: str = "", verbose: bool = False,
          sense: str = "min") -> Run:
    """The run a method reports to: the current one when it was opened for ``method`` (by
    :func:`placement.methods.run_method`, whose deadline already counts from before the call), else
    a new one with ``time_limit`` starting now (the method was called directly)."""
    run = _CURRENT.get()
    if run is None or run.method != method:
        run = Run(method, time_limit, verbose=verbose, sense=sense)
    run.unit = unit or run.unit
    return run
