"""The registry of placement methods: baselines and optimisation formulations.

A :class:`Method` names a function ``run(stats, topology, **options) -> Solution`` by its
import path, so listing methods imports no solver.  Options are declared with their type,
default and help; unknown options are an error, never ignored.  The CLI's ``--method``
choices come from :data:`METHODS` (in registration order).

Every method returns a :class:`Solution`: the placement plus what the method can prove about
it (objective, bound, gap, termination), so a baseline and an ILP report in one vocabulary.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import input_error
from .placement import Placement
from .stats import TraceStats

if TYPE_CHECKING:  # pragma: no cover
    from .topology import Topology

__all__ = ["Method", "Option", "Solution", "METHODS", "register", "get_method", "run_method"]


@dataclass(frozen=True)
class Option:
    """A method option: ``name``, a converter ``type`` (int, float, str, bool), ``default`` and ``help``.

    ``choices`` restricts the value to a set; ``minimum`` to numbers at least that large.
    """

    name: str
    type: Callable[[Any], Any]
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None

    def convert(self, value: Any, method: str) -> Any:
        try:
            if self.type is bool and isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                out: Any = low in ("1", "true", "yes", "on")
            else:
                out = self.type(value)
        except (TypeError, ValueError) as exc:
            raise input_error(f"cannot convert {value!r} to {self.type.__name__} for option '{self.name}' of "
                              f"method '{method}'", field=self.name) from exc
        if self.choices is not None and out not in self.choices:
            raise input_error(f"option '{self.name}' of method '{method}' must be one of {list(self.choices)}, "
                              f"got {out!r}", field=self.name)
        if self.minimum is not None and not out >= self.minimum:
            raise input_error(f"option '{self.name}' of method '{method}' must be >= {self.minimum:g}, got {out!r}",
                              field=self.name)
        return out


@dataclass(frozen=True, eq=False)
class Solution:
    """A method's answer.

    Attributes
    ----------
    placement:
        The placement.
    method:
        Registry name of the method.
    termination:
        ``"heuristic"`` (no optimality claim), ``"optimal"``, ``"feasible"`` (a limit stopped
        the solver), or another termination of :mod:`placement.backends`.
    objective, bound, gap:
        The formulation's objective for ``placement``, the best proven bound and the relative
        gap (``None`` for heuristics).
    wall_time:
        Seconds the method took (statistics excluded when they were precomputed).
    info:
        Method-specific details (backend, limit hit, model size...).
    """

    placement: Placement
    method: str
    termination: str = "heuristic"
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    wall_time: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = {"method": self.method, "termination": self.termination, "objective": self.objective,
               "bound": self.bound, "gap": self.gap, "wall_time_s": round(self.wall_time, 4)}
        out.update({k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool)) or v is None})
        return out


@dataclass(frozen=True)
class Method:
    """A registered placement method.

    ``target`` is ``"module:function"``; the function is imported on first use and called as
    ``function(stats, topology, **options)``.  ``needs`` is ``"tokens"`` (per-token routing),
    ``"load"`` (expert loads; count traces work) or ``"nothing"`` (ignores the trace).
    """

    name: str
    summary: str
    target: str
    needs: str = "nothing"
    kind: str = "baseline"
    options: tuple[Option, ...] = ()
    paper: str | None = None

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
        return out


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS`.

    A name registered twice by different code is an error; the same module imported a second
    time (pytest's doctest collection does that) re-registers its own entry in place.
    """
    known = METHODS.get(method.name)
    if known is not None and known.target != method.target:
        raise ValueError(f"method {method.name!r} is already registered by {known.target}")
    if method.needs not in ("tokens", "load", "nothing"):
        raise ValueError(f"method {method.name!r}: needs must be tokens, load or nothing")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name`` (error lists the registered names)."""
    try:
        return METHODS[name]
    except KeyError:
        raise input_error(f"unknown method {name!r}; choose one of {list(METHODS)}", field="method") from None


def run_method(name: str, stats: TraceStats, topology: Topology, **options: Any) -> Solution:
    """Run method ``name`` with ``options`` (converted and checked) and time it."""
    method = get_method(name)
    opts = method.parse_options(options)
    if method.needs == "tokens":
        stats.trace.require_tokens(f"method '{name}'")
    t0 = time.perf_counter()
    solution = method.resolve()(stats, topology, **opts)
    elapsed = time.perf_counter() - t0
    if solution.wall_time == 0.0:
        object.__setattr__(solution, "wall_time", elapsed)
    meta = dict(solution.placement.metadata)
    meta.update({"method": name, "options": opts, "termination": solution.termination})
    for key in ("objective", "bound", "gap"):
        value = getattr(solution, key)
        if value is not None and math.isfinite(value):
            meta[key] = value
    object.__setattr__(solution.placement, "metadata", meta)
    return solution


# ------------------------------------------------------------------------------------ baselines
def _baseline(fn_name: str, stats: TraceStats, topology: Topology, **kw: Any) -> Solution:
    from .baselines import simple

    trace = stats.trace
    fn = getattr(simple, fn_name)
    placement = fn(trace.num_layers, trace.num_experts, topology.num_gpus, **kw)
    return Solution(placement=placement, method=fn_name)


def contiguous_method(stats: TraceStats, topology: Topology) -> Solution:
    return _baseline("contiguous", stats, topology)


def round_robin_method(stats: TraceStats, topology: Topology) -> Solution:
    return _baseline("round_robin", stats, topology)


def random_method(stats: TraceStats, topology: Topology, seed: int = 0) -> Solution:
    sol = _baseline("random_placement", stats, topology, seed=seed)
    return Solution(placement=sol.placement, method="random")


register(Method("contiguous", "Megatron's default: expert e on GPU floor(e*G/E)",
                "placement.methods:contiguous_method"))
register(Method("round_robin", "expert e on GPU e mod G", "placement.methods:round_robin_method"))
register(Method("random", "a seeded random balanced placement per layer", "placement.methods:random_method",
                options=(Option("seed", int, 0, "random seed"),)))


def eplb_method(stats: TraceStats, topology: Topology, redundant: int = -1, faithful: bool = False,
                num_groups: int = 0, num_nodes: int = 0) -> Solution:
    """DeepSeek's EPLB on the trace's expert loads (see :mod:`placement.baselines.eplb`).

    ``redundant = -1`` adds the fewest extra replicas (at least one per GPU) that make the
    physical slots divide evenly over the GPUs; ``num_groups = 0`` takes the model's expert
    groups; ``num_nodes = 0`` takes the topology's servers.
    """
    from .baselines.eplb import rebalance_experts

    trace = stats.trace
    E, G = trace.num_experts, topology.num_gpus
    if redundant < 0:
        redundant = G + (-(E + G)) % G
    groups = num_groups or trace.model.num_groups
    nodes = num_nodes or topology.num_servers
    result = rebalance_experts(stats.load, E + redundant, groups, nodes, G, faithful=faithful)
    placement = Placement(result.slots(G), num_experts=E,
                          metadata={"method": "eplb", "num_replicas": E + redundant, "num_groups": groups,
                                    "num_nodes": nodes, "faithful": faithful})
    return Solution(placement=placement, method="eplb",
                    info={"redundant": redundant, "policy": "hierarchical" if groups % nodes == 0 else "global"})


register(Method("eplb", "DeepSeek EPLB: balance expert load with redundant replicas (numpy port)",
                "placement.methods:eplb_method", needs="load",
                options=(Option("redundant", int, -1, "extra replicas per layer (-1: at least one per GPU, "
                                "rounded up so slots divide over GPUs)"),
                         Option("faithful", bool, False, "reproduce EPLB exactly, including co-located replicas"),
                         Option("num_groups", int, 0, "expert groups (0: the model's)"),
                         Option("num_nodes", int, 0, "nodes for the hierarchical policy (0: the topology's servers)")),
                paper="DeepSeek EPLB (github.com/deepseek-ai/EPLB)"))


# formulation modules register their methods on import (they import no solver)
from . import formulations  # noqa: E402,F401
