"""The verdict of a comparison: which placement is fastest by modelled step time, by how much, what bounds
it, what it costs in memory and how it does on a held-out trace.

:func:`verdict` reads the table of :func:`placement.compare` (or of :func:`placement.metrics_table`
with :func:`memory_cost` and test columns); the ``placement`` commands print its line last.

Columns read (any may be missing; the sentence then leaves that part out):

``step_time_ms`` (else ``alltoall_time_ms`` for the coherent model, which has no step model), ``bound_by``,
``slots_per_gpu``, ``extra_replicas``, ``replica_GB`` (in-sample figures on the trace the placements were
fitted to), and ``test_step_time_ms`` / ``test_alltoall_time_ms`` (out-of-sample: the same placements
evaluated on a held-out trace).

>>> import pandas as pd
>>> frame = pd.DataFrame({"step_time_ms": [2.0, 1.5, 1.6], "bound_by": ["compute (gpu3)", "dispatch (nic0->leaf0)",
...                       "compute (gpu1)"], "slots_per_gpu": [1, 2, 1], "extra_replicas": [0, 8, 0],
...                       "replica_GB": [0.0, 0.34, 0.0]}, index=["contiguous", "eplb", "round_robin"])
>>> print(verdict(frame, reference="contiguous"))
fastest: eplb (step time 1.5 ms in-sample, 0.750x contiguous, 0.938x runner-up round_robin); bound by the \
dispatch link nic0->leaf0; memory: 2 expert slots per GPU per layer, 8 extra replicas = 0.34 GB of replicated \
weights
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .placement import Placement
    from .trace import ModelSpec

__all__ = ["Verdict", "verdict", "memory_cost", "describe_bound"]


def memory_cost(placement: Placement, model: ModelSpec | None = None) -> dict[str, float | int]:
    """What ``placement`` holds beyond one copy of every expert.

    Returns ``slots_per_gpu`` (expert slots per GPU per layer), ``extra_replicas`` (copies beyond the
    first, summed over layers and experts), ``replica_GB`` (their weights in GB, ``1e9`` bytes, over the
    whole cluster: ``extra_replicas * 3 * hidden * intermediate * bytes(weight dtype)``; ``nan`` when the
    model's expert shape is unknown) and ``replica_GB_per_gpu`` (the same over the GPUs, mean).
    """
    from .evaluation import expert_shape

    extra = int((placement.num_replicas() - 1).sum())
    shape = expert_shape(model) if model is not None else None
    gb = extra * shape.weight_bytes / 1e9 if shape is not None else float("nan")
    return {"slots_per_gpu": int(placement.slots_per_gpu), "extra_replicas": extra, "replica_GB": gb,
            "replica_GB_per_gpu": gb / placement.num_gpus}


def describe_bound(bound_by: str) -> str:
    """``"dispatch (spine0->leaf1)"`` -> ``"the dispatch link spine0->leaf1"``; ``"compute (gpu3)"`` ->
    ``"compute on GPU gpu3"`` (the form :attr:`StepTimes.bound_by` writes)."""
    m = re.fullmatch(r"(\w+) \((.*)\)", str(bound_by))
    if m is None:
        return str(bound_by)
    phase, what = m.groups()
    return f"compute on GPU {what}" if phase == "compute" else f"the {phase} link {what}"


@dataclass(frozen=True)
class Verdict:
    """The conclusion of a comparison (``str()`` gives the one-line sentence).

    Times in milliseconds; ratios are this placement's time over the other's (below 1: faster).
    ``in_sample`` is the trace the placements were fitted to, ``test`` the held-out trace (``None``
    fields when no test trace was evaluated).
    """

    best: str
    metric: str
    time_ms: float
    reference: str | None = None
    vs_reference: float | None = None
    runner_up: str | None = None
    vs_runner_up: float | None = None
    bound_by: str | None = None
    slots_per_gpu: int | None = None
    extra_replicas: int | None = None
    replica_GB: float | None = None
    replica_GB_per_gpu: float | None = None
    test_time_ms: float | None = None
    test_vs_reference: float | None = None
    test_best: str | None = None
    test_best_vs_best: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields and the sentence (``"text"``) as a flat dict."""
        return {**asdict(self), "text": str(self)}

    def __str__(self) -> str:
        what = "step time" if self.metric == "step_time_ms" else "all-to-all time"
        lead = "fastest: " if self.runner_up is not None else ""  # a single placement is not "the fastest"
        head = f"{lead}{self.best} ({what} {self.time_ms:.4g} ms in-sample"
        if self.reference == self.best:
            head += ", the reference"
        elif self.vs_reference is not None:
            head += f", {self.vs_reference:.3f}x {self.reference}"
        if self.vs_runner_up is not None:
            head += (f", tied with runner-up {self.runner_up}" if abs(self.vs_runner_up - 1) < 1e-9 else
                     f", {self.vs_runner_up:.3f}x runner-up {self.runner_up}")
        parts = [head + ")"]
        if self.bound_by:
            parts.append(f"bound by {describe_bound(self.bound_by)}")
        if self.slots_per_gpu is not None:
            mem = f"memory: {self.slots_per_gpu} expert slot{'s' if self.slots_per_gpu != 1 else ''} per GPU per layer"
            if self.extra_replicas:
                mem += f", {self.extra_replicas} extra replicas"
                if self.replica_GB is not None and math.isfinite(self.replica_GB):
                    mem += f" = {self.replica_GB:.3g} GB of replicated weights"
                    if self.replica_GB_per_gpu is not None:
                        mem += f" ({self.replica_GB_per_gpu:.3g} GB per GPU)"
            else:
                mem += ", no replicas"
            parts.append(mem)
        if self.test_time_ms is not None:
            oos = f"out-of-sample: {self.test_time_ms:.4g} ms"
            if self.test_vs_reference is not None:
                oos += f", {self.test_vs_reference:.3f}x {self.reference}"
            if self.test_best is not None and self.test_best != self.best:
                oos += (f"; but {self.test_best} is fastest out-of-sample "
                        f"({self.test_best_vs_best:.3f}x {self.best})")
            else:
                oos += ", still the fastest"
            parts.append(oos)
        return "; ".join(parts)


def _number(frame: pd.DataFrame, row: str, col: str) -> float | None:
    if col not in frame.columns:
        return None
    value = frame.loc[row, col]
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def verdict(frame: pd.DataFrame, reference: str | None = None) -> Verdict:
    """The :class:`Verdict` of a comparison table (one row per placement, see the module docstring).

    The fastest row by in-sample modelled step time (the all-to-all time when the table has no finite
    step times: coherent dispatch) wins; ties keep the table's order.
    """
    from .errors import input_error

    if len(frame) == 0:
        raise input_error("the table has no rows", field="frame")
    steps = frame["step_time_ms"].astype(float) if "step_time_ms" in frame.columns else None
    col = "step_time_ms" if steps is not None and np.isfinite(steps).all() else "alltoall_time_ms"
    if col not in frame.columns:
        raise input_error(f"needs a step_time_ms or alltoall_time_ms column, got {list(frame.columns)}",
                          field="frame")
    times = frame[col].astype(float)
    order = times.sort_values(kind="stable")
    best = str(order.index[0])
    fields: dict[str, Any] = {"best": best, "metric": col, "time_ms": float(times[best])}
    has_ref = reference is not None and reference in frame.index
    if has_ref:
        fields["reference"] = reference
        if reference != best and times[reference] > 0:
            fields["vs_reference"] = float(times[best] / times[reference])
    if len(order) > 1 and times[order.index[1]] > 0:
        fields["runner_up"] = str(order.index[1])
        fields["vs_runner_up"] = float(times[best] / times[order.index[1]])
    if "bound_by" in frame.columns and isinstance(frame.loc[best, "bound_by"], str):
        fields["bound_by"] = frame.loc[best, "bound_by"]
    for key in ("slots_per_gpu", "extra_replicas"):
        value = _number(frame, best, key)
        if value is not None:
            fields[key] = int(value)
    fields["replica_GB"] = _number(frame, best, "replica_GB")
    fields["replica_GB_per_gpu"] = _number(frame, best, "replica_GB_per_gpu")
    test_col = f"test_{col}"
    if test_col in frame.columns and np.isfinite(frame[test_col].astype(float)).all():
        test = frame[test_col].astype(float)
        fields["test_time_ms"] = float(test[best])
        if has_ref and reference != best and test[reference] > 0:
            fields["test_vs_reference"] = float(test[best] / test[reference])
        test_best = str(test.sort_values(kind="stable").index[0])
        fields["test_best"] = test_best
        fields["test_best_vs_best"] = float(test[test_best] / test[best]) if test[best] > 0 else None
    return Verdict(**fields)
