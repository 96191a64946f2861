"""Solver backends behind one contract: a :class:`~placement.milp.MilpModel` in, a
:class:`~placement.milp.SolveResult` out.

``BACKENDS`` is the ordered registry (the order is the preference): ``highs`` (highspy),
``cpsat`` (OR-Tools CP-SAT), ``scip`` and ``highs-mathopt`` (OR-Tools MathOpt). Importing this
package imports no solver; :meth:`Backend.available` imports one when asked.
:func:`write_mps` writes a model as an MPS file for an external solver (through HiGHS).

>>> list(BACKENDS)
['highs', 'cpsat', 'scip', 'highs-mathopt']
"""

from ..milp._result import Limit, Progress, SolveParams, SolveResult, Termination
from ._base import Backend, BackendUnavailableError, ModelNotSupportedError
from ._registry import BACKENDS, available_backends, choose_backend, get_backend
from .mps import write_mps

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailableError",
    "Limit",
    "ModelNotSupportedError",
    "Progress",
    "SolveParams",
    "SolveResult",
    "Termination",
    "available_backends",
    "choose_backend",
    "get_backend",
    "write_mps",
]
