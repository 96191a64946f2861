"""Trace value type, file formats and validation messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from placement.errors import NeedsTokenTraceError, PlacementInputError
from placement.trace import ModelSpec, Trace, load_trace, save_trace

SPEC = ModelSpec("t", num_layers=3, num_experts=8, top_k=2)


def make_trace(n: int = 50, seed: int = 0, origin: bool = True, weights: bool = True) -> Trace:
    rng = np.random.default_rng(seed)
    ex = np.stack([rng.permutation(8)[:2] for _ in range(n * 3)]).reshape(n, 3, 2)
    w = rng.random((n, 3, 2)).astype(np.float32) if weights else None
    o = rng.integers(0, 4, n) if origin else None
    return Trace.from_tokens(SPEC, ex, weights=w, origin=o, num_ranks=4 if origin else None)


def same(a: Trace, b: Trace) -> bool:
    return (np.array_equal(a.experts, b.experts)
            and (a.weights is None) == (b.weights is None)
            and (a.weights is None or np.allclose(a.weights, b.weights))
            and (a.origin is None) == (b.origin is None)
            and (a.origin is None or np.array_equal(a.origin, b.origin)))


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".parquet"])
def test_round_trip(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="parquet traces need pyarrow (the parquet extra)")
    t = make_trace()
    path = save_trace(t, tmp_path / f"t{suffix}")
    back = load_trace(path, model=SPEC if suffix != ".npz" else None)
    assert same(t, back)
    assert back.model.num_experts == 8 and back.top_k == 2


def test_npz_keeps_model_and_counts(tmp_path):
    spec = ModelSpec("ds", 2, 16, 4, num_shared_experts=1, num_groups=4, topk_groups=2, first_moe_layer=3,
                     hidden_size=7168)
    counts = np.arange(2 * 2 * 16).reshape(2, 2, 16)
    t = Trace.from_counts(spec, counts)
    back = load_trace(save_trace(t, tmp_path / "c.npz"))
    assert back.kind == "counts" and back.model == spec and back.num_ranks == 2
    assert np.array_equal(back.counts, counts)


def test_exflow_npy(tmp_path):
    ids = np.array([[0, 3, 1], [2, 2, 0]])
    np.save(tmp_path / "exflow.npy", ids)
    t = load_trace(tmp_path / "exflow.npy")
    assert t.top_k == 1 and t.num_layers == 3 and t.num_experts == 4
    assert np.array_equal(t.experts[:, :, 0], ids)
    back = load_trace(save_trace(t, tmp_path / "again.npy"))
    assert np.array_equal(back.experts, t.experts)
    with pytest.raises(PlacementInputError, match="top-1 routing; this trace has top_k=2"):
        save_trace(make_trace(), tmp_path / "x.npy")


def test_count_trace_refuses_token_statistics():
    t = Trace.from_counts(SPEC, np.ones((3, 8), dtype=np.int64))
    assert t.kind == "counts"
    assert t.layer_counts().shape == (3, 8)
    with pytest.raises(NeedsTokenTraceError, match="needs a per-token trace"):
        t.require_tokens("transition statistics")


# ------------------------------------------------------------------ validation messages
def test_out_of_range_expert():
    ex = np.zeros((2, 3, 2), dtype=int)
    ex[..., 1] = 1
    ex[1, 2, 1] = 8
    with pytest.raises(PlacementInputError, match=r"field 'experts': expert id 8 at token 1, layer 2, slot 1 is "
                                                  r"outside \[0, 8\)"):
        Trace.from_tokens(SPEC, ex, source="f.npz")


def test_duplicate_in_topk():
    ex = np.tile(np.array([0, 1]), (2, 3, 1))
    ex[0, 1] = [5, 5]
    with pytest.raises(PlacementInputError, match="token 0 at layer 1 selects expert 5 twice"):
        Trace.from_tokens(SPEC, ex)


def test_wrong_shape():
    with pytest.raises(PlacementInputError, match=r"does not match \[tokens, layers=3, k=2\]"):
        Trace.from_tokens(SPEC, np.zeros((4, 2, 2), dtype=int))


def test_nan_weights():
    t = make_trace(weights=True)
    w = t.weights.copy()
    w[3, 1, 0] = np.nan
    with pytest.raises(PlacementInputError, match="field 'weights': non-finite gate weight at token 3, layer 1"):
        Trace.from_tokens(SPEC, t.experts, weights=w)


def test_empty_trace():
    with pytest.raises(PlacementInputError, match="the trace is empty"):
        Trace.from_tokens(SPEC, np.zeros((0, 3, 2), dtype=int))
    with pytest.raises(PlacementInputError, match="all counts are zero"):
        Trace.from_counts(SPEC, np.zeros((3, 8)))


def test_group_limit():
    spec = ModelSpec("g", 1, 8, 3, num_groups=4, topk_groups=2)
    with pytest.raises(PlacementInputError, match="uses 3 expert groups, more than topk_groups=2"):
        Trace.from_tokens(spec, np.array([[[0, 2, 4]]]))
    Trace.from_tokens(spec, np.array([[[0, 1, 4]]]))  # two groups: fine


def test_bad_origin():
    t = make_trace()
    with pytest.raises(PlacementInputError, match=r"origin ranks must lie in \[0, num_ranks=2\)"):
        Trace.from_tokens(SPEC, t.experts, origin=t.origin, num_ranks=2)


def test_model_spec_errors():
    with pytest.raises(PlacementInputError, match="top_k=9 exceeds num_experts=8"):
        ModelSpec("m", 1, 8, 9).validate()
    with pytest.raises(PlacementInputError, match="num_groups=3 must be >= 1 and divide num_experts=8"):
        ModelSpec("m", 1, 8, 2, num_groups=3).validate()
    with pytest.raises(PlacementInputError, match=r"unknown key\(s\) \['experts'\]"):
        ModelSpec.from_dict({"num_layers": 1, "num_experts": 4, "top_k": 1, "experts": 3})


def test_file_errors(tmp_path):
    with pytest.raises(PlacementInputError, match="missing.npz: file not found"):
        load_trace(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(PlacementInputError, match="not a readable .npz archive"):
        load_trace(tmp_path / "junk.npz")
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(PlacementInputError, match="field 'format': missing 'format = placement-trace'"):
        load_trace(tmp_path / "foreign.npz")
    with pytest.raises(PlacementInputError, match="cannot tell the trace format from the extension '.txt'"):
        load_trace(tmp_path / "t.txt")
    np.savez(tmp_path / "badmodel.npz", format=np.array("placement-trace"), version=np.array(1),
             model=np.array(json.dumps({"num_layers": 1, "num_experts": 4, "top_k": 9})),
             experts=np.zeros((1, 1, 9)))
    with pytest.raises(PlacementInputError, match="badmodel.npz: field 'model.top_k'"):
        load_trace(tmp_path / "badmodel.npz")


def test_csv_errors(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("token,layer,expert\n0,0,1\n")
    with pytest.raises(PlacementInputError, match=r"bad.csv: field 'rank_in_topk': missing column\(s\)"):
        load_trace(p)
    p.write_text("token,layer,rank_in_topk,expert\n0,0,0,1\n0,0,1,2\n1,0,0,3\n")
    with pytest.raises(PlacementInputError, match="every \\(token, layer\\) must list rank_in_topk 0..k-1"):
        load_trace(p)
    p.write_text("token,layer,rank_in_topk,expert,weight\n0,0,0,1,0.5\n0,0,1,2,nan\n")
    with pytest.raises(PlacementInputError, match="field 'weight': NaN or infinite weight in row 1"):
        load_trace(p)
    p.write_text("token,layer,rank_in_topk,expert\n0,0,0,1\n0,0,1,1\n")
    with pytest.raises(PlacementInputError, match="selects expert 1 twice"):
        load_trace(p)


def test_failed_write_leaves_no_file(tmp_path):
    t = make_trace()
    with pytest.raises(PlacementInputError):
        save_trace(t, tmp_path / "nodir" / "t.npz")
    assert not (tmp_path / "nodir").exists()
    save_trace(t, tmp_path / "ok.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.npz"]


def test_head_and_summary():
    t = make_trace()
    h = t.head(10)
    assert h.num_tokens == 10 and np.array_equal(h.experts, t.experts[:10])
    s = t.summary()
    assert s["tokens"] == 50 and s["selections"] == 50 * 3 * 2 and s["has_origin"]


def test_trace_package_never_imports_stats():
    # one-way dependency: placement.stats counts through placement.trace.counting, never the reverse
    import ast
    from pathlib import Path

    import placement.trace

    for path in Path(placement.trace.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):  # resolve "from ..x import y" against placement.trace
                base = ".".join(["placement", "trace"][:3 - node.level] if node.level else [])
                module = ".".join(p for p in (base, node.module or "") if p)
                names = [module] + [f"{module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n == "placement.stats" or n.startswith("placement.stats.") for n in names), \
                f"{path.name} imports placement.stats"


def test_layer_counts_counts_through_the_trace_kernels():
    t = make_trace(seed=3)
    expect = np.zeros((3, 8), dtype=np.int64)
    for token in t.experts:
        for layer, ids in enumerate(token):
            expect[layer, ids] += 1
    np.testing.assert_array_equal(t.layer_counts(), expect)
