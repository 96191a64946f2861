"""The evaluator under its historical import path: re-exports :mod:`placement.evaluation`.

``from placement.evaluate import evaluate, Metrics, route_layer, ...`` keeps working; the rules
and the code live in the package :mod:`placement.evaluation` (``routing``, ``flows``,
``metrics``).  The package has its own name because ``placement.evaluate`` is also the
*function* :func:`placement.evaluate`: a package ``placement/evaluate/`` would make
``import placement.evaluate.routing`` reach its submodules through an attribute that is the
function.  This module stays a plain module, loaded by ``import placement`` before the package
rebinds the attribute to the function, so later imports of it never rebind ``placement.evaluate``.
"""

from __future__ import annotations

from .evaluation import (
    DEFAULT_HIDDEN_SIZE,
    DISPATCH_MODELS,
    DTYPE_BYTES,
    ORIGIN_MODES,
    Metrics,
    evaluate,
    first_of_each,
    replica_tables,
    route_layer,
)

__all__ = ["evaluate", "Metrics", "route_layer", "replica_tables", "first_of_each", "DISPATCH_MODELS",
           "ORIGIN_MODES", "DTYPE_BYTES", "DEFAULT_HIDDEN_SIZE"]
