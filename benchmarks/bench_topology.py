"""Time building preset topologies (validation, hop metric, routes, route matrix).

Run: ``python benchmarks/bench_topology.py [SPEC ...]``; prints one row per spec.
"""

from __future__ import annotations

import sys
import time

from placement.topology import preset

DEFAULT_SPECS = ("fat-tree:4x8", "fat-tree:32x8", "sparse-fat-tree:32x8", "rail:32x8",
                 "dragonfly:groups=8,routers_per_group=4,gpus=8", "nvl72:racks=4", "fat-tree:128x8")


def main(specs: list[str]) -> None:
    preset("fat-tree:2x2")  # warm imports
    print(f"{'spec':48s} {'gpus':>6s} {'nodes':>6s} {'links':>6s} {'nnz(route)':>11s} {'seconds':>8s}")
    for spec in specs:
        start = time.perf_counter()
        topo = preset(spec)
        elapsed = time.perf_counter() - start
        print(f"{spec:48s} {topo.num_gpus:6d} {topo.num_nodes:6d} {topo.num_links:6d} "
              f"{topo.route_matrix.nnz:11d} {elapsed:8.3f}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(DEFAULT_SPECS))
