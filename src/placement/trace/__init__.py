"""Routing traces: what the router chose, per token and MoE layer (or aggregated counts).

See :class:`Trace` for the two kinds (token traces and count traces), :mod:`.io` for the
file formats, and :mod:`.synthesize` for the calibrated synthetic generator.
"""

from ._trace import ModelSpec, Trace
from .io import FORMATS, load_trace, save_trace

__all__ = ["FORMATS", "ModelSpec", "Trace", "load_trace", "save_trace"]
