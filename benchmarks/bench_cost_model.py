"""The serving-step model beside the published figures it should reproduce.

Run: ``python benchmarks/bench_cost_model.py``.  Prints, for each published setting, the model's
prediction, the published figure and their ratio (model / published); docs/cost-model.md quotes the
output and says where the model is within 15 % and where not.

* DeepEP low-latency kernels (README v1 table, H800, CX7 400 Gb/s InfiniBand): 128 tokens per rank,
  hidden 7168, top-8 of 256 experts chosen uniformly at random, FP8 dispatch, BF16 combine, EP8 to
  EP256: dispatch and combine microseconds.
* DeepEP normal kernels (same table): 4096 tokens per rank, top-8 within 4 of 8 groups (node-limited
  routing), intranode EP8 NVLink GB/s and internode EP16-EP64 RDMA GB/s (bytes each GPU sends over the
  tier / phase time).
* DeepGEMM FP8 grouped GEMM (README tables, H800): TFLOPS at the published M, N, K and group counts.

Topologies: ``rail:Sx8`` with the H800's links as the datasheets give them (NVLink 200 GB/s per
direction per GPU, one 50 GB/s NIC per GPU), GPU model ``h800``.
"""

from __future__ import annotations

import argparse

import numpy as np

import placement
from placement.hardware import gpu_preset
from placement.topology import preset
from placement.trace import ModelSpec, Trace

LL_PUBLISHED = {  # EP: (dispatch us, combine us), DeepEP README (2025-06 table)
    8: (77, 114), 16: (118, 195), 32: (155, 273), 64: (173, 314), 128: (192, 369), 256: (194, 360)}
NORMAL_PUBLISHED = {8: (153, 158, "nvlink"), 16: (43, 43, "nic"), 32: (58, 57, "nic"), 64: (51, 50, "nic")}
DEEPGEMM = [  # (groups, M per group, N, K, published TFLOPS, layout)
    (4, 8192, 4096, 7168, 1346, "contiguous"), (4, 8192, 7168, 2048, 1214, "contiguous"),
    (8, 4096, 4096, 7168, 1346, "contiguous"), (8, 4096, 7168, 2048, 1214, "contiguous"),
    (1, 1024, 4096, 7168, 1233, "masked"), (1, 1024, 7168, 2048, 925, "masked"),
    (2, 512, 4096, 7168, 1040, "masked"), (2, 512, 7168, 2048, 916, "masked"),
    (4, 256, 4096, 7168, 932, "masked"), (4, 256, 7168, 2048, 815, "masked")]


def h800_cluster(ep: int):
    servers = max(1, ep // 8)
    return preset(f"rail:servers={servers},gpus={min(8, ep)},nvlink_GBps=200,nic_GBps=50,gpu=h800")


def uniform_trace(ep: int, tokens_per_rank: int, seed: int, groups_limit: int | None) -> Trace:
    rng = np.random.default_rng(seed)
    n = ep * tokens_per_rank
    if groups_limit is None:
        experts = np.argsort(rng.random((n, 256)), axis=1)[:, :8]
    else:  # top-8 within `groups_limit` of the 8 groups of 32 experts (DeepSeek-V3's node-limited routing)
        groups = np.argsort(rng.random((n, 8)), axis=1)[:, :groups_limit]
        pool = (groups[:, :, None] * 32 + np.arange(32)[None, None, :]).reshape(n, -1)
        pick = np.argsort(rng.random(pool.shape), axis=1)[:, :8]
        experts = np.take_along_axis(pool, pick, axis=1)
    model = ModelSpec("deepseek-v3", num_layers=1, num_experts=256, top_k=8, num_groups=8,
                      topk_groups=groups_limit, hidden_size=7168, intermediate_size=2048, weight_dtype="fp8")
    origin = np.repeat(np.arange(ep), tokens_per_rank)
    return Trace.from_tokens(model, experts[:, None, :], origin=origin, num_ranks=ep)


def low_latency(seed: int) -> list[tuple[str, float, float]]:
    rows = []
    for ep, (pub_d, pub_c) in LL_PUBLISHED.items():
        topo = h800_cluster(ep)
        trace = uniform_trace(ep, 128, seed, None)
        p = placement.solve(trace, topo, method="contiguous").placement
        m = placement.evaluate(p, trace, topo, replica="nearest", transport="deepep-ll", tokens_per_gpu=128,
                               dispatch_dtype="fp8", combine_dtype="bf16")
        d, _, c = m.step.phase_time[0]
        rows.append((f"DeepEP LL EP{ep} dispatch (us)", d * 1e6, pub_d))
        rows.append((f"DeepEP LL EP{ep} combine (us)", c * 1e6, pub_c))
    return rows


def normal(seed: int) -> list[tuple[str, float, float]]:
    rows = []
    for ep, (pub_d, pub_c, tier) in NORMAL_PUBLISHED.items():
        topo = h800_cluster(ep)
        trace = uniform_trace(ep, 4096, seed, 4)
        p = placement.solve(trace, topo, method="contiguous").placement
        m = placement.evaluate(p, trace, topo, replica="nearest", transport="deepep", tokens_per_gpu=4096,
                               dispatch_dtype="fp8", combine_dtype="bf16")
        d, _, c = m.step.phase_time[0]
        # bytes each GPU sends over the tier per phase: the tier's bytes (both phases) split by dtype share
        tier_bytes = m.step.tier_bytes[tier]
        share_d = 7392 / (7392 + 14336)
        per_gpu_d = tier_bytes * share_d / ep / (2 if tier == "nic" else 1)  # a NIC byte crosses two NIC links
        per_gpu_c = tier_bytes * (1 - share_d) / ep / (2 if tier == "nic" else 1)
        if tier == "nvlink":  # an NVLink byte crosses the GPU -> NVSwitch and NVSwitch -> GPU links
            per_gpu_d, per_gpu_c = per_gpu_d / 2, per_gpu_c / 2
        rows.append((f"DeepEP normal EP{ep} dispatch ({tier} GB/s)", per_gpu_d / d / 1e9, pub_d))
        rows.append((f"DeepEP normal EP{ep} combine ({tier} GB/s)", per_gpu_c / c / 1e9, pub_c))
    return rows


def deepgemm() -> list[tuple[str, float, float]]:
    gpu = gpu_preset("h800")
    rows = []
    for groups, m, n, k, pub, layout in DEEPGEMM:
        flops = 2.0 * m * n * k
        read = n * k / gpu.hbm_bandwidth  # fp8 weights, one byte each
        seconds = max(read, flops / gpu.achieved_flops(m, "fp8"))
        rows.append((f"DeepGEMM {layout} {groups}x M={m} N={n} K={k} (TFLOPS)", flops / seconds / 1e12, pub))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = low_latency(args.seed) + normal(args.seed) + deepgemm()
    print(f"{'setting':<52}{'model':>10}{'published':>11}{'ratio':>8}  within 15%")
    for name, model, pub in rows:
        ratio = model / pub
        print(f"{name:<52}{model:>10.1f}{pub:>11.1f}{ratio:>8.2f}  {'yes' if abs(ratio - 1) <= 0.15 else 'no'}")


if __name__ == "__main__":
    main()
