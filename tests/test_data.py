"""placement.data: the bundled sample traces, found from any directory and shipped in a wheel."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest

import placement
from placement import data
from placement.errors import PlacementInputError

ROOT = Path(__file__).resolve().parents[1]


def test_samples_are_the_files_of_data_traces(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    found = data.samples()
    folder = ROOT / "data" / "traces"
    on_disk = sorted(p.stem for p in folder.iterdir() if p.suffix in data.SAMPLE_SUFFIXES)
    on_disk += sorted(f"domains/{p.stem}" for p in (folder / "domains").iterdir() if p.suffix in data.SAMPLE_SUFFIXES)
    assert sorted(found) == sorted(on_disk) and "deepseek-v3" in found and "domains/olmoe-arxiv" in found
    assert len(on_disk) == len(set(on_disk))
    for name, file in found.items():
        assert file.is_file() and f"{file.parent.name}/{file.stem}".endswith(name)
        assert file.resolve() == (folder / f"{name}{file.suffix}").resolve()


def test_trace_and_path(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    t = data.trace("deepseek-v3")
    direct = placement.load_trace(ROOT / "data" / "traces" / "deepseek-v3.npz")
    assert (t.num_layers, t.num_experts, t.top_k, t.num_tokens) == (58, 256, 8, 2048)
    assert (t.experts == direct.experts).all()
    assert data.path("mixtral-8x7b-top1.npy") == data.path("mixtral-8x7b-top1")
    assert data.trace("mixtral-8x7b-64tokens").num_tokens == 64
    real = ROOT / "data" / "traces" / "domains" / "mixtral-8x7b-c4.npz"
    assert data.path("domains/mixtral-8x7b-c4.npz").resolve() == real == data.path("domains/mixtral-8x7b-c4").resolve()


def test_unknown_sample_names_the_choices():
    with pytest.raises(PlacementInputError, match="no bundled sample 'gpt-5'; choose one of .*deepseek-v3"):
        data.path("gpt-5")
    with pytest.raises(PlacementInputError, match="must be a sample name"):
        data.trace(3)


def test_wheel_carries_every_sample():
    """The package-data globs of pyproject.toml match every sample, and the link the wheel build reads
    (src/placement/data/samples) leads to data/traces."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is 3.11+; the project supports 3.10
    section = text.split("[tool.setuptools.package-data]", 1)[1]
    globs = re.findall(r'"([^"]+)"', re.search(r"^placement = \[(.*?)\]", section, flags=re.M | re.S).group(1))
    assert "py.typed" in globs
    link = ROOT / "src" / "placement" / "data" / "samples"
    assert link.resolve() == (ROOT / "data" / "traces").resolve()
    def matches(rel: str, glob: str) -> bool:  # setuptools globs: "*" never crosses a "/"
        parts, pattern = rel.split("/"), glob.split("/")
        return len(parts) == len(pattern) and all(fnmatch(a, b) for a, b in zip(parts, pattern, strict=True))

    assert not matches("data/samples/domains/x.npz", "data/samples/*.npz")
    for name, file in data.samples().items():
        assert any(matches(f"data/samples/{name}{file.suffix}", g) for g in globs), name


def test_api_refuses_wrong_types_with_the_input_error(tmp_path):
    t = data.trace("mixtral-8x7b")
    with pytest.raises(PlacementInputError, match="field 'trace': must be a Trace or TraceStats, got str; load"):
        placement.solve("mixtral.npz", "fat-tree:2x4")
    with pytest.raises(PlacementInputError, match="field 'topology': must be a Topology, a preset spec"):
        placement.solve(t, 8)
    with pytest.raises(PlacementInputError, match="field 'trace': must be a Trace or TraceStats, got int"):
        placement.compare(5, "fat-tree:2x4", ["contiguous"])
    sol = placement.solve(t, "fat-tree:2x4", method="round_robin")
    with pytest.raises(PlacementInputError, match="field 'placement': must be a Placement"):
        placement.evaluate(sol, t, "fat-tree:2x4")
    with pytest.raises(PlacementInputError, match="field 'topology'"):
        placement.evaluate(sol.placement, t, 8)
    with pytest.raises(PlacementInputError, match="multi-server preset: fat-tree:4x8"):
        placement.evaluate(sol.placement, t, "dgx-h100:4x8")
    # evaluate takes topologies as solve does: a preset string and a YAML file give the same figures
    from placement.topology import preset
    from placement.topology.yaml_io import save_topology_yaml

    yaml_path = tmp_path / "cluster.yaml"
    save_topology_yaml(preset("fat-tree:2x4"), yaml_path)
    figures = [placement.evaluate(sol.placement, t, topo).step_time
               for topo in ("fat-tree:2x4", preset("fat-tree:2x4"), yaml_path, str(yaml_path))]
    assert figures[0] > 0 and figures == pytest.approx([figures[0]] * 4, rel=1e-12)
