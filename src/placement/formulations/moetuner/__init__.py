"""MoETuner (arXiv 2502.06643): balanced expert clusters, clusters to GPUs, and the joint model.

Registered by :mod:`placement.formulations.affinity` as ``moetuner`` and ``moetuner-joint``.

* :mod:`.problem`: loads, token transitions and GPU-pair weights from :mod:`placement.costs`, and
  the objectives of an assignment (units stated there);
* :mod:`.heuristics`: greedy balanced clusters and swap descent (warm starts);
* :mod:`.ilp1`: ILP1, balanced clusters per layer (Data / Variables / Objective / Constraints);
* :mod:`.ilp2`: ILP2, clusters to GPUs (min-max traffic), and its exact decomposition;
* :mod:`.joint`: ILP2's objective over experts with load balance as a constraint;
* :mod:`.driver`: the two methods' solves.

Numpy/scipy only; MILPs go through :func:`placement.formulations._common.solve_model`.
"""

from __future__ import annotations

from .driver import run_joint, run_sequential
from .ilp1 import build_ilp1, solve_ilp1
from .ilp2 import build_ilp2, cluster_traffic, ilp2_decomposition
from .joint import build_joint
from .problem import COSTS, REPORTED_UNITS, TunerProblem, build_problem

__all__ = ["COSTS", "REPORTED_UNITS", "TunerProblem", "build_ilp1", "build_ilp2", "build_joint", "build_problem",
           "cluster_traffic", "ilp2_decomposition", "run_joint", "run_sequential", "solve_ilp1"]
