"""Congestion-aware placement (method ``alltoall-time``) against hop-minimising and load-balancing methods.

Run ``python benchmarks/bench_alltoall.py`` (``--time-limit`` sets ``alltoall-time``'s budget,
default its 60 s; ``--trace`` another trace).

For each topology (the 32-GPU dragonfly where fewest hops was measured slower than contiguous,
and ``fat-tree:4x8``) and the bundled DeepSeek-V3 trace, prints per method: wall time, reported
gap, and the evaluator's ``alltoall_time`` and ``hop_transmissions`` (uniform origins, origin
dispatch, no de-duplication) over ``contiguous``'s.
"""

from __future__ import annotations

import argparse
import time

from placement import evaluate, load_trace
from placement.api import as_stats, as_topology
from placement.methods import run_method

TOPOLOGIES = ["dragonfly:groups=4,routers_per_group=2,servers_per_router=1,gpus=4", "fat-tree:4x8"]
METHODS = ["contiguous", "transmission-load", "eplb", "alltoall-time"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="data/traces/deepseek-v3.npz")
    ap.add_argument("--time-limit", type=float, default=60.0)
    args = ap.parse_args()
    import placement.formulations.alltoall  # noqa: F401  (registers the method if not yet registered)

    trace = load_trace(args.trace)
    stats = as_stats(trace)
    print(f"trace {args.trace}: {trace.num_layers} layers x {trace.num_experts} experts, top-{trace.top_k}, "
          f"{trace.num_tokens} tokens")
    header = f"{'topology':<22} {'method':<18} {'time_s':>8} {'gap':>8} {'a2a_ms':>9} {'a2a/cont':>9} {'hops/cont':>9}"
    print(header)
    for spec in TOPOLOGIES:
        topo = as_topology(spec)
        ref = None
        for name in METHODS:
            opts = {"time_limit": args.time_limit} if name == "alltoall-time" else {}
            t0 = time.perf_counter()
            sol = run_method(name, stats, topo, **opts)
            dt = time.perf_counter() - t0
            m = evaluate(sol.placement, trace, topo, origins="uniform", dispatch="origin", dedup=False)
            if ref is None:
                ref = m
            gap = "-" if sol.gap is None else f"{sol.gap:.4f}"
            short = spec if len(spec) <= 22 else "dragonfly-32"
            print(f"{short:<22} {name:<18} {dt:>8.2f} {gap:>8} {m.alltoall_time * 1e3:>9.3f} "
                  f"{m.alltoall_time / ref.alltoall_time:>9.3f} {m.hop_transmissions / ref.hop_transmissions:>9.3f}")


if __name__ == "__main__":
    main()
