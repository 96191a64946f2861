"""Time the bulk MILP builder on a model with ~1 M binary columns and ~1 M nonzeros.

The model is the assignment core of an expert placement: ``x[layer, expert, gpu]`` binary
(16 x 256 x 256 = 1,048,576 columns) with one "each expert of each layer lives on exactly one
GPU" row per (layer, expert) (4,096 rows x 256 nonzeros = 1,048,576 nonzeros). A second line adds
the per-(layer, GPU) capacity rows (another 1,048,576 nonzeros). Target: under 2 s for the first.

Run: ``python benchmarks/bench_milp_build.py [--repeat 3] [--highs]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from placement.milp import MilpBuilder


def build(layers: int, experts: int, gpus: int, capacity: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    cost = rng.random((layers, experts, gpus))
    b = MilpBuilder(name="bench")
    x = b.add_block("x", (layers, experts, gpus), ("layer", "expert", "gpu"), integer=True, upper=1,
                    cost=cost)
    b.add_row_sums("assign", x.reshape(layers * experts, gpus), lower=1, upper=1)
    if capacity:
        slots = experts // gpus + 1
        b.add_row_sums("capacity", x.transpose(0, 2, 1).reshape(layers * gpus, experts), upper=slots)
    return b.build()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported")
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--experts", type=int, default=256)
    parser.add_argument("--gpus", type=int, default=256)
    parser.add_argument("--highs", action="store_true", help="also time the one-call transfer to HiGHS")
    args = parser.parse_args()
    for capacity in (False, True):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            model = build(args.layers, args.experts, args.gpus, capacity)
            times.append(time.perf_counter() - t0)
        label = "assign + capacity rows" if capacity else "assign rows"
        print(f"{label:<22}: {model.num_vars:>9,} binary columns, {model.num_rows:>6,} rows, "
              f"{model.nnz:>9,} nonzeros: build {min(times):.3f} s (best of {args.repeat})")
    if args.highs:
        from placement.backends._highs import load_into_highs, new_highs

        t0 = time.perf_counter()
        load_into_highs(new_highs(), model)
        print(f"{'HiGHS passModel':<22}: {time.perf_counter() - t0:.3f} s for the last model")


if __name__ == "__main__":
    main()
