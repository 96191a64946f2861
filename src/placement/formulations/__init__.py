"""Optimisation formulations.  Each module cites its paper, writes its model out
(Data / Variables / Objective / Constraints), builds a :class:`~placement.milp.MilpModel` with
vectorised numpy/scipy, never imports a solver, and registers its methods in
:data:`placement.METHODS` when imported.
"""

# Each module registers its methods on import; the order here is the order of `placement methods`.
from . import transmission  # noqa: F401, I001  isort: skip
from . import affinity  # noqa: F401, I001  isort: skip
from . import alltoall  # noqa: F401, I001  isort: skip
