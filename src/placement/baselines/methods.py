"""The baseline methods, registered: Megatron's contiguous sharding, round robin, seeded random and
DeepSeek's EPLB.  None makes an optimality claim (``Termination.HEURISTIC``); the placement rules
live in :mod:`placement.baselines.simple` and :mod:`placement.baselines.eplb`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..placement import Placement
from ..registry import Method, Option, register
from ..solution import Solution

if TYPE_CHECKING:  # pragma: no cover
    from ..stats import TraceStats
    from ..topology import Topology

__all__ = ["contiguous_method", "round_robin_method", "random_method", "eplb_method"]


def _baseline(fn_name: str, stats: TraceStats, topology: Topology, **kw: Any) -> Solution:
    from . import simple

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
                "placement.baselines.methods:contiguous_method"))
register(Method("round_robin", "expert e on GPU e mod G", "placement.baselines.methods:round_robin_method"))
register(Method("random", "a seeded random balanced placement per layer", "placement.baselines.methods:random_method",
                options=(Option("seed", int, 0, "random seed", minimum=0),)))


def eplb_method(stats: TraceStats, topology: Topology, redundant: int = -1, faithful: bool = False,
                num_groups: int = 0, num_nodes: int = 0) -> Solution:
    """DeepSeek's EPLB on the trace's expert loads (see :mod:`placement.baselines.eplb`).

    ``redundant = -1`` adds the fewest extra replicas (at least one per GPU) that make the
    physical slots divide evenly over the GPUs; ``num_groups = 0`` takes the model's expert
    groups; ``num_nodes = 0`` takes the topology's servers.
    """
    from .eplb import default_redundant, rebalance_experts

    trace = stats.trace
    E, G = trace.num_experts, topology.num_gpus
    if redundant < 0:
        redundant = default_redundant(E, G)
    groups = num_groups or trace.model.num_groups
    nodes = num_nodes or topology.num_servers
    result = rebalance_experts(stats.load, E + redundant, groups, nodes, G, faithful=faithful)
    placement = Placement(result.slots(G), num_experts=E,
                          metadata={"method": "eplb", "num_replicas": E + redundant, "num_groups": groups,
                                    "num_nodes": nodes, "faithful": faithful})
    return Solution(placement=placement, method="eplb",
                    info={"redundant": redundant, "policy": "hierarchical" if groups % nodes == 0 else "global"})


register(Method("eplb", "DeepSeek EPLB: balance expert load with redundant replicas (numpy port)",
                "placement.baselines.methods:eplb_method", needs="load",
                options=(Option("redundant", int, -1, "extra replicas per layer (-1: at least one per GPU, "
                                "rounded up so slots divide over GPUs)", minimum=0, auto=-1),
                         Option("faithful", bool, False, "reproduce EPLB exactly, including co-located replicas"),
                         Option("num_groups", int, 0, "expert groups (0: the model's)", minimum=0),
                         Option("num_nodes", int, 0, "nodes for the hierarchical policy (0: the topology's servers)",
                                       minimum=0)),
                paper="DeepSeek EPLB (github.com/deepseek-ai/EPLB)"))


