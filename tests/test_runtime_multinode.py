"""The multi-node path: two torchrun launchers on this machine act as two nodes of 2 ranks each.

Each launcher is ``torchrun --nnodes 2 --nproc-per-node 2 --node-rank R --master-addr 127.0.0.1
--master-port P`` (static rendezvous on loopback, run as ``python -m torch.distributed.run``, which is
what the ``torchrun`` script runs, so the ranks use this interpreter) over the CLI's torchrun code path
(``python -m placement_runtime check``, Gloo).  The placement has experts on both "nodes" and the
transport is DeepEP normal mode, so the RDMA leg really goes from one launcher's ranks to the other's.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from placement.baselines.simple import contiguous  # noqa: E402
from placement.trace import save_trace  # noqa: E402
from placement_runtime.testing import affinity_trace, with_replicas  # noqa: E402

pytestmark = [pytest.mark.runtime, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 90.0  # seconds for both launchers together; ~10-15 s on 2 shared cores


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(procs: list[subprocess.Popen]) -> None:
    """End the launchers this test started (each leads its own process group, with its ranks)."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_two_torchrun_nodes_replay_and_match(tmp_path):
    if importlib.util.find_spec("torch.distributed.run") is None:
        pytest.skip("torchrun (torch.distributed.run) is not available in this torch build")
    trace = affinity_trace(32, 2, 8, 2, 4, seed=3)
    save_trace(trace, tmp_path / "t.npz")
    # experts 2g, 2g+1 on GPU g, plus expert 0 on GPU 1 and expert 4 on GPU 3: both nodes hold experts
    with_replicas(contiguous(2, 8, 4), {1: 0, 3: 4}).save(tmp_path / "p.json")
    port = _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    procs: list[subprocess.Popen] = []
    outs = []
    t0 = time.monotonic()
    try:
        for node in (1, 0):
            out, err = open(tmp_path / f"node{node}.out", "wb"), open(tmp_path / f"node{node}.err", "wb")
            outs.append((out, err))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
                 "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
                 "--max-restarts", "0",
                 "-m", "placement_runtime", "check", "--placement", str(tmp_path / "p.json"),
                 "--trace", str(tmp_path / "t.npz"), "--topology", "fat-tree:2x2", "--backend", "gloo",
                 "--replica", "vllm", "--transport", "deepep", "--hidden-size", "16", "--timeout", "60"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=tmp_path, start_new_session=True))
        while any(p.poll() is None for p in procs) and time.monotonic() - t0 < DEADLINE:
            time.sleep(0.1)
        timed_out = any(p.poll() is None for p in procs)
    finally:
        _stop(procs)
        for out, err in outs:
            out.close()
            err.close()
    elapsed = time.monotonic() - t0
    text = {n: (tmp_path / f"node{n}.out").read_text() + (tmp_path / f"node{n}.err").read_text() for n in (0, 1)}
    assert not timed_out, f"the launchers did not finish within {DEADLINE:g} s:\n{text[0]}\n{text[1]}"
    assert [p.returncode for p in procs] == [0, 0], f"{text[0]}\n---\n{text[1]}"
    report = (tmp_path / "node0.out").read_text()
    assert "placement_runtime check: 4 ranks (gloo)" in report
    assert "launcher: 2 node(s), ranks [[0, 1], [2, 3]] = the topology's servers" in report
    assert " vllm " in report and " deepep " in report and " match " in report
    assert "result: MATCH" in report, report
    assert (tmp_path / "node1.out").read_text() == ""  # only rank 0 (on node 0) prints
    assert elapsed < 60, f"{elapsed:.1f} s"
