"""The compute model of one expert (placement.hardware), checked with the arithmetic written out."""

from __future__ import annotations

import numpy as np
import pytest

from placement.errors import PlacementInputError
from placement.hardware import GPU_PRESETS, ExpertShape, gpu_preset


def test_expert_time_by_hand() -> None:
    gpu = gpu_preset("h100-sxm")
    expert = ExpertShape(hidden_size=1024, intermediate_size=512, weight_dtype="bf16")
    # weights: 3 * 1024 * 512 * 2 bytes = 3,145,728 B; read at 3.35e12 B/s
    read = 3 * 1024 * 512 * 2 / 3.35e12
    # 10,000 tokens: 6 * 1024 * 512 FLOP each at 989e12 * 0.68 * 10000 / (10000 + 128) FLOP/s
    n = 10_000
    compute = n * 6 * 1024 * 512 / (989e12 * 0.68 * n / (n + 128))
    assert gpu.expert_time(expert, 0) == 0.0
    assert gpu.expert_time(expert, 1) == pytest.approx(read, rel=1e-12)
    assert compute > read
    assert gpu.expert_time(expert, n) == pytest.approx(compute, rel=1e-12)


@pytest.mark.parametrize("name", list(GPU_PRESETS))
@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_small_groups_are_bound_by_the_weight_read(name: str, dtype: str) -> None:
    # the throughput curve models arithmetic only: one token never costs more than the weight read
    gpu = GPU_PRESETS[name]
    expert = ExpertShape(7168, 2048, dtype)
    assert gpu.expert_time(expert, 1) == pytest.approx(expert.weight_bytes / gpu.hbm_bandwidth, rel=1e-12)


def test_time_grows_with_tokens_and_is_vectorised() -> None:
    gpu = gpu_preset("b200")
    expert = ExpertShape(7168, 2048, "fp8")
    tokens = np.array([0, 1, 8, 64, 512, 4096, 65536])
    times = gpu.expert_time(expert, tokens)
    assert times.shape == tokens.shape
    assert times[0] == 0.0
    assert np.all(np.diff(times) >= 0)
    assert [gpu.expert_time(expert, int(t)) for t in tokens] == pytest.approx(times.tolist(), rel=1e-12)


def test_bad_names_are_refused() -> None:
    with pytest.raises(PlacementInputError, match="unknown GPU 'h1000'"):
        gpu_preset("h1000")
    with pytest.raises(PlacementInputError, match="unknown dtype 'fp4x'"):
        ExpertShape(7168, 2048, "fp4x")
    with pytest.raises(PlacementInputError, match="positive integer"):
        ExpertShape(True, 2048)  # type: ignore[arg-type]
