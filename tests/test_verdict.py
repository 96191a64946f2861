"""Verdicts: the fastest placement by modelled step time, its ratios, bound, memory cost and out-of-sample
figure, from placement.compare and the solve / evaluate / compare commands in every --format."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

import placement
from placement.cli import main
from placement.errors import PlacementInputError
from placement.trace import save_trace
from placement.trace.synthesize import synthesize
from placement.verdict import Verdict, memory_cost, verdict

TOPO = "fat-tree:2x4"


@pytest.fixture(scope="module")
def traces():
    """Fitting and held-out traces of one model (DeepSeekMoE-16B: 64 experts on 8 GPUs, EPLB replicates)."""
    fit = synthesize("deepseekmoe-16b", 256, seed=0, num_ranks=8)
    held = synthesize("deepseekmoe-16b", 256, seed=0, token_seed=1, num_ranks=8)  # same model, other tokens
    return fit, held


@pytest.fixture(scope="module")
def files(tmp_path_factory, traces):
    root = tmp_path_factory.mktemp("verdict")
    fit, held = traces
    save_trace(fit, root / "fit.npz")
    save_trace(held, root / "held.npz")
    placement.solve(fit, TOPO, method="eplb").placement.save(root / "current.json")
    return root


def test_verdict_reads_the_table():
    frame = pd.DataFrame({"step_time_ms": [4.0, 3.0, 3.6], "bound_by": ["compute (g0)", "combine (a->b)", "x"],
                          "slots_per_gpu": [1, 2, 1], "extra_replicas": [0, 16, 0], "replica_GB": [0, 1.5, 0],
                          "replica_GB_per_gpu": [0, 0.1875, 0], "test_step_time_ms": [4.1, 3.9, 3.5]},
                         index=["ref", "a", "b"])
    v = verdict(frame, "ref")
    assert (v.best, v.runner_up, v.test_best) == ("a", "b", "b")
    assert v.vs_reference == pytest.approx(3.0 / 4.0) and v.vs_runner_up == pytest.approx(3.0 / 3.6)
    assert v.test_time_ms == 3.9 and v.test_vs_reference == pytest.approx(3.9 / 4.1)
    assert v.test_best_vs_best == pytest.approx(3.5 / 3.9)
    text = str(v)
    assert text.startswith("fastest: a (step time 3 ms in-sample, 0.750x ref, 0.833x runner-up b)")
    assert "bound by the combine link a->b" in text
    assert "memory: 2 expert slots per GPU per layer, 16 extra replicas = 1.5 GB of replicated weights" in text
    assert "out-of-sample: 3.9 ms, 0.951x ref; but b is fastest out-of-sample (0.897x a)" in text
    # coherent dispatch has no step model: the all-to-all time decides
    coherent = pd.DataFrame({"step_time_ms": [np.nan, np.nan], "alltoall_time_ms": [2.0, 1.0]}, index=["x", "y"])
    assert str(verdict(coherent)).startswith("fastest: y (all-to-all time 1 ms in-sample, 0.500x runner-up x)")
    with pytest.raises(PlacementInputError, match="no rows"):
        verdict(frame.iloc[:0])


def test_memory_cost_counts_replicas_and_their_weights(traces):
    fit, _ = traces
    p = placement.solve(fit, TOPO, method="eplb").placement
    cost = memory_cost(p, fit.model)
    counts = p.replica_counts().sum(axis=2)  # [layers, experts] copies
    extra = int((counts - 1).sum())
    assert extra > 0 and cost["extra_replicas"] == extra and cost["slots_per_gpu"] == p.slots.shape[2]
    per_expert = 3 * 2048 * 1408 * 2  # DeepSeekMoE-16B expert: three 2048 x 1408 bf16 matrices
    assert cost["replica_GB"] == pytest.approx(extra * per_expert / 1e9)
    assert cost["replica_GB_per_gpu"] == pytest.approx(cost["replica_GB"] / 8)
    assert memory_cost(placement.solve(fit, TOPO).placement, fit.model)["extra_replicas"] == 0


def test_compare_takes_placement_files_and_a_test_trace(traces, files):
    fit, held = traces
    current = files / "current.json"
    frame = placement.compare(fit, TOPO, ["round_robin", current], reference=str(current), test_trace=held)
    assert list(frame.index) == ["round_robin", "current"]  # the file is labelled by its stem, and is the reference
    p = placement.load_placement(current)
    direct = placement.evaluate(p, fit, TOPO)
    out = placement.evaluate(p, held, TOPO)
    assert frame.loc["current", "step_time_ms"] == pytest.approx(direct.step_time * 1e3)
    assert frame.loc["current", "test_step_time_ms"] == pytest.approx(out.step_time * 1e3)
    rr = placement.evaluate(placement.solve(fit, TOPO, method="round_robin").placement, held, TOPO)
    assert frame.loc["round_robin", "test_step_time_ms/ref"] == pytest.approx(rr.step_time / out.step_time)
    assert frame.loc["current", "extra_replicas"] == memory_cost(p, fit.model)["extra_replicas"]
    v = verdict(frame, "current")
    assert isinstance(v, Verdict) and v.best == frame["step_time_ms"].idxmin()
    assert v.test_time_ms == pytest.approx(frame.loc[v.best, "test_step_time_ms"])
    with pytest.raises(PlacementInputError, match="must be a Trace"):
        placement.compare(fit, TOPO, ["round_robin"], test_trace=str(files / "held.npz"))
    with pytest.raises(PlacementInputError, match="file not found"):
        placement.compare(fit, TOPO, ["round_robin", files / "missing.json"])


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_compare_command_formats(capsys, files):
    common = ["compare", "--trace", str(files / "fit.npz"), "--test-trace", str(files / "held.npz"), "--topology",
              TOPO, "--methods", f"eplb,{files / 'current.json'}", "--reference", "round_robin"]
    code, out, err = _cli(capsys, *common, "--format", "json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert set(doc["rows"]) == {"eplb", "current", "round_robin"}
    steps = {k: r["step_time_ms"] for k, r in doc["rows"].items()}
    assert doc["verdict"]["best"] == min(steps, key=steps.get)
    assert doc["verdict"]["text"].startswith("fastest: ") and "out-of-sample" in doc["verdict"]["text"]
    code, out, err = _cli(capsys, *common, "--format", "csv")
    table = pd.read_csv(io.StringIO(out), index_col="method")
    assert code == 0 and set(table.index) == {"eplb", "current", "round_robin"} and "test_step_time_ms" in table
    assert err.startswith("verdict: fastest: ")  # stdout stays one CSV document
    code, out, err = _cli(capsys, *common, "--format", "markdown")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("| metric | ") and lines[1].startswith("| --- |")
    assert lines[-1].startswith("**verdict:** fastest: ")
    code, out, _ = _cli(capsys, *common)
    assert code == 0 and out.strip().splitlines()[-1].startswith("verdict: fastest: ")


def test_test_trace_of_another_model_is_refused(capsys, files, tmp_path):
    other = tmp_path / "other.npz"
    save_trace(synthesize("olmoe", 64, seed=0), other)
    code, out, err = _cli(capsys, "compare", "--trace", str(files / "fit.npz"), "--test-trace", str(other),
                          "--topology", TOPO, "--methods", "round_robin")
    assert code == 2 and out == "" and "field '--test-trace'" in err and "same model" in err


def test_solve_and_evaluate_end_with_the_verdict(capsys, files, tmp_path):
    code, out, _ = _cli(capsys, "solve", "--trace", str(files / "fit.npz"), "--test-trace", str(files / "held.npz"),
                        "--topology", TOPO, "--method", "eplb", "--out", str(tmp_path / "p.json"))
    lines = out.strip().splitlines()
    assert code == 0 and any(line.startswith("out-of-sample (") for line in lines)
    assert lines[-2].startswith("verdict: fastest: ") and "out-of-sample: " in lines[-2]
    assert lines[-1] == f"wrote {tmp_path / 'p.json'}"
    code, out, _ = _cli(capsys, "evaluate", "--placement", str(tmp_path / "p.json"), "--trace", str(files / "fit.npz"),
                        "--topology", TOPO, "--reference", str(files / "current.json"), "--format", "json")
    doc = json.loads(out)
    # the same method on the same trace: the file and the fresh solve are the same placement
    assert code == 0 and doc["reference"]["name"] == "current"
    assert doc["reference"]["step_time_ms"] == pytest.approx(doc["step_time_ms"])
    assert doc["extra_replicas"] > 0 and doc["verdict"]["extra_replicas"] == doc["extra_replicas"]
    code, out, _ = _cli(capsys, "evaluate", "--placement", str(tmp_path / "p.json"), "--trace", str(files / "fit.npz"),
                        "--topology", TOPO)
    assert code == 0 and out.strip().splitlines()[-1].startswith("verdict: eplb (step time ")
