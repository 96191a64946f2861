"""A method's answer in one vocabulary: :class:`Solution`, and the one way to build it.

Every method, baseline or optimisation model, returns a :class:`Solution`: the placement plus what
the method can prove about it.  ``termination`` is a :class:`~placement.milp.Termination`
(``HEURISTIC`` for answers with no optimality claim), the gap is
:func:`~placement.milp.relative_gap` (one scale-free definition, documented there), and
:func:`make_solution` is the single place that turns an objective and a bound into the reported
fields; :func:`solution_from_result` is its shortcut for one :class:`~placement.milp.SolveResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .milp._result import Limit, SolveResult, Termination, relative_gap
from .placement import Placement

__all__ = ["Limit", "Solution", "Termination", "make_solution", "solution_from_result"]

#: Bounds within this relative distance above the objective are rounding (solver tolerances,
#: unit scaling) and are clipped to the objective; a larger excess is a bug and is kept visible.
BOUND_ROUNDING = 1e-9


@dataclass(frozen=True, eq=False)
class Solution:
    """A method's answer.

    Attributes
    ----------
    placement:
        The placement.
    method:
        Registry name of the method.
    termination:
        :class:`~placement.milp.Termination`: ``HEURISTIC`` (no optimality claim), ``OPTIMAL``
        (proven within the requested gap), ``FEASIBLE`` (a limit stopped the search), ...
    objective, bound, gap:
        The method's objective for ``placement`` (in the units its method documents), the best
        proven bound and :func:`~placement.milp.relative_gap` of the two (``None`` when there is
        no objective or no finite bound).
    wall_time:
        Seconds the method took (statistics excluded when they were precomputed).
    info:
        Method-specific details (backend, limit hit, model size...).
    limit:
        :class:`~placement.milp.Limit` that cut the method short: ``TIME`` (its ``time_limit``),
        ``INTERRUPTED`` (Ctrl-C: the answer is the best found so far, with its bound), or
        ``NONE`` when it ran to completion.
    """

    placement: Placement
    method: str
    termination: Termination = Termination.HEURISTIC
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    wall_time: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    limit: Limit = Limit.NONE

    def __post_init__(self) -> None:
        if not isinstance(self.termination, Termination):
            raise TypeError(f"Solution.termination must be a Termination, got {self.termination!r}")
        if not isinstance(self.limit, Limit):
            object.__setattr__(self, "limit", Limit(self.limit))

    def summary(self) -> dict[str, Any]:
        """Scalar fields for reports: method, termination, objective, bound, gap, time and scalar info."""
        out = {"method": self.method, "termination": self.termination.value, "limit": self.limit.value,
               "objective": self.objective, "bound": self.bound, "gap": self.gap,
               "wall_time_s": round(self.wall_time, 4)}
        out.update({k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool)) or v is None})
        return out


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def make_solution(placement: Placement, method: str, *, termination: Termination,
                  objective: float | None = None, bound: float | None = None, wall_time: float = 0.0,
                  info: dict[str, Any] | None = None, limit: Limit | str = Limit.NONE) -> Solution:
    """The :class:`Solution` of ``placement`` with its objective and bound, gap computed here.

    A bound above the objective (for minimisation) by at most :data:`BOUND_ROUNDING` relative is
    solver rounding and is clipped to the objective, which then reports a gap of 0; a gap that
    rounds to 0 makes the bound equal the objective.  Non-finite values are reported as ``None``.

    >>> from placement.placement import Placement
    >>> import numpy as np
    >>> p = Placement(np.array([[[0], [1]]]), num_experts=2)
    >>> s = make_solution(p, "demo", termination=Termination.OPTIMAL, objective=4.0, bound=3.0)
    >>> s.gap, s.termination.value
    (0.25, 'optimal')
    >>> make_solution(p, "demo", termination=Termination.HEURISTIC, objective=4.0).gap is None
    True
    """
    obj = _finite(objective)
    bnd = _finite(bound)
    gap: float | None = None
    if obj is not None and bnd is not None:
        if bnd > obj and bnd - obj <= BOUND_ROUNDING * max(abs(obj), abs(bnd)):
            bnd = obj
        gap = _finite(relative_gap(obj, bnd))
        if gap is not None and gap <= 1e-12:
            bnd, gap = obj, 0.0
    return Solution(placement=placement, method=method, termination=termination, objective=obj, bound=bnd,
                    gap=gap, wall_time=float(wall_time), info=dict(info or {}), limit=Limit(limit))


def solution_from_result(result: SolveResult, placement: Placement, method: str, *, unit: float = 1.0,
                         objective: float | None = None, info: dict[str, Any] | None = None,
                         wall_time: float | None = None) -> Solution:
    """:func:`make_solution` from one solver result.

    ``unit`` converts the model's objective and bound to the method's reported units (reported =
    model x ``unit``); ``objective``, when given, is the decoded placement's objective recomputed in
    reported units and replaces the solver's.  ``info`` gains the backend, limit, nodes, raw status
    and scaling error.
    """
    details = {"backend": result.backend, "limit": result.limit.value, "nodes": result.nodes,
               "raw_status": result.raw_status, "scaling_error": result.scaling_error}
    details.update(info or {})
    obj = float(result.objective) * unit if objective is None else objective
    return make_solution(placement, method, termination=result.termination, objective=obj,
                         bound=float(result.bound) * unit, wall_time=result.wall_time if wall_time is None
                         else wall_time, info=details, limit=result.limit)
