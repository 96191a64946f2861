"""The independent evaluator: what any placement costs on a trace and a topology.

It recomputes everything from the raw trace (never from a formulation's internals) and is
the oracle of every test.  Its rules, stated once:

Origins (where a token starts)
    ``"trace"``: the trace's origin rank ``r`` is GPU ``r`` (needs ``num_ranks == gpus``).
    ``"uniform"``: the token is equally likely to start on every GPU; every metric is the
    exact expectation over that choice (the ``pi(u) = 1/G`` of arXiv 2508.09229).
    ``"round_robin"``: token ``t`` starts on GPU ``t mod G`` (a realisable uniform spread,
    what the runtime replays).  ``"auto"``: ``"trace"`` when the trace has origins for as
    many ranks as the topology has GPUs, else ``"uniform"``; the metrics say which was used.

Replica choice
    A token needing expert ``e`` uses the replica nearest (lowest hop count, then lowest
    seconds-per-byte) to the GPU it is sent from.  Replicas tied on both are shared evenly:
    the tokens of each (layer, expert, source GPU) group are dealt round-robin over the tied
    replicas in token order (the least-loaded rule among them).  Count traces split such
    ties fractionally.  :func:`route_layer` is this rule; the runtime calls it too.

Dispatch models
    ``"origin"``: at every layer the token is sent from its origin GPU to the GPUs of its k
    experts (dispatch) and the results come back (combine, the transposed traffic).
    ``"coherent"`` (ExFlow, arXiv 2401.08383): the context is on every GPU, so after layer
    ``l - 1`` the token continues from the GPUs that ran its layer ``l - 1`` experts.  Layer 0
    is dispatched from the origin; there is no combine.  For top-k the k x k pairs
    (previous GPU ``i``, next expert ``j``) each carry ``1/k`` of a token, so a token still
    makes ``k`` sends per layer; a replica is chosen nearest to the GPU of the token's
    first (top-1) expert of the previous layer.
De-duplication
    ``dedup=True``: a token goes once to each distinct destination GPU instead of once per
    expert.  Coherent with dedup: a destination GPU already holding the token (it ran one
    of its previous experts) receives nothing; any other destination receives one copy,
    drawn equally from the distinct previous GPUs.

Metrics (:class:`Metrics`)
    Expected hop-transmissions per token (sum over layers and phases of hops between
    sender and receiver, the metric of arXiv 2508.09229), sends leaving a GPU and crossing
    servers per token, bytes per link and per link tier (``hidden_size * bytes(dtype)`` per
    token sent), the busiest link, a modelled all-to-all time (per layer and phase: the
    largest bytes/bandwidth over links plus the largest latency among communicating
    pairs), per-GPU token load and its max/mean imbalance, the fraction of layer
    boundaries whose two experts sit on different GPUs (ExFlow's metric, pairs weighted
    ``1/k**2``), and memory slots used per GPU.

Layout
    :mod:`~placement.evaluation.routing` (replica tables and the replica choice rule, shared
    with the runtime), :mod:`~placement.evaluation.flows` (token flows per layer under the
    origins, dispatch and de-duplication rules) and :mod:`~placement.evaluation.metrics`
    (:class:`Metrics` from flows over the topology).  :mod:`placement.evaluate` re-exports
    the public names under their historical import path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..costs import DEFAULT_HIDDEN_SIZE, DTYPE_BYTES, wire_for
from ..errors import input_error
from ..placement import Placement
from ..trace._trace import Trace
from .flows import resolve_origins, trace_flows
from .metrics import Metrics, flows_to_metrics
from .routing import first_of_each, replica_tables, route_layer

if TYPE_CHECKING:  # pragma: no cover
    from ..topology import Topology

__all__ = ["evaluate", "Metrics", "route_layer", "replica_tables", "first_of_each", "DISPATCH_MODELS",
           "ORIGIN_MODES", "DTYPE_BYTES", "DEFAULT_HIDDEN_SIZE"]

DISPATCH_MODELS = ("origin", "coherent")
ORIGIN_MODES = ("auto", "trace", "uniform", "round_robin")


def evaluate(
    placement: Placement,
    trace: Trace,
    topology: Topology,
    *,
    dispatch: str = "origin",
    dedup: bool = False,
    origins: str = "auto",
    hidden_size: int | None = None,
    dtype: str = "bf16",
) -> Metrics:
    """Evaluate ``placement`` on ``trace`` over ``topology`` (see the module docstring for the rules).

    Parameters
    ----------
    placement:
        Any placement for ``trace.num_layers`` layers, ``trace.num_experts`` experts and
        ``topology.num_gpus`` GPUs.
    trace:
        A token trace (every mode) or a count trace (``dispatch="origin"``, ``dedup=False``).
    topology:
        The cluster.
    dispatch:
        ``"origin"`` or ``"coherent"``.
    dedup:
        Send a token once per destination GPU instead of once per expert.
    origins:
        ``"auto"``, ``"trace"``, ``"uniform"`` or ``"round_robin"``.
    hidden_size:
        Elements per token hidden state (default: the model's, else 4096).
    dtype:
        Element type of the hidden state on the wire (``bf16``, ``fp8``, ``fp32``...).

    Returns
    -------
    The :class:`Metrics` of the placement.
    """
    if dispatch not in DISPATCH_MODELS:
        raise input_error(f"unknown dispatch model {dispatch!r}; choose one of {list(DISPATCH_MODELS)}",
                          field="dispatch")
    if origins not in ORIGIN_MODES:
        raise input_error(f"unknown origins mode {origins!r}; choose one of {list(ORIGIN_MODES)}", field="origins")
    if dtype not in DTYPE_BYTES:
        raise input_error(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPE_BYTES)}", field="dtype")
    if hidden_size is not None and int(hidden_size) < 1:
        raise input_error(f"must be positive, got {hidden_size}", field="hidden_size")
    wire = wire_for(trace.model, 0 if hidden_size is None else int(hidden_size), dtype)
    L, E, G = trace.num_layers, trace.num_experts, topology.num_gpus
    if placement.num_layers != L or placement.num_experts != E:
        raise input_error(f"placement has {placement.num_layers} layers x {placement.num_experts} experts but the "
                          f"trace has {L} x {E}; solve the placement for this trace's model", placement.source,
                          "slots")
    tied, ntied = replica_tables(placement, topology)
    mode = resolve_origins(origins, trace, G)
    flows = trace_flows(trace, tied, ntied, G, dispatch=dispatch, dedup=dedup, mode=mode)
    return flows_to_metrics(flows, topology, placement, wire, dispatch=dispatch, dedup=dedup, origins=mode,
                            num_tokens=trace.num_tokens)
