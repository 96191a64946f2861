"""placement_runtime: apply a placement with torch.distributed and check it with real all-to-all traffic.

Installed with the ``runtime`` extra (``pip install 'placement[runtime]'``).  It imports
``placement`` and torch; ``placement`` never imports it.  Importing this package loads neither
torch nor the submodules; the names below are imported on first use.

Modules: :mod:`.plan` (numpy routing and move plans), :mod:`.moe` (the expert-parallel layer,
its reference and the byte counter), :mod:`.replay` (trace replay), :mod:`.relocate`
(re-placement), :mod:`.check` (comparison with the evaluator), :mod:`.launch` (spawned ranks,
torchrun), :mod:`.cli` (``python -m placement_runtime check``), :mod:`.record` (token traces of a
transformers MoE model's routers, ``python -m placement_runtime record``, the ``record`` extra).
See ``docs/runtime.md`` and ``docs/recording.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["require_torch", "ExpertParallelMoE", "ReferenceMoE", "TrafficCounter", "build_layers",
           "expert_weights", "replay_rank", "reference_replay", "move_experts", "CheckCase", "CheckConfig",
           "run_cases", "compare", "spawn_check", "RankFailure"]

_LAZY = {
    "ExpertParallelMoE": "moe", "ReferenceMoE": "moe", "TrafficCounter": "moe", "build_layers": "moe",
    "expert_weights": "moe", "replay_rank": "replay", "reference_replay": "replay",
    "move_experts": "relocate",
    "CheckCase": "check", "CheckConfig": "check", "run_cases": "check", "compare": "check",
    "spawn_check": "launch", "RankFailure": "launch",
}


def require_torch():
    """Import and return torch, or raise an ImportError naming the extra that installs it."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("placement_runtime needs torch: pip install 'placement[runtime]' "
                          "(pin torch==2.13.0 for the CPU build)") from exc
    return torch


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        if _LAZY[name] in ("moe", "replay", "relocate"):
            require_torch()
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
