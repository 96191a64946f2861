"""``layer-time`` (the evaluator-scored search) against the project's other methods, in one run.

Run: ``python benchmarks/bench_layer_time_search.py [--section compare|balance|deepep|migration|shift ...]``.

Every figure is the serving-step model's (``placement.evaluate(...).step_time``) on 32 GPUs with fp8
dispatch and bf16 combine, printed as a ratio to EPLB's (hierarchical when the groups divide over the
nodes, else global; same slots: one extra replica per GPU) measured in the same run.  The bundled traces
are small (2048 DeepSeek-V3 tokens), so unless a section says otherwise the figures are **in-sample**:
each placement is fitted to the trace it is scored on.  ``shift`` scores out of sample.

Sections
    ``compare``  step time of each method / EPLB per trace, preset and replica rule (NCCL transport), and
                 max GPU load / EPLB's (mean over layers of the busiest GPU, even split over replicas), for
                 layer-time by default and with ``max_load=eplb``.  alltoall-time runs its heuristic for half
                 the time limit; ``--slow`` adds transmission-load and exflow.
    ``balance``  no redundant experts: max GPU load / the closed-form lower bound of ``balance`` (mean, the
                 hottest expert with the S - 1 lightest others, the group bound), median and worst layer, for
                 EPLB, layer-time's fast path and the ``balance`` MILP through HiGHS and through CP-SAT (each
                 also reports max load over its solver's proven bound).
    ``deepep``   DeepEP on 4 and 8 nodes: cross-node (NIC tier) bytes and step time / EPLB's.
    ``migration`` a placement fitted to the first half of the trace, re-fitted to the second half with at
                 most B experts per layer moving: step time on the second half / the unchanged placement's.
    ``shift``    fit on the first half, score on the second (out of sample): single fit vs ``windows=2``.
    ``workloads`` synthetic load shift: decode-like vs prefill-like (stronger skew) DeepSeek-V3 workloads,
                 fitted on one or both (``also=``), scored on fresh tokens of each.
    ``domains``  real load shift (per-domain expert counts of OLMoE and Mixtral from allenai/OLMoE): fit on
                 one domain, or robustly on the four others (``also=``), score on the held-out domain.
    ``exact``    the exact path (``solver=milp``): on Mixtral x 8 GPUs (full model) its step time / its start's
                 (the search's placement) and its proven gap; on DeepSeek-R1's shape at 64 and 256 GPUs the
                 server bound's gap, with the cut bound and EPLB from the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import placement
from placement.api import solve
from placement.search.method import window_traces
from placement.stats import TraceStats
from placement.topology import preset

TRACES = {"deepseek-v3": "deepseek-v3", "qwen3": "qwen3-235b-a22b", "deepseekmoe": "deepseekmoe-16b"}
PRESETS = ("fat-tree:4x8", "sparse-fat-tree:4x8", "rail:4x8",
           "dragonfly:groups=2,routers_per_group=2,servers_per_router=1,gpus=8", "nvl72:racks=2,gpus=16")
WIRE = {"dispatch_dtype": "fp8", "combine_dtype": "bf16"}


def trace_of(name: str) -> placement.Trace:
    from placement import data

    return data.trace(TRACES[name])


def step(p, trace, topo, **serving) -> float:
    return placement.evaluate(p, trace, topo, **serving, **WIRE).step_time


def max_load(p, trace, topo) -> float:
    """Mean over layers of the largest GPU load, every replica serving an even share (EPLB's model)."""
    from placement.search.method import max_gpu_load

    w = TraceStats(trace).load.astype(float)
    return float(max_gpu_load(p.slots.astype(np.int64), w).mean())


def compare(args) -> None:
    methods = ["contiguous", "round_robin", "eplb-global", "eplb", "alltoall-time", "layer-time", "lt max_load=eplb"]
    if args.slow:
        methods[4:4] = ["transmission-load", "exflow"]
    print(f"{'trace':<12}{'preset':<22}{'rule':<14}" + "".join(f"{m[:12]:>13}" for m in methods) + f"{'load/eplb':>10}"
          + f"{'(capped)':>10}")
    worst, capped = [], []
    for tname in args.traces:
        trace = trace_of(tname)
        for topo in args.presets:
            for rule in ("vllm", "sglang-static"):
                serving = {"replica": rule, "transport": "nccl"}
                times, loads = {}, {}
                for m in methods:
                    if m == "eplb-global":
                        p = solve(trace, topo, "eplb", num_groups=1).placement
                    elif m == "layer-time":
                        p = solve(trace, topo, "layer-time", time_limit=args.time_limit, **serving, **WIRE).placement
                    elif m == "lt max_load=eplb":
                        p = solve(trace, topo, "layer-time", time_limit=args.time_limit, max_load="eplb", **serving,
                                  **WIRE).placement
                    elif m == "alltoall-time":
                        p = solve(trace, topo, m, solver="heuristic", time_limit=args.time_limit / 2).placement
                    elif m == "exflow":
                        p = solve(trace, topo, m, time_limit=args.time_limit).placement
                    else:
                        p = solve(trace, topo, m).placement
                    times[m] = step(p, trace, topo, **serving)
                    loads[m] = max_load(p, trace, topo)
                others = min(v for k, v in times.items() if not k.startswith(("layer-time", "lt ")))
                worst.append(times["layer-time"] / others)
                capped.append(times["lt max_load=eplb"] / others)
                short = topo.split(":")[0] if "=" in topo else topo
                print(f"{tname:<12}{short:<22}{rule:<14}" + "".join(f"{times[m] / times['eplb']:>13.4f}"
                                                                      for m in methods)
                      + f"{loads['layer-time'] / loads['eplb']:>10.3f}"
                      + f"{loads['lt max_load=eplb'] / loads['eplb']:>10.3f}", flush=True)
    for label, values in (("layer-time", worst), ("layer-time max_load=eplb", capped)):
        print(f"{label} / best other method: median {np.median(values):.4f}, worst {max(values):.4f} "
              f"({sum(w < 1 for w in values)} of {len(values)} below every other method)")


def balance(args) -> None:
    from placement.formulations.balance import cardinality_bound
    from placement.search.method import max_gpu_load

    print(f"{'trace':<12}{'gpus':>5} {'method':<22}{'median':>9}{'worst':>9}{'  (max GPU load / bound per layer)'}")
    for tname in args.traces:
        trace = trace_of(tname)
        w = TraceStats(trace).load.astype(float)
        for topo in ("fat-tree:4x8", "fat-tree:8x8"):
            G = preset(topo).num_gpus
            if w.shape[1] % G:
                continue
            S = w.shape[1] // G
            ones = np.ones(w.shape[1], dtype=np.int64)
            bound = np.array([cardinality_bound(row, ones, G, S) for row in w])  # closed form, no solver
            runs = (("eplb", "eplb", {"redundant": 0}), ("layer-time fast", "layer-time",
                                                        {"redundant": 0, "solver": "fast"}),
                    ("balance (HiGHS)", "balance", {"time_limit": args.balance_time, "rel_gap": 1e-6}),
                    ("balance (CP-SAT)", "balance", {"time_limit": args.balance_time, "rel_gap": 1e-6,
                                                     "backend": "cpsat"}))
            for label, m, opts in runs:
                sol = solve(trace, topo, m, **opts)
                r = max_gpu_load(sol.placement.slots.astype(np.int64), w) / bound
                extra = ""
                if m == "balance":
                    extra = (f"  proven: max load / solver bound median {sol.info['ratio_median']:.4f}, worst "
                             f"{sol.info['ratio_worst']:.4f}, {sol.info['layers_proven']} layers optimal, "
                             f"{sol.wall_time:.0f} s")
                print(f"{tname:<12}{G:>5} {label:<22}{np.median(r):>9.4f}{r.max():>9.4f}{extra}", flush=True)


def exact(args) -> None:
    """The exact path: where the full model fits (Mixtral on 8 GPUs, 30 s), its proven gap and what it gains
    over its start (the search's placement, scored under the same rule); at 64 and 256 GPUs (DeepSeek-R1's shape),
    the search's placement with the server relaxation's bound, against the cut bound and EPLB, within
    ``--exact-time`` seconds."""
    from placement.evaluation import serving_setup
    from placement.search.bounds import step_time_bound
    from placement.trace.synthesize import synthesize

    print(f"{'instance':<56}{'milp/start':>12}{'gap':>8}{'optimal layers':>16}{'time':>8}")
    for model, topo_name, opts in (("mixtral-8x7b", "fat-tree:2x4", {"redundant": 0}),
                                   ("mixtral-8x7b", "fat-tree:2x4", {"replica": "split"}),
                                   ("mixtral-8x7b", "fat-tree:2x4", {"redundant": 0, "transport": "deepep"}),
                                   ("mixtral-8x7b", "fat-tree:2x4", {"replica": "split", "transport": "deepep"})):
        topo = preset(topo_name)
        trace = synthesize(model, 256, num_ranks=topo.num_gpus, seed=0)
        serving = {"tokens_per_step": 128, **opts}
        t0 = time.perf_counter()
        sol = solve(trace, topo, "layer-time", solver="milp", time_limit=30, **serving)
        wall = time.perf_counter() - t0
        label = f"{model} {topo_name} " + ",".join(f"{k}={v}" for k, v in opts.items())
        print(f"{label:<56}{sol.objective / sol.info['exact_start_seconds']:>12.4f}{sol.gap:>8.4f}"
              f"{sol.info['exact_layers_optimal']:>10}/{trace.num_layers:<5}{wall:>8.1f}", flush=True)
    print(f"{'DeepSeek-R1 shape, vLLM':<26}{'GPUs':>5}{'ms':>9}{'/ EPLB':>8}{'bound ms':>10}{'cut ms':>8}"
          f"{'gap':>8}{'time':>8}")
    for G in (64, 256):
        topo = preset(f"fat-tree:{G // 8}x8")
        trace = synthesize("deepseek-v3", 128 * G, num_ranks=G, seed=0)
        t0 = time.perf_counter()
        sol = solve(trace, topo, "layer-time", solver="milp", time_limit=args.exact_time, jobs=0)
        wall = time.perf_counter() - t0
        eplb = solve(trace, topo, "eplb").placement
        ref = placement.evaluate(eplb, trace, topo, replica="vllm").step_time
        setup = serving_setup(trace, topo, replica="vllm", transport="nccl", dedup=False)
        cut = float(step_time_bound(trace, topo, setup, sol.placement.slots_per_gpu).sum())
        print(f"{'':<26}{G:>5}{sol.objective * 1e3:>9.2f}{sol.objective / ref:>8.3f}{sol.bound * 1e3:>10.2f}"
              f"{cut * 1e3:>8.2f}{sol.gap:>8.3f}{wall:>8.1f}", flush=True)


def deepep(args) -> None:
    print(f"{'trace':<12}{'preset':<16}{'nic bytes/eplb':>16}{'step/eplb':>11}{'load/eplb':>11}")
    for tname in args.traces:
        trace = trace_of(tname)
        for topo in ("fat-tree:4x8", "fat-tree:8x8"):
            serving = {"replica": "sglang-static", "transport": "deepep"}
            out = {}
            for m in ("eplb", "layer-time"):
                opts = dict(serving, **WIRE, time_limit=args.time_limit) if m == "layer-time" else {}
                p = solve(trace, topo, m, **opts).placement
                st = placement.evaluate(p, trace, topo, **serving, **WIRE)
                out[m] = (st.step.tier_bytes.get("nic", 0.0), st.step_time, max_load(p, trace, topo))
            e, lt = out["eplb"], out["layer-time"]
            print(f"{tname:<12}{topo:<16}{lt[0] / e[0]:>16.4f}{lt[1] / e[1]:>11.4f}{lt[2] / e[2]:>11.3f}", flush=True)
        if trace.model.num_groups == 8:
            print(f"{'':<12}{'4 nodes':<16}best of the 105 group-to-node pairings / groups (0, 1), (2, 3)..., remote "
                  f"nodes per token: {_best_pairing(trace, 4):.4f}")


def _pairings(items: list[int]):
    """Every way to cut ``items`` into pairs."""
    if not items:
        yield []
        return
    for i in range(1, len(items)):
        for rest in _pairings(items[1:i] + items[i + 1:]):
            yield [(items[0], items[i])] + rest


def _best_pairing(trace, nodes: int) -> float:
    """How much co-activation there is to exploit: with 8 expert groups on 4 nodes (2 each), the least mean
    number of remote nodes a token's groups touch over every pairing of groups to nodes, against the pairing
    (0, 1), (2, 3), ..., mean over layers: how far co-activation alone can cut DeepEP's RDMA sends."""
    ex = trace.experts.astype(np.int64)
    n, L, _ = ex.shape
    group = ex // (trace.num_experts // 8)
    src = (np.arange(n) % (8 * nodes)) // 8  # the sender's node, round-robin senders on 8 GPUs per node
    ratios = []
    for layer in range(L):
        best, ident = np.inf, None
        for pairing in _pairings(list(range(8))):
            node_of = np.zeros(8, dtype=np.int64)
            for m, (a, b) in enumerate(pairing):
                node_of[[a, b]] = m
            touched = np.zeros((n, nodes), dtype=bool)
            touched[np.arange(n)[:, None], node_of[group[:, layer]]] = True
            remote = float((touched.sum(axis=1) - touched[np.arange(n), src]).mean())
            best = min(best, remote)
            if ident is None:
                ident = remote  # the first pairing is (0, 1), (2, 3), ...
        ratios.append(best / ident)
    return float(np.mean(ratios))


def migration(args) -> None:
    serving = {"replica": "vllm", "transport": "nccl"}
    topo = "rail:4x8"
    curves = {}
    for tname in args.traces:
        trace = trace_of(tname)
        first, second = window_traces(trace, 2)
        deployed = solve(first, topo, "eplb").placement
        base = step(deployed, second, topo, **serving)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "current.json"
            deployed.save(path)
            print(f"{tname}: step on the drifted half / unchanged placement, by experts allowed to move per layer")
            points = []
            for budget in (0, 8, 32, 128, -1):
                sol = solve(second, topo, "layer-time", current=str(path), max_moves=budget,
                            time_limit=args.time_limit, **serving, **WIRE)
                label = "all" if budget < 0 else str(budget)
                ratio = step(sol.placement, second, topo, **serving) / base
                points.append((label, sol.info["experts_moved"], ratio))
                print(f"  B={label:>4}: {ratio:.4f}  moved "
                      f"{sol.info['experts_moved']} experts ({sol.info['bytes_moved'] / 1e9:.1f} GB)", flush=True)
            curves[tname] = points
    if args.plot_dir:
        _plot_migration(curves, Path(args.plot_dir) / "migration.png")


def _plot_migration(curves: dict, out: Path) -> None:
    """Step time saved against experts moved, one line per trace, each point labelled by its budget B."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    for name, points in curves.items():
        moved = [m for _, m, _ in points]
        saved = [100 * (1 - r) for _, _, r in points]
        ax.plot(moved, saved, marker="o", label=name)
        span = max(max(moved), 1)
        groups: list[tuple[float, float, list[str]]] = []  # budgets ending at (nearly) one point share a label
        for label, m, y in zip((p[0] for p in points), moved, saved, strict=True):
            near = [g for g in groups if abs(g[0] - m) <= 0.02 * span and abs(g[1] - y) <= 0.05]
            if near:
                near[0][2].append(label)
            else:
                groups.append((m, y, [label]))
        for m, y, names in groups:
            ax.annotate("B=" + ", ".join(names), (m, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("experts moved (all layers)")
    ax.set_ylabel("step time saved vs the deployed placement (%)")
    ax.set_title("Re-fitting a drifted placement under a migration budget (rail:4x8, vLLM)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    print(f"   wrote {out}")


def shift(args) -> None:
    serving = {"replica": "vllm", "transport": "nccl"}
    topo = "rail:4x8"
    print(f"{'trace':<12}{'fit':<22}{'in-sample':>10}{'out-of-sample':>14}  (step / EPLB fitted on the first half)")
    for tname in args.traces:
        trace = trace_of(tname)
        first, second = window_traces(trace, 2)
        eplb = solve(first, topo, "eplb").placement
        ref_in, ref_out = step(eplb, first, topo, **serving), step(eplb, second, topo, **serving)
        for label, opts in (("layer-time", {}), ("layer-time windows=2", {"windows": 2})):
            sol = solve(first, topo, "layer-time", time_limit=args.time_limit, **opts, **serving, **WIRE)
            print(f"{tname:<12}{label:<22}{step(sol.placement, first, topo, **serving) / ref_in:>10.4f}"
                  f"{step(sol.placement, second, topo, **serving) / ref_out:>14.4f}", flush=True)


def workloads(args) -> None:
    """Synthetic load shift between a decode-like and a prefill-like workload of DeepSeek-V3 (stronger skew, as
    longer prompts give), fitted on one or on both, scored on fresh tokens of each (token_seed)."""
    from placement.trace.synthesize import synthesize

    common = {"num_ranks": 32, "weights": False, "seed": 0}
    fit = {"decode": synthesize("deepseek-v3", 2048, **common),
           "prefill": synthesize("deepseek-v3", 2048, skew=1.1, **common)}
    test = {"decode": synthesize("deepseek-v3", 2048, token_seed=1, **common),
            "prefill": synthesize("deepseek-v3", 2048, skew=1.1, token_seed=1, **common)}
    print("fresh tokens of each workload, step time / EPLB fitted on the decode-like trace (out of sample)")
    print(f"{'topology, rule':<28}{'fit':<34}{'decode':>9}{'prefill':>9}{'worst':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prefill.npz"
        placement.save_trace(fit["prefill"], path)
        runs = (("EPLB on decode", None), ("layer-time on decode", {}),
                ("layer-time on both, robust=mean", {"also": str(path), "robust": "mean"}),
                ("layer-time on both, robust=max", {"also": str(path), "robust": "max"}))
        for topo, rule in (("fat-tree:4x8", "vllm"), ("fat-tree:4x8", "sglang-static"), ("rail:4x8", "vllm")):
            serving = {"replica": rule, "transport": "nccl"}
            eplb = solve(fit["decode"], topo, "eplb").placement
            ref = {w: step(eplb, test[w], topo, **serving) for w in test}
            for label, opts in runs:
                p = eplb if opts is None else solve(fit["decode"], topo, "layer-time", time_limit=args.time_limit,
                                                    **opts, **serving, **WIRE).placement
                r = {w: step(p, test[w], topo, **serving) / ref[w] for w in test}
                print(f"{topo + ', ' + rule:<28}{label:<34}{r['decode']:>9.4f}{r['prefill']:>9.4f}"
                      f"{max(r.values()):>8.4f}", flush=True)


def domains(args) -> None:
    """Real load shift: per-domain expert counts of OLMoE (8 GPUs) and Mixtral (4 GPUs), leave one domain out."""
    from placement import data

    doms = ("arxiv", "book", "c4", "github", "wikipedia")
    serving = {"replica": "vllm", "transport": "nccl"}
    print("fit on other domains, score on the held-out one (out of sample); step time / EPLB fitted to one other "
          "domain, median over the held-out domain x fitted domain pairs")
    print(f"{'model':<14}{'topology':<14}{'EPLB 1 domain':>14}{'layer-time 1':>14}{'robust mean':>13}{'robust max':>12}"
          f"{'EPLB max/mean':>15}")
    for model, topo in (("olmoe", "fat-tree:2x4"), ("mixtral-8x7b", "fat-tree:1x4")):
        traces = {d: data.trace(f"domains/{model}-{d}") for d in doms}
        paths = {d: str(data.path(f"domains/{model}-{d}")) for d in doms}
        single_eplb, single_lt, rob_mean, rob_max, imbalance = [], [], [], [], []
        for test in doms:
            others = [d for d in doms if d != test]
            ref = {}
            for fit in others:
                eplb = solve(traces[fit], topo, "eplb").placement
                ref[fit] = step(eplb, traces[test], topo, **serving)
                m = placement.evaluate(eplb, traces[test], topo)
                imbalance.append(float((m.gpu_load.max(axis=1) / m.gpu_load.mean(axis=1)).mean()))
                lt = solve(traces[fit], topo, "layer-time", time_limit=args.time_limit, **serving, **WIRE).placement
                single_eplb.append(1.0)
                single_lt.append(step(lt, traces[test], topo, **serving) / ref[fit])
            for robust, out in (("mean", rob_mean), ("max", rob_max)):
                first, rest = others[0], ",".join(paths[d] for d in others[1:])
                sol = solve(traces[first], topo, "layer-time", also=rest, robust=robust, time_limit=args.time_limit,
                            **serving, **WIRE)
                t = step(sol.placement, traces[test], topo, **serving)
                out.extend(t / ref[f] for f in others)
        print(f"{model:<14}{topo:<14}{np.median(single_eplb):>14.4f}{np.median(single_lt):>14.4f}"
              f"{np.median(rob_mean):>13.4f}{np.median(rob_max):>12.4f}{np.median(imbalance):>15.3f}", flush=True)
        print(f"{'':<28}worst: layer-time 1 {max(single_lt):.4f}, robust mean {max(rob_mean):.4f}, robust max "
              f"{max(rob_max):.4f}", flush=True)


SECTIONS = {"compare": compare, "balance": balance, "deepep": deepep, "migration": migration, "shift": shift,
            "workloads": workloads, "domains": domains, "exact": exact}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--traces", nargs="+", default=list(TRACES), choices=list(TRACES))
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--plot-dir", help="write the migration plot (migration.png) here")
    parser.add_argument("--balance-time", type=float, default=120.0, help="time limit of the balance MILP")
    parser.add_argument("--exact-time", type=float, default=120.0, help="time limit of the exact path")
    parser.add_argument("--slow", action="store_true", help="also transmission-load, alltoall-time, exflow")
    args = parser.parse_args()
    for name in args.section:
        t0 = time.perf_counter()
        print(f"== {name}")
        SECTIONS[name](args)
        print(f"   ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
