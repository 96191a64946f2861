"""``scip`` and ``highs-mathopt``: SCIP and HiGHS through OR-Tools MathOpt.

The model is written straight into MathOpt's ``ModelProto`` with bulk ``extend`` calls on
numpy arrays (variables, objective, row bounds and the row-major matrix triplets) and handed to
MathOpt's C++ ``solve``; the result proto is read back here, without building a Python
``mathopt.Model`` variable by variable.

Options (``SolveParams.options["scip"]`` / ``["highs-mathopt"]``) are the scalar fields of
MathOpt's ``SolveParametersProto`` (``node_limit``, ``solution_limit``, ``cutoff_limit``,
``absolute_gap_tolerance``, ``presolve``, ``cuts``, ``heuristics``, ``scaling``,
``lp_algorithm``, ``enable_output``...); enum values may be given by name (``"EMPHASIS_HIGH"``
or ``"high"``). Solver-specific native parameters are not exposed yet.

Ctrl-C and progress: ``scip`` registers MathOpt MIP node / solution callbacks, which report
the incumbent and bound and stop the search on Ctrl-C. (OR-Tools 9.15's SCIP event handler logs
two spurious ``SCIPcatchEvent ... ERROR`` lines on stderr when any callback is registered; they
are harmless.) ``highs-mathopt`` cannot be interrupted or followed: in OR-Tools 9.15 the HiGHS
interface neither calls MIP callbacks nor honours the solve interrupter, so Ctrl-C raises
``KeyboardInterrupt`` at once and the progress line shows only the elapsed time.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from ..errors import input_error
from ..milp._model import MilpModel
from ..milp._result import Limit, SolveParams, SolveResult, Termination
from ._base import Backend, SolveMonitor, ortools_version

__all__ = ["HighsMathOptBackend", "ScipBackend"]

_T, _L = Termination, Limit
_REASONS: dict[str, Termination | None] = {
    "TERMINATION_REASON_OPTIMAL": _T.OPTIMAL,
    "TERMINATION_REASON_INFEASIBLE": _T.INFEASIBLE,
    "TERMINATION_REASON_UNBOUNDED": _T.UNBOUNDED,
    "TERMINATION_REASON_INFEASIBLE_OR_UNBOUNDED": _T.INFEASIBLE_OR_UNBOUNDED,
    "TERMINATION_REASON_FEASIBLE": None,
    "TERMINATION_REASON_NO_SOLUTION_FOUND": None,
}
_LIMITS: dict[str, Limit] = {
    "LIMIT_UNSPECIFIED": _L.NONE,
    "LIMIT_TIME": _L.TIME,
    "LIMIT_NODE": _L.NODES,
    "LIMIT_ITERATION": _L.ITERATIONS,
    "LIMIT_SOLUTION": _L.SOLUTIONS,
    "LIMIT_INTERRUPTED": _L.INTERRUPTED,
}
#: ``SolveParametersProto`` fields that are solver-specific messages, not exposed as options.
_SUBMESSAGES = frozenset({"gscip", "gurobi", "glop", "cp_sat", "pdlp", "osqp", "glpk", "highs", "xpress"})


def model_proto(model: MilpModel) -> Any:
    """Translate ``model`` into a MathOpt ``ModelProto`` with bulk array copies."""
    from ortools.math_opt import model_pb2

    n, m = model.num_vars, model.num_rows
    proto = model_pb2.ModelProto(name=model.name)
    v = proto.variables
    v.ids.extend(np.arange(n, dtype=np.int64))
    v.lower_bounds.extend(model.col_lower)
    v.upper_bounds.extend(model.col_upper)
    v.integers.extend(model.integrality)
    obj = proto.objective
    obj.maximize = model.sense == "max"
    obj.offset = model.offset
    nzc = np.flatnonzero(model.c)
    obj.linear_coefficients.ids.extend(nzc)
    obj.linear_coefficients.values.extend(model.c[nzc])
    rows = proto.linear_constraints
    rows.ids.extend(np.arange(m, dtype=np.int64))
    rows.lower_bounds.extend(model.row_lower)
    rows.upper_bounds.extend(model.row_upper)
    A = model.A.tocsr()
    A.sort_indices()  # MathOpt wants row-major order with sorted columns
    mat = proto.linear_constraint_matrix
    mat.row_ids.extend(np.repeat(np.arange(m, dtype=np.int64), np.diff(A.indptr)))
    mat.column_ids.extend(A.indices.astype(np.int64))
    mat.coefficients.extend(A.data)
    return proto


class _MathOptBackend(Backend):
    """Shared MathOpt plumbing; subclasses name the solver type."""

    solver_type: ClassVar[str]
    install_hint = "install it with: pip install 'ortools==9.15.*'"
    supports_warm_start = True

    def _type(self) -> int:
        from ortools.math_opt import parameters_pb2

        return int(parameters_pb2.SolverTypeProto.Value(self.solver_type))

    def _probe(self) -> tuple[bool, str]:
        from ortools.math_opt import callback_pb2, model_parameters_pb2, parameters_pb2
        from ortools.math_opt.core.python import solver

        tiny = MilpModel(c=np.ones(1), A=np.zeros((0, 1)), row_lower=np.zeros(0), row_upper=np.zeros(0),
                         col_lower=np.zeros(1), col_upper=np.ones(1), integrality=np.ones(1, bool))
        try:
            solver.solve(model_proto(tiny), self._type(), parameters_pb2.SolverInitializerProto(),
                         parameters_pb2.SolveParametersProto(),
                         model_parameters_pb2.ModelSolveParametersProto(), None,
                         callback_pb2.CallbackRegistrationProto(), None, None)
        except Exception as exc:  # noqa: BLE001 - "solver not registered" and friends
            return False, f"this OR-Tools build cannot run {self.solver_type}: {exc}"
        return True, f"ortools {self.version()} ({self.solver_type})"

    def version(self) -> str | None:
        return ortools_version()

    def option_names(self) -> list[str]:
        from ortools.math_opt import parameters_pb2

        fields = parameters_pb2.SolveParametersProto.DESCRIPTOR.fields_by_name
        return [k for k in fields if k not in _SUBMESSAGES]

    def _params(self, params: SolveParams) -> Any:
        from ortools.math_opt import parameters_pb2

        p = parameters_pb2.SolveParametersProto()
        if params.time_limit is not None:
            p.time_limit.FromNanoseconds(int(params.time_limit * 1e9))
        if params.rel_gap is not None:
            p.relative_gap_tolerance = params.rel_gap
        if params.threads is not None:  # None unless supports_threads (Backend.solve clears it)
            p.threads = params.threads
        if params.seed is not None:
            p.random_seed = params.seed
        for key, value in params.options_for(self.name).items():
            fd = p.DESCRIPTOR.fields_by_name[key]
            try:
                if fd.message_type is not None:  # time_limit: seconds
                    getattr(p, key).FromNanoseconds(int(float(value) * 1e9))
                elif fd.enum_type is not None and isinstance(value, str):
                    names = {ev.name: ev.number for ev in fd.enum_type.values}
                    # "EMPHASIS_UNSPECIFIED" -> "EMPHASIS", so "high" means "EMPHASIS_HIGH"
                    prefix = fd.enum_type.values[0].name.rsplit("_", 1)[0]
                    key_name = value if value in names else f"{prefix}_{value.upper()}"
                    if key_name not in names:
                        raise ValueError(f"expected one of {sorted(names)}")
                    setattr(p, key, names[key_name])
                else:
                    setattr(p, key, value)
            except (TypeError, ValueError) as exc:
                raise input_error(f"option {key!r} = {value!r} rejected for backend {self.name!r}: {exc}",
                                  source="SolveParams", field=f"options[{self.name!r}]") from None
        return p

    def _solve(self, model: MilpModel, params: SolveParams, monitor: SolveMonitor) -> SolveResult:
        from ortools.math_opt import (
            callback_pb2,
            model_parameters_pb2,
            parameters_pb2,
            result_pb2,
            solution_pb2,
        )
        from ortools.math_opt.core.python import solver
        from pybind11_abseil.status import StatusNotOk

        proto = model_proto(model)
        sp = self._params(dataclasses.replace(params, time_limit=self._time_limit(params, monitor)))
        mp = model_parameters_pb2.ModelSolveParametersProto()
        if params.warm_start is not None:
            hint = mp.solution_hints.add()
            hint.variable_values.ids.extend(np.arange(model.num_vars, dtype=np.int64))
            hint.variable_values.values.extend(params.warm_start)

        registration = callback_pb2.CallbackRegistrationProto()
        events = self._events(model)
        registration.request_registration.extend(events)
        stop = monitor.stop

        def on_event(data: Any) -> Any:
            stats = data.mip_stats
            monitor.update(incumbent=stats.primal_bound, bound=stats.dual_bound)
            return callback_pb2.CallbackResultProto(terminate=stop.is_set())

        def work() -> Any:
            return solver.solve(proto, self._type(), parameters_pb2.SolverInitializerProto(), sp, mp, None,
                                registration, on_event if events else None, None)

        try:
            r = self._run(work, stop.set, monitor)
        except StatusNotOk as exc:
            return self._result(model, monitor, termination=Termination.ERROR, limit=Limit.NONE,
                                solution=None, objective=None, bound=math.nan, nodes=None,
                                raw_status="StatusNotOk", message=str(exc))

        term = r.termination
        reason = result_pb2.TerminationReasonProto.Name(term.reason)
        limit_name = result_pb2.LimitProto.Name(term.limit)
        termination = _REASONS.get(reason, Termination.ERROR)
        limit = _LIMITS.get(limit_name, Limit.OTHER) if termination is None else Limit.NONE
        solution = objective = None
        for sol in r.solutions:
            ps = sol.primal_solution
            status = solution_pb2.SolutionStatusProto.Name(ps.feasibility_status)
            if sol.HasField("primal_solution") and status == "SOLUTION_STATUS_FEASIBLE":
                solution = np.zeros(model.num_vars)
                ids = np.asarray(ps.variable_values.ids, dtype=np.int64)
                solution[ids] = np.asarray(ps.variable_values.values)
                objective = float(ps.objective_value)
                break
        bound = float(term.objective_bounds.dual_bound)
        nodes = int(r.solve_stats.node_count) if model.is_mip else None
        raw = reason + ("" if limit_name == "LIMIT_UNSPECIFIED" else f"/{limit_name}")
        return self._result(model, monitor, termination=termination, limit=limit, solution=solution,
                            objective=objective, bound=bound, nodes=nodes, raw_status=raw, message=term.detail)

    def _events(self, model: MilpModel) -> list[int]:
        return []


class ScipBackend(_MathOptBackend):
    """SCIP (bundled with the OR-Tools wheel) through MathOpt."""

    name = "scip"
    summary = "SCIP through OR-Tools MathOpt (bundled in the ortools wheel)"
    solver_type = "SOLVER_TYPE_GSCIP"
    supports_threads = False  # SCIP's solve is single-threaded; MathOpt accepts the value and ignores it

    def _events(self, model: MilpModel) -> list[int]:
        from ortools.math_opt import callback_pb2

        return [callback_pb2.CALLBACK_EVENT_MIP_NODE, callback_pb2.CALLBACK_EVENT_MIP_SOLUTION]


class HighsMathOptBackend(_MathOptBackend):
    """HiGHS through MathOpt (the HiGHS build inside OR-Tools, not highspy)."""

    name = "highs-mathopt"
    summary = "HiGHS through OR-Tools MathOpt (the copy bundled in ortools)"
    solver_type = "SOLVER_TYPE_HIGHS"
    supports_threads = False  # MathOpt: "threads not supported for HiGHS solver, set using globals"
    supports_interrupt = False  # see the module docstring
