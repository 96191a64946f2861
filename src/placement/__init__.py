"""placement: topology-aware placement of Mixture-of-Experts experts on GPUs.

Importing this package loads numpy and scipy only: no solver, no torch, no networkx, no
pandas.  Start with :func:`solve`, :func:`evaluate` and :func:`compare`; see ``docs/index.md``.

>>> import placement
>>> "transmission-load" in placement.METHODS
True
"""

from . import data
from ._version import __version__
from .api import compare, metrics_table, solve, verdict
from .errors import NeedsTokenTraceError, PlacementInputError
from .evaluate import Metrics, evaluate
from .methods import METHODS
from .placement import Placement, load_placement
from .solution import Solution, Termination
from .stats import TraceStats
from .trace import ModelSpec, Trace, load_trace, save_trace

__all__ = [
    "__version__",
    "METHODS",
    "Metrics",
    "ModelSpec",
    "NeedsTokenTraceError",
    "Placement",
    "PlacementInputError",
    "Solution",
    "Termination",
    "Trace",
    "TraceStats",
    "compare",
    "data",
    "evaluate",
    "load_placement",
    "load_trace",
    "metrics_table",
    "save_trace",
    "solve",
    "verdict",
]
