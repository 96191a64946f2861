"""Optimisation formulations.  Each module cites its paper, writes its model out
(Data / Variables / Objective / Constraints), builds a :class:`~placement.milp.MilpModel` with
vectorised numpy/scipy, never imports a solver, and registers its methods in
:data:`placement.registry.METHODS` when imported.  The catalogue :mod:`placement.methods` imports
them in the order ``placement methods`` lists them.
"""
