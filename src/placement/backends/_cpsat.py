"""``cpsat``: OR-Tools CP-SAT, for models whose every column is integer.

CP-SAT works in 64-bit integers, so the translation is explicit and checked:

* **Columns** must all be integer with finite bounds; fractional bounds are rounded inwards
  (``ceil(lower)``, ``floor(upper)``), which is exact for integer columns.
* **Constraint coefficients** must be integers (``|a| <= 2**53``); a fractional one is refused
  with :class:`~placement.backends.ModelNotSupportedError` naming its row and column (scale the
  row in the formulation). Fractional **row bounds** are rounded inwards, exact since ``A @ x``
  is an integer.
* **Costs** are multiplied by a scale factor ``s`` and rounded: the minimised objective is
  ``sum_j round(sign * s * c_j) * x_j`` (``sign = -1`` for ``max``). ``s`` is the smallest of
  ``1, 10, ..., 10**6`` that makes every ``s * c_j`` an integer (to 1e-9), else
  ``10**floor(log10(1e9 / max|c|))`` (about nine significant digits). Give
  ``options={"cpsat": {"objective_scale": s}}`` to fix it. The result's ``scaling_error`` is
  ``sum_j |c_j - round(s c_j)/s| * max(|lower_j|, |upper_j|)``, a bound on the difference
  between the true and the rounded objective of any feasible point; ``objective`` is always
  recomputed exactly as ``c @ x + offset`` and ``bound`` (the solver's bound divided by ``s``)
  and ``termination`` refer to the rounded objective.

The model reaches CP-SAT as one text-format proto parsed in C++ (the Python API has no bulk
array entry point). The warm start becomes a solution hint; the bound is
``best_objective_bound``; Ctrl-C calls ``stop_search``.
"""

from __future__ import annotations

import math

import numpy as np

from ..milp._model import MilpModel
from ..milp._result import Limit, SolveParams, SolveResult, Termination
from ._base import Backend, ModelNotSupportedError, SolveMonitor, ortools_version

__all__ = ["CpSatBackend", "objective_scale"]

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_EXACT = 2.0**53
_TOL = 1e-9
#: Options handled by this backend itself, on top of CP-SAT's ``SatParameters`` fields.
_OWN_OPTIONS = frozenset({"objective_scale"})


def objective_scale(c: np.ndarray) -> float:
    """The scale factor CP-SAT uses for costs ``c: float64 [n]`` (see the module docstring).

    >>> objective_scale(np.array([1.0, 2.0])), objective_scale(np.array([0.25, 1.5]))
    (1.0, 100.0)
    >>> objective_scale(np.array([1 / 3]))
    1000000000.0
    """
    c = np.asarray(c, dtype=np.float64)
    big = float(np.max(np.abs(c))) if c.size else 0.0
    if big == 0.0:
        return 1.0
    for k in range(7):
        s = 10.0**k
        cs = c * s
        if big * s < _EXACT and np.all(np.abs(cs - np.round(cs)) <= _TOL * np.maximum(1.0, np.abs(cs))):
            return s
    return 10.0 ** math.floor(math.log10(1e9 / big))


def _round_in(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round bounds inwards, treating values within 1e-9 of an integer as that integer."""
    def near(v: np.ndarray, r: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):  # inf - inf: infinite bounds are kept as they are
            return ~np.isfinite(v) | (np.abs(v - r) <= _TOL * np.maximum(1.0, np.abs(v)))

    rlo, rhi = np.round(lo), np.round(hi)
    return np.where(near(lo, rlo), rlo, np.ceil(lo)), np.where(near(hi, rhi), rhi, np.floor(hi))


def _bound_ints(values: np.ndarray, default: int) -> list[int]:
    finite = np.isfinite(values)
    out = np.where(finite, values, 0.0).astype(np.int64)
    return [default if not f else int(v) for v, f in zip(out.tolist(), finite.tolist(), strict=True)]


def _model_text(model: MilpModel, scale: float, warm_start: np.ndarray | None
                ) -> tuple[str, float, np.ndarray, np.ndarray] | None:
    """Translate to CP-SAT text format; ``None`` when rounding empties a column domain.

    Returns ``(text, scaling_error, col_lo, col_hi)``.
    """
    name = model.name
    lo, hi = model.col_lower, model.col_upper
    bad = np.flatnonzero(~np.isfinite(lo) | ~np.isfinite(hi))
    if bad.size:
        j = int(bad[0])
        raise ModelNotSupportedError(
            f"backend 'cpsat' needs finite integer bounds on every column, and {model.describe_column(j)} "
            f"(column {j}) has bounds [{lo[j]}, {hi[j]}]; give it finite bounds or use another backend",
            source=name)
    lo, hi = _round_in(lo, hi)
    if np.any(lo > hi):
        return None
    big = np.flatnonzero(np.maximum(np.abs(lo), np.abs(hi)) > _EXACT)
    if big.size:
        j = int(big[0])
        raise ModelNotSupportedError(f"{model.describe_column(j)} has a bound beyond 2**53, which 'cpsat' "
                                     f"cannot represent exactly", source=name)
    A = model.A.tocsr()
    A.sort_indices()
    data = A.data
    frac = np.flatnonzero((data != np.round(data)) | (np.abs(data) > _EXACT))
    if frac.size:
        k = int(frac[0])
        i = int(np.searchsorted(A.indptr, k, side="right") - 1)
        j = int(A.indices[k])
        raise ModelNotSupportedError(
            f"backend 'cpsat' needs integer constraint coefficients, and {model.describe_row(i)} (row {i}) "
            f"has coefficient {float(data[k])!r} on {model.describe_column(j)}; scale the row to integers "
            f"in the formulation or use another backend", source=name)
    rlo, rhi = _round_in(model.row_lower, model.row_upper)

    sign = 1.0 if model.sense == "min" else -1.0
    cs = np.round(sign * scale * model.c)
    if np.any(np.abs(cs) > _EXACT):
        raise ModelNotSupportedError(f"objective scale {scale} makes a cost exceed 2**53; choose a smaller "
                                     f"options['cpsat']['objective_scale']", source=name)
    reach = np.maximum(np.abs(lo), np.abs(hi))
    scaling_error = float(np.sum(np.abs(model.c - sign * cs / scale) * reach))

    parts: list[str] = []
    lo_i, hi_i = lo.astype(np.int64).tolist(), hi.astype(np.int64).tolist()
    parts.extend(f"variables{{domain:[{a},{b}]}}" for a, b in zip(lo_i, hi_i, strict=True))
    counts = np.diff(A.indptr)
    row_lo = _bound_ints(rlo, _INT_MIN)
    row_hi = _bound_ints(rhi, _INT_MAX)
    nz = np.flatnonzero(counts)
    # One token per nonzero; the first of a row opens the constraint, the last closes it.
    head = [""] * A.nnz
    tail = [""] * A.nnz
    starts, ends = A.indptr[nz].tolist(), (A.indptr[nz + 1] - 1).tolist()
    for i, s, e in zip(nz.tolist(), starts, ends, strict=True):
        head[s] = "constraints{linear{"
        tail[e] = f"domain:[{row_lo[i]},{row_hi[i]}]}}}}"
    parts.extend(f"{h}vars:{j} coeffs:{a} {t}" for h, j, a, t in
                 zip(head, A.indices.tolist(), data.astype(np.int64).tolist(), tail, strict=True))
    for i in np.flatnonzero(counts == 0).tolist():  # empty rows: 0 must lie in the bounds
        parts.append(f"constraints{{linear{{domain:[{row_lo[i]},{row_hi[i]}]}}}}")
    obj = np.flatnonzero(cs)
    if obj.size:
        parts.append(f"objective{{vars:{obj.tolist()} coeffs:{cs[obj].astype(np.int64).tolist()}}}")
    if warm_start is not None:
        hint = np.clip(np.round(warm_start), lo, hi).astype(np.int64)
        parts.append(f"solution_hint{{vars:{list(range(model.num_vars))} values:{hint.tolist()}}}")
    return "".join(parts), scaling_error, lo, hi


class CpSatBackend(Backend):
    """OR-Tools CP-SAT (see the module docstring)."""

    name = "cpsat"
    summary = "OR-Tools CP-SAT: integer columns only, costs scaled to integers (scaling error reported)"
    install_hint = "install it with: pip install 'ortools==9.15.*'"
    supports_lp = False
    supports_warm_start = True

    def _probe(self) -> tuple[bool, str]:
        from ortools.sat.python import cp_model

        cp_model.CpSolver()
        return True, f"ortools {self.version()}"

    def version(self) -> str | None:
        return ortools_version()

    def option_names(self) -> list[str]:
        from ortools.sat import sat_parameters_pb2

        return [*sat_parameters_pb2.SatParameters.DESCRIPTOR.fields_by_name, *_OWN_OPTIONS]

    def _solve(self, model: MilpModel, params: SolveParams, monitor: SolveMonitor) -> SolveResult:
        from ortools.sat.python import cp_model

        options = params.options_for(self.name)
        scale = float(options.pop("objective_scale", 0.0) or objective_scale(model.c))
        if not (scale > 0 and math.isfinite(scale)):
            raise ModelNotSupportedError(f"objective_scale must be a positive number, got {scale}",
                                         source="SolveParams", field="options['cpsat']")
        translated = _model_text(model, scale, params.warm_start)
        if translated is None:
            return self._result(model, monitor, termination=Termination.INFEASIBLE, limit=Limit.NONE,
                                solution=None, objective=None, bound=math.nan, nodes=0,
                                raw_status="INFEASIBLE",
                                message="a column's integer domain is empty after rounding its bounds")
        text, scaling_error, _, _ = translated
        cp = cp_model.CpModel()
        if not cp.proto.merge_text_format(text):
            raise RuntimeError("CP-SAT could not parse the translated model (a bug in the cpsat backend)")

        solver = cp_model.CpSolver()
        p = solver.parameters
        p.catch_sigint_signal = False  # Ctrl-C is handled by the waiting thread
        seconds = self._time_limit(params, monitor)  # after the translation: it counts against a deadline
        if seconds is not None:
            p.max_time_in_seconds = seconds
        if params.rel_gap is not None:
            p.relative_gap_limit = params.rel_gap
        if params.threads is not None:
            p.num_workers = params.threads
        if params.seed is not None:
            p.random_seed = params.seed
        for key, value in options.items():
            try:
                setattr(p, key, value)
            except (TypeError, ValueError, AttributeError) as exc:
                raise ModelNotSupportedError(f"CP-SAT rejected option {key!r} = {value!r} for backend "
                                             f"'cpsat': {exc}", source="SolveParams",
                                             field="options['cpsat']") from None

        sign = 1.0 if model.sense == "min" else -1.0
        offset = model.offset

        def to_model_units(v: float) -> float:
            return sign * v / scale + offset

        class _Callback(cp_model.CpSolverSolutionCallback):
            def on_solution_callback(self) -> None:
                monitor.update(incumbent=to_model_units(self.objective_value),
                               bound=to_model_units(self.best_objective_bound))
                if monitor.stop.is_set():
                    self.stop_search()

        callback = _Callback()
        solver.best_bound_callback = lambda b: monitor.update(bound=to_model_units(b))
        status = self._run(lambda: solver.solve(cp, callback), solver.stop_search, monitor)

        raw = status.name
        response = solver.response_proto
        solution = None
        if raw in ("OPTIMAL", "FEASIBLE"):
            solution = np.array(response.solution, dtype=np.float64)
        termination: Termination | None
        limit = Limit.NONE
        message = str(response.solution_info)
        if raw == "OPTIMAL":
            termination = Termination.OPTIMAL
        elif raw == "INFEASIBLE":
            termination = Termination.INFEASIBLE
        elif raw == "MODEL_INVALID":
            termination = Termination.ERROR
            message = cp.validate() or message
        elif raw in ("FEASIBLE", "UNKNOWN"):
            termination = None
            timed_out = seconds is not None and solver.wall_time >= 0.95 * seconds
            limit = Limit.TIME if timed_out else Limit.OTHER
        else:  # fallback: keep the raw status
            termination = Termination.ERROR
        objective = model.objective_value(solution) if solution is not None else None
        bound = to_model_units(float(response.best_objective_bound)) if solution is not None or \
            raw == "UNKNOWN" else math.nan
        if raw == "OPTIMAL" and not np.any(model.c):
            bound = offset
        return self._result(model, monitor, termination=termination, limit=limit, solution=solution,
                            objective=objective, bound=bound, nodes=int(response.num_branches),
                            raw_status=raw, message=message, scaling_error=scaling_error)
