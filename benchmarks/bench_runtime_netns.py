"""Time the MoE all-to-all of two placements on an emulated cluster (network namespaces + tc).

Each rank runs in its own network namespace with one veth into its server's bridge; every
server bridge joins a core bridge through a veth pair shaped on both ends with ``tc netem``
(``--rate-mbit`` and ``--delay-ms`` per direction), so traffic between "servers" is slow and
traffic inside one is not.  Gloo runs across the namespaces.  For a contiguous and a
hop-optimal placement (:func:`placement_runtime.testing.hop_optimal_placement`) the ranks
replay the trace's dispatch and combine payloads (the hidden-state ``all_to_all_single`` of
every layer, the rows the runtime would send) and time them; the script prints the measured
time ratio next to the evaluator's modelled ``alltoall_time`` ratio on a topology describing
the emulation (server bridge = switch, uplink = ``--rate-mbit`` with ``--delay-ms``).

Needs root and iproute2 (``apt-get install -y iproute2``) with the netem qdisc; not run in CI.
The namespaces, bridges and veths are deleted in a ``finally`` block, also on failure or Ctrl-C.

Run: ``sudo python benchmarks/bench_runtime_netns.py [--servers 2 --gpus 2 --rate-mbit 200 --delay-ms 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PREFIX = "prb"  # every interface and namespace this script creates starts with it
SUBNET = "10.77.0"
PORT = 29581


# ------------------------------------------------------------------------------------------ network
def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def _shape(dev: str, rate_mbit: float, delay_ms: float) -> float:
    """Shape ``dev``'s egress; returns the delay applied (0 without netem: tbf limits the rate only)."""
    r = _sh("tc", "qdisc", "add", "dev", dev, "root", "netem", "rate", f"{rate_mbit}mbit", "delay",
            f"{delay_ms}ms", "limit", "100000", check=False)
    if r.returncode == 0:
        return delay_ms
    burst = max(64_000, int(rate_mbit * 1e6 / 8 / 250))
    _sh("tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst),
        "latency", "2000ms")
    return 0.0


def _server_of(rank: int, gpus: int) -> int:
    return rank // gpus


def setup_network(servers: int, gpus: int, rate_mbit: float, delay_ms: float,
                  created: list[tuple[str, str]]) -> float:
    """Create the namespaces, bridges and shaped uplinks; record each object in ``created``.

    Returns the one-way delay per uplink actually applied (see :func:`_shape`).
    """
    applied = delay_ms
    core = f"{PREFIX}-core"
    _sh("ip", "link", "add", core, "type", "bridge")
    created.append(("link", core))
    _sh("ip", "link", "set", core, "up")
    for s in range(servers):
        br, a, b = f"{PREFIX}-s{s}", f"{PREFIX}-u{s}a", f"{PREFIX}-u{s}b"
        _sh("ip", "link", "add", br, "type", "bridge")
        created.append(("link", br))
        _sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        created.append(("link", a))
        _sh("ip", "link", "set", a, "master", br)
        _sh("ip", "link", "set", b, "master", core)
        for dev in (br, a, b):
            _sh("ip", "link", "set", dev, "up")
        for dev in (a, b):  # shape both directions of the uplink
            applied = min(applied, _shape(dev, rate_mbit, delay_ms))
    for r in range(servers * gpus):
        ns, host = f"{PREFIX}-ns{r}", f"{PREFIX}-v{r}"
        _sh("ip", "netns", "add", ns)
        created.append(("netns", ns))
        _sh("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
        created.append(("link", host))
        _sh("ip", "link", "set", host, "master", f"{PREFIX}-s{_server_of(r, gpus)}")
        _sh("ip", "link", "set", host, "up")
        _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{SUBNET}.{r + 1}/24", "dev", "eth0")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    return applied


def cleanup_network(created: list[tuple[str, str]]) -> list[str]:
    """Delete everything in ``created`` (newest first); returns what could not be deleted."""
    left = []
    for kind, name in reversed(created):
        if kind == "netns":
            r = _sh("ip", "netns", "del", name, check=False)
        else:
            if _sh("ip", "link", "show", name, check=False).returncode != 0:
                continue  # went away with its namespace or its peer
            r = _sh("ip", "link", "del", name, check=False)
        if r.returncode != 0:
            left.append(f"{kind} {name}: {r.stderr.strip()}")
    created.clear()
    return left


def emulated_topology(servers: int, gpus: int, rate_mbit: float, delay_ms: float, intra_GBps: float):
    """The emulation as a :class:`placement.topology.Topology` (for the evaluator's time model)."""
    import networkx as nx

    from placement.topology import Topology

    g = nx.Graph()
    g.add_node("core", kind="switch")
    for s in range(servers):
        br = f"s{s}.br"
        g.add_node(br, kind="switch", server=f"s{s}")
        g.add_edge(br, "core", bandwidth=rate_mbit * 1e6 / 8, latency=delay_ms * 1e-3, tier="nic")
        for j in range(gpus):
            gpu = f"s{s}.gpu{j}"
            g.add_node(gpu, kind="gpu", server=f"s{s}")
            g.add_edge(gpu, br, bandwidth=intra_GBps * 1e9, latency=20e-6, tier="nvlink")
    return Topology.from_graph(g, name=f"netns:{servers}x{gpus}")


# ------------------------------------------------------------------------------------------ ranks
def worker(directory: str) -> int:
    """One rank, inside its namespace: time the payload all-to-alls of each placement."""
    import torch
    import torch.distributed as dist

    from placement_runtime.plan import Router, plan_dispatch, token_ranks

    d = Path(directory)
    job = pickle.loads((d / "job.pkl").read_bytes())
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    from datetime import timedelta

    dist.init_process_group("gloo", init_method=f"tcp://{SUBNET}.1:{PORT}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=job["timeout"]))
    try:
        trace, H = job["trace"], job["hidden_size"]
        mine = np.nonzero(token_ranks(trace, world) == rank)[0]
        out = {}
        for name, placement in job["placements"].items():
            router = Router.build(placement, job["topology"])  # the evaluator's nearest rule
            layers = []
            for layer in range(trace.num_layers):
                ex = trace.experts[mine, layer].astype(np.int64)
                dest, _ = router.route(layer, ex, np.full(ex.shape[0], rank))
                plan = plan_dispatch(ex, np.ones(ex.shape), dest, world, job["dedup"])
                send = plan.send_counts
                recv = torch.empty(world, dtype=torch.int64)
                dist.all_to_all_single(recv, torch.from_numpy(send))
                s, r = send.tolist(), recv.tolist()
                layers.append((torch.randn(sum(s), H), torch.empty(sum(r), H), s, r))

            def step(layers=layers):
                for x_send, x_recv, s, r in layers:  # dispatch, then combine (the same rows back)
                    dist.all_to_all_single(x_recv, x_send, output_split_sizes=r, input_split_sizes=s)
                    dist.all_to_all_single(x_send, x_recv, output_split_sizes=s, input_split_sizes=r)

            step()  # warm-up: connections, buffers
            times = []
            for _ in range(job["repeats"]):
                dist.barrier()
                t0 = time.perf_counter()
                step()
                dist.barrier()
                t = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                times.append(float(t))
            out[name] = times
        if rank == 0:
            (d / "result.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()
    return 0


def run(args: argparse.Namespace) -> int:
    from placement import evaluate
    from placement.baselines.simple import contiguous
    from placement.trace import load_trace
    from placement_runtime.testing import affinity_trace, hop_optimal_placement

    if os.geteuid() != 0:
        print("needs root (network namespaces and tc)", file=sys.stderr)
        return 2
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            print(f"'{tool}' not found; install iproute2 (apt-get install -y iproute2)", file=sys.stderr)
            return 2
    S, g = args.servers, args.gpus
    W = S * g
    if args.trace:
        trace = load_trace(args.trace)
        if args.tokens:
            trace = trace.head(args.tokens)
    else:
        trace = affinity_trace(args.tokens or 512, args.layers, args.experts, args.top_k, W, seed=args.seed)
    created: list[tuple[str, str]] = []
    procs: list[subprocess.Popen] = []
    tmp = tempfile.mkdtemp(prefix="placement-netns-")
    try:
        delay = setup_network(S, g, args.rate_mbit, args.delay_ms, created)
        if delay != args.delay_ms:
            print("note: the netem qdisc is missing (no sch_netem); uplinks are rate-limited with tbf and "
                  "have no added delay", file=sys.stderr)
        topo = emulated_topology(S, g, args.rate_mbit, delay, args.intra_GBps)
        placements = {"contiguous": contiguous(trace.num_layers, trace.num_experts, W),
                      "hop_optimal": hop_optimal_placement(trace, topo)}
        modelled, cross = {}, {}
        for name, p in placements.items():
            m = evaluate(p, trace, topo, dedup=args.dedup, origins="round_robin",
                         hidden_size=args.hidden_size, dtype="fp32")
            modelled[name] = m.alltoall_time
            cross[name] = m.tier_bytes.get("nic", 0.0) / 2  # each cross-server byte crosses two uplinks
        (Path(tmp) / "job.pkl").write_bytes(pickle.dumps({
            "trace": trace, "topology": topo, "placements": placements, "hidden_size": args.hidden_size,
            "dedup": args.dedup, "repeats": args.repeats, "timeout": args.timeout}))
        for r in range(W):
            env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(W), GLOO_SOCKET_IFNAME="eth0",
                       OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-ns{r}", sys.executable,
                                           os.path.abspath(__file__), "--worker", tmp], env=env))
        deadline = time.monotonic() + args.timeout
        while any(p.poll() is None for p in procs):
            bad = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if bad or time.monotonic() > deadline:
                raise RuntimeError(f"rank(s) {bad} failed" if bad else f"timed out after {args.timeout} s")
            time.sleep(0.1)
        if any(p.returncode for p in procs):
            raise RuntimeError(f"ranks exited with {[p.returncode for p in procs]}")
        measured = json.loads((Path(tmp) / "result.json").read_text())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        left = cleanup_network(created)
        shutil.rmtree(tmp, ignore_errors=True)
        if left:
            print("could not delete: " + "; ".join(left), file=sys.stderr)
    med = {k: float(np.median(v)) for k, v in measured.items()}
    print(f"emulated cluster: {S} servers x {g} GPUs, uplinks {args.rate_mbit:g} Mbit/s + "
          f"{delay:g} ms each way; {trace.num_tokens} tokens x {trace.num_layers} layers x "
          f"top-{trace.top_k} of {trace.num_experts} experts, hidden {args.hidden_size} fp32, "
          f"dedup={args.dedup}, {args.repeats} repeats (median)")
    print(f"{'placement':<12} {'cross-server MB':>15} {'modelled s':>11} {'measured s':>11}")
    for name in placements:
        print(f"{name:<12} {cross[name] / 1e6:>15.2f} {modelled[name]:>11.3f} {med[name]:>11.3f}")
    print(f"ratio hop_optimal/contiguous: modelled {modelled['hop_optimal'] / modelled['contiguous']:.3f}, "
          f"measured {med['hop_optimal'] / med['contiguous']:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--servers", type=int, default=2)
    p.add_argument("--gpus", type=int, default=2, help="ranks per emulated server")
    p.add_argument("--rate-mbit", type=float, default=200.0, help="inter-server bandwidth per direction")
    p.add_argument("--delay-ms", type=float, default=1.0, help="one-way delay per uplink")
    p.add_argument("--intra-GBps", type=float, default=2.0, help="veth bandwidth assumed by the model")
    p.add_argument("--trace", help="trace file (default: a synthetic affinity trace)")
    p.add_argument("--tokens", type=int, default=None)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--hidden-size", type=int, default=1024)
    p.add_argument("--dedup", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
