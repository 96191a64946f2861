"""The one ordered registry of solver backends; the order is the preference."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..errors import input_error
from ..milp._model import MilpModel
from ._base import Backend, BackendUnavailableError
from ._cpsat import CpSatBackend
from ._highs import HighsBackend
from ._mathopt import HighsMathOptBackend, ScipBackend

__all__ = ["BACKENDS", "available_backends", "choose_backend", "get_backend"]

_BACKENDS: dict[str, Backend] = {}
#: Name -> backend, in order of preference. Listing it imports no solver.
BACKENDS: Mapping[str, Backend] = MappingProxyType(_BACKENDS)
# Each backend is given the registry it belongs to, to check the options passed for the others.
_BACKENDS.update((b.name, b) for b in (HighsBackend(BACKENDS), CpSatBackend(BACKENDS), ScipBackend(BACKENDS),
                                       HighsMathOptBackend(BACKENDS)))


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``; an unknown name raises listing the known ones.

    >>> get_backend("highs")
    <HighsBackend 'highs'>
    """
    try:
        return BACKENDS[name]
    except KeyError:
        raise input_error(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}",
                          field="backend") from None


def available_backends() -> list[str]:
    """Names of the backends usable here, in order of preference (imports each solver to check)."""
    return [name for name, b in BACKENDS.items() if b.available()[0]]


def choose_backend(model: MilpModel | None = None) -> Backend:
    """The first available backend that can represent ``model`` (any available one if ``None``)."""
    reasons = []
    for b in BACKENDS.values():
        ok, why = b.available()
        if not ok:
            reasons.append(f"{b.name}: {why}")
            continue
        if model is not None:
            try:
                b.check_model(model)
            except ValueError as exc:
                reasons.append(f"{b.name}: {exc}")
                continue
        return b
    raise BackendUnavailableError("no backend can solve this model: " + "; ".join(reasons))
