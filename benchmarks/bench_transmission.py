"""Time the transmission ILP (arXiv 2508.09229) at DeepSeek-R1 scale and compare its hops with baselines.

Run ``python benchmarks/bench_transmission.py`` (``--server-mip`` adds the slow server-level MIP
through HiGHS; ``--tokens``, ``--seed``, ``--repeat`` change the trace and the timing).

Instances: DeepSeek-R1 (58 MoE layers x 256 routed experts, top-8) on 256 GPUs (32 servers x 8) on a
fat-tree, a sparse (4:1 oversubscribed) fat-tree and a dragonfly (8 groups x 4 routers x 1 server);
DeepSeekMoE-16B (27 x 64 routed + 2 shared, top-6) on 16 and 64 GPUs.  Each from a synthetic trace
(:func:`placement.trace.synthesize.synthesize`) whose tokens start on ``num_ranks = GPUs`` ranks.

Columns
    ``classes``: columns of the aggregated model (GPUs with equal costs merged; exact).
    ``struct_s``: ``transmission-load`` by the structured path (sorting), median of ``--repeat``
    runs, statistics excluded; ``ilp_s``: the same for ``transmission`` (p = k/E).
    ``milp_s``: the class-level MILP through HiGHS; ``lp_srv_s``: the server-level LP through
    HiGHS (integrality checked); ``mip_srv_s``: the server-level MIP (``--server-mip``).
    ``trace_s``: ``transmission-load`` with per-token origins (``origins=trace``, assignment per layer).
    ``gap``: the largest relative gap any path reported (0 = every path proved its optimum).
    ``hops``: the evaluator's expected hop-transmissions per token of ``transmission-load``
    (uniform origins, origin dispatch, no de-duplication); ``*/rr``: hops of each method over
    round-robin's.  ``trace/rr``: ``transmission-load`` with ``origins=trace`` over round-robin,
    both evaluated with the trace's origins.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from placement import evaluate
from placement.api import as_stats, solve
from placement.topology import preset
from placement.trace import Trace
from placement.trace.synthesize import synthesize

R1_TOPOLOGIES = ["fat-tree:32x8", "sparse-fat-tree:32x8",
                 "dragonfly:groups=8,routers_per_group=4,servers_per_router=1,gpus=8"]
MOE16_TOPOLOGIES = {
    16: ["fat-tree:2x8", "sparse-fat-tree:2x8",
         "dragonfly:groups=2,routers_per_group=2,servers_per_router=1,gpus=4"],
    64: ["fat-tree:8x8", "sparse-fat-tree:8x8",
         "dragonfly:groups=4,routers_per_group=2,servers_per_router=1,gpus=8"],
}
BASELINES = ["round_robin", "contiguous", "eplb"]


def timed(repeat: int, fn):
    """(median seconds, last result) of ``repeat`` calls after one warm-up call."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), result


def once(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def row(model: str, stats, spec: str, args) -> dict:
    topo = preset(spec)
    trace = stats.trace
    counts = Trace.from_counts(trace.model, stats.load_by_origin)  # same loads; fast exact evaluation
    out = {"model": model, "topology": spec.split(":")[0], "gpus": topo.num_gpus}
    gaps = []

    struct_s, tl = timed(args.repeat, lambda: solve(stats, topo, method="transmission-load"))
    ilp_s, ilp = timed(args.repeat, lambda: solve(stats, topo, method="transmission"))
    out.update(classes=tl.info["classes"], struct_s=struct_s, ilp_s=ilp_s)
    gaps += [tl.gap, ilp.gap]
    objective = tl.objective

    milp_s, milp = once(lambda: solve(stats, topo, method="transmission-load", solver="milp", time_limit=120))
    lp_s, lp = once(lambda: solve(stats, topo, method="transmission-load", solver="lp", aggregate="server",
                                  time_limit=120))
    out.update(milp_s=milp_s, lp_srv_s=lp_s)
    gaps += [milp.gap, lp.gap]
    for other in (milp, lp):
        assert abs(other.objective - objective) <= 1e-9 * objective, (other.objective, objective)
    if args.server_mip:
        mip_s, mip = once(lambda: solve(stats, topo, method="transmission-load", solver="milp",
                                        aggregate="server", time_limit=300))
        out["mip_srv_s"] = mip_s
        gaps.append(mip.gap)
        assert abs(mip.objective - objective) <= 1e-6 * objective
    trace_s, tr = timed(1, lambda: solve(stats, topo, method="transmission-load", origins="trace"))
    out["trace_s"] = trace_s
    gaps.append(tr.gap)
    out["gap"] = max(g if g is not None else float("inf") for g in gaps)

    hops = {"ILP": evaluate(ilp.placement, counts, topo, origins="uniform").hop_transmissions,
            "ILPLoad": evaluate(tl.placement, counts, topo, origins="uniform").hop_transmissions}
    assert abs(hops["ILPLoad"] - objective) <= 1e-9 * objective
    for name in BASELINES:
        hops[name] = evaluate(solve(stats, topo, method=name).placement, counts, topo,
                              origins="uniform").hop_transmissions
    rr = hops["round_robin"]
    out["hops"] = hops["ILPLoad"]
    for name in ("ILP", "ILPLoad", "contiguous", "eplb"):
        out[f"{name}/rr"] = hops[name] / rr
    rr_trace = evaluate(solve(stats, topo, method="round_robin").placement, counts, topo, origins="trace")
    out["trace/rr"] = evaluate(tr.placement, counts, topo, origins="trace").hop_transmissions / \
        rr_trace.hop_transmissions
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20000, help="tokens per synthetic trace")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of the structured path")
    parser.add_argument("--server-mip", action="store_true", help="also time the server-level MIP (slow)")
    parser.add_argument("--only", choices=["r1", "16b"], help="one model only")
    args = parser.parse_args()

    jobs = []
    if args.only != "16b":
        jobs += [("R1", "deepseek-r1", 256, spec) for spec in R1_TOPOLOGIES]
    if args.only != "r1":
        jobs += [("16B", "deepseekmoe-16b", g, spec)
                 for g, specs in MOE16_TOPOLOGIES.items() for spec in specs]
    traces: dict[tuple[str, int], object] = {}
    rows = []
    for label, model, gpus, spec in jobs:
        if (model, gpus) not in traces:
            stats = as_stats(synthesize(model, args.tokens, seed=args.seed, num_ranks=gpus, weights=False))
            for name in ("load", "probability", "load_by_origin", "origin_counts"):
                getattr(stats, name)  # statistics are computed here, outside every timing
            traces[model, gpus] = stats
        rows.append(row(label, traces[model, gpus], spec, args))
        print(_format([rows[-1]], header=len(rows) == 1), flush=True)


COLUMNS = [("model", "{:<5}"), ("topology", "{:<15}"), ("gpus", "{:>4}"), ("classes", "{:>7}"),
           ("struct_s", "{:>8.4f}"), ("ilp_s", "{:>7.4f}"), ("milp_s", "{:>7.2f}"), ("lp_srv_s", "{:>8.2f}"),
           ("mip_srv_s", "{:>9.2f}"), ("trace_s", "{:>7.3f}"), ("gap", "{:>7.1e}"), ("hops", "{:>8.1f}"),
           ("ILP/rr", "{:>7.4f}"), ("ILPLoad/rr", "{:>10.4f}"), ("contiguous/rr", "{:>13.4f}"),
           ("eplb/rr", "{:>7.4f}"), ("trace/rr", "{:>8.4f}")]


def _format(rows: list[dict], header: bool) -> str:
    cols = [(c, f) for c, f in COLUMNS if any(c in r for r in rows)]
    lines = []
    if header:
        lines.append(" ".join(f"{c:>{_width(f)}}" if not f.startswith("{:<") else f"{c:<{_width(f)}}"
                              for c, f in cols))
    for r in rows:
        lines.append(" ".join(f.format(r[c]) if c in r else " " * _width(f) for c, f in cols))
    return "\n".join(lines)


def _width(fmt: str) -> int:
    return int("".join(ch for ch in fmt.split(":")[1].split(".")[0] if ch.isdigit()))


if __name__ == "__main__":
    main()
