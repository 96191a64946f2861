"""``placement export``, ``placement import`` and ``placement plot`` through the installed script."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from placement import Placement, load_placement
from placement.trace import save_trace

SCRIPT = shutil.which("placement")


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    cmd = [SCRIPT, *args] if SCRIPT else [sys.executable, "-m", "placement", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory, random_trace):
    d = tmp_path_factory.mktemp("interop_cli")
    save_trace(random_trace(3, 8, 2, 200, ranks=8, seed=0), d / "t.npz")  # 3 layers x 8 experts, top-2, 8 ranks
    r = run("solve", "--trace", str(d / "t.npz"), "--topology", "fat-tree:2x4", "--method", "eplb", "--quiet",
            "--out", str(d / "p.json"))
    assert r.returncode == 0, r.stderr
    Placement.from_assignment(np.array([[0, 0, 0, 1]]), num_gpus=2).save(d / "holes.json")
    return d


@pytest.mark.parametrize("fmt, suffix, extra", [
    ("sglang-json", ".json", ["--num-hidden-layers", "5", "--first-moe-layer", "1"]),
    ("trtllm-yaml", ".yaml", ["--first-moe-layer", "1"]),
])
def test_export_then_import_round_trips(tmp_path, files, fmt, suffix, extra):
    out = tmp_path / f"x{suffix}"
    r = run("export", "--placement", str(files / "p.json"), "--format", fmt, "--out", str(out), *extra)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith(f"wrote {out} ({fmt})")
    back = tmp_path / "back.json"
    read = ["--num-gpus", "8", "--first-moe-layer", "1", "--num-moe-layers", "3"] if "sglang" in fmt else []
    r = run("import", "--format", fmt, str(out), "--out", str(back), *read)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert load_placement(back).same_as(load_placement(files / "p.json"))


def test_export_bad_input_exits_2_without_a_file(tmp_path, files):
    out = tmp_path / "loc.json"
    r = run("export", "--placement", str(files / "holes.json"), "--format", "sglang-json", "--out", str(out))
    assert r.returncode == 2 and r.stdout == ""
    # the refusal names the placement that holds the empty slot, not the output file
    assert f"{files / 'holes.json'}: field 'slots':" in r.stderr and "empty slot" in r.stderr
    r = run("export", "--placement", str(files / "p.json"), "--format", "eplb-pt",
            "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "unsupported extension '.json'" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_import_stat_dump_and_solve(tmp_path):
    torch = pytest.importorskip("torch")
    counts = np.zeros((4, 8), dtype=np.int64)
    counts[1:] = np.arange(1, 9)  # hidden layer 0 is dense
    dump = tmp_path / "expert_distribution_recorder_1.0.pt"
    torch.save({"rank": 0, "logical_count": torch.from_numpy(np.stack([counts, counts]))}, dump)
    out = tmp_path / "load.npz"
    r = run("import", "--format", "sglang-dump", str(dump), "--out", str(out))
    assert r.returncode == 2 and "field 'top_k'" in r.stderr and not out.exists()
    r = run("import", "--format", "sglang-dump", str(dump), "--top-k", "2", "--out", str(out))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "counts trace, counts [3, 8], 3 MoE layers x 8 experts, top-2" in r.stdout
    assert "(MoE layers from hidden layer 1)" in r.stdout
    r = run("solve", "--trace", str(out), "--topology", "fat-tree:2x4", "--method", "eplb", "--quiet")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run("solve", "--trace", str(out), "--topology", "fat-tree:2x4", "--method", "exflow", "--quiet")
    assert r.returncode == 2 and "needs a per-token trace" in r.stderr


def test_plots(tmp_path, files):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    trace, plc = str(files / "t.npz"), str(files / "p.json")
    r = run("plot", "map", "--placement", plc, "--trace", trace, "--layer", "0",
            "--out", str(tmp_path / "m.png"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run("plot", "traffic", "--placement", plc, "--trace", trace, "--topology", "fat-tree:2x4",
            "--out", str(tmp_path / "t.png"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run("compare", "--trace", trace, "--topology", "fat-tree:2x4", "--methods", "round_robin,eplb",
            "--out", str(tmp_path / "cmp.csv"))
    assert r.returncode == 0, r.stderr
    r = run("plot", "tiers", "--table", str(tmp_path / "cmp.csv"), "--out", str(tmp_path / "tiers.png"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    (tmp_path / "bench.csv").write_text("method,size,time_s\na,8,0.1\na,64,0.9\nb,8,0.2\nb,64,3.0\n")
    r = run("plot", "solve-time", "--table", str(tmp_path / "bench.csv"), "--out", str(tmp_path / "s.svg"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    for name in ("m.png", "t.png", "tiers.png"):
        img = imread(tmp_path / name)
        assert img.shape[0] >= 200 and img.shape[1] >= 300
        assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 10  # not one colour
    assert "<svg" in (tmp_path / "s.svg").read_text()
    r = run("plot", "solve-time", "--table", str(tmp_path / "bench.csv"), "--time-column", "secs",
            "--out", str(tmp_path / "bad.png"))
    assert r.returncode == 2 and "no column 'secs'" in r.stderr and not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("command", [["export"], ["import"], ["plot", "map"]])
def test_help_has_examples(command):
    r = run(*command, "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and r.stderr == ""


def test_top_k_without_model_says_which_model_was_used_and_layouts_flow(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from placement.cli import main  # in-process: fast

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    counts = np.zeros((5, 8), dtype=np.int64)
    counts[[1, 3, 4]] = np.arange(1, 9)  # hidden layers 0 and 2 are dense (interleaved)
    dump = tmp_path / "expert_distribution_recorder_1.0.pt"
    torch.save({"rank": 0, "logical_count": torch.from_numpy(counts)}, dump)
    out = tmp_path / "load.npz"
    code, text, err = cli("import", "--format", "sglang-dump", str(dump), "--top-k", "2", "--out", str(out))
    assert code == 0 and err == "", err
    assert "layer layout: MoE layers [1, 3, 4] of 5 hidden layers" in text
    assert "top-2, hidden size unknown, 4096 assumed (give --hidden-size, or import the trace with --model); " \
           "no expert groups (EPLB runs its global policy) (from the recording)" in text
    code, text, err = cli("import", "--format", "sglang-dump", str(dump), "--top-k", "2", "--hidden-size", "2048",
                          "--num-groups", "4", "--out", str(out))
    assert code == 0 and "top-2, hidden size 2048; 4 expert groups" in text, err
    code, text, err = cli("solve", "--trace", str(out), "--topology", "fat-tree:2x4", "--method", "eplb", "--out",
                          str(tmp_path / "p.json"))
    assert code == 0 and "model     expert_distribution_recorder_1.0: top-2, hidden size 2048; 4 expert groups" \
        in text, err
    code, text, err = cli("export", "--placement", str(tmp_path / "p.json"), "--format", "sglang-json", "--out",
                          str(tmp_path / "loc.json"))
    assert code == 0 and "MoE layers [1, 3, 4] of 5 hidden layers (expert_distribution_recorder_1.0, hidden size " \
                         "2048) (from the placement file)" in text, err
    code, text, err = cli("export", "--trace", str(out), "--format", "sglang-logical-count", "--out",
                          str(tmp_path / "lc.json"))
    assert code == 0 and "read by SGLang --init-expert-location (init_by_eplb)" in text, err
    code, text, err = cli("import", "--format", "sglang-dump", str(dump), "--model", "mixtral-8x7b", "--hidden-size",
                          "1", "--out", str(tmp_path / "x.npz"))
    assert code == 2 and "drop --hidden-size or --model" in err
