"""Time to generate 1 M tokens of DeepSeek-V3 (58 MoE layers, top-8): issue 2 asks for seconds.

Run: ``python benchmarks/bench_synthesize.py [--tokens N] [--workers W] [--no-weights]``.
Reports the wall and CPU time of :func:`synthesize` (which ends with the Trace validator),
the validator's own share (re-run on the result), and the peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import time

from placement.trace import Trace
from placement.trace.synthesize import synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--model", default="deepseek-v3")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--no-weights", action="store_true")
    args = parser.parse_args()
    wall, cpu = time.perf_counter(), time.process_time()
    trace = synthesize(args.model, args.tokens, seed=0, weights=not args.no_weights, workers=args.workers)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n, L, k = trace.experts.shape
    v_wall, v_cpu = time.perf_counter(), time.process_time()
    Trace.from_tokens(trace.model, trace.experts, weights=trace.weights)
    v_wall, v_cpu = time.perf_counter() - v_wall, time.process_time() - v_cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"{args.model}: {n} tokens x {L} layers x top-{k}, weights={trace.weights is not None}, "
          f"workers={args.workers or 'auto'}")
    print(f"synthesize: {wall:.1f} s wall, {cpu:.1f} s CPU (all threads); of which the Trace validator "
          f"~{v_wall:.1f} s wall, {v_cpu:.1f} s CPU; generation alone ~{wall - v_wall:.1f} s wall, "
          f"{cpu - v_cpu:.1f} s CPU; peak RSS {peak:.2f} GiB (includes a second validation)")


if __name__ == "__main__":
    main()
