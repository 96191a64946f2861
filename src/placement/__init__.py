"""placement: topology-aware placement of Mixture-of-Experts experts on GPUs.

Importing this package loads numpy, scipy and networkx only: no solver, no torch, no pandas.
"""

from ._version import __version__
from .api import compare, metrics_table, solve
from .errors import NeedsTokenTraceError, PlacementInputError
from .evaluate import Metrics, evaluate
from .methods import METHODS, Solution
from .placement import Placement, load_placement
from .stats import TraceStats
from .trace import ModelSpec, Trace, load_trace, save_trace

__all__ = [
    "__version__",
    "METHODS",
    "Metrics",
    "Placement",
    "Solution",
    "compare",
    "evaluate",
    "load_placement",
    "metrics_table",
    "solve",
    "ModelSpec",
    "NeedsTokenTraceError",
    "PlacementInputError",
    "Trace",
    "TraceStats",
    "load_trace",
    "save_trace",
]
