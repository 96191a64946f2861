"""GPU presets and the compute model of one expert: what running ``n`` tokens through it costs.

An expert of a gated MoE FFN holds three matrices (gate and up ``[hidden, intermediate]``, down
``[intermediate, hidden]``); running ``n`` tokens through it reads its weights once from HBM and
does ``2 * 3 * hidden * intermediate * n`` floating-point operations.  Its time is

``max(weight_bytes / hbm_bandwidth, flops / achieved_throughput(n))``

so decode steps (few tokens per expert) are bound by weight reads, and their time follows the
number of distinct experts a GPU runs, while prefill steps (thousands of tokens) are bound by
arithmetic and follow the tokens.  The achieved throughput of a grouped GEMM grows with the rows
``n`` of each group and saturates below the datasheet peak:

``achieved(n) = peak * efficiency * n / (n + half_rows)``

with ``efficiency`` (the fraction of peak a large grouped GEMM reaches) and ``half_rows`` (the
rows at which half of that is reached) as parameters of the GPU.  The defaults are fitted to
DeepGEMM's published FP8 grouped-GEMM figures on H800 (peak 1979 dense TFLOPS): about 206-336
TFLOPS at 64 rows per group, 925-1233 at 1024 and 1214-1346 for contiguous groups of 4-8K rows
(DeepGEMM README, "Performance" tables).  ``efficiency = 0.68`` and ``half_rows = 128`` give 1196
TFLOPS at 1024 rows and 1305-1325 at 4-8K; at 64 rows the weight read bounds the time, as the
published figures say.  The curve is only the arithmetic side: small groups are bound by the weight
read, never by a low point of the curve (``half_rows`` is kept small enough that a single token's
arithmetic time stays below its weight read on every preset).  ``benchmarks/bench_cost_model.py``
prints the model beside the published figures.

Datasheet figures (dense, without sparsity) are NVIDIA's: H100 SXM and H800 3.35 TB/s HBM3,
989 BF16 / 1979 FP8 TFLOPS; H200 4.8 TB/s HBM3e, same compute; B200 8 TB/s, 2250 BF16 / 4500 FP8;
GB200 (per GPU) 8 TB/s, 2500 BF16 / 5000 FP8.

>>> gpu = GPU_PRESETS["h100-sxm"]
>>> round(gpu.achieved_flops(1024, "fp8") / 1e12)
1196
>>> expert = ExpertShape(hidden_size=7168, intermediate_size=2048, weight_dtype="fp8")
>>> expert.weight_bytes / 1e6   # 3 x 7168 x 2048 bytes: the ~44 MB DeepSeek-V3 deployments quote
44.040192
>>> t1, t2 = gpu.expert_time(expert, 1), gpu.expert_time(expert, 8192)
>>> round(t1 * 1e6, 1), round(t2 * 1e6, 1)    # microseconds: weight-read bound, compute bound
(13.1, 544.6)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import DTYPE_BYTES
from .errors import input_error

__all__ = ["GPU_PRESETS", "ExpertShape", "GpuSpec", "gpu_preset"]

_TERA = 1e12


@dataclass(frozen=True)
class ExpertShape:
    """One routed expert: a gated FFN of three ``hidden x intermediate`` matrices.

    Attributes
    ----------
    hidden_size, intermediate_size:
        Matrix dimensions (DeepSeek-V3: 7168 and 2048).
    weight_dtype:
        Dtype of the weights as stored in HBM and fed to the GEMM (a key of
        :data:`~placement.costs.DTYPE_BYTES`); it also selects the GPU's peak throughput.
    """

    hidden_size: int
    intermediate_size: int
    weight_dtype: str = "bf16"

    def __post_init__(self) -> None:
        for name in ("hidden_size", "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise input_error(f"must be a positive integer, got {value!r}", field=name)
        if self.weight_dtype not in DTYPE_BYTES:
            raise input_error(f"unknown dtype {self.weight_dtype!r}; choose one of {sorted(DTYPE_BYTES)}",
                              field="weight_dtype")

    @property
    def weight_bytes(self) -> int:
        """Bytes of the expert's three matrices."""
        return 3 * int(self.hidden_size) * int(self.intermediate_size) * DTYPE_BYTES[self.weight_dtype]

    @property
    def flops_per_token(self) -> int:
        """Floating-point operations per token: ``2 * 3 * hidden * intermediate``."""
        return 6 * int(self.hidden_size) * int(self.intermediate_size)


@dataclass(frozen=True)
class GpuSpec:
    """A GPU's memory bandwidth and arithmetic throughput.

    Attributes
    ----------
    name:
        Preset name.
    hbm_bandwidth:
        Bytes per second read from HBM.
    peak_flops:
        Dense peak FLOP/s per dtype name (``{"bf16": ..., "fp8": ...}``).
    efficiency:
        Fraction of the peak a large grouped GEMM reaches.
    half_rows:
        Rows per group at which a grouped GEMM reaches half of ``efficiency * peak``.
    memory_bytes:
        HBM capacity in bytes.
    """

    name: str
    hbm_bandwidth: float
    peak_flops: dict[str, float]
    efficiency: float = 0.68
    half_rows: float = 128.0
    memory_bytes: float = 80e9

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype`` (int8 counts as fp8; fp32 and fp16 as bf16's class)."""
        key = {"float8": "fp8", "int8": "fp8", "fp8": "fp8"}.get(dtype, "bf16")
        if dtype in ("fp32", "float32"):
            return self.peak_flops["bf16"] / 2.0  # TF32 tensor cores: half the BF16 rate
        return self.peak_flops[key]

    def achieved_flops(self, rows: np.ndarray | float, dtype: str) -> np.ndarray | float:
        """FLOP/s of a grouped GEMM with ``rows`` tokens per group (``float64``, same shape as ``rows``)."""
        rows = np.asarray(rows, dtype=np.float64)
        out = self.peak(dtype) * self.efficiency * rows / (rows + self.half_rows)
        return float(out) if out.ndim == 0 else out

    def expert_time(self, expert: ExpertShape, tokens: np.ndarray | float) -> np.ndarray | float:
        """Seconds to run ``tokens`` tokens through one expert (0 where ``tokens`` is 0).

        ``max(weight_bytes / hbm_bandwidth, tokens * flops_per_token / achieved_flops(tokens))``;
        an expert that receives no token is not run and costs nothing.
        """
        n = np.asarray(tokens, dtype=np.float64)
        read = expert.weight_bytes / self.hbm_bandwidth
        with np.errstate(divide="ignore", invalid="ignore"):
            compute = np.where(n > 0, n * expert.flops_per_token / np.maximum(
                np.asarray(self.achieved_flops(n, expert.weight_dtype)), 1e-300), 0.0)
        out = np.where(n > 0, np.maximum(read, compute), 0.0)
        return float(out) if out.ndim == 0 else out


#: GPU presets by name (datasheet dense figures; see the module docstring).
GPU_PRESETS: dict[str, GpuSpec] = {g.name: g for g in (
    GpuSpec("h100-sxm", 3.35e12, {"bf16": 989 * _TERA, "fp8": 1979 * _TERA}, memory_bytes=80e9),
    GpuSpec("h800", 3.35e12, {"bf16": 989 * _TERA, "fp8": 1979 * _TERA}, memory_bytes=80e9),
    GpuSpec("h200", 4.8e12, {"bf16": 989 * _TERA, "fp8": 1979 * _TERA}, memory_bytes=141e9),
    GpuSpec("b200", 8.0e12, {"bf16": 2250 * _TERA, "fp8": 4500 * _TERA}, memory_bytes=180e9),
    GpuSpec("gb200", 8.0e12, {"bf16": 2500 * _TERA, "fp8": 5000 * _TERA}, memory_bytes=186e9),
)}


def gpu_preset(name: str) -> GpuSpec:
    """The GPU preset called ``name`` (the error lists the presets)."""
    try:
        return GPU_PRESETS[name.lower()]
    except (KeyError, AttributeError):
        raise input_error(f"unknown GPU {name!r}; choose one of {list(GPU_PRESETS)}", field="gpu") from None
