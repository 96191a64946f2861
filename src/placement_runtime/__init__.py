"""placement_runtime: apply a placement with torch.distributed and check it with real all-to-all traffic.

Installed with the ``runtime`` extra (``pip install 'placement[runtime]'``).  It imports
``placement`` and torch; ``placement`` never imports it.
"""

from __future__ import annotations

__all__ = ["require_torch"]


def require_torch():
    """Import and return torch, or raise an ImportError naming the extra that installs it."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("placement_runtime needs torch: pip install 'placement[runtime]' "
                          "(pin torch==2.13.0 for the CPU build)") from exc
    return torch
