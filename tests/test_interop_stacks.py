"""Every export re-read under the loading rules of the stack that reads it, the layer layout carried from a
recording to the file with no flag, and the refusals of what a stack would load wrongly.

The ``*_load`` functions below restate, in a few lines each, how the stack turns the file into per-rank
expert slots (read from the stacks' code: SGLang ``python/sglang/srt/eplb/expert_location.py``,
TensorRT-LLM ``MoeLoadBalancerConfig`` and its slot slicing in the fused-MoE modules, vllm-ascend
``vllm_ascend/eplb/core/eplb_utils.py``); each returns ``slots [moe_layers, ep_size, local_slots]`` as the
stack would serve them, so a test compares it slot for slot with the placement.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import yaml

import placement
from placement import Placement, PlacementInputError, load_placement
from placement.interop import PLACEMENT_FORMATS, export_placement, import_placement, import_trace
from placement.layout import LayerLayout
from placement.trace import ModelSpec, Trace

# an interleaved model: 7 hidden layers, MoE at 1, 3, 5, 6 (dense 0, 2, 4), 8 experts, top-2
H, MOE, E, K = 7, (1, 3, 5, 6), 8, 2
L = len(MOE)


def _load_file(path):
    if str(path).endswith(".pt"):
        torch = pytest.importorskip("torch")
        return torch.load(path, weights_only=True)
    return json.loads(path.read_text()) if str(path).endswith(".json") else yaml.safe_load(path.read_text())


# ---------------------------------------------------------------------------------------------- the stacks
def sglang_load(path, *, ep_size: int, num_hidden_layers: int, num_logical_experts: int, redundant: int,
                moe_layers) -> np.ndarray:
    """``--init-expert-location FILE`` with a ``physical_to_logical_map``: the mapping's keys become keyword
    arguments of ``init_by_mapping``; the map has a row per hidden layer (the model's ``num_hidden_layers``),
    ``num_logical_experts + ep_num_redundant_experts`` columns divisible by the EP size, and every row must
    list every logical expert (``logical_to_all_physical_map`` is built from every row); hidden layer ``h``
    routes with row ``h``, physical slot ``p`` on rank ``p // (P / ep_size)``."""
    data = _load_file(path)
    assert set(data) == {"physical_to_logical_map"}, "any other key is an unexpected keyword argument"
    table = np.asarray(data["physical_to_logical_map"])
    P = num_logical_experts + redundant
    assert table.shape == (num_hidden_layers, P) and P % ep_size == 0
    for row in table:
        assert set(row.tolist()) == set(range(num_logical_experts))
    return table[list(moe_layers)].reshape(len(moe_layers), ep_size, P // ep_size)


def trtllm_load(path, *, ep_size: int, moe_layers) -> np.ndarray:
    """``moe_config.load_balancer``: ``MoeLoadBalancerConfig(num_slots, initial_global_assignments,
    layer_updates_per_iter)``; the MoE module of decoder layer ``layer_idx`` takes
    ``initial_global_assignments[layer_idx]`` (``num_slots`` ids) and rank ``r`` the slots
    ``[r * num_slots / ep_size, (r + 1) * num_slots / ep_size)``."""
    data = _load_file(path)
    assert set(data) <= {"num_slots", "initial_global_assignments", "layer_updates_per_iter"}
    slots, assign = data["num_slots"], data["initial_global_assignments"]
    assert slots % ep_size == 0 and data["layer_updates_per_iter"] == 0
    per = slots // ep_size
    out = []
    for layer_idx in moe_layers:
        row = assign[layer_idx]
        assert len(row) == slots
        out.append([row[r * per:(r + 1) * per] for r in range(ep_size)])
    return np.asarray(out)


def vllm_ascend_load(path, *, ep_size: int, num_experts: int, num_redundant_experts: int,
                     num_moe_layers: int) -> np.ndarray:
    """``eplb_config.expert_map_path``: MoE layer ``i`` (the i-th MoE module built) reads ``layer_list[i]``,
    stacks its ``device_expert`` lists into a ``[ep_size, slots]`` tensor, takes ``physical_count -
    num_experts`` as its redundant experts (which must be the ``num_redundant_experts`` allocated), maps each
    logical expert to one local slot per rank (``expert_map[local] = arange``) and numbers global slots
    ``local + rank * (distinct experts on rank 0)``.  Returns the expert each rank serves in each local slot
    (``-1`` where no expert maps to that slot) and checks the global numbering is ``rank * slots + local``."""
    data = _load_file(path)
    out = []
    for layer_id in range(num_moe_layers):
        device_data = [d["device_expert"] for d in data["layer_list"][layer_id]["device_list"]]
        placement_ = np.asarray(device_data)  # torch.tensor(device_data): rectangular or it raises
        assert placement_.shape[0] == ep_size
        assert placement_.size - num_experts == num_redundant_experts
        maps = []
        for rank in range(ep_size):
            expert_map = np.full(num_experts, -1)
            expert_map[placement_[rank]] = np.arange(placement_.shape[1])
            maps.append(expert_map)
        valid = int((maps[0] != -1).sum())
        served = np.full(placement_.shape, -1)
        for rank, expert_map in enumerate(maps):
            for e in np.flatnonzero(expert_map >= 0):
                local = expert_map[e]
                assert local + rank * valid == rank * placement_.shape[1] + local, "global slot ids shifted"
                served[rank, local] = e
        out.append(served)
    return np.asarray(out)


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def recorded() -> Trace:
    """A token trace of the interleaved model (its spec knows nothing of the layout: the dump will)."""
    rng = np.random.default_rng(3)
    n = 400
    experts = np.argsort(rng.random((n, L, E)) ** np.linspace(1, 4, E), axis=2)[:, :, :K]
    return Trace.from_tokens(ModelSpec("m", L, E, K), experts, origin=rng.integers(0, 4, n), num_ranks=4)


def _stat_dump(tmp_path, trace: Trace):
    torch = pytest.importorskip("torch")
    full = np.zeros((2, H, E), dtype=np.int64)  # two buffered steps, dense rows zero, as SGLang's stat mode
    half = trace.layer_counts() // 2
    full[0, list(MOE)] = half
    full[1, list(MOE)] = trace.layer_counts() - half
    path = tmp_path / "expert_distribution_recorder_1700000000.0.pt"
    torch.save({"rank": 0, "logical_count": torch.from_numpy(full), "average_utilization_rate_over_window": None},
               path)
    return path


@pytest.fixture(scope="module", params=["eplb", "layer-time"])
def solved(tmp_path_factory, recorded, request) -> tuple:
    """SGLang stat dump -> trace -> EPLB (or layer-time, full slots) placement on 4 GPUs -> placement file, with
    no layout flag anywhere."""
    d = tmp_path_factory.mktemp("stacks")
    trace = import_trace(_stat_dump(d, recorded), "sglang-dump", top_k=K)
    extra = {"replica": "sglang-static", "time_limit": 10, "fewer_slots": False} \
        if request.param == "layer-time" else {}
    sol = placement.solve(trace, "fat-tree:2x2", method=request.param, redundant=4, **extra)
    sol.placement.save(d / "p.json")
    return d, trace, load_placement(d / "p.json")


# ---------------------------------------------------------------------------------------------- layout
def test_dump_to_placement_to_sglang_map_keeps_the_layout_without_flags(solved, recorded):
    d, trace, p = solved
    assert trace.model.layout() == LayerLayout(MOE, H, "expert_distribution_recorder_1700000000.0", None)
    assert np.array_equal(trace.layer_counts(), recorded.layer_counts())
    assert p.layout is not None and p.layout.moe_layers == MOE and p.layout.num_hidden_layers == H
    out = d / "expert_location.json"
    export_placement(p, out, "sglang-json")  # no num_hidden_layers, no first_moe_layer, no model
    served = sglang_load(out, ep_size=p.num_gpus, num_hidden_layers=H, num_logical_experts=E,
                         redundant=p.num_gpus * p.slots_per_gpu - E, moe_layers=MOE)
    assert np.array_equal(served, p.slots)
    table = np.asarray(json.loads(out.read_text())["physical_to_logical_map"])
    for dense in (0, 2, 4):  # SGLang's own trivial row
        assert np.array_equal(table[dense], np.arange(table.shape[1]) % E)
    back = import_placement(out, "sglang-json", num_gpus=p.num_gpus, moe_layers=list(MOE))
    assert np.array_equal(back.slots, p.slots) and back.layout.num_hidden_layers == H


@pytest.mark.parametrize("fmt", list(PLACEMENT_FORMATS))
def test_every_format_reads_back_slot_for_slot_under_its_stacks_rules(tmp_path, solved, fmt):
    _, _, p = solved
    out = tmp_path / ("x" + PLACEMENT_FORMATS[fmt].suffixes[0])
    if fmt.endswith("-pt"):
        pytest.importorskip("torch")
    G, S = p.num_gpus, p.slots_per_gpu
    if fmt == "vllm-ascend" and (np.sort(p.slots, axis=2)[:, :, 1:] == np.sort(p.slots, axis=2)[:, :, :-1]).any():
        pytest.skip("this EPLB placement puts two replicas of an expert on one GPU (refused, tested below)")
    export_placement(p, out, fmt)
    if fmt.startswith("sglang"):
        served = sglang_load(out, ep_size=G, num_hidden_layers=H, num_logical_experts=E, redundant=G * S - E,
                             moe_layers=MOE)
    elif fmt == "trtllm-yaml":
        served = trtllm_load(out, ep_size=G, moe_layers=MOE)  # keyed by hidden-layer index
        assert sorted(_load_file(out)["initial_global_assignments"]) == list(MOE)
    elif fmt == "vllm-ascend":
        served = vllm_ascend_load(out, ep_size=G, num_experts=E, num_redundant_experts=G * S - E, num_moe_layers=L)
    else:  # EPLB's convention (no stack loads this file): phy2log [L, P], slot p on GPU p // S
        data = _load_file(out)
        served = np.asarray(data["phy2log"]).reshape(L, G, S)
        assert int(data["num_gpus"]) == G
    assert np.array_equal(served, p.slots)
    kwargs = {"num_gpus": G, "model": None}
    if fmt.startswith("sglang"):
        kwargs["moe_layers"] = MOE
    assert np.array_equal(import_placement(out, fmt, **kwargs).slots, p.slots)


def test_vllm_ascend_reads_a_distinct_expert_placement_slot_for_slot(tmp_path):
    p = Placement(np.array([[[0, 4], [1, 5], [2, 0], [3, 1]], [[4, 5], [0, 1], [2, 3], [1, 0]]]), num_experts=6)
    out = tmp_path / "map.json"
    export_placement(p, out, "vllm-ascend")
    served = vllm_ascend_load(out, ep_size=4, num_experts=6, num_redundant_experts=2, num_moe_layers=2)
    assert np.array_equal(served, p.slots)


def test_vllm_ascend_refuses_two_replicas_on_one_gpu(tmp_path):
    p = Placement(np.array([[[0, 0], [1, 2]]]), num_experts=3)
    out = tmp_path / "map.json"
    with pytest.raises(PlacementInputError, match="GPU 0 holds two replicas of expert 0 at MoE layer 0; "
                       "vllm-ascend maps an expert to one local slot") as err:
        export_placement(p, out, "vllm-ascend")
    assert err.value.field == "slots" and not out.exists()
    # what vllm-ascend would do with such a file: one slot never served, the other rank's ids shifted
    out.write_text(json.dumps({"moe_layer_count": 1, "layer_list": [{"device_list": [
        {"device_expert": [0, 0]}, {"device_expert": [1, 2]}]}]}))
    with pytest.raises(AssertionError, match="global slot ids shifted"):
        vllm_ascend_load(out, ep_size=2, num_experts=3, num_redundant_experts=1, num_moe_layers=1)


def test_vllm_json_is_a_deprecated_alias(tmp_path):
    p = Placement(np.array([[[0, 1], [2, 3]]]), num_experts=4)
    with pytest.warns(DeprecationWarning, match="'vllm-json' is deprecated; use 'vllm-ascend'"):
        export_placement(p, tmp_path / "m.json", "vllm-json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert np.array_equal(import_placement(tmp_path / "m.json", "vllm-json").slots, p.slots)


# ---------------------------------------------------------------------------------------------- refusals
def test_export_with_unknown_layout_is_refused_with_the_fix(tmp_path):
    p = Placement(np.array([[[0, 1], [2, 3]], [[1, 0], [3, 2]]]), num_experts=4)  # no layout (an older file)
    for fmt in ("sglang-json", "trtllm-yaml"):
        out = tmp_path / ("x" + PLACEMENT_FORMATS[fmt].suffixes[0])
        with pytest.raises(PlacementInputError, match="does not record which hidden layers are its MoE layers.*; "
                           r"pass first_moe_layer \(--first-moe-layer N.*--moe-layers.*--model") as err:
            export_placement(p, out, fmt)
        assert err.value.field == "layout" and "\n" not in str(err.value) and not out.exists()
    export_placement(p, tmp_path / "e.json", "eplb-json")  # MoE-layer formats need no layout
    export_placement(p, tmp_path / "x.json", "sglang-json", moe_layers="1,3", num_hidden_layers=4)
    table = np.asarray(json.loads((tmp_path / "x.json").read_text())["physical_to_logical_map"])
    assert np.array_equal(table[[1, 3]], p.phy2log()) and table.shape == (4, 4)


def test_flags_contradicting_the_placement_layout_are_refused(tmp_path, solved):
    _, _, p = solved
    out = tmp_path / "x.json"
    with pytest.raises(PlacementInputError, match=r"MoE layers 0..3 .* contradicts the layout of this placement "
                       r"\(MoE layers \[1, 3, 5, 6\] of 7 hidden layers"):
        export_placement(p, out, "sglang-json", first_moe_layer=0)
    with pytest.raises(PlacementInputError, match="9 contradicts the MoE layers"):
        export_placement(p, out, "sglang-json", num_hidden_layers=9)
    assert not out.exists()
    export_placement(p, out, "sglang-json", moe_layers=list(MOE), num_hidden_layers=H)  # agreeing flags are fine


def test_preset_model_gives_the_layout(tmp_path):
    rng = np.random.default_rng(0)
    p = Placement.from_assignment(rng.integers(0, 4, (27, 64)), num_gpus=4, slots_per_gpu=32)
    out = tmp_path / "x.yaml"
    export_placement(Placement(np.where(p.slots < 0, 0, p.slots), 64), out, "trtllm-yaml", model="deepseekmoe-16b")
    assert sorted(_load_file(out)["initial_global_assignments"]) == list(range(1, 28))
    assert "num_hidden_layers=28" in out.read_text()
    assert import_placement(out, "trtllm-yaml").layout == LayerLayout(tuple(range(1, 28)), 28)


def test_reading_an_sglang_map_needs_its_moe_rows(tmp_path, solved):
    d, _, p = solved
    out = d / "expert_location.json"
    export_placement(p, out, "sglang-json")
    with pytest.raises(PlacementInputError, match="does not say which of its 7 rows are MoE layers; pass "
                       "first_moe_layer") as err:
        import_placement(out, "sglang-json", num_gpus=4)
    assert err.value.field == "first_moe_layer"


def test_first_moe_layer_that_drops_routed_layers_is_an_error(tmp_path, recorded):
    dump = _stat_dump(tmp_path, recorded)
    with pytest.raises(PlacementInputError, match=r"first_moe_layer=3 would drop layer\(s\) \[1\], which recorded "
                       "routing") as err:
        import_trace(dump, "sglang-dump", top_k=K, first_moe_layer=3)
    assert err.value.field == "first_moe_layer"
    with pytest.raises(PlacementInputError, match="layer 0 recorded no routing, so it is not a MoE layer"):
        import_trace(dump, "sglang-dump", top_k=K, first_moe_layer=0)
    with pytest.raises(PlacementInputError, match=r"layer\(s\) \[1, 3\] recorded routing but are not MoE layers of "
                       "model 'c'"):
        import_trace(dump, "sglang-dump", model=ModelSpec("c", 2, E, K, first_moe_layer=5))
    assert import_trace(dump, "sglang-dump", top_k=K, first_moe_layer=1).model.layout().moe_layers == MOE


# ---------------------------------------------------------------------------------------------- loads
def sglang_eplb_load(path, *, num_hidden_layers: int, num_logical_experts: int) -> np.ndarray:
    """``--init-expert-location FILE`` with a ``logical_count`` (and no ``physical_to_logical_map``):
    ``init_by_eplb`` unsqueezes a 2-D count to ``[1, H, E]`` and its EPLB balances ``sum(dim=0)``; returns
    that ``[H, E]`` weight."""
    data = _load_file(path)
    assert "physical_to_logical_map" not in data and "logical_count" in data
    count = np.asarray(data["logical_count"])
    if count.ndim == 2:
        count = count[None]
    weight = count.sum(axis=0)
    assert weight.shape == (num_hidden_layers, num_logical_experts)
    return weight


@pytest.mark.parametrize("suffix", [".json", ".pt"])
def test_sglang_logical_count_is_what_init_by_eplb_balances(tmp_path, solved, recorded, suffix):
    if suffix == ".pt":
        pytest.importorskip("torch")
    _, trace, _ = solved
    out = tmp_path / f"logical_count{suffix}"
    placement.interop.export_load(trace, out, "sglang-logical-count")  # layout from the dump, no flag
    weight = sglang_eplb_load(out, num_hidden_layers=H, num_logical_experts=E)
    assert np.array_equal(weight[list(MOE)], recorded.layer_counts())
    assert not weight[[0, 2, 4]].any()  # dense layers carry no load
    back = import_trace(out, "sglang-dump", top_k=K)  # the file is also a stat dump
    assert np.array_equal(back.layer_counts(), recorded.layer_counts()) and back.model.layout().moe_layers == MOE
    bare = Trace.from_counts(ModelSpec("bare", L, E, K), recorded.layer_counts())  # no layout
    with pytest.raises(PlacementInputError, match="this trace does not record which hidden layers"):
        placement.interop.export_load(bare, tmp_path / "x.json", "sglang-logical-count")


def _write_safetensors(path, tensors: dict) -> None:
    """The safetensors layout (8-byte header length, JSON header, little-endian buffer), written by hand."""
    header, chunks, offset = {}, [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<i8").tobytes()
        header[name] = {"dtype": "I64", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(chunks))


def _trtllm_stats(d, recorded: Trace, *, same_on_every_rank: bool = False, writer=_write_safetensors):
    """``EXPERT_STATISTIC_PATH`` as TensorRT-LLM writes it: two iterations, decoder layers ``MOE``."""
    d.mkdir(exist_ok=True)
    (d / "meta_info.json").write_text(json.dumps({"num_experts": E, "num_experts_per_token": K}))
    for rank in range(recorded.num_ranks):
        mine = recorded.experts if same_on_every_rank else recorded.experts[recorded.origin == rank]
        records = {}
        for it, part in enumerate(np.array_split(mine, 2)):
            for l, layer_idx in enumerate(MOE):
                records[f"{100 + it}_{layer_idx}"] = np.bincount(part[:, l].ravel(), minlength=E).astype(np.int64)
        writer(d / f"rank{rank}.safetensors", records)
    return d


def test_trtllm_stats_give_per_rank_counts_at_the_recorded_layers(tmp_path, recorded):
    d = _trtllm_stats(tmp_path / "stats", recorded)
    (d / "rank0_raw.safetensors").write_bytes(b"not read")
    got = import_trace(d, "trtllm-stats")
    assert got.kind == "counts" and got.counts.shape == (4, L, E) and got.top_k == K
    for r in range(4):
        assert np.array_equal(got.counts[r], Trace.from_tokens(recorded.model, recorded.experts[recorded.origin == r])
                              .layer_counts())
    assert got.model.layout() == LayerLayout(MOE, None, "stats", None) and got.metadata["recorded"] == "sent"
    # a placement solved on it keys TensorRT-LLM's file by those layers with no flag; SGLang's needs H
    p = placement.solve(got, "fat-tree:2x2", method="eplb", redundant=4).placement
    out = tmp_path / "lb.yaml"
    export_placement(p, out, "trtllm-yaml")
    assert np.array_equal(trtllm_load(out, ep_size=4, moe_layers=MOE), p.slots)
    with pytest.raises(PlacementInputError, match="does not say how many there are.*--num-hidden-layers"):
        export_placement(p, tmp_path / "x.json", "sglang-json")
    export_placement(p, tmp_path / "x.json", "sglang-json", num_hidden_layers=H)
    assert np.array_equal(sglang_load(tmp_path / "x.json", ep_size=4, num_hidden_layers=H, num_logical_experts=E,
                                      redundant=4 * p.slots_per_gpu - E, moe_layers=MOE), p.slots)


def test_trtllm_stats_written_by_the_safetensors_package(tmp_path, recorded):
    st = pytest.importorskip("safetensors.numpy")
    ours = import_trace(_trtllm_stats(tmp_path / "a", recorded), "trtllm-stats")
    d = _trtllm_stats(tmp_path / "b", recorded, writer=lambda path, tensors: st.save_file(tensors, str(path)))
    theirs = import_trace(d, "trtllm-stats")
    assert np.array_equal(ours.counts, theirs.counts)


def test_trtllm_stats_refusals(tmp_path, recorded):
    d = _trtllm_stats(tmp_path / "tp", recorded, same_on_every_rank=True)
    got = import_trace(d / "meta_info.json", "trtllm-stats")
    assert got.metadata["recorded"] == "replicated" and got.counts.shape == (L, E)
    assert np.array_equal(got.counts, recorded.layer_counts())  # one copy, not four
    with pytest.raises(PlacementInputError, match="TensorRT-LLM counts slots, not experts, when its load balancer"):
        import_trace(d, "trtllm-stats", model=ModelSpec("m", L, 16, K))
    with pytest.raises(PlacementInputError, match=r"recorded layers \[1, 3, 5, 6\] are not model 'v''s MoE layers "
                       r"1..4"):
        import_trace(d, "trtllm-stats", model=ModelSpec("v", L, E, K, first_moe_layer=1))
    with pytest.raises(PlacementInputError, match="first_moe_layer=0, but the first recorded layer is 1"):
        import_trace(d, "trtllm-stats", first_moe_layer=0)
    with pytest.raises(PlacementInputError, match="recorded must be 'sent' or 'replicated'"):
        import_trace(d, "trtllm-stats", recorded="received")
    (d / "rank2.safetensors").unlink()
    with pytest.raises(PlacementInputError, match=r"no rank2.safetensors \(ranks 0..3 expected\)"):
        import_trace(d, "trtllm-stats")
    (d / "rank3.safetensors").write_bytes(b"\x00" * 4)
    (d / "rank2.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(PlacementInputError, match="is not a safetensors file"):
        import_trace(d, "trtllm-stats")
