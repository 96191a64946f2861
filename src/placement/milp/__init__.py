"""The neutral MILP layer: :class:`MilpModel` (arrays), :class:`MilpBuilder` (bulk assembly) and the
solver-neutral :class:`SolveParams` / :class:`SolveResult` vocabulary.

Formulations build a :class:`MilpModel`; backends (:mod:`placement.backends`) solve it. This
package imports no solver and nothing from :mod:`placement.backends` (the dependency runs one way:
backends import the model); :func:`placement.backends.write_mps` writes a model as an MPS file.
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
