"""Optimisation formulations.  Each module cites its paper, writes its model out
(Data / Variables / Objective / Constraints), builds a :class:`~placement.milp.MilpModel` with
vectorised numpy/scipy, never imports a solver, and registers its methods in
:data:`placement.METHODS` when imported.
"""

from . import affinity, transmission  # noqa: F401  (each registers its methods)
