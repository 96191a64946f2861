"""Imports of recorded loads: SGLang expert-distribution dumps (stat, per_pass, per_token) and vLLM/EPLB
load tensors.  Every dump is built here, in the documented layout, from a known token trace routed through a
replicated placement, so the expected trace is known exactly."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import placement
from placement import NeedsTokenTraceError, PlacementInputError
from placement.baselines.eplb import rebalance_experts
from placement.interop import import_trace, load_expert_load, load_sglang_dump
from placement.stats import expert_load
from placement.trace import ModelSpec, Trace

torch = pytest.importorskip("torch", reason="SGLang dumps are torch.save files (the runtime extra)")

H, FIRST, L, E, K, R = 6, 2, 4, 8, 2, 2  # hidden layers, first MoE layer, MoE layers, experts, top-k, ranks


@pytest.fixture(scope="module")
def trace() -> Trace:
    rng = np.random.default_rng(7)
    n = 240
    experts = np.argsort(rng.random((n, L, E)) ** np.linspace(1, 3, E), axis=2)[:, :, :K]
    return Trace.from_tokens(ModelSpec("dump", L, E, K, first_moe_layer=FIRST), experts,
                             origin=rng.integers(0, R, n), num_ranks=R)


@pytest.fixture(scope="module")
def p2l(trace) -> np.ndarray:
    """SGLang's ``physical_to_logical_map [H, P]``: EPLB placement rows, trivial rows for dense layers."""
    res = rebalance_experts(trace.layer_counts(), 12, 1, 1, 4)
    table = np.tile(np.arange(12) % E, (H, 1))
    table[FIRST:FIRST + L] = res.phy2log
    return table


def _physical(trace: Trace, p2l: np.ndarray) -> np.ndarray:
    """``[H, tokens, 8]`` physical slot per choice (replica ``t mod replicas``); -1 pads and dense layers."""
    n = trace.num_tokens
    out = np.full((H, n, 8), -1, dtype=np.int32)
    for layer in range(L):
        h = FIRST + layer
        for e in range(E):
            reps = np.flatnonzero(p2l[h] == e)
            t, j = np.nonzero(trace.experts[:, layer, :] == e)
            out[h, t, j] = reps[t % len(reps)]
    return out


def _detail_dumps(tmp_path, trace, p2l, per_token: bool, suffix: str = ".pt") -> list:
    """One file per rank, two passes (records) per rank, as ``_DetailAccumulator.dump`` writes."""
    phys = _physical(trace, p2l)
    files = []
    for rank in range(R):
        idx = np.flatnonzero(trace.origin == rank)
        records = []
        for pass_id, part in enumerate(np.array_split(idx, 2)):
            ids = phys[:, part, :]
            count = np.zeros((H, p2l.shape[1]), dtype=np.int64)
            for h in range(H):
                valid = ids[h][ids[h] >= 0]
                count[h] = np.bincount(valid, minlength=p2l.shape[1])
            rec = {"forward_pass_id": pass_id, "rank": rank, "gatherer_key": "primary",
                   "global_physical_count": torch.from_numpy(count)}
            if per_token:
                rec.update(topk_ids_of_layer=torch.from_numpy(ids), input_ids=list(range(len(part))))
            records.append(rec)
        path = tmp_path / f"expert_distribution_recorder_1700000000.0_{rank}{suffix}"
        data = {"records": records, "last_physical_to_logical_map": torch.from_numpy(p2l)}
        if suffix == ".pt":
            torch.save(data, path)
        else:
            path.write_text(json.dumps(_jsonable(data)))
        files.append(path)
    return files


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


def _by_rank(trace: Trace, rank: int) -> np.ndarray:
    return trace.experts[trace.origin == rank]


# ----------------------------------------------------------------------------------- per_token
def test_per_token_dump_gives_the_token_trace(tmp_path, trace, p2l):
    files = _detail_dumps(tmp_path, trace, p2l, per_token=True)
    got = load_sglang_dump(files)
    assert got.kind == "tokens"
    assert (got.num_layers, got.num_experts, got.top_k) == (L, E, K)
    assert got.model.first_moe_layer == FIRST and got.metadata["mode"] == "per_token"
    assert np.array_equal(got.experts, np.concatenate([_by_rank(trace, r) for r in range(R)]))
    sizes = [int((trace.origin == r).sum()) for r in range(R)]
    assert np.array_equal(got.origin, np.repeat(np.arange(R), sizes))
    assert got.num_ranks == R


def test_per_token_dump_with_model_and_json(tmp_path, trace, p2l):
    files = _detail_dumps(tmp_path, trace, p2l, per_token=True, suffix=".json")
    got = load_sglang_dump(files, model=trace.model)
    # the dump's rows are the hidden layers: the spec gains the layout it did not know
    assert got.model == replace(trace.model, num_hidden_layers=H)
    assert got.model.layout().moe_layers == tuple(range(FIRST, FIRST + L))
    assert np.array_equal(np.sort(got.experts, axis=2),
                          np.sort(np.concatenate([_by_rank(trace, r) for r in range(R)]), axis=2))


def test_per_token_drops_padding_tokens(tmp_path, trace, p2l):
    phys = _physical(trace, p2l)[:, :10]
    phys = np.concatenate([phys, np.full((H, 3, 8), -1, dtype=np.int32)], axis=1)  # 3 padding tokens
    path = tmp_path / "d.pt"
    torch.save({"records": [{"rank": 0, "topk_ids_of_layer": torch.from_numpy(phys)}],
                "last_physical_to_logical_map": torch.from_numpy(p2l)}, path)
    got = load_sglang_dump(path)
    assert got.num_tokens == 10 and got.metadata["dropped_tokens"] == 3
    assert np.array_equal(got.experts, trace.experts[:10])


def test_per_token_rejects_bad_ids(tmp_path, trace, p2l):
    phys = _physical(trace, p2l)[:, :5]
    bad = phys.copy()
    bad[FIRST, 1, 0] = 99
    path = tmp_path / "d.pt"
    torch.save({"records": [{"rank": 0, "topk_ids_of_layer": torch.from_numpy(bad)}],
                "last_physical_to_logical_map": torch.from_numpy(p2l)}, path)
    message = r"physical id 99 at layer 2, token 1 is outside \[0, 12\)"
    with pytest.raises(PlacementInputError, match=message) as err:
        load_sglang_dump(path)
    assert err.value.source == str(path) and err.value.field == "records[0].topk_ids_of_layer"
    partial = phys.copy()
    partial[FIRST + 1, 3, 1] = -1  # token 3 picks one expert instead of two at MoE layer 1
    torch.save({"records": [{"rank": 0, "topk_ids_of_layer": torch.from_numpy(partial)}],
                "last_physical_to_logical_map": torch.from_numpy(p2l)}, path)
    with pytest.raises(PlacementInputError, match="token 3 chose 1 experts at MoE layer 1, expected top_k=2"):
        load_sglang_dump(path)


# ----------------------------------------------------------------------------------- per_pass / stat
def test_per_pass_dump_gives_counts_per_rank(tmp_path, trace, p2l):
    files = _detail_dumps(tmp_path, trace, p2l, per_token=False)
    with pytest.raises(PlacementInputError, match="top_k"):
        load_sglang_dump(files)
    got = load_sglang_dump(files, top_k=K)
    assert got.kind == "counts" and got.counts.shape == (R, L, E) and got.num_ranks == R
    for r in range(R):
        assert np.array_equal(got.counts[r], expert_load(_by_rank(trace, r), E))
    assert got.model.first_moe_layer == FIRST


@pytest.mark.parametrize("steps", [True, False])
def test_stat_dump_sums_steps(tmp_path, trace, steps):
    load = trace.layer_counts()
    full = np.zeros((H, E), dtype=np.int64)
    full[FIRST:FIRST + L] = load
    if steps:  # three buffered steps that add up to the load
        a = full // 3
        logical = np.stack([a, a, full - 2 * a])
    else:
        logical = full
    path = tmp_path / "expert_distribution_recorder_1700000000.0.pt"
    torch.save({"rank": 0, "logical_count": torch.from_numpy(logical),
                "average_utilization_rate_over_window": None}, path)
    got = load_sglang_dump(path, top_k=K)
    assert got.kind == "counts" and np.array_equal(got.counts, load)
    assert got.model.first_moe_layer == FIRST and got.metadata["mode"] == "stat"
    # a model preset-like spec places the MoE layers without detection
    spec = ModelSpec("m", L, E, K, first_moe_layer=FIRST)
    assert np.array_equal(load_sglang_dump(path, model=spec).counts, load)


def test_count_trace_works_with_load_methods_and_is_refused_by_token_methods(tmp_path, trace):
    path = tmp_path / "stat.pt"
    torch.save({"rank": 0, "logical_count": torch.from_numpy(trace.layer_counts()[None])}, path)
    counts = load_sglang_dump(path, top_k=K)
    sol = placement.solve(counts, "fat-tree:2x4", method="eplb")
    assert sol.placement.num_layers == L and sol.placement.num_experts == E
    with pytest.raises(NeedsTokenTraceError, match="needs a per-token trace"):
        placement.solve(counts, "fat-tree:2x4", method="exflow")


def test_not_a_dump(tmp_path, trace, p2l):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(PlacementInputError, match="not an expert-distribution dump") as err:
        load_sglang_dump(path)
    assert err.value.source == str(path)
    stat = tmp_path / "s.pt"
    torch.save({"logical_count": torch.ones(H, E, dtype=torch.int64)}, stat)
    detail = _detail_dumps(tmp_path, trace, p2l, per_token=False)[0]
    with pytest.raises(PlacementInputError, match="mixes stat dumps"):
        load_sglang_dump([stat, detail], top_k=K)
    model = ModelSpec("big", num_layers=10, num_experts=E, top_k=K, first_moe_layer=0)
    with pytest.raises(PlacementInputError, match="has 6 layers, but model 'big' has 10 MoE layers"):
        load_sglang_dump(stat, model=model)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(PlacementInputError, match="cannot read as a .pt file") as err:
        load_sglang_dump(bad)
    assert err.value.source == str(bad)


# ----------------------------------------------------------------------------------- vLLM / EPLB loads
def test_expert_load_npy_and_json(tmp_path, trace):
    load = trace.layer_counts()
    npy = tmp_path / "load.npy"
    np.save(npy, load)
    got = load_expert_load(npy, top_k=K)
    assert got.kind == "counts" and np.array_equal(got.counts, load) and got.top_k == K
    js = tmp_path / "load.json"
    js.write_text(json.dumps({"expert_load": load.tolist()}))
    assert np.array_equal(import_trace(js, "expert-load", model=trace.model).counts, load)


def test_expert_load_vllm_window_is_folded_onto_logical_experts(tmp_path, trace, p2l):
    moe_map = p2l[FIRST:FIRST + L]  # vLLM's maps cover MoE layers only
    phys = _physical(trace, p2l)[FIRST:FIRST + L]  # [L, tokens, 8]
    window = np.zeros((3, L, moe_map.shape[1]), dtype=np.int64)
    for step, part in enumerate(np.array_split(np.arange(trace.num_tokens), 3)):
        for layer in range(L):
            ids = phys[layer, part][phys[layer, part] >= 0]
            window[step, layer] = np.bincount(ids, minlength=moe_map.shape[1])
    path = tmp_path / "eplb_state.pt"
    torch.save({"expert_load_window": torch.from_numpy(window),
                "physical_to_logical_map": torch.from_numpy(moe_map)}, path)
    got = load_expert_load(path, top_k=K)
    assert np.array_equal(got.counts, trace.layer_counts())
    assert got.metadata["key"] == "expert_load_window"


def test_expert_load_by_rank(tmp_path, trace):
    per_rank = np.stack([expert_load(_by_rank(trace, r), E) for r in range(R)])
    path = tmp_path / "ranks.npy"
    np.save(path, per_rank)
    got = load_expert_load(path, top_k=K, by_rank=True)
    assert got.counts.shape == (R, L, E) and got.num_ranks == R
    assert np.array_equal(load_expert_load(path, top_k=K).counts, trace.layer_counts())  # steps: summed


@pytest.mark.parametrize("content, field, message", [
    ({"foo": [[1, 2]]}, None, "holds none of"),
    ({"expert_load": [[1, -2]]}, "expert_load", "non-negative"),
    ({"expert_load": [[0, 0]]}, "expert_load", "no layer recorded any routed token"),
    ({"expert_load": [1, 2]}, "expert_load", "expected a 2-D or 3-D array"),
    ({"expert_load_pass": [[1, 2]]}, "physical_to_logical_map", "missing"),
    ({"expert_load_pass": [[1, 2, 3]], "physical_to_logical_map": [[0, 1]]}, "expert_load_pass",
     "does not end with"),
])
def test_bad_expert_load(tmp_path, content, field, message):
    path = tmp_path / "load.json"
    path.write_text(json.dumps(content))
    with pytest.raises(PlacementInputError, match=message) as err:
        load_expert_load(path, top_k=1)
    assert err.value.source == str(path) and err.value.field == field


def test_expert_load_needs_top_k_without_model(tmp_path):
    path = tmp_path / "load.npy"
    np.save(path, np.ones((2, 4), dtype=np.int64))
    with pytest.raises(PlacementInputError, match=r"pass top_k \(--top-k\) or a model preset") as err:
        load_expert_load(path)
    assert err.value.field == "top_k"
    got = load_expert_load(path, model=ModelSpec("m", 2, 4, 2))
    assert got.top_k == 2


def test_model_preset_by_name_cuts_dense_layers(tmp_path):
    # deepseek-v3: 3 dense layers then 58 MoE layers of 256 experts, top-8
    counts = np.zeros((61, 256), dtype=np.int64)
    counts[3:] = 8
    path = tmp_path / "ds.npy"
    np.save(path, counts)
    got = load_expert_load(path, model="deepseek-v3")
    assert got.counts.shape == (58, 256) and got.top_k == 8 and got.model.name == "deepseek-v3"


# ----------------------------------------------------------------------------------- recorder modes
def _pass_dumps(tmp_path, counts_of_rank: list[np.ndarray], p2l) -> list:
    files = []
    for rank, count in enumerate(counts_of_rank):
        path = tmp_path / f"rec_{rank}.pt"
        torch.save({"records": [{"forward_pass_id": 0, "rank": rank, "gatherer_key": "primary",
                                 "global_physical_count": torch.from_numpy(count)}],
                    "last_physical_to_logical_map": torch.from_numpy(p2l)}, path)
        files.append(path)
    return files


def _all_physical_counts(trace, p2l) -> np.ndarray:
    """``[H, P]`` physical-slot counts of every token of the trace."""
    phys = _physical(trace, p2l)
    return np.stack([np.bincount(phys[h][phys[h] >= 0], minlength=p2l.shape[1]) for h in range(H)])


def test_deepep_low_latency_per_pass_is_detected_and_gives_no_origins(tmp_path, trace, p2l):
    # DeepEP low-latency: rank r counts what its own slots [r * P / R, (r + 1) * P / R) received, from every rank
    total = _all_physical_counts(trace, p2l)
    S = p2l.shape[1] // R
    received = [np.where(np.arange(p2l.shape[1]) // S == r, total, 0) for r in range(R)]
    files = _pass_dumps(tmp_path, received, p2l)
    got = load_sglang_dump(files, top_k=K)
    assert got.metadata["recorded"] == "received" and got.metadata["recorded_detected"]
    assert got.counts.shape == (L, E) and got.num_ranks is None  # origins are not invented
    assert np.array_equal(got.counts, trace.layer_counts())
    # read as senders (forced), every token would look local: what the import refuses to assume
    forced = load_sglang_dump(files, top_k=K, recorded="sent")
    assert forced.counts.shape == (R, L, E) and forced.metadata["recorded"] == "sent"


def test_tensor_parallel_attention_per_pass_and_per_token_keep_one_copy(tmp_path, trace, p2l):
    total = _all_physical_counts(trace, p2l)
    got = load_sglang_dump(_pass_dumps(tmp_path, [total, total], p2l), top_k=K)
    assert got.metadata["recorded"] == "replicated" and got.counts.shape == (L, E)
    assert np.array_equal(got.counts, trace.layer_counts())  # not twice the tokens
    phys = _physical(trace, p2l)
    files = []
    for rank in range(R):
        path = tmp_path / f"tok_{rank}.pt"
        torch.save({"records": [{"rank": rank, "topk_ids_of_layer": torch.from_numpy(phys)}],
                    "last_physical_to_logical_map": torch.from_numpy(p2l)}, path)
        files.append(path)
    tokens = load_sglang_dump(files)
    assert tokens.metadata["recorded"] == "replicated" and tokens.origin is None
    assert np.array_equal(tokens.experts, trace.experts)
    with pytest.raises(PlacementInputError, match="per_token dumps record the tokens each rank routes"):
        load_sglang_dump(files, recorded="received")


def test_undecidable_or_contradicted_recorder_modes_are_refused(tmp_path, trace, p2l):
    total = _all_physical_counts(trace, p2l)
    files = _detail_dumps(tmp_path, trace, p2l, per_token=False)  # senders: ranks differ, counts everywhere
    assert load_sglang_dump(files, top_k=K).metadata["recorded"] == "sent"
    with pytest.raises(PlacementInputError, match="the ranks recorded different counts") as err:
        load_sglang_dump(files, top_k=K, recorded="replicated")
    assert err.value.field == "recorded"
    three = _pass_dumps(tmp_path, [total, total // 2, total - total // 2], p2l)  # 12 slots over 3 ranks: fine
    assert load_sglang_dump(three, top_k=K).metadata["recorded"] == "sent"
    five = _pass_dumps(tmp_path, [total // 5 + (r == 0) * (total % 5) for r in range(5)], p2l)
    with pytest.raises(PlacementInputError, match="12 physical slots do not divide over the 5 ranks recorded.*"
                       "pass recorded='sent' or 'received'"):
        load_sglang_dump(five, top_k=K)
    assert load_sglang_dump(five, top_k=K, recorded="received").counts.shape == (L, E)
    with pytest.raises(PlacementInputError, match=r"no records of rank\(s\) \[0\]"):
        load_sglang_dump(five[1:2], top_k=K)
