"""Backend contract beyond optima: registry, options, limits, warm starts, Ctrl-C, progress, CP-SAT."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from placement.backends import (
    BACKENDS,
    Backend,
    BackendUnavailableError,
    Limit,
    ModelNotSupportedError,
    Progress,
    SolveParams,
    Termination,
    available_backends,
    choose_backend,
    get_backend,
)
from placement.backends._cpsat import objective_scale
from placement.milp import MilpBuilder, MilpModel


def backend_or_skip(name: str) -> Backend:
    backend = BACKENDS[name]
    ok, reason = backend.available()
    if not ok:
        pytest.skip(f"backend {name} unavailable: {reason}")
    return backend


def market_split(m: int = 5, n: int = 40, seed: int = 0) -> tuple[MilpModel, np.ndarray]:
    """A Cornuejols-Dawande market split instance with a planted zero-cost solution.

    min sum_i (s+_i + s-_i)  s.t.  sum_j a_ij x_j + s+_i - s-_i = d_i,  x binary, s integer in [0, 10^4],
    a_ij uniform in [0, 99], d = a @ x* for a random binary x*. The optimum is 0 (at x*, no slack),
    but branch and bound needs far more than a second to find it: a hard-enough model for time
    limits and interrupts. Returns the model and the planted optimal solution.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 100, size=(m, n)).astype(float)
    planted = rng.integers(0, 2, size=n).astype(float)
    d = a @ planted
    b = MilpBuilder(name="market_split")
    x = b.add_block("x", n, "item", integer=True, upper=1)
    sp_ = b.add_block("s_plus", m, "row", integer=True, upper=1e4, cost=1)
    sm = b.add_block("s_minus", m, "row", integer=True, upper=1e4, cost=1)
    rows = np.r_[np.repeat(np.arange(m), n), np.arange(m), np.arange(m)]
    cols = np.r_[np.tile(x, m), sp_, sm]
    vals = np.r_[a.reshape(-1), np.ones(m), -np.ones(m)]
    b.add_rows("split", m, rows, cols, vals, lower=d, upper=d)
    return b.build(), np.r_[planted, np.zeros(2 * m)]


HARD, PLANTED = market_split()


def tiny() -> MilpModel:
    # min x0 + 2 x1  s.t.  x0 + x1 >= 1, binary: optimum 1 at (1, 0).
    b = MilpBuilder()
    x = b.add_block("x", 2, "i", integer=True, upper=1, cost=[1, 2])
    b.add_row_sums("cover", x[None, :], lower=1)
    return b.build()


# ---------------------------------------------------------------------------- registry


def test_registry_order_and_lookup() -> None:
    assert list(BACKENDS) == ["highs", "cpsat", "scip", "highs-mathopt"]
    assert get_backend("cpsat") is BACKENDS["cpsat"]
    with pytest.raises(ValueError, match="unknown backend 'gurobi'; choose one of highs, cpsat, scip"):
        get_backend("gurobi")


def test_registry_imports_no_solver() -> None:
    code = ("import sys, placement.milp, placement.backends as b; "
            "names = list(b.BACKENDS); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('highspy', 'ortools')]; "
            "print(bad); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


def test_availability_is_reported_with_reason() -> None:
    for name, backend in BACKENDS.items():
        ok, reason = backend.available()
        assert isinstance(ok, bool) and isinstance(reason, str) and reason
        assert (backend.version() is not None) == ok or name in ("scip", "highs-mathopt")
        assert set(backend.capabilities()) >= {"supports_mip", "supports_lp", "supports_warm_start",
                                                "supports_time_limit"}
    assert available_backends() == [n for n, b in BACKENDS.items() if b.available()[0]]


def test_unavailable_backend_raises_with_reason() -> None:
    class Missing(Backend):
        name = "missing"
        summary = "never installed"
        install_hint = "pip install missing"

        def _probe(self) -> tuple[bool, str]:
            raise ImportError("No module named 'missing'")

        def version(self) -> None:
            return None

        def option_names(self) -> list[str]:
            return []

        def _solve(self, model, params, monitor):  # pragma: no cover - never reached
            raise AssertionError

    ok, reason = Missing().available()
    assert not ok and "No module named 'missing'" in reason and "pip install missing" in reason
    with pytest.raises(BackendUnavailableError, match="backend 'missing' is not available"):
        Missing().solve(tiny())


def test_choose_backend_skips_backends_that_cannot_represent_the_model() -> None:
    b = MilpBuilder()
    b.add_block("z", 2, "v", cost=[1, 1])  # continuous: CP-SAT cannot take it
    lp = b.build()
    chosen = choose_backend(lp)
    assert chosen.name != "cpsat"
    assert choose_backend().name == available_backends()[0]


# ---------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", list(BACKENDS))
def test_unknown_option_is_an_error(name: str) -> None:
    backend = backend_or_skip(name)
    params = SolveParams(options={name: {"no_such_option": 1}})
    with pytest.raises(ValueError, match=f"unknown option 'no_such_option' for backend '{name}'"):
        backend.solve(tiny(), params)


def test_options_for_other_backends_are_checked_too() -> None:
    backend_or_skip("highs")
    backend_or_skip("cpsat")
    with pytest.raises(ValueError, match="unknown option 'num_worker' for backend 'cpsat'"):
        BACKENDS["highs"].solve(tiny(), SolveParams(options={"cpsat": {"num_worker": 2}}))
    with pytest.raises(ValueError, match="options given for unknown backend 'gurobi'; known backends: highs"):
        BACKENDS["highs"].solve(tiny(), SolveParams(options={"gurobi": {"Threads": 2}}))


def test_unknown_option_suggests_close_names() -> None:
    backend = backend_or_skip("cpsat")
    with pytest.raises(ValueError, match="did you mean 'num_workers'"):
        backend.solve(tiny(), SolveParams(options={"cpsat": {"num_worker": 2}}))


@pytest.mark.parametrize(("name", "options"), [
    ("highs", {"presolve": "off", "mip_max_nodes": 1000}),
    ("cpsat", {"num_workers": 2, "log_search_progress": False, "objective_scale": 10}),
    ("scip", {"node_limit": 1000, "presolve": "off"}),
    ("highs-mathopt", {"presolve": "EMPHASIS_OFF", "enable_output": False}),
])
def test_known_options_are_applied(name: str, options: dict) -> None:
    backend = backend_or_skip(name)
    r = backend.solve(tiny(), SolveParams(options={name: options}))
    assert r.termination is Termination.OPTIMAL and r.objective == pytest.approx(1.0)


def test_bad_option_value_is_an_error() -> None:
    backend = backend_or_skip("highs")
    with pytest.raises(ValueError, match="HiGHS rejected option 'mip_rel_gap'"):
        backend.solve(tiny(), SolveParams(options={"highs": {"mip_rel_gap": "large"}}))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"time_limit": 0}, "time_limit': must be a positive number of seconds"),
    ({"rel_gap": -1}, "rel_gap': must be a finite number >= 0"),
    ({"threads": 0}, "threads': must be an integer >= 1"),
    ({"seed": 1.5}, "seed': must be an integer >= 0"),
    ({"warm_start": [[1.0]]}, "warm_start': must be a finite 1-D array"),
    ({"options": {"highs": 3}}, "entry 'highs' must map a backend name to a dict of options"),
    ({"progress": 3}, "progress': must be callable"),
])
def test_solve_params_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SolveParams(**kwargs)


def test_warm_start_length_is_checked() -> None:
    backend = backend_or_skip("highs")
    with pytest.raises(ValueError, match="warm_start': has 3 values but the model has 2 columns"):
        backend.solve(tiny(), SolveParams(warm_start=np.zeros(3)))


class Recording(Backend):
    """A backend outside the registry that records the params it receives and solves nothing."""

    name = "recording"
    summary = "records its params"
    install_hint = "nothing to install"
    supports_threads = False  # supports_warm_start stays False (the default)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[SolveParams] = []

    def _probe(self) -> tuple[bool, str]:
        return True, "always"

    def version(self) -> str:
        return "0"

    def option_names(self) -> list[str]:
        return ["level"]

    def _solve(self, model, params, monitor):
        self.seen.append(params)
        return self._result(model, monitor, termination=Termination.OPTIMAL, limit=Limit.NONE,
                            solution=np.array([1.0, 0.0]), objective=1.0, bound=1.0, nodes=0,
                            raw_status="done", message="solver detail")


def test_unsupported_params_are_cleared_and_noted() -> None:
    backend = Recording()
    r = backend.solve(tiny(), SolveParams(threads=2, warm_start=np.array([1.0, 0.0]), time_limit=3.0))
    seen = backend.seen[-1]
    assert seen.threads is None and seen.warm_start is None and seen.time_limit == 3.0
    assert r.message == ("solver detail; SolveParams.warm_start ignored: backend 'recording' cannot apply it; "
                         "SolveParams.threads ignored: backend 'recording' cannot apply it")
    r = backend.solve(tiny(), SolveParams(time_limit=3.0))
    assert r.message == "solver detail"
    with pytest.raises(ValueError, match="warm_start': has 3 values"):  # still validated
        backend.solve(tiny(), SolveParams(warm_start=np.zeros(3)))


def test_backend_outside_the_registry_checks_only_its_own_options() -> None:
    backend = Recording()
    backend.solve(tiny(), SolveParams(options={"recording": {"level": 1}, "gurobi": {"Threads": 2}}))
    with pytest.raises(ValueError, match="unknown option 'levle' for backend 'recording'"):
        backend.solve(tiny(), SolveParams(options={"recording": {"levle": 1}}))


def test_threads_ignored_by_scip_is_noted() -> None:
    backend = backend_or_skip("scip")
    r = backend.solve(tiny(), SolveParams(threads=2))
    assert r.termination is Termination.OPTIMAL
    assert "SolveParams.threads ignored: backend 'scip' cannot apply it" in r.message


def test_backend_base_does_not_import_the_registry() -> None:
    # The registry imports the backends and hands each one the registry; never the other way round.
    import ast
    from pathlib import Path

    import placement.backends._base as base

    tree = ast.parse(Path(base.__file__).read_text())
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m and "registry" in m]


# ---------------------------------------------------------------------------- limits and starts


@pytest.mark.parametrize("name", list(BACKENDS))
def test_time_limit_returns_feasible(name: str) -> None:
    backend = backend_or_skip(name)
    t0 = time.perf_counter()
    r = backend.solve(HARD, SolveParams(time_limit=0.5, threads=1))
    assert time.perf_counter() - t0 < 3.0
    assert r.limit is Limit.TIME, (r, r.message)
    assert r.termination is Termination.FEASIBLE  # x = 0 with slack is feasible; every solver finds something
    assert HARD.max_violation(r.solution) <= 1e-6
    assert r.objective == pytest.approx(HARD.objective_value(r.solution), abs=1e-6)
    assert r.bound <= r.objective and r.gap > 0


@pytest.mark.parametrize("name", [n for n, b in BACKENDS.items() if b.supports_warm_start])
def test_warm_start_is_used(name: str) -> None:
    # Without help no solver finds the planted zero-cost split in a second (see market_split);
    # given it as a warm start, each returns it (objective 0, proven optimal by the LP bound 0).
    backend = backend_or_skip(name)
    assert HARD.max_violation(PLANTED) == 0 and HARD.objective_value(PLANTED) == 0
    r = backend.solve(HARD, SolveParams(time_limit=2.0, warm_start=PLANTED))
    assert r.objective == pytest.approx(0.0, abs=1e-6), (r, r.message)
    assert r.termination is Termination.OPTIMAL


# ---------------------------------------------------------------------------- Ctrl-C and progress


@pytest.fixture(autouse=True)
def _python_sigint_handler(python_sigint_handler):
    """Every test here runs with Python's own SIGINT handler (the shared ``python_sigint_handler``)."""
    yield


def _sigint_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.parametrize("name", [n for n, b in BACKENDS.items() if b.supports_interrupt])
def test_ctrl_c_returns_best_solution(name: str) -> None:
    backend = backend_or_skip(name)
    timer = _sigint_after(0.7)
    t0 = time.perf_counter()
    try:
        r = backend.solve(HARD, SolveParams(time_limit=5.0, threads=1))
    finally:
        timer.cancel()
    assert time.perf_counter() - t0 < 3.0, "the interrupt was not honoured"
    assert r.limit is Limit.INTERRUPTED, (r, r.message)
    assert r.termination is Termination.FEASIBLE
    assert HARD.max_violation(r.solution) <= 1e-6


@pytest.mark.parametrize("name", [n for n, b in BACKENDS.items() if not b.supports_interrupt])
def test_ctrl_c_on_uninterruptible_backend_raises_at_once(name: str) -> None:
    backend = backend_or_skip(name)
    timer = _sigint_after(0.3)
    t0 = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            backend.solve(HARD, SolveParams(time_limit=1.0))
    finally:
        timer.cancel()
    assert time.perf_counter() - t0 < 0.9


@pytest.mark.parametrize("name", ["highs", "cpsat"])
def test_progress_line_and_callback(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    backend = backend_or_skip(name)
    seen: list[Progress] = []
    r = backend.solve(HARD, SolveParams(time_limit=1.6, threads=1, verbose=True, progress=seen.append))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"[{name}]")]
    assert 1 <= len(lines) <= 2 and len(seen) == len(lines)  # once per second, none in the first second
    assert "incumbent" in lines[0] and "bound" in lines[0] and "gap" in lines[0]
    assert seen[0].elapsed >= 1.0 and seen[0].incumbent >= r.objective - 1e-9
    assert seen[0].bound <= seen[0].incumbent


def test_quiet_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    for name in available_backends():
        if name != "scip":  # OR-Tools' SCIP event handler writes two spurious lines (docs/solvers.md)
            BACKENDS[name].solve(tiny())
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ---------------------------------------------------------------------------- CP-SAT translation


def test_cpsat_refuses_fractional_coefficients() -> None:
    backend = backend_or_skip("cpsat")
    b = MilpBuilder()
    x = b.add_block("x", (2, 2), ("expert", "gpu"), integer=True, upper=1)
    b.add_row_sums("place", x, lower=1, upper=1)
    b.add_row_sums("memory", x.T, coef=[[1.0, 0.5], [1.0, 0.5]], upper=1.2)
    with pytest.raises(ModelNotSupportedError,
                       match=r"coefficient 0\.5 on x\[expert=1, gpu=0\]; scale the row to integers"):
        backend.solve(b.build())


def test_cpsat_rounds_fractional_row_bounds_exactly() -> None:
    # 2 x0 + 2 x1 <= 3.5 is exactly 2 x0 + 2 x1 <= 2 for integers: max x0 + x1 = 1.
    backend = backend_or_skip("cpsat")
    b = MilpBuilder(sense="max")
    x = b.add_block("x", 2, "i", integer=True, upper=1, cost=1)
    b.add_row_sums("cap", x[None, :], coef=2, upper=3.5)
    r = backend.solve(b.build())
    assert r.objective == 1.0 and r.scaling_error == 0.0


def test_cpsat_scaling_error_is_reported() -> None:
    # min x0/3 + x1/7  s.t. x0 + x1 >= 1, binary: optimum 1/7. The costs are not decimals, so
    # they are scaled by 10**9 and rounded; the error bound covers the rounding.
    backend = backend_or_skip("cpsat")
    b = MilpBuilder()
    x = b.add_block("x", 2, "i", integer=True, upper=1, cost=[1 / 3, 1 / 7])
    b.add_row_sums("cover", x[None, :], lower=1)
    r = backend.solve(b.build())
    assert objective_scale(np.array([1 / 3, 1 / 7])) == 1e9
    assert 0 < r.scaling_error <= 2 * 0.5e-9
    assert r.objective == pytest.approx(1 / 7, abs=1e-12)  # recomputed exactly from x
    assert abs(r.bound - 1 / 7) <= r.scaling_error + 1e-12


def test_cpsat_empty_domain_after_rounding_is_infeasible() -> None:
    backend = backend_or_skip("cpsat")
    m = MilpModel(c=np.ones(1), A=np.zeros((0, 1)), row_lower=np.zeros(0), row_upper=np.zeros(0),
                  col_lower=np.array([0.2]), col_upper=np.array([0.8]), integrality=np.ones(1, bool))
    r = backend.solve(m)
    assert r.termination is Termination.INFEASIBLE and math.isnan(r.objective)
