"""Placement value type, baselines and file round trips."""

from __future__ import annotations

import numpy as np
import pytest

from placement import Placement, load_placement
from placement.baselines.simple import contiguous, random_placement, round_robin
from placement.errors import PlacementInputError


def test_from_assignment_and_views():
    a = np.array([[0, 0, 1, 1], [1, 0, 1, 0]])
    p = Placement.from_assignment(a, num_gpus=2)
    assert p.slots.tolist() == [[[0, 1], [2, 3]], [[1, 3], [0, 2]]]
    assert np.array_equal(p.assignment(), a)
    assert not p.has_replicas
    assert p.replica_counts().sum() == 8
    assert p.phy2log().tolist() == [[0, 1, 2, 3], [1, 3, 0, 2]]
    assert p.slots_used().tolist() == [4, 4]


def test_replicas():
    slots = np.array([[[0, 1], [0, 2], [3, -1]]])
    p = Placement(slots, num_experts=4)
    assert p.has_replicas
    assert p.num_replicas().tolist() == [[2, 1, 1, 1]]
    assert p.gpus_of(0, 0).tolist() == [0, 1]
    with pytest.raises(PlacementInputError, match="has replicas"):
        p.assignment()


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip(tmp_path, suffix):
    p = Placement(np.array([[[0, 1], [0, 2], [3, -1]]]), num_experts=4,
                  metadata={"method": "hand", "objective": np.float64(1.5), "vec": np.arange(2)})
    path = p.save(tmp_path / f"p{suffix}")
    q = load_placement(path)
    assert np.array_equal(p.slots, q.slots) and q.num_experts == 4
    assert q.metadata == {"method": "hand", "objective": 1.5, "vec": [0, 1]}
    assert q.same_as(p)


def test_validation_messages(tmp_path):
    with pytest.raises(PlacementInputError, match="expert 2 of layer 0 is on no GPU"):
        Placement(np.array([[[0, 1], [3, -1]]]), num_experts=4)
    with pytest.raises(PlacementInputError, match=r"expert id 7 at layer 0, gpu 1, slot 0 is outside \[0, 4\)"):
        Placement(np.array([[[0, 1], [7, 2]]]), num_experts=4)
    with pytest.raises(PlacementInputError, match=r"expected shape \[layers, gpus, slots_per_gpu\]"):
        Placement(np.array([[0, 1]]), num_experts=2)
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "placement/9", "num_experts": 2, "slots": [[[0, 1]]]}')
    with pytest.raises(PlacementInputError, match="bad.json: field 'schema': unsupported schema 'placement/9'"):
        load_placement(bad)
    bad.write_text('{"schema": "placement/1", ')
    with pytest.raises(PlacementInputError, match="bad.json: invalid JSON at line 1"):
        load_placement(bad)
    bad.write_text('{"schema": "placement/1", "num_experts": 2, "num_gpus": 3, "slots": [[[0], [1]]]}')
    with pytest.raises(PlacementInputError, match="field 'num_gpus': says 3 but 'slots' has 2"):
        load_placement(bad)
    with pytest.raises(PlacementInputError, match="unknown placement file extension '.txt'"):
        Placement(np.array([[[0]]]), 1).save(tmp_path / "p.txt")


@pytest.mark.parametrize("E,G", [(8, 4), (8, 3), (4, 8), (256, 64)])
def test_baselines_are_balanced(E, G):
    for p in (contiguous(3, E, G), round_robin(3, E, G), random_placement(3, E, G, seed=1)):
        per_gpu = (p.slots >= 0).sum(axis=2)
        assert per_gpu.max() - per_gpu.min() <= 1
        assert not p.has_replicas
        # every expert exactly once per layer
        assert np.array_equal(np.sort(p.slots[p.slots >= 0].reshape(3, -1), axis=1), np.tile(np.arange(E), (3, 1)))


def test_contiguous_is_megatron_sharding():
    # 8 experts on 4 GPUs: GPU g holds experts 2g, 2g+1
    assert contiguous(1, 8, 4).assignment().tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]]
    assert round_robin(1, 8, 4).assignment().tolist() == [[0, 1, 2, 3, 0, 1, 2, 3]]
    a = random_placement(2, 8, 4, seed=5).assignment()
    b = random_placement(2, 8, 4, seed=5).assignment()
    assert np.array_equal(a, b) and not np.array_equal(a[0], a[1])
