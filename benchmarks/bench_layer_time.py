"""``layer-time``'s fast path against the project's numpy EPLB, in one run: time per call, balance and the
modelled serving step.

Run: ``python benchmarks/bench_layer_time.py``.  Loads of the bundled DeepSeek-V3 trace (58 x 256,
in-sample: both placements are fitted to these loads), 32 GPUs on 4 nodes, 8 groups, 256 and 288 slots.
Prints the best of ``--repeat`` calls of each, max GPU load over the mean (even split over replicas), and
the step time of the serving-step model under vLLM's and SGLang's rules with DeepEP on ``fat-tree:4x8``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import placement
from placement.baselines.eplb import rebalance_experts
from placement.formulations.layer_time import rebalance
from placement.placement import Placement
from placement.stats import TraceStats

ROOT = Path(__file__).resolve().parents[1]


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def balance(phy2log: np.ndarray, load: np.ndarray, gpus: int) -> tuple[float, float]:
    L, P = phy2log.shape
    count = np.stack([np.bincount(phy2log[lay], minlength=load.shape[1]) for lay in range(L)])
    share = np.take_along_axis(load / np.maximum(count, 1), phy2log, axis=1).reshape(L, gpus, P // gpus).sum(axis=2)
    ratio = share.max(axis=1) / share.mean(axis=1)
    return float(np.median(ratio)), float(ratio.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    trace = placement.load_trace(ROOT / "data" / "traces" / "deepseek-v3.npz")
    load = TraceStats(trace).load.astype(np.float64)
    topo = "fat-tree:4x8"
    print(f"{'slots':>6} {'method':<11}{'ms/call':>9}{'max/mean med':>14}{'worst':>8}{'vllm ms':>9}{'sglang ms':>10}")
    for slots in (256, 288):
        rows = {}
        for name, fn in (("eplb", lambda s=slots: rebalance_experts(load, s, 8, 4, 32)),
                         ("layer-time", lambda s=slots: rebalance(load, s, 8, 4, 32))):
            seconds = best_time(fn, args.repeat)
            out = fn()
            phy2log = out.phy2log if hasattr(out, "phy2log") else out[0]
            p = Placement(np.asarray(phy2log).reshape(58, 32, slots // 32), num_experts=256)
            steps = [placement.evaluate(p, trace, topo, replica=r, transport="deepep", dispatch_dtype="fp8").step_time
                     for r in ("vllm", "sglang-static")]
            med, worst = balance(np.asarray(phy2log), load, 32)
            rows[name] = (seconds, med, worst, *steps)
            print(f"{slots:>6} {name:<11}{seconds * 1e3:>9.1f}{med:>14.4f}{worst:>8.4f}{steps[0] * 1e3:>9.3f}"
                  f"{steps[1] * 1e3:>10.3f}")
        a, b = rows["layer-time"], rows["eplb"]
        print(f"{slots:>6} ratio      {a[0] / b[0]:>9.2f}{a[1] / b[1]:>14.4f}{a[2] / b[2]:>8.4f}{a[3] / b[3]:>9.4f}"
              f"{a[4] / b[4]:>10.4f}")


if __name__ == "__main__":
    main()
