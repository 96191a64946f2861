"""ExFlow inter-layer affinity placement (arXiv 2401.08383), one concern per module.

Registered by :mod:`placement.formulations.affinity` as ``exflow`` and ``exflow-bisect``.

* :mod:`.problem`: the data (transition counts, pair costs from :mod:`placement.costs`, their
  hierarchy) in model units, and the objective of an assignment;
* :mod:`.model`: the compact exact MILP (Data / Variables / Objective / Constraints);
* :mod:`.heuristics`: balanced per-layer assignments, descent, suffix relabelling, local search;
* :mod:`.exact`: the exact special cases (chained matchings, dynamic programme);
* :mod:`.bounds`: the decomposition bound (b-matching LPs and their duals);
* :mod:`.driver`: ``exflow``'s solve (shortcuts, search, bound, MILP);
* :mod:`.bisection`: ExFlow's own recursive bisection (``exflow-bisect``).

Everything is numpy/scipy; MILPs go through :func:`placement.formulations._common.solve_model`.
"""

from __future__ import annotations

from .bisection import run_bisect
from .bounds import boundary_bound
from .driver import AffinityResult, run_exflow
from .model import build_model, canonical_gpus, warm_start
from .problem import COSTS, REPORTED_UNITS, AffinityProblem, build_problem, objective

__all__ = ["COSTS", "REPORTED_UNITS", "AffinityProblem", "AffinityResult", "boundary_bound", "build_model",
           "build_problem", "canonical_gpus", "objective", "run_bisect", "run_exflow", "warm_start"]
