"""Placement exports for serving stacks: exact shapes, round trips, bad input (file + field, no file left)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from placement import Placement, PlacementInputError
from placement.baselines.eplb import rebalance_experts
from placement.interop import (
    PLACEMENT_FORMATS,
    eplb_tensors,
    export_placement,
    import_placement,
    sglang_physical_to_logical_map,
    trtllm_config,
    vllm_expert_map,
)

HAS_TORCH = True
try:
    import torch as _torch  # noqa: F401
except ImportError:  # pragma: no cover
    HAS_TORCH = False

FORMATS = list(PLACEMENT_FORMATS)
NEEDS_TORCH = {"eplb-pt", "sglang-pt"}


@pytest.fixture(scope="module")
def replicated() -> Placement:
    # EPLB's README example: 2 layers, 12 experts, 16 slots on 8 GPUs (2 per GPU), 4 experts replicated
    weight = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                       [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]])
    res = rebalance_experts(weight, 16, 4, 2, 8)
    return Placement(res.slots(8), num_experts=12, metadata={"method": "eplb"})


@pytest.fixture(scope="module")
def with_empty() -> Placement:
    # GPU 0 holds 3 experts, GPU 1 one: GPU 1 has two empty slots
    return Placement.from_assignment(np.array([[0, 0, 0, 1], [1, 0, 0, 0]]), num_gpus=2)


def _path(tmp_path, fmt: str, name: str = "out"):
    return tmp_path / (name + PLACEMENT_FORMATS[fmt].suffixes[0])


def _read_kwargs(fmt: str, first: int, layers: int) -> dict:
    if fmt.startswith("sglang"):
        return {"num_gpus": 8, "first_moe_layer": first, "num_moe_layers": layers}
    return {}


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_gives_the_same_slots(tmp_path, replicated, fmt):
    if fmt in NEEDS_TORCH and not HAS_TORCH:
        pytest.skip("torch (the runtime extra) is not installed")
    path = _path(tmp_path, fmt)
    export_placement(replicated, path, fmt, num_hidden_layers=5, first_moe_layer=3)
    back = import_placement(path, fmt, **_read_kwargs(fmt, 3, 2))
    assert back.same_as(replicated)
    assert np.array_equal(back.slots, replicated.slots)  # slot order is kept too
    assert back.num_experts == 12 and back.num_gpus == 8


def test_eplb_round_trips_empty_slots(tmp_path, with_empty):
    path = _path(tmp_path, "eplb-json")
    export_placement(with_empty, path, "eplb-json")
    back = import_placement(path, "eplb-json", num_experts=4)
    assert np.array_equal(back.slots, with_empty.slots)


# ------------------------------------------------------------------------------------------ shapes
def test_eplb_tensors_match_rebalance_experts(replicated):
    weight = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                       [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]])
    res = rebalance_experts(weight, 16, 4, 2, 8)
    t = eplb_tensors(replicated)
    assert t.phy2log.shape == (2, 16) and t.logcnt.shape == (2, 12)
    assert t.log2phy.shape == (2, 12, int(res.logcnt.max()))
    assert np.array_equal(t.phy2log, res.phy2log)
    assert np.array_equal(t.logcnt, res.logcnt)
    # same slots per expert as EPLB's own log2phy (EPLB orders by replica rank, we by slot)
    assert np.array_equal(np.sort(t.log2phy, axis=2), np.sort(res.log2phy, axis=2))
    # certificate: every listed slot holds its expert, in increasing order
    for layer in range(2):
        for e in range(12):
            slots = t.log2phy[layer, e][t.log2phy[layer, e] >= 0]
            assert len(slots) == t.logcnt[layer, e]
            assert (t.phy2log[layer, slots] == e).all() and (np.diff(slots) > 0).all()


def test_eplb_json_holds_the_documented_keys(tmp_path, replicated):
    path = tmp_path / "e.json"
    export_placement(replicated, path, "eplb-json")
    data = json.loads(path.read_text())
    assert set(data) == {"format", "num_gpus", "num_experts", "phy2log", "log2phy", "logcnt"}
    assert data["format"] == "eplb" and data["num_gpus"] == 8 and data["num_experts"] == 12
    assert np.asarray(data["phy2log"]).shape == (2, 16)
    assert np.asarray(data["logcnt"]).shape == (2, 12)


@pytest.mark.skipif(not HAS_TORCH, reason="torch (the runtime extra) is not installed")
def test_eplb_pt_holds_int64_tensors(tmp_path, replicated):
    import torch as th

    path = tmp_path / "e.pt"
    export_placement(replicated, path, "eplb-pt")
    data = th.load(path, weights_only=True)
    assert data["phy2log"].dtype == th.int64 and tuple(data["phy2log"].shape) == (2, 16)
    assert tuple(data["log2phy"].shape)[:2] == (2, 12) and tuple(data["logcnt"].shape) == (2, 12)


def test_sglang_map_covers_all_hidden_layers(tmp_path, replicated):
    table = sglang_physical_to_logical_map(replicated, num_hidden_layers=6, first_moe_layer=3)
    assert table.shape == (6, 16)
    trivial = np.arange(16) % 12
    for dense in (0, 1, 2, 5):
        assert np.array_equal(table[dense], trivial)
    assert np.array_equal(table[3:5], replicated.phy2log())
    for row in table:  # SGLang builds logical->physical tables from every row: every expert must appear
        assert set(row.tolist()) == set(range(12))
    path = tmp_path / "loc.json"
    export_placement(replicated, path, "sglang-json", num_hidden_layers=6, first_moe_layer=3)
    data = json.loads(path.read_text())
    assert list(data) == ["physical_to_logical_map"]  # SGLang passes the keys as keyword arguments
    assert data["physical_to_logical_map"] == table.tolist()


@pytest.mark.skipif(not HAS_TORCH, reason="torch (the runtime extra) is not installed")
def test_sglang_pt_is_a_single_tensor(tmp_path, replicated):
    import torch as th

    path = tmp_path / "loc.pt"
    export_placement(replicated, path, "sglang-pt", num_hidden_layers=6, first_moe_layer=3)
    data = th.load(path, weights_only=True)
    assert list(data) == ["physical_to_logical_map"]
    assert data["physical_to_logical_map"].dtype == th.int64
    assert tuple(data["physical_to_logical_map"].shape) == (6, 16)


def test_trtllm_yaml_keys(tmp_path, replicated):
    path = tmp_path / "lb.yaml"
    export_placement(replicated, path, "trtllm-yaml", first_moe_layer=3)
    text = path.read_text()
    data = yaml.safe_load(text)
    assert data == trtllm_config(replicated, first_moe_layer=3)
    assert set(data) == {"num_slots", "layer_updates_per_iter", "initial_global_assignments"}
    assert data["num_slots"] == 16 and data["layer_updates_per_iter"] == 0
    assert sorted(data["initial_global_assignments"]) == [3, 4]
    assert data["initial_global_assignments"][4] == replicated.phy2log()[1].tolist()
    assert "# placement: num_gpus=8 num_experts=12 first_moe_layer=3" in text
    assert "3: [" in text  # lists written inline, as TensorRT-LLM's own generator does


def test_trtllm_without_header_needs_num_gpus(tmp_path, replicated):
    path = tmp_path / "lb.yaml"
    path.write_text(yaml.safe_dump(trtllm_config(replicated, 3)))
    with pytest.raises(PlacementInputError, match="num_gpus"):
        import_placement(path, "trtllm-yaml")
    assert import_placement(path, "trtllm-yaml", num_gpus=8).same_as(replicated)


def test_vllm_map_shape(replicated):
    m = vllm_expert_map(replicated)
    assert m["moe_layer_count"] == 2 and len(m["layer_list"]) == 2
    layer = m["layer_list"][1]
    assert layer["layer_id"] == 1 and layer["device_count"] == 8
    assert [d["device_id"] for d in layer["device_list"]] == list(range(8))
    assert layer["device_list"][3]["device_expert"] == replicated.slots[1, 3].tolist()


# ------------------------------------------------------------------------------------------ bad input
def _no_files_but(tmp_path, *names):
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


@pytest.mark.parametrize("fmt", ["sglang-json", "trtllm-yaml", "vllm-ascend"])
def test_empty_slots_are_refused_without_a_file(tmp_path, with_empty, fmt):
    path = _path(tmp_path, fmt)
    with pytest.raises(PlacementInputError) as err:
        export_placement(with_empty, path, fmt, first_moe_layer=0)
    assert "empty slot" in str(err.value) and err.value.field == "slots" and err.value.source == str(path)
    assert str(err.value).endswith("or export to eplb-json (no serving stack reads it)")  # not vllm-ascend
    _no_files_but(tmp_path)


def test_suffix_must_match_format(tmp_path, replicated):
    with pytest.raises(PlacementInputError, match=r"eplb-pt uses \.pt files") as err:
        export_placement(replicated, tmp_path / "x.json", "eplb-pt")
    assert err.value.field == "format"
    with pytest.raises(PlacementInputError, match="unknown placement format"):
        export_placement(replicated, tmp_path / "x.json", "megatron")
    _no_files_but(tmp_path)


def test_hidden_layers_must_hold_the_moe_layers(tmp_path, replicated):
    with pytest.raises(PlacementInputError, match="need at least 5") as err:
        export_placement(replicated, tmp_path / "x.json", "sglang-json", num_hidden_layers=4,
                         first_moe_layer=3)
    assert err.value.field == "num_hidden_layers"
    _no_files_but(tmp_path)


@pytest.mark.parametrize("content, field, message", [
    ({"num_gpus": 2}, "phy2log", "missing"),
    ({"num_gpus": 2, "phy2log": [[0, 1, 2]]}, "phy2log", "do not divide over num_gpus=2"),
    ({"num_gpus": 2, "phy2log": [[0, 1], [1]]}, "phy2log", "rectangular"),
    ({"num_gpus": 2, "phy2log": [[0, 0]], "num_experts": 2}, "phy2log", "expert 1 of layer 0 is on no GPU"),
    ({"num_gpus": 2, "phy2log": [[0, 1]], "logcnt": [[2, 1]]}, "logcnt", "disagrees"),
    ({"num_gpus": 2, "phy2log": [[0, 1]], "log2phy": [[[1], [0]]]}, "log2phy", "disagrees"),
    ({"num_gpus": 0, "phy2log": [[0, 1]]}, "num_gpus", "positive integer"),
    ({"phy2log": [[0, 1.5]], "num_gpus": 1}, "phy2log", "whole numbers"),
])
def test_bad_eplb_files(tmp_path, content, field, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(PlacementInputError, match=message) as err:
        import_placement(path, "eplb-json")
    assert err.value.source == str(path) and err.value.field == field


def test_eplb_num_gpus_given_must_agree(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"num_gpus": 2, "phy2log": [[0, 1]]}))
    with pytest.raises(PlacementInputError, match="the file says 2 but 1 was given"):
        import_placement(path, "eplb-json", num_gpus=1)


def test_bad_sglang_files(tmp_path):
    path = tmp_path / "loc.json"
    path.write_text(json.dumps({"physical_to_logical_map": [[0, 1, -1, 2]]}))
    with pytest.raises(PlacementInputError, match="EP size") as err:
        import_placement(path, "sglang-json")
    assert err.value.field == "num_gpus"
    with pytest.raises(PlacementInputError, match="negative expert id at layer 0, slot 2") as err:
        import_placement(path, "sglang-json", num_gpus=2)
    assert err.value.field == "physical_to_logical_map"
    path.write_text(json.dumps({"logical_count": [[1, 2]]}))
    with pytest.raises(PlacementInputError, match="'physical_to_logical_map'"):
        import_placement(path, "sglang-json", num_gpus=1)
    path.write_text("{not json")
    with pytest.raises(PlacementInputError, match="invalid JSON at line 1") as err:
        import_placement(path, "sglang-json", num_gpus=1)
    assert err.value.source == str(path)


def test_bad_trtllm_files(tmp_path):
    path = tmp_path / "lb.yaml"
    path.write_text("num_slots: 4\ninitial_global_assignments:\n  3: [0, 1, 2]\n")
    with pytest.raises(PlacementInputError, match="lists 3 slots, but num_slots is 4") as err:
        import_placement(path, "trtllm-yaml", num_gpus=2)
    assert err.value.field == "initial_global_assignments.3"
    path.write_text("num_slots: 2\ninitial_global_assignments:\n  x: [0, 1]\n")
    with pytest.raises(PlacementInputError, match="layer key 'x'"):
        import_placement(path, "trtllm-yaml", num_gpus=2)
    path.write_text("num_slots: [\n")
    with pytest.raises(PlacementInputError, match="invalid YAML"):
        import_placement(path, "trtllm-yaml", num_gpus=2)


def test_bad_vllm_maps(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"moe_layer_count": 1}))
    with pytest.raises(PlacementInputError, match="non-empty 'layer_list'") as err:
        import_placement(path, "vllm-ascend")
    assert err.value.field == "layer_list"
    layer = {"layer_id": 0, "device_count": 2,
             "device_list": [{"device_id": 0, "device_expert": [0]}, {"device_id": 0, "device_expert": [1]}]}
    path.write_text(json.dumps({"moe_layer_count": 1, "layer_list": [layer]}))
    with pytest.raises(PlacementInputError, match="device_id 0 is not its position 1; vllm-ascend reads") as err:
        import_placement(path, "vllm-ascend")
    assert err.value.field == "layer_list[0].device_list[1].device_id"
    layer["device_list"][1] = {"device_id": 1, "device_expert": [2]}
    path.write_text(json.dumps({"moe_layer_count": 1, "layer_list": [layer]}))
    with pytest.raises(PlacementInputError, match="expert 1 of layer 0 is on no GPU"):
        import_placement(path, "vllm-ascend")
    layer["device_list"][1] = {"device_id": 1, "device_expert": [1, 2]}  # lists of unequal length
    path.write_text(json.dumps({"moe_layer_count": 1, "layer_list": [layer]}))
    with pytest.raises(PlacementInputError, match=r"devices x experts per device differ \[\(2, 1\), \(2, 2\)\]"):
        import_placement(path, "vllm-ascend")
    layer["device_list"] = [{"device_expert": [0, 0]}, {"device_expert": [1, 2]}]  # a repeat on one device
    path.write_text(json.dumps({"moe_layer_count": 1, "layer_list": [layer]}))
    with pytest.raises(PlacementInputError, match="GPU 0 holds two replicas of expert 0 at MoE layer 0"):
        import_placement(path, "vllm-ascend")


def test_missing_file(tmp_path):
    with pytest.raises(PlacementInputError, match="file not found"):
        import_placement(tmp_path / "nope.json", "vllm-ascend")


def test_pt_without_torch_names_the_runtime_extra(tmp_path, replicated, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(PlacementInputError, match=r"placement\[runtime\]"):
        export_placement(replicated, tmp_path / "e.pt", "eplb-pt")
    _no_files_but(tmp_path)


def test_importing_interop_loads_neither_torch_nor_matplotlib():
    code = ("import sys, placement.interop, placement.plots\n"
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_interop_archives_are_sized_from_their_headers_before_loading(tmp_path, monkeypatch):
    from placement.errors import PlacementInputError
    from placement.interop._common import read_mapping

    # an .npy whose header declares 8 TB and holds nothing: refused from the header, nothing allocated
    big = tmp_path / "big.npy"
    with big.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    with pytest.raises(PlacementInputError, match="max_archive_bytes"):
        read_mapping(big)
    # an .npz within the file-size limit whose members unpack past the archive limit (lowered here)
    small = tmp_path / "a.npz"
    np.savez(small, phy2log=np.zeros((4, 64), dtype=np.int64))
    assert read_mapping(small)["phy2log"].shape == (4, 64)
    monkeypatch.setenv("PLACEMENT_MAX_ARCHIVE_BYTES", "1000")
    with pytest.raises(PlacementInputError, match="exceed the limit of 1000"):
        read_mapping(small)
    broken = tmp_path / "b.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(PlacementInputError, match="is not a numpy .npz archive"):
        read_mapping(broken)
