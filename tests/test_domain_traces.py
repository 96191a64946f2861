"""The real per-domain expert load counts of data/traces/domains/ (allenai/OLMoE, Apache-2.0).

Each file is read back, its shape, layout and provenance checked, and the load-shift figures of the
calibration notes ("Real load shift between workloads") recomputed from the counts: the hottest expert's
load over the mean per layer (median of the 3 recorded layers) and the total variation distance between
two domains' load distributions (per layer, then the mean of the 3 layers for each pair of domains).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from placement import data, load_trace

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("arxiv", "book", "c4", "github", "wikipedia")
TOKENS = 102 * 2048  # tokens per domain: 102 sequences of 2048 (every layer sums to TOKENS x top-k)
#: file stem -> (model name, hidden layers, experts, top-k, hidden size, intermediate size)
MODELS = {"olmoe": ("olmoe-1b-7b", 16, 64, 8, 2048, 1024),
          "mixtral-8x7b": ("mixtral-8x7b", 32, 8, 2, 4096, 14336)}


def _counts(stem: str) -> dict[str, np.ndarray]:
    return {d: data.trace(f"domains/{stem}-{d}").layer_counts() for d in DOMAINS}


@pytest.mark.parametrize("stem", MODELS)
def test_domain_traces_are_real_counts_with_their_layout_and_source(stem):
    name, hidden, experts, top_k, width, ffn = MODELS[stem]
    for domain in DOMAINS:
        path = data.path(f"domains/{stem}-{domain}")
        assert path.stat().st_size < 8192
        t = load_trace(path)
        m = t.model
        assert t.kind == "counts" and t.counts.shape == (3, experts)
        assert (m.name, m.num_layers, m.num_experts, m.top_k, m.hidden_size, m.intermediate_size) == (
            name, 3, experts, top_k, width, ffn)
        assert (m.num_hidden_layers, m.moe_layers, m.first_moe_layer) == (hidden, (0, 7, 15), 0)
        assert t.model.layout().describe().startswith(f"MoE layers [0, 7, 15] of {hidden} hidden layers")
        md = t.metadata
        assert md["synthetic"] is False and md["domain"] == domain and md["hidden_layers"] == [0, 7, 15]
        assert md["license"] == "Apache-2.0" and md["source_repository"].endswith("allenai/OLMoE")
        folder = "olmoe" if stem == "olmoe" else "mistral"
        assert md["source_path"] == f"scripts/routing_output/{folder}/expert_counts/{domain}.pkl"
        assert md["source_commit"] == _converter().COMMIT
        assert md["source_blob"] == _converter().BLOBS[md["source_path"].removeprefix("scripts/routing_output/")]
        # independently of load_trace: the archive's own counts, every selection of every token present
        with np.load(path, allow_pickle=False) as z:
            raw = z["counts"]
        assert np.array_equal(raw, t.layer_counts()) and (raw >= 0).all()
        assert raw.sum(axis=1).tolist() == [TOKENS * top_k] * 3 and t.num_tokens == TOKENS
        assert (raw.max(axis=1) <= TOKENS).all()  # top-k picks distinct experts: at most one selection a token


def _hot_over_mean(counts: np.ndarray) -> float:
    """Median over the layers of the hottest expert's load over the mean load."""
    return float(np.median(counts.max(axis=1) / counts.mean(axis=1)))


def _tv_distances(counts: dict[str, np.ndarray]) -> dict[tuple[str, str], float]:
    """Each pair of domains -> the mean over the layers of the total variation distance."""
    out = {}
    for a, b in itertools.combinations(DOMAINS, 2):
        p = counts[a] / counts[a].sum(axis=1, keepdims=True)
        q = counts[b] / counts[b].sum(axis=1, keepdims=True)
        tv = 0.5 * np.abs(p - q).sum(axis=1)
        assert tv == pytest.approx(1.0 - np.minimum(p, q).sum(axis=1), abs=1e-12)  # the same distance, other form
        out[(a, b)] = float(tv.mean())
    return out


def test_load_shift_figures_of_the_calibration_notes():
    olmoe, mixtral = _counts("olmoe"), _counts("mixtral-8x7b")
    hot = {d: _hot_over_mean(c) for d, c in olmoe.items()}
    assert min(hot, key=hot.get) == "c4" and max(hot, key=hot.get) == "arxiv"
    assert (round(hot["c4"], 1), round(hot["arxiv"], 1)) == (2.7, 7.5)  # the notes: "2.7 (C4) to 7.5 (arXiv)"
    hot = [_hot_over_mean(c) for c in mixtral.values()]
    assert (round(min(hot), 2), round(max(hot), 2)) == (1.12, 1.30)  # the notes: "hottest/mean 1.12-1.30"

    tv = list(_tv_distances(olmoe).values())
    assert len(tv) == 10
    # the notes: "0.23-0.53 (median 0.41)"
    assert (round(min(tv), 2), round(max(tv), 2), round(float(np.median(tv)), 2)) == (0.23, 0.53, 0.41)
    tv = list(_tv_distances(mixtral).values())
    assert (round(min(tv), 2), round(max(tv), 2)) == (0.03, 0.08)  # the notes: "distance 0.03-0.08"


def _converter():
    script = ROOT / "data" / "traces" / "domains" / "make_domains.py"
    spec = importlib.util.spec_from_file_location("make_domains", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_converter_reads_counters_only_and_checks_its_sources(tmp_path):
    conv = _converter()
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([_Evil()]))
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        conv.read_counts(evil, 64, 8)
    # a routing_output folder of the source's shape, with even loads: converted only when told it is unchecked
    src = tmp_path / "routing_output"
    for folder, experts, top_k in (("olmoe", 64, 8), ("mistral", 8, 2)):
        (src / folder / "expert_counts").mkdir(parents=True)
        layer = Counter({np.int64(e): TOKENS * top_k // experts for e in range(experts)})
        for d in DOMAINS:
            (src / folder / "expert_counts" / f"{d}.pkl").write_bytes(pickle.dumps([layer, layer, layer]))
    with pytest.raises(SystemExit, match="git blob .* is not"):
        conv.main([str(src), "--out", str(tmp_path)])
    assert conv.main([str(src), "--out", str(tmp_path), "--unchecked"]) == 0
    t = load_trace(tmp_path / "mixtral-8x7b-book.npz")
    assert t.layer_counts().tolist() == [[TOKENS * 2 // 8] * 8] * 3 and t.model.moe_layers == (0, 7, 15)
    assert len(list(tmp_path.glob("*.npz"))) == 10
