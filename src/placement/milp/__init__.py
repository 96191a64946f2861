"""The neutral MILP layer: :class:`MilpModel` (arrays), :class:`MilpBuilder` (bulk assembly) and the
solver-neutral :class:`SolveParams` / :class:`SolveResult` vocabulary.

Formulations build a :class:`MilpModel`; backends (:mod:`placement.backends`) solve it. Nothing
here imports a solver at import time.
"""

from ._builder import MilpBuilder
from ._model import ColumnBlock, MilpModel, RowBlock
from ._result import Limit, Progress, SolveParams, SolveResult, Termination, relative_gap

__all__ = [
    "ColumnBlock",
    "Limit",
    "MilpBuilder",
    "MilpModel",
    "Progress",
    "RowBlock",
    "SolveParams",
    "SolveResult",
    "Termination",
    "relative_gap",
]
