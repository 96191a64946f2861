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

Replica choice (``replica=``)
    ``"nearest"`` (the default): a token needing expert ``e`` uses the replica nearest (lowest
    hop count, then lowest seconds-per-byte) to the GPU it is sent from.  Replicas tied on both
    are shared evenly: the tokens of each (layer, expert, source GPU) group are dealt round-robin
    over the tied replicas in token order.  Count traces split such ties fractionally.
    :func:`route_layer` is this rule; the runtime calls it too.  The rules of real stacks
    (``"vllm"``, ``"trtllm"``, ``"sglang-static"``, ``"sglang-dynamic"``, ``"split"``) are in
    :mod:`~placement.evaluation.replica_rules`; under them every metric (traffic, loads, times)
    follows that stack's choice, with the senders resolved as ``"trace"`` or ``"round_robin"``.

The serving step (origin dispatch)
    :attr:`Metrics.step` holds the time of one serving step of ``tokens_per_step`` tokens under
    the replica rule, a transport (``transport=``: ``"nccl"``, ``"deepep"``, ``"deepep-ll"``), the
    dispatch and combine dtypes and the GPU's compute model:
    :mod:`~placement.evaluation.serving` states the model.  Everything above is per token of the
    whole trace; the step figures are per serving step.

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

import dataclasses
import os
from typing import TYPE_CHECKING

from ..costs import DEFAULT_HIDDEN_SIZE, DTYPE_BYTES, wire_for
from ..errors import input_error
from ..hardware import ExpertShape, gpu_preset
from ..placement import Placement
from ..trace._trace import Trace
from .flows import resolve_origins, rule_flows, trace_flows
from .metrics import Metrics, flows_to_metrics
from .replica_rules import REPLICA_RULES, RoutingContext, get_rule
from .routing import first_of_each, replica_tables, route_layer
from .serving import ServingSetup, StepTimes, step_times
from .transports import TRANSPORTS

if TYPE_CHECKING:  # pragma: no cover
    from ..topology import Topology

__all__ = ["evaluate", "Metrics", "StepTimes", "ServingSetup", "route_layer", "replica_tables", "first_of_each",
           "DISPATCH_MODELS", "ORIGIN_MODES", "DTYPE_BYTES", "DEFAULT_HIDDEN_SIZE", "REPLICA_RULES", "TRANSPORTS",
           "DEFAULT_TOKENS_PER_GPU", "serving_setup", "expert_shape"]

DISPATCH_MODELS = ("origin", "coherent")
ORIGIN_MODES = ("auto", "trace", "uniform", "round_robin")
#: Tokens per GPU in one serving step when neither ``tokens_per_step`` nor ``tokens_per_gpu`` is given:
#: a decode step of DeepEP's low-latency benchmark (128 tokens per rank).
DEFAULT_TOKENS_PER_GPU = 128


def expert_shape(model) -> ExpertShape | None:
    """The routed expert's shape of ``model`` (a :class:`~placement.trace.ModelSpec`): its own
    ``hidden_size``/``intermediate_size``/``weight_dtype``, else those of the model preset of the same
    name, else ``None`` (unknown)."""
    hidden, inter, dtype = model.hidden_size, model.intermediate_size, model.weight_dtype
    if inter is None or hidden is None:
        from ..trace.synthesize import MODEL_PRESETS

        known = MODEL_PRESETS.get(str(model.name).lower())
        if known is None or known.spec.intermediate_size is None:
            return None
        hidden, inter, dtype = known.spec.hidden_size, known.spec.intermediate_size, known.spec.weight_dtype
    return ExpertShape(int(hidden), int(inter), dtype)


def serving_setup(trace: Trace, topology: Topology, *, replica: str = "nearest", transport: str = "nccl",
                  dedup: bool = True, tokens_per_step: int | None = None, tokens_per_gpu: int | None = None,
                  hidden_size: int | None = None, dispatch_dtype: str = "bf16", combine_dtype: str = "bf16",
                  gpu: str | None = None, overlap: bool = False) -> ServingSetup:
    """The :class:`ServingSetup` of ``trace``'s model on ``topology`` (see :func:`evaluate`)."""
    if tokens_per_step is not None and tokens_per_gpu is not None:
        raise input_error("give tokens_per_step (all GPUs) or tokens_per_gpu, not both", field="tokens_per_step")
    for name, value in (("tokens_per_step", tokens_per_step), ("tokens_per_gpu", tokens_per_gpu)):
        if value is not None and (isinstance(value, bool) or int(value) != value or int(value) < 1):
            raise input_error(f"must be a positive integer, got {value!r}", field=name)
    G = topology.num_gpus
    per_step = int(tokens_per_step) if tokens_per_step is not None else G * int(tokens_per_gpu or
                                                                               DEFAULT_TOKENS_PER_GPU)
    size = 0 if hidden_size is None else int(hidden_size)
    return ServingSetup(replica=replica, transport=transport, dedup=bool(dedup), tokens_per_step=per_step,
                        dispatch_wire=wire_for(trace.model, size, dispatch_dtype),
                        combine_wire=wire_for(trace.model, size, combine_dtype),
                        gpu=gpu_preset(gpu or topology.gpu), expert=expert_shape(trace.model),
                        num_shared_experts=int(trace.model.num_shared_experts), overlap=bool(overlap))


def evaluate(
    placement: Placement,
    trace: Trace,
    topology: Topology | str,
    *,
    dispatch: str = "origin",
    dedup: bool = False,
    origins: str = "auto",
    hidden_size: int | None = None,
    dtype: str = "bf16",
    replica: str = "nearest",
    transport: str = "nccl",
    tokens_per_step: int | None = None,
    tokens_per_gpu: int | None = None,
    dispatch_dtype: str | None = None,
    combine_dtype: str | None = None,
    gpu: str | None = None,
    overlap: bool = False,
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
        The cluster: a :class:`~placement.topology.Topology`, a preset spec (``"fat-tree:4x8"``) or a
        topology YAML path.
    dispatch:
        ``"origin"`` or ``"coherent"``.
    dedup:
        Send a token once per destination GPU instead of once per expert (``nccl`` only: ``deepep``
        de-duplicates by construction and ``deepep-ll`` never, so ``dedup=True`` with them is refused and
        the whole-trace metrics follow the transport; :attr:`Metrics.dedup` says which was used).
    origins:
        ``"auto"``, ``"trace"``, ``"uniform"`` or ``"round_robin"``.
    hidden_size:
        Elements per token hidden state (default: the model's, else 4096).
    dtype:
        Element type of the hidden state on the wire (``bf16``, ``fp8``, ``fp32``...) for the
        whole-trace byte metrics, and the default of the two below.
    replica:
        The replica rule (:data:`REPLICA_RULES`): ``"nearest"``, ``"vllm"``, ``"trtllm"``,
        ``"sglang-static"``, ``"sglang-dynamic"`` or ``"split"``.
    transport:
        How the serving step moves tokens (:data:`TRANSPORTS`): ``"nccl"`` (``dedup`` applies),
        ``"deepep"`` or ``"deepep-ll"``.
    tokens_per_step, tokens_per_gpu:
        Size of a serving step over all GPUs, or per GPU (default :data:`DEFAULT_TOKENS_PER_GPU`).
    dispatch_dtype, combine_dtype:
        Wire dtypes of the step's two phases (default ``dtype``; e.g. ``fp8`` dispatch, ``bf16`` combine).
    gpu:
        GPU model for the compute model (default: the topology's, ``topology.gpu``).
    overlap:
        Two micro-batches overlap communication with compute in the step time.

    Returns
    -------
    The :class:`Metrics` of the placement.
    """
    from ..topology import Topology as _Topology
    from ..topology import load_topology

    if isinstance(topology, (str, os.PathLike)):
        topology = load_topology(topology)  # a preset spec or a YAML file, as solve() takes
    for name, value, kind in (("placement", placement, Placement), ("trace", trace, Trace),
                              ("topology", topology, _Topology)):
        if not isinstance(value, kind):
            raise input_error(f"must be a {kind.__name__}, got {type(value).__name__}", field=name)
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
    rule = get_rule(replica)
    if transport not in TRANSPORTS:
        raise input_error(f"unknown transport {transport!r}; choose one of {list(TRANSPORTS)}", field="transport")
    if transport != "nccl":
        if dedup:
            raise input_error(f"transport {transport!r} fixes its own copies ({TRANSPORTS[transport].summary}); "
                              "drop dedup", field="dedup")
        dedup = transport == "deepep"  # one copy per destination GPU by construction; deepep-ll one per expert
    if replica == "nearest":
        tied, ntied = replica_tables(placement, topology)
        mode = resolve_origins(origins, trace, G)
        flows = trace_flows(trace, tied, ntied, G, dispatch=dispatch, dedup=dedup, mode=mode)
    else:
        if dispatch != "origin":
            raise input_error(f"replica rule {replica!r} is a serving stack's rule for origin dispatch; the coherent "
                              "model uses replica='nearest'", field="replica")
        ctx = RoutingContext.build(placement, topology)
        mode = _senders(origins, trace, G, replica)
        flows = rule_flows(trace, ctx, rule, mode, dedup)
    metrics = flows_to_metrics(flows, topology, placement, wire, dispatch=dispatch, dedup=dedup, origins=mode,
                               num_tokens=trace.num_tokens)
    if dispatch != "origin":
        return metrics
    setup = serving_setup(trace, topology, replica=replica, transport=transport, dedup=dedup,
                          tokens_per_step=tokens_per_step, tokens_per_gpu=tokens_per_gpu, hidden_size=hidden_size,
                          dispatch_dtype=dispatch_dtype or dtype, combine_dtype=combine_dtype or dtype, gpu=gpu,
                          overlap=overlap)
    senders = mode if mode in ("trace", "round_robin") else "round_robin"
    step = step_times(placement, trace, topology, setup, senders=senders)
    if mode == "uniform" and trace.kind == "tokens":
        note = "uniform origins: the serving step sends token t from GPU t mod G (a realisable uniform spread)"
        step = dataclasses.replace(step, notes=(note, *step.notes))
    return dataclasses.replace(metrics, replica=replica, transport=transport, step=step)


def _senders(origins: str, trace: Trace, G: int, replica: str) -> str:
    """The senders under a serving stack's replica rule: ``"trace"`` or ``"round_robin"`` (token traces;
    ``"auto"`` takes the trace's origins when they are the topology's GPUs), ``"trace"`` or ``"uniform"``
    (count traces)."""
    if origins == "uniform" and trace.kind == "tokens":
        raise input_error(f"replica rule {replica!r} needs the GPU each token is sent from; use origins='trace' "
                          "or 'round_robin' (or 'auto')", field="origins")
    if origins == "round_robin":
        if trace.kind == "counts":
            raise input_error("round_robin origins need a token trace; use origins='uniform'", trace.source,
                              "origins")
        return "round_robin"
    mode = resolve_origins(origins, trace, G)
    return "round_robin" if mode == "uniform" and trace.kind == "tokens" else mode
