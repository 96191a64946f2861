"""Time :func:`placement.baselines.eplb.rebalance_experts` and compare its two modes.

Run ``python benchmarks/bench_eplb.py`` (``--repeat N`` for another number of timed runs).
Prints, per configuration and mode, the median wall time, then the load that each mode leaves
on the GPUs of a synthetic DeepSeek-shaped load (58 MoE layers x 256 experts, 8 groups).

DeepSeek-R1 has 256 routed experts per layer.  "32 redundant experts on 8 nodes x 8 GPUs" does not
divide (288 slots over 64 GPUs), so the R1 rows use DeepSeek-V3's prefill unit (4 nodes x 8 GPUs,
32 redundant experts, 9 slots per GPU) and 8 x 8 GPUs with 64 redundant experts (5 per GPU), each
under the hierarchical policy and under the global one.

Load model: an expert's load splits evenly over its replicas; ``peak/mean`` is a layer's largest
GPU load over its mean GPU load, averaged over layers; ``co-located`` counts slots holding an
expert its GPU already holds.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

from placement.baselines.eplb import EplbResult, rebalance_experts

README_WEIGHT = np.array(
    [
        [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
        [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
    ]
)

# name, (num_replicas, num_groups, num_nodes, num_gpus)
CONFIGS = [
    ("R1 prefill 4x8 GPUs, 288 slots, hierarchical", (288, 8, 4, 32)),
    ("R1 prefill 4x8 GPUs, 288 slots, global", (288, 1, 1, 32)),
    ("R1 8x8 GPUs, 320 slots, hierarchical", (320, 8, 8, 64)),
    ("R1 8x8 GPUs, 320 slots, global", (320, 1, 1, 64)),
]


def deepseek_shaped_load(seed: int = 0, layers: int = 58, experts: int = 256) -> np.ndarray:
    """``int64 [layers, experts]``: 8192 tokens x top-8 per layer, skewed (Dirichlet(0.3)) routing."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(experts, 0.3), size=layers)
    return np.stack([rng.multinomial(8192 * 8, p) for p in probs])


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def load_stats(weight: np.ndarray, res: EplbResult, num_gpus: int) -> tuple[float, float, int]:
    """(mean over layers of peak GPU load / mean GPU load, mean peak load, co-located slots)."""
    per_slot = np.take_along_axis(weight / res.logcnt, res.phy2log, axis=1)
    loads = per_slot.reshape(weight.shape[0], num_gpus, -1).sum(axis=2)
    slots = np.sort(res.slots(num_gpus), axis=2)
    coloc = int((slots[:, :, 1:] == slots[:, :, :-1]).sum())
    return float((loads.max(1) / loads.mean(1)).mean()), float(loads.max(1).mean()), coloc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per row (median shown)")
    args = parser.parse_args(argv)

    weight = deepseek_shaped_load()
    print(f"{'configuration':48} {'mode':9} {'median':>10} {'peak/mean':>10} {'peak':>9} "
          f"{'co-located':>10}")
    rows = [("EPLB README example (2 x 12)", README_WEIGHT, (16, 4, 2, 8))]
    rows += [(name, weight, cfg) for name, cfg in CONFIGS]
    for name, w, cfg in rows:
        rebalance_experts(w, *cfg)  # warm-up
        for faithful in (True, False):
            run = functools.partial(rebalance_experts, w, *cfg, faithful=faithful)
            secs = median_seconds(run, args.repeat)
            ratio, peak, coloc = load_stats(w, run(), cfg[-1])
            mode = "faithful" if faithful else "default"
            print(f"{name:48} {mode:9} {secs * 1e3:8.2f}ms {ratio:10.4f} {peak:9.1f} {coloc:10d}")


if __name__ == "__main__":
    main()
