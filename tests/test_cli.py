"""The installed ``placement`` script: exit status, stdout, stderr, and no partial output files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from placement import load_placement
from placement.trace import save_trace

SCRIPT = shutil.which("placement")


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    cmd = [SCRIPT, *args] if SCRIPT else [sys.executable, "-m", "placement", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory, random_trace):
    path = tmp_path_factory.mktemp("cli") / "trace.npz"
    save_trace(random_trace(4, 16, 2, 300, ranks=8, seed=0), path)  # 4 layers x 16 experts, top-2, 8 ranks
    return str(path)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("placement ") and r.stderr == ""


def test_solve_prints_summary_and_writes(tmp_path, trace_file):
    out = tmp_path / "p.json"
    r = run("solve", "--trace", trace_file, "--topology", "fat-tree:2x4", "--method", "round_robin", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "hop_transmissions" in r.stdout and "contiguous (baseline)" in r.stdout
    p = load_placement(out)
    assert p.metadata["method"] == "round_robin" and p.slots.shape == (4, 8, 2)
    r2 = run("evaluate", "--placement", str(out), "--trace", trace_file, "--topology", "fat-tree:2x4", "--json")
    assert r2.returncode == 0 and r2.stderr == ""
    assert json.loads(r2.stdout)["origins"] == "trace"


def test_solve_option_and_quiet(tmp_path, trace_file):
    r = run("solve", "--trace", trace_file, "--topology", "fat-tree:2x4", "--method", "random", "--option", "seed=3",
            "--quiet")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""


def test_compare_writes_table(tmp_path, trace_file):
    out = tmp_path / "cmp.csv"
    r = run("compare", "--trace", trace_file, "--topology", "fat-tree:2x4", "--methods", "round_robin,random",
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    import pandas as pd

    frame = pd.read_csv(out, index_col="method")
    assert set(frame.index) == {"round_robin", "random", "contiguous"}
    assert frame.loc["contiguous", "hop_transmissions/ref"] == pytest.approx(1.0)


def test_trace_info_and_topology_show(trace_file):
    r = run("trace", "info", trace_file)
    assert r.returncode == 0 and "tokens" in r.stdout and "300" in r.stdout
    r = run("topology", "show", "fat-tree:2x4", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["gpus"] == 8
    r = run("methods")
    assert r.returncode == 0 and "contiguous" in r.stdout and "round_robin" in r.stdout


def test_trace_synth_token_seed_is_a_held_out_sample(tmp_path):
    """--token-seed keeps --seed's model (expert popularity) and draws other tokens: the file holds exactly
    synthesize(seed=0, token_seed=1), not the --seed 0 tokens and not another seed's model."""
    from placement.trace import load_trace
    from placement.trace.synthesize import synthesize

    args = ["trace", "synth", "--model", "mixtral-8x7b", "--tokens", "300", "--ranks", "8", "--no-weights",
            "--seed", "0"]
    assert run(*args, "--out", str(tmp_path / "fit.npz")).returncode == 0
    r = run(*args, "--token-seed", "1", "--out", str(tmp_path / "held.npz"))
    assert r.returncode == 0, r.stderr
    held, fit = load_trace(tmp_path / "held.npz"), load_trace(tmp_path / "fit.npz")
    want = synthesize("mixtral-8x7b", 300, seed=0, token_seed=1, num_ranks=8, weights=False)
    np.testing.assert_array_equal(held.experts, want.experts)
    np.testing.assert_array_equal(held.origin, want.origin)
    assert not np.array_equal(held.experts, fit.experts)
    np.testing.assert_array_equal(fit.experts, synthesize("mixtral-8x7b", 300, seed=0, num_ranks=8,
                                                          weights=False).experts)


def test_every_command_has_an_example():
    for args in (["--help"], ["solve", "--help"], ["evaluate", "--help"], ["compare", "--help"],
                 ["methods", "--help"], ["trace", "synth", "--help"], ["trace", "info", "--help"],
                 ["topology", "show", "--help"]):
        r = run(*args)
        assert r.returncode == 0 and "examples:" in r.stdout, args


@pytest.mark.parametrize("args,message", [
    (["solve", "--trace", "missing.npz", "--topology", "fat-tree:2x4"], "missing.npz: field '--trace': file not found"),
    (["solve", "--trace", "{trace}", "--topology", "no-such-preset"], "no-such-preset"),
    (["solve", "--trace", "{trace}", "--topology", "fat-tree:2x4", "--method", "random", "--option", "sed=1"],
     "unknown option(s) ['sed'] for method 'random'"),
    (["solve", "--trace", "{trace}", "--topology", "fat-tree:2x4", "--option", "novalue"], "expected KEY=VALUE"),
    (["solve", "--trace", "{trace}", "--topology", "fat-tree:2x4", "--out", "{tmp}/nodir/p.json"],
     "does not exist; create it first"),
    (["solve", "--trace", "{trace}", "--topology", "fat-tree:2x4", "--out", "{tmp}/p.txt"],
     "unsupported extension '.txt'"),
    (["solve", "--trace", "{bad}", "--topology", "fat-tree:2x4", "--out", "{tmp}/p.json"],
     "field 'experts': expert id 16"),
    (["solve", "--trace", "{trace}", "--topology", "{disconnected}", "--out", "{tmp}/p.json"], "disconnected.yaml"),
    (["evaluate", "--placement", "{tmp}/nope.json", "--trace", "{trace}", "--topology", "fat-tree:2x4"],
     "nope.json: field '--placement': file not found"),
    (["compare", "--trace", "{trace}", "--topology", "fat-tree:2x4", "--methods", "contiguous,magic"],
     "unknown method 'magic'"),
    (["trace", "synth", "--model", "no-such-model", "--tokens", "10", "--out", "{tmp}/t.npz"], "no-such-model"),
    (["trace", "synth", "--model", "mixtral-8x7b", "--tokens", "-5", "--out", "{tmp}/t.npz"], "tokens"),
    (["trace", "synth", "--model", "mixtral-8x7b", "--tokens", "10", "--token-seed", "-1", "--out", "{tmp}/t.npz"],
     "token_seed"),
    (["topology", "show", "{disconnected}"], "disconnected"),
])
def test_bad_input_exit_2_no_output(tmp_path, trace_file, args, message):
    bad = tmp_path / "bad.npz"
    np.savez(bad, format=np.array("placement-trace"), version=np.array(1),
             model=np.array(json.dumps({"num_layers": 1, "num_experts": 16, "top_k": 1})),
             experts=np.full((2, 1, 1), 16))
    disconnected = tmp_path / "disconnected.yaml"
    disconnected.write_text(
        "name: split\n"
        "nodes:\n"
        "  - {id: a, kind: gpu, server: s0}\n"
        "  - {id: b, kind: gpu, server: s1}\n"
        "links: []\n"
    )
    args = [a.format(trace=trace_file, tmp=tmp_path, bad=bad, disconnected=disconnected) for a in args]
    before = set(tmp_path.iterdir())
    r = run(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert set(tmp_path.iterdir()) == before  # no output and no temp file left behind


def test_commands_come_from_one_registry():
    import importlib

    from placement.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == [name for name, _ in COMMANDS]
    for _, module in COMMANDS:
        mod = importlib.import_module(f"placement.cli.{module}")
        assert callable(mod.register) and callable(mod.run) and mod.__doc__
