"""Throughput of the trace statistics (placement.stats.TraceStats) on one thread.

Run: ``python benchmarks/bench_stats.py [--tokens N] [--model NAME]`` (default: 200k tokens of
synthetic DeepSeek-V3, 58 MoE layers, top-8 of 256 experts, 92.8 M selections).  A selection is
one (token, layer, top-k slot) entry of the trace, so a trace holds ``tokens * layers * k`` of
them; each statistic's rate is selections / CPU seconds (``time.process_time``, so it holds on a
shared machine better than wall time).  It times ``load``, ``load_by_origin``, ``transitions``
(consecutive-layer pairs: all ``k * k`` pairs of each token at each layer boundary, i.e. ``k``
pair increments per selection) and ``coactivation`` (within-layer pairs), all counted by
:mod:`placement.trace.counting`.

Target: every statistic, transitions included, at >= 50 M selections/s (CPU time).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

from placement.stats import TraceStats  # noqa: E402
from placement.trace.synthesize import synthesize  # noqa: E402


def _measure(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--model", default="deepseek-v3")
    args = parser.parse_args()
    trace = synthesize(args.model, args.tokens, seed=0, num_ranks=32, weights=False, workers=1)
    n, L, k = trace.experts.shape
    selections = n * L * k
    print(f"{args.model}: {n} tokens x {L} layers x top-{k} = {selections / 1e6:.1f} M selections, "
          "one thread")
    print(f"{'statistic':<16}{'wall s':>9}{'cpu s':>9}{'M sel/s (cpu)':>15}")
    for name in ("load", "load_by_origin", "transitions", "coactivation"):
        stats = TraceStats(trace)  # fresh: the properties are cached
        wall, cpu = _measure(lambda s=stats, a=name: getattr(s, a))
        print(f"{name:<16}{wall:>9.2f}{cpu:>9.2f}{selections / cpu / 1e6:>15.1f}")


if __name__ == "__main__":
    main()
