"""``highs``: the HiGHS MIP/LP solver through highspy, the whole model passed in one call.

The model goes to HiGHS with one ``passModel`` call on the CSC arrays of
:class:`~placement.milp.MilpModel` (no per-row or per-column calls). Common parameters map to
HiGHS options ``time_limit``, ``mip_rel_gap``, ``threads`` and ``random_seed``; any other HiGHS
option can be given in ``SolveParams.options["highs"]`` and is checked against HiGHS's own
option list. The warm start goes through ``setSolution``. Progress and Ctrl-C use HiGHS's MIP,
simplex and IPM interrupt callbacks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import input_error
from ..milp._model import MilpModel
from ..milp._result import Limit, SolveParams, SolveResult, Termination
from ._base import Backend, SolveMonitor

__all__ = ["HighsBackend", "load_into_highs", "new_highs"]

_T, _L = Termination, Limit
#: HiGHS model status name -> (termination, limit); ``None`` = "stopped by the limit" (feasible or
#: no_solution depending on whether a solution exists). Unknown names fall back to ``error``.
_STATUS: dict[str, tuple[Termination | None, Limit]] = {
    "kOptimal": (_T.OPTIMAL, _L.NONE),
    "kModelEmpty": (_T.OPTIMAL, _L.NONE),
    "kInfeasible": (_T.INFEASIBLE, _L.NONE),
    "kUnbounded": (_T.UNBOUNDED, _L.NONE),
    "kUnboundedOrInfeasible": (_T.INFEASIBLE_OR_UNBOUNDED, _L.NONE),
    "kTimeLimit": (None, _L.TIME),
    "kIterationLimit": (None, _L.ITERATIONS),
    "kSolutionLimit": (None, _L.NODES),  # mip_max_nodes / mip_max_leaves / mip_max_improving_sols
    "kInterrupt": (None, _L.INTERRUPTED),
    "kHighsInterrupt": (None, _L.INTERRUPTED),
    "kObjectiveBound": (None, _L.OTHER),
    "kObjectiveTarget": (None, _L.OTHER),
    "kMemoryLimit": (None, _L.OTHER),
    "kNotset": (_T.ERROR, _L.NONE),
    "kLoadError": (_T.ERROR, _L.NONE),
    "kModelError": (_T.ERROR, _L.NONE),
    "kPresolveError": (_T.ERROR, _L.NONE),
    "kSolveError": (_T.ERROR, _L.NONE),
    "kPostsolveError": (_T.ERROR, _L.NONE),
    "kUnknown": (_T.ERROR, _L.NONE),
}


def new_highs() -> Any:
    """A fresh silent ``highspy.Highs`` (imports highspy)."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


def load_into_highs(h: Any, model: MilpModel) -> None:
    """Pass ``model`` to the ``highspy.Highs`` instance ``h`` in one ``passModel`` call."""
    A = model.A
    n, m = model.num_vars, model.num_rows
    sense = 1 if model.sense == "min" else -1  # highspy.ObjSense.kMinimize / kMaximize
    args: list[Any] = [
        n, m, model.nnz, 1, sense, model.offset,  # 1 = highspy.MatrixFormat.kColwise
        model.c, model.col_lower, model.col_upper, model.row_lower, model.row_upper,
        A.indptr[:-1].astype(np.int32), A.indices.astype(np.int32), A.data,
        model.integrality.astype(np.int32),  # 0 = kContinuous, 1 = kInteger; all 0 is an LP for HiGHS
    ]
    status = h.passModel(*args)
    if status.name == "kError":
        raise input_error("HiGHS rejected the model in passModel; check the model's bounds and coefficients",
                          source=model.name)


def _set_option(h: Any, name: str, value: Any, backend: str) -> None:
    status = h.setOptionValue(name, value)
    if status.name == "kError":
        raise input_error(f"HiGHS rejected option {name!r} = {value!r} for backend {backend!r} "
                          f"(wrong type or out of range)", source="SolveParams",
                          field=f"options[{backend!r}]")


class HighsBackend(Backend):
    """HiGHS through highspy (see the module docstring)."""

    name = "highs"
    summary = "HiGHS MIP/LP solver (highspy), whole model in one passModel call"
    install_hint = "install it with: pip install 'highspy>=1.11,<1.15'"
    supports_warm_start = True

    def _probe(self) -> tuple[bool, str]:
        h = new_highs()
        return True, f"highspy {h.version()}"

    def version(self) -> str | None:
        if not self.available()[0]:
            return None
        import highspy

        return str(highspy.Highs().version())

    def option_names(self) -> list[str]:
        """HiGHS's option names (for "did you mean" hints; :meth:`check_options` asks HiGHS itself)."""
        import highspy

        return [k for k in dir(highspy.HighsOptions()) if not k.startswith("_")]

    def check_options(self, options: dict[str, Any]) -> None:
        """Check names against HiGHS's own option list (``getOptionType``)."""
        if not options:
            return
        h = new_highs()
        for key in options:
            status, _ = h.getOptionType(str(key))
            if status.name != "kOk":
                super().check_options({key: None})

    def _solve(self, model: MilpModel, params: SolveParams, monitor: SolveMonitor) -> SolveResult:
        h = new_highs()
        load_into_highs(h, model)
        limit = self._time_limit(params, monitor)  # after passModel: the transfer counts against a deadline
        if limit is not None:
            _set_option(h, "time_limit", limit, self.name)
        if params.rel_gap is not None:
            _set_option(h, "mip_rel_gap", params.rel_gap, self.name)
        if params.threads is not None:
            _set_option(h, "threads", params.threads, self.name)
        if params.seed is not None:
            _set_option(h, "random_seed", params.seed, self.name)
        for key, value in params.options_for(self.name).items():
            _set_option(h, key, value, self.name)
        if params.warm_start is not None:
            idx = np.arange(model.num_vars, dtype=np.int32)
            h.setSolution(model.num_vars, idx, np.array(params.warm_start, dtype=np.float64))

        stop = monitor.stop

        def on_mip(event: Any) -> None:
            out = event.data_out
            monitor.update(incumbent=out.mip_primal_bound, bound=out.mip_dual_bound)
            if stop.is_set():
                event.interrupt()

        def on_lp(event: Any) -> None:
            if stop.is_set():
                event.interrupt()

        h.cbMipInterrupt.subscribe(on_mip)
        h.cbSimplexInterrupt.subscribe(on_lp)
        h.cbIpmInterrupt.subscribe(on_lp)
        self._run(h.run, stop.set, monitor)

        status = h.getModelStatus()
        raw = status.name
        termination, limit = _STATUS.get(raw, (Termination.ERROR, Limit.NONE))
        message = h.modelStatusToString(status)
        if termination is Termination.INFEASIBLE_OR_UNBOUNDED and not stop.is_set():
            termination, note = self._disambiguate(h, model, params, monitor)
            message = f"{message}; {note}"
        info = h.getInfo()
        has_solution = int(info.primal_solution_status) == 2  # kSolutionStatusFeasible
        solution = np.array(h.getSolution().col_value, dtype=np.float64) if has_solution else None
        objective = float(info.objective_function_value) if has_solution else None
        if model.is_mip:
            bound = float(info.mip_dual_bound)
            nodes: int | None = int(info.mip_node_count)
        else:
            bound = objective if (termination is Termination.OPTIMAL and objective is not None) else math.nan
            nodes = None
        if termination is Termination.OPTIMAL and model.num_vars == 0:
            solution, objective, bound = np.zeros(0), model.offset, model.offset
        return self._result(model, monitor, termination=termination, limit=limit, solution=solution,
                            objective=objective, bound=bound, nodes=nodes, raw_status=raw, message=message)

    def _disambiguate(self, h: Any, model: MilpModel, params: SolveParams,
                      monitor: SolveMonitor) -> tuple[Termination, str]:
        """Tell infeasible from unbounded by solving the feasibility problem (zero costs).

        A feasible model whose relaxation is unbounded is itself unbounded (rational data,
        Meyer 1974), so: feasible -> unbounded, infeasible -> infeasible.
        """
        h.changeColsCost(model.num_vars, np.arange(model.num_vars, dtype=np.int32), np.zeros(model.num_vars))
        if params.time_limit is not None:
            _set_option(h, "time_limit", max(params.time_limit - monitor.elapsed(), 1e-3), self.name)
        self._run(h.run, monitor.stop.set, monitor)
        second = h.getModelStatus().name
        if second == "kOptimal":
            return Termination.UNBOUNDED, "a zero-cost re-solve found a feasible point, so it is unbounded"
        if second == "kInfeasible":
            return Termination.INFEASIBLE, "a zero-cost re-solve proved it infeasible"
        return Termination.INFEASIBLE_OR_UNBOUNDED, f"a zero-cost re-solve stopped with {second}"
