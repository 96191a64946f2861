"""The method registry: what a placement method is called, what it needs and which options it takes.

A leaf module: it imports nothing of the package but :mod:`placement.errors`, so every method
module can register itself here without importing the others.  The catalogue
(:mod:`placement.methods`) imports the method modules in a stated order; that order is the order of
``placement methods`` and of :data:`METHODS`.

A :class:`Method` names its function ``run(stats, topology, **options) -> Solution`` by import
path, so listing methods imports no solver.  Options are declared with their type, default and
help; unknown options are an error, never ignored.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import input_error

if TYPE_CHECKING:  # pragma: no cover
    from .solution import Solution

__all__ = ["METHODS", "NEEDS", "KINDS", "Method", "Option", "get_method", "register", "used_only_with"]

#: What a method reads of the trace: per-token routing, expert loads (count traces work), or nothing.
NEEDS = ("tokens", "load", "nothing")
#: ``baseline`` (a rule or heuristic, no optimality claim) or ``formulation`` (an optimisation model).
KINDS = ("baseline", "formulation")


@dataclass(frozen=True)
class Option:
    """A method option: ``name``, a converter ``value_type`` (int, float, str, bool), ``default`` and ``help``.

    ``choices`` restricts the value to a set; ``minimum`` to numbers at least that large, except the
    one value ``auto`` (e.g. ``-1`` for "automatic"), which is also accepted.  ``used_with = (other,
    values)`` says the option is read only when option ``other`` takes one of ``values``: giving it
    otherwise is refused (:meth:`Method.parse_options`), never silently ignored.  Float options must be
    finite; integer options are whole numbers written as such (``"2.0"`` and ``"true"`` are refused).
    """

    name: str
    value_type: Callable[[Any], Any]
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    auto: Any = None
    used_with: tuple[str, tuple[Any, ...]] | None = None

    def convert(self, value: Any, method: str) -> Any:
        import math

        try:
            if self.value_type is bool and isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                out: Any = low in ("1", "true", "yes", "on")
            elif self.value_type in (int, float) and isinstance(value, bool):
                raise ValueError(value)
            elif self.value_type is int and isinstance(value, float):
                raise ValueError(value)
            else:
                out = self.value_type(value)
        except (TypeError, ValueError, OverflowError) as exc:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise input_error(f"cannot convert {shown} to {self.value_type.__name__} for option '{self.name}' of "
                              f"method '{method}'", field=self.name) from exc
        if isinstance(out, float) and not math.isfinite(out):
            raise input_error(f"option '{self.name}' of method '{method}' must be a finite number, got {value!r}",
                              field=self.name)
        if self.choices is not None and out not in self.choices:
            raise input_error(f"option '{self.name}' of method '{method}' must be one of {list(self.choices)}, "
                              f"got {out!r}", field=self.name)
        if self.auto is not None and out == self.auto:
            return out
        if self.minimum is not None and not out >= self.minimum:
            auto = f" (or {self.auto}: automatic)" if self.auto is not None else ""
            raise input_error(f"option '{self.name}' of method '{method}' must be >= {self.minimum:g}{auto}, got "
                              f"{out!r}", field=self.name)
        return out


def used_only_with(options: tuple[Option, ...], names: tuple[str, ...], other: str,
                   values: tuple[Any, ...]) -> tuple[Option, ...]:
    """``options`` with those called ``names`` marked as read only when option ``other`` is in ``values``."""
    return tuple(dataclasses.replace(o, used_with=(other, values)) if o.name in names else o for o in options)


@dataclass(frozen=True)
class Method:
    """A registered placement method.

    ``target`` is ``"module:function"``; the function is imported on first use and called as
    ``function(stats, topology, **options)``.  ``needs`` is ``"tokens"`` (per-token routing),
    ``"load"`` (expert loads; count traces work) or ``"nothing"`` (ignores the trace).

    ``objective`` names what the method reports as :attr:`Solution.objective
    <placement.solution.Solution.objective>` (and bounds): a key of
    :data:`placement.objectives.OBJECTIVES`, whose function recomputes it for any placement from
    the evaluator's metrics and the method's options; ``None`` for a method that reports no
    objective.  It is a name, so the registry imports neither the evaluator nor the objectives.
    """

    name: str
    summary: str
    target: str
    needs: str = "nothing"
    kind: str = "baseline"
    options: tuple[Option, ...] = ()
    paper: str | None = None
    objective: str | None = None

    def resolve(self) -> Callable[..., Solution]:
        module, _, func = self.target.partition(":")
        return getattr(importlib.import_module(module), func)

    def parse_options(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``values`` converted to each option's type; unknown names are an error."""
        known = {o.name: o for o in self.options}
        unknown = sorted(set(values) - set(known))
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            raise input_error(f"unknown option(s) {unknown} for method '{self.name}'; its options are: {listed}",
                              field="option")
        out = {o.name: o.default for o in self.options}
        for name, value in values.items():
            out[name] = known[name].convert(value, self.name)
        for name in values:
            rule = known[name].used_with
            if rule is not None and out[rule[0]] not in rule[1]:
                other, allowed = rule
                raise input_error(f"option '{name}' of method '{self.name}' is not used when {other}={out[other]} "
                                  f"(only with {other} in {list(allowed)}); drop it or choose such a {other}",
                                  field=name)
        return out



#: Registered methods by name, in catalogue order (see :mod:`placement.methods`).
METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS`.

    A name registered twice by different code is an error; the same module imported a second
    time (pytest's doctest collection does that) re-registers its own entry in place.
    """
    known = METHODS.get(method.name)
    if known is not None and known.target != method.target:
        raise ValueError(f"method {method.name!r} is already registered by {known.target}")
    if method.needs not in NEEDS:
        raise ValueError(f"method {method.name!r}: needs must be one of {NEEDS}")
    if method.kind not in KINDS:
        raise ValueError(f"method {method.name!r}: kind must be one of {KINDS}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name`` (the error lists the registered names)."""
    try:
        return METHODS[name]
    except KeyError:
        raise input_error(f"unknown method {name!r}; choose one of {list(METHODS)}", field="method") from None
