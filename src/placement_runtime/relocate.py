"""Re-placement: move expert weights from an old placement to a new one with one all-to-all.

Every rank computes the same :class:`~placement_runtime.plan.MovePlan` from the two placements,
so split sizes need no exchange: rank ``u`` packs the flattened weights of the copies it sends,
grouped by destination and ordered by (layer, expert), and each receiver unpacks its block
from every source in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from placement.placement import Placement

from .moe import ExpertFFN, ExpertParallelMoE
from .plan import MovePlan, plan_moves

__all__ = ["move_experts", "MoveOutcome"]


@dataclass(frozen=True, eq=False)
class MoveOutcome:
    """The result of :func:`move_experts` on one rank.

    Attributes
    ----------
    weights:
        ``[layers]`` of ``{expert: ExpertFFN}``: every expert this rank holds under the new placement.
    plan:
        The global move plan.
    sent_bytes:
        ``int64 [G]`` bytes this rank sent to each rank (its row of the moved-bytes matrix).
    bytes_per_expert:
        Bytes of one expert's weights on the wire.
    """

    weights: list[dict[int, ExpertFFN]]
    plan: MovePlan
    sent_bytes: np.ndarray
    bytes_per_expert: int


def move_experts(layers: Sequence[ExpertParallelMoE], old: Placement, new: Placement, rank: int, *,
                 distance: np.ndarray | None = None, group=None) -> MoveOutcome:
    """Collective: fetch the experts ``new`` gives this rank from the ranks holding them under ``old``.

    Parameters
    ----------
    layers:
        This rank's modules under ``old`` (one per layer).
    old, new:
        The placements.
    rank:
        This rank.
    distance:
        ``float [G, G]`` to choose the nearest old holder (e.g. ``topology.hops``).
    """
    plan = plan_moves(old, new, distance)
    G = old.num_gpus
    ref = layers[0]
    H, Fs = ref.hidden_size, ref.ffn_size
    device, dtype = ref.device, ref.dtype
    P = 2 * H * Fs
    elem = torch.empty((), dtype=dtype).element_size()
    out_mask = plan.src == rank
    in_mask = plan.dst == rank
    send_rows = np.bincount(plan.dst[out_mask], minlength=G).astype(np.int64)
    recv_rows = np.bincount(plan.src[in_mask], minlength=G).astype(np.int64)
    received: dict[tuple[int, int], ExpertFFN] = {}
    if plan.num_moves:
        flats = [layers[int(layer)].experts[str(int(e))].flat()
                 for layer, e in zip(plan.layer[out_mask], plan.expert[out_mask], strict=True)]
        send = torch.stack(flats) if flats else torch.empty((0, P), dtype=dtype, device=device)
        recv = torch.empty((int(recv_rows.sum()), P), dtype=dtype, device=device)
        dist.all_to_all_single(recv, send.contiguous(), output_split_sizes=recv_rows.tolist(),
                               input_split_sizes=send_rows.tolist(), group=group)
        for i, (layer, e) in enumerate(zip(plan.layer[in_mask], plan.expert[in_mask], strict=True)):
            received[(int(layer), int(e))] = ExpertFFN.from_flat(recv[i], H, Fs)
    weights: list[dict[int, ExpertFFN]] = []
    for layer in range(new.num_layers):
        held = sorted({int(e) for e in new.slots[layer, rank] if e >= 0})
        mine: dict[int, ExpertFFN] = {}
        for e in held:
            if plan.kept[layer, rank, e]:
                mine[e] = layers[layer].experts[str(e)]
            else:
                mine[e] = received[(layer, e)]
        weights.append(mine)
    return MoveOutcome(weights=weights, plan=plan, sent_bytes=send_rows * P * elem, bytes_per_expert=P * elem)
