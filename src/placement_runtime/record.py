"""Record the routing of a Hugging Face ``transformers`` MoE model as a placement token trace.

Forward hooks on every MoE layer's router (``model.layers.<i>.mlp.gate``) capture, for each
token the model reads, the router's top-k expert ids and the gate weights the model multiplies
the expert outputs by.  The result is a :class:`placement.trace.Trace` (``experts int16
[tokens, MoE layers, k]``, ``weights float32 [tokens, MoE layers, k]``) whose model spec and
metadata carry the model's layout.  Installed with the ``record`` extra
(``pip install 'placement[record]'``: torch and transformers, imported on first use).

Families (:data:`FAMILIES`, keyed by ``config.model_type``) say how each router scores experts;
the rules themselves are :data:`ROUTER_RULES`:

``softmax-topk`` (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE)
    ``p = softmax(logits)``, the ``k`` largest ``p``; weights ``p`` renormalised over the ``k``
    when ``norm_topk_prob`` (Mixtral always).
``sigmoid-group-topk`` (DeepSeek-V3 / R1)
    ``s = sigmoid(logits)``; choice scores ``s + e_score_correction_bias``; a group scores the sum
    of its two best choice scores; the ``topk_group`` best groups stay; the ``k`` best choice
    scores among their experts are chosen; weights are ``s`` of the chosen (not the bias),
    renormalised when ``norm_topk_prob``, times ``routed_scaling_factor``.

When a router module returns its decision (transformers 5: ``(logits, weights, ids)``), the
recorder takes it as is, so the trace is what the model computed.  When it returns only logits
(a plain ``nn.Linear`` gate, as in transformers 4), the family's rule is applied to them.

Slot order: each token's ``k`` selections are stored by gate weight, largest first (ties by
expert id), so slot 0 is the token's top-1 expert in every family (DeepSeek-V3's router returns
them unsorted).

Tokens are stored sequence by sequence, in order; ``metadata["sequences"]`` lists each forward
sequence (``name``, ``first_token`` row in the trace, ``tokens``, ``offset`` of its first token in
its text), so a row's position in its sequence is ``row - first_token``
(:func:`token_positions`).  Padding is never recorded.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from placement.errors import PlacementInputError, input_error
from placement.trace import ModelSpec, Trace, save_trace
from placement.trace.io import TRACE_FILE_FORMATS

__all__ = ["FAMILIES", "ROUTER_RULES", "Family", "RouterRule", "MoELayout", "RoutingRecorder", "find_moe_gates",
           "model_layout", "record_texts", "token_positions", "require_transformers", "build_parser", "main"]

EXIT_OK, EXIT_INPUT = 0, 2


def require_transformers():
    """Import and return transformers, or raise an ImportError naming the extra that installs it."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("recording routing needs transformers: pip install 'placement[record]'") from exc
    return transformers


# ------------------------------------------------------------------------------------------ router rules
@dataclass(frozen=True)
class RouterRule:
    """How a router turns logits into a top-k decision.

    ``route(logits, gate, layout)`` takes ``logits float32 [tokens, experts]`` (torch), the gate
    module (for buffers such as DeepSeek-V3's ``e_score_correction_bias``) and the
    :class:`MoELayout`, and returns ``(weights float32 [tokens, k], ids int64 [tokens, k])``.
    """

    name: str
    summary: str
    route: Callable[[Any, Any, MoELayout], tuple[Any, Any]]


def _softmax_topk(logits, gate, layout: MoELayout):
    import torch

    probs = torch.softmax(logits.float(), dim=-1)
    weights, ids = torch.topk(probs, layout.top_k, dim=-1)
    if layout.norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights * layout.routed_scaling_factor, ids


def _sigmoid_group_topk(logits, gate, layout: MoELayout):
    import torch

    scores = torch.sigmoid(logits.float())
    bias = getattr(gate, "e_score_correction_bias", None)
    choice = scores if bias is None else scores + bias.float()
    n, E, G = choice.shape[0], layout.num_experts, layout.num_groups
    group_scores = choice.view(n, G, E // G).topk(min(2, E // G), dim=-1)[0].sum(dim=-1)
    keep = torch.topk(group_scores, layout.topk_groups or G, dim=-1)[1]
    mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
    choice = choice.masked_fill(~mask.repeat_interleave(E // G, dim=1), float("-inf"))
    ids = torch.topk(choice, layout.top_k, dim=-1)[1]
    weights = scores.gather(1, ids)
    if layout.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * layout.routed_scaling_factor, ids


ROUTER_RULES: dict[str, RouterRule] = {r.name: r for r in (
    RouterRule("softmax-topk", "softmax over experts, top-k, optionally renormalised (norm_topk_prob)", _softmax_topk),
    RouterRule("sigmoid-group-topk", "sigmoid scores + correction bias, group-limited top-k (DeepSeek-V3)",
               _sigmoid_group_topk),
)}


# ------------------------------------------------------------------------------------------ families
@dataclass(frozen=True)
class Family:
    """A transformers model family: its router rule and the layout fields its config holds.

    ``config_layout(config)`` returns the keyword arguments of :class:`MoELayout` that only the
    config knows (``norm_topk_prob``, ``routed_scaling_factor``, groups, shared experts, the
    expert FFN width); the MoE layers, expert count and top-k are read from the router modules.
    """

    name: str
    model_types: tuple[str, ...]
    rule: str
    config_layout: Callable[[Any], dict[str, Any]]


def _softmax_family(norm_default: bool | None, ffn: str, shared: Callable[[Any], int] = lambda c: 0):
    def layout(config) -> dict[str, Any]:
        norm = norm_default if norm_default is not None else bool(getattr(config, "norm_topk_prob", False))
        return {"norm_topk_prob": norm, "routed_scaling_factor": 1.0, "num_groups": 1, "topk_groups": None,
                "num_shared_experts": shared(config), "intermediate_size": getattr(config, ffn, None)}
    return layout


def _qwen2_shared(config) -> int:
    # one shared expert of shared_expert_intermediate_size, counted in routed-expert widths (ModelSpec's unit)
    width = getattr(config, "shared_expert_intermediate_size", 0) or 0
    return math.ceil(width / config.moe_intermediate_size) if width else 0


def _deepseek_v3_layout(config) -> dict[str, Any]:
    return {"norm_topk_prob": bool(config.norm_topk_prob),
            "routed_scaling_factor": float(config.routed_scaling_factor),
            "num_groups": int(config.n_group), "topk_groups": int(config.topk_group),
            "num_shared_experts": int(config.n_shared_experts or 0),
            "intermediate_size": int(config.moe_intermediate_size)}


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("mixtral", ("mixtral",), "softmax-topk", _softmax_family(True, "intermediate_size")),
    Family("qwen2-moe", ("qwen2_moe",), "softmax-topk", _softmax_family(None, "moe_intermediate_size", _qwen2_shared)),
    Family("qwen3-moe", ("qwen3_moe",), "softmax-topk", _softmax_family(None, "moe_intermediate_size")),
    Family("olmoe", ("olmoe",), "softmax-topk", _softmax_family(None, "intermediate_size")),
    Family("deepseek-v3", ("deepseek_v3",), "sigmoid-group-topk", _deepseek_v3_layout),
)}


def _family_of(model_type: str, source: str | None) -> Family:
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise input_error(f"model_type {model_type!r} has no router rule here; supported: {known} "
                      "(add a Family to placement_runtime.record.FAMILIES)", source, "config.model_type")


# ------------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class MoELayout:
    """Where a model's MoE layers are and how its routers decide (all from the loaded model).

    ``moe_layers`` are hidden-layer indices (0-based) of the layers with a router, ascending;
    ``num_hidden_layers`` counts all decoder layers, dense ones included.
    """

    model_type: str
    family: str
    rule: str
    num_hidden_layers: int
    moe_layers: tuple[int, ...]
    hidden_size: int
    num_experts: int
    top_k: int
    norm_topk_prob: bool
    routed_scaling_factor: float = 1.0
    num_groups: int = 1
    topk_groups: int | None = None
    num_shared_experts: int = 0
    intermediate_size: int | None = None
    weight_dtype: str = "bf16"

    def model_spec(self, name: str) -> ModelSpec:
        """The trace's :class:`ModelSpec`: MoE layers only, with their hidden-layer indices
        (``moe_layers``, ``num_hidden_layers``), so placements and exports know the layer layout."""
        return ModelSpec(name=name, num_layers=len(self.moe_layers), num_experts=self.num_experts,
                         top_k=self.top_k, num_shared_experts=self.num_shared_experts,
                         num_groups=self.num_groups, topk_groups=self.topk_groups,
                         first_moe_layer=self.moe_layers[0], hidden_size=self.hidden_size,
                         intermediate_size=self.intermediate_size, weight_dtype=self.weight_dtype,
                         num_hidden_layers=self.num_hidden_layers, moe_layers=tuple(self.moe_layers))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["moe_layers"] = list(self.moe_layers)
        return d


_GATE_NAME = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:mlp|block_sparse_moe)\.gate$")
_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def find_moe_gates(model) -> list[tuple[int, Any]]:
    """``[(hidden layer index, router module)]`` of every MoE layer of ``model``, by layer index.

    A router is the ``gate`` of a decoder layer's MoE block (``model.layers.<i>.mlp.gate``, or
    ``block_sparse_moe.gate`` in older Mixtral code); shared-expert gates are not routers.
    """
    found: dict[int, Any] = {}
    for name, module in model.named_modules():
        m = _GATE_NAME.search(name)
        if m and getattr(module, "weight", None) is not None and module.weight.ndim == 2:
            found.setdefault(int(m.group(1)), module)
    return sorted(found.items())


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_layout(model, source: str | None = None) -> MoELayout:
    """The :class:`MoELayout` of a loaded transformers MoE model (its routers and its config)."""
    config = _text_config(model)
    family = _family_of(getattr(config, "model_type", "?"), source)
    gates = find_moe_gates(model)
    if not gates:
        raise input_error("found no MoE router (no module named layers.<i>.mlp.gate); is this an MoE model?",
                          source, "model")
    experts = {int(g.weight.shape[0]) for _, g in gates}
    if len(experts) != 1:
        raise input_error(f"MoE layers differ in expert count {sorted(experts)}; a trace needs one", source, "model")
    top_k = int(getattr(gates[0][1], "top_k", None) or config.num_experts_per_tok)
    quant = getattr(config, "quantization_config", None)
    quant_method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    dtype = "fp8" if str(quant_method or "").lower() == "fp8" else _TORCH_DTYPES.get(
        str(getattr(model, "dtype", "")).replace("torch.", ""), "bf16")
    layout = MoELayout(model_type=config.model_type, family=family.name, rule=family.rule,
                       num_hidden_layers=int(config.num_hidden_layers), moe_layers=tuple(i for i, _ in gates),
                       hidden_size=int(config.hidden_size), num_experts=experts.pop(), top_k=top_k,
                       weight_dtype=dtype, **family.config_layout(config))
    layout.model_spec(getattr(config, "name_or_path", "") or config.model_type).validate(source)
    return layout


# ------------------------------------------------------------------------------------------ recorder
def _decision(output, logits_rule: Callable[[Any], tuple[Any, Any]], k: int):
    """``(weights [n, k], ids [n, k])`` from a router's output: its own decision, or the rule on its logits."""
    import torch

    if isinstance(output, torch.Tensor):
        return logits_rule(output)
    tensors = [t for t in output if isinstance(t, torch.Tensor)] if isinstance(output, (tuple, list)) else []
    ids = [t for t in tensors if not t.is_floating_point() and t.ndim >= 1 and t.shape[-1] == k]
    weights = [t for t in tensors if t.is_floating_point() and t.ndim >= 1 and t.shape[-1] == k]
    if len(ids) == 1 and len(weights) == 1:
        return weights[0], ids[0]
    logits = [t for t in tensors if t.is_floating_point() and t.shape[-1] != k]
    if len(logits) == 1 and not ids:
        return logits_rule(logits[0])
    raise RuntimeError(f"cannot read the router's output {[tuple(t.shape) for t in tensors]}: expected "
                       f"(logits, weights [n, {k}], ids [n, {k}]) or logits [n, experts]")


@dataclass
class _Chunk:
    name: str
    offset: int
    tokens: int


class RoutingRecorder:
    """Forward hooks on every router of ``model``; :meth:`run` feeds tokens, :meth:`trace` returns the trace.

    Use as a context manager (the hooks are removed on exit)::

        with RoutingRecorder(model) as rec:
            rec.run(input_ids)                  # int64 [batch, seq]; attention_mask marks padding
            trace = rec.trace(name="my-model")

    Each :meth:`run` is one forward pass without gradients; rows of a batch are recorded in
    order, their padding (``attention_mask == 0``) dropped.
    """

    def __init__(self, model, *, source: str | None = None):
        self.model = model
        self.source = source
        self.layout = model_layout(model, source)
        self._gates = find_moe_gates(model)
        self._rule = ROUTER_RULES[self.layout.rule]
        self._handles: list[Any] = []
        self._current: dict[int, tuple[Any, Any]] = {}
        self._ids: list[np.ndarray] = []        # int [tokens, layers, k] per run
        self._weights: list[np.ndarray] = []    # float32 [tokens, layers, k] per run
        self._chunks: list[_Chunk] = []

    # hooks
    def __enter__(self) -> RoutingRecorder:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def attach(self) -> None:
        if self._handles:
            return
        for j, (_, gate) in enumerate(self._gates):
            self._handles.append(gate.register_forward_hook(self._hook(j, gate)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, j: int, gate):
        layout, rule = self.layout, self._rule

        def hook(module, inputs, output):
            if j in self._current:
                raise RuntimeError(f"router of hidden layer {layout.moe_layers[j]} ran twice in one forward pass")
            weights, ids = _decision(output, lambda logits: rule.route(logits.float(), gate, layout), layout.top_k)
            self._current[j] = (weights.detach().float().reshape(-1, layout.top_k).cpu(),
                                ids.detach().reshape(-1, layout.top_k).cpu())
        return hook

    # feeding
    def run(self, input_ids, attention_mask=None, *, names: Sequence[str] | None = None,
            offsets: Sequence[int] | None = None) -> None:
        """One forward pass of ``input_ids int64 [batch, seq]``; records every unmasked token.

        ``names``/``offsets`` label each row in ``metadata["sequences"]`` (default ``"seq<i>"``, 0).
        """
        import torch

        if not self._handles:
            raise RuntimeError("RoutingRecorder.run outside its context: use `with RoutingRecorder(model) as rec:`")
        input_ids = torch.as_tensor(input_ids)
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        mask = torch.ones_like(input_ids) if attention_mask is None else torch.as_tensor(attention_mask)
        B, S = input_ids.shape
        device = _input_device(self.model)
        self._current = {}
        with torch.no_grad():
            self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
        missing = [self.layout.moe_layers[j] for j in range(len(self._gates)) if j not in self._current]
        if missing:
            raise RuntimeError(f"the routers of hidden layers {missing} did not run in the forward pass")
        keep = mask.bool().cpu().numpy().reshape(-1)
        ids = np.stack([self._current[j][1].numpy() for j in range(len(self._gates))], axis=1)
        weights = np.stack([self._current[j][0].numpy() for j in range(len(self._gates))], axis=1)
        self._current = {}
        if ids.shape[0] != B * S:
            raise RuntimeError(f"routers saw {ids.shape[0]} tokens for a [{B}, {S}] batch")
        self._ids.append(ids[keep])
        self._weights.append(weights[keep].astype(np.float32))
        lengths = mask.bool().sum(dim=1).tolist()
        for b in range(B):
            self._chunks.append(_Chunk(names[b] if names else f"seq{len(self._chunks)}",
                                       int(offsets[b]) if offsets else 0, int(lengths[b])))

    # result
    def trace(self, name: str | None = None, metadata: dict[str, Any] | None = None) -> Trace:
        """The recorded :class:`Trace` (slots ordered by gate weight, largest first)."""
        if not self._ids or sum(len(x) for x in self._ids) == 0:
            raise input_error("nothing was recorded (no tokens); feed at least one token", self.source)
        ids = np.concatenate(self._ids)
        weights = np.concatenate(self._weights)
        # slot order: weight descending, ties by expert id (sort by id, then a stable sort by -weight)
        by_id = np.argsort(ids, axis=2, kind="stable")
        ids, weights = np.take_along_axis(ids, by_id, 2), np.take_along_axis(weights, by_id, 2)
        by_w = np.argsort(-weights, axis=2, kind="stable")
        ids, weights = np.take_along_axis(ids, by_w, 2), np.take_along_axis(weights, by_w, 2)
        config = _text_config(self.model)
        name = name or getattr(config, "name_or_path", "") or self.layout.model_type
        sequences, row = [], 0
        for c in self._chunks:
            sequences.append({"name": c.name, "first_token": row, "tokens": c.tokens, "offset": c.offset})
            row += c.tokens
        meta = {"recorded_by": "placement_runtime record", "model": name,
                "transformers_version": require_transformers().__version__,
                "layout": self.layout.to_dict(), "sequences": sequences,
                "weights": "gate weights the model multiplies each expert's output by; slots by weight, largest first",
                **(metadata or {})}
        return Trace.from_tokens(self.layout.model_spec(name), ids, weights=weights, source=self.source or name,
                                 metadata=meta)


def _input_device(model):
    try:
        return model.get_input_embeddings().weight.device
    except AttributeError:  # pragma: no cover - models without input embeddings
        return next(model.parameters()).device


def token_positions(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """``(sequence int32 [tokens], position int32 [tokens])`` of a recorded trace's rows.

    ``position`` counts from the start of the forward sequence; add ``metadata["sequences"][s]
    ["offset"]`` for the position in the text it came from.
    """
    seqs = trace.metadata.get("sequences")
    if not seqs:
        raise input_error("the trace has no metadata['sequences'] (it was not recorded from a model)",
                          trace.source, "metadata.sequences")
    lengths = np.array([s["tokens"] for s in seqs], dtype=np.int64)
    if lengths.sum() != trace.num_tokens:
        raise input_error(f"the sequences hold {int(lengths.sum())} tokens, the trace {trace.num_tokens}",
                          trace.source, "metadata.sequences")
    sequence = np.repeat(np.arange(len(seqs), dtype=np.int32), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return sequence, (np.arange(trace.num_tokens) - starts).astype(np.int32)


def _chunks(token_ids: Sequence[int], max_length: int) -> Iterable[tuple[int, list[int]]]:
    for start in range(0, len(token_ids), max_length):
        yield start, list(token_ids[start:start + max_length])


def record_texts(model, tokenizer, texts: Sequence[tuple[str, str]], *, max_length: int = 2048,
                 batch_size: int = 1, max_tokens: int | None = None, name: str | None = None,
                 source: str | None = None, progress: Callable[[int], None] | None = None) -> Trace:
    """Tokenise each ``(name, text)``, split it into sequences of at most ``max_length`` tokens, run
    them through ``model`` ``batch_size`` at a time (right padding, masked) and return the trace.

    ``max_tokens`` stops after that many tokens (the last sequence is cut); ``name`` is the
    model name stored in the trace (default: the config's ``name_or_path``).
    """
    import torch

    pieces: list[tuple[str, int, list[int]]] = []
    total = 0
    for text_name, text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        for offset, chunk in _chunks(ids, max_length):
            if max_tokens is not None:
                chunk = chunk[:max(0, max_tokens - total)]
            if chunk:
                pieces.append((text_name, offset, chunk))
                total += len(chunk)
    if not pieces:
        raise input_error("the texts hold no tokens", source, "text")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with RoutingRecorder(model, source=source) as rec:
        for b in range(0, len(pieces), batch_size):
            batch = pieces[b:b + batch_size]
            width = max(len(p[2]) for p in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (_, _, chunk) in enumerate(batch):
                ids[r, :len(chunk)] = torch.tensor(chunk)
                mask[r, :len(chunk)] = 1
            rec.run(ids, mask, names=[p[0] for p in batch], offsets=[p[1] for p in batch])
            if progress is not None:
                progress(sum(len(p[2]) for p in pieces[:b + batch_size]))
        return rec.trace(name=name)


# ------------------------------------------------------------------------------------------ CLI
def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``record`` subcommand's options (added to ``parser`` when given)."""
    p = parser or argparse.ArgumentParser(prog="python -m placement_runtime record")
    p.add_argument("--model", required=True,
                   help="transformers checkpoint: a local directory or a hub id (config.model_type one of "
                        + ", ".join(sorted(t for f in FAMILIES.values() for t in f.model_types)) + ")")
    p.add_argument("--text", action="append", default=[],
                   help="text file to feed (repeatable; '-' reads standard input); the whole file is one text "
                        "unless --lines")
    p.add_argument("--prompt", action="append", default=[], help="a text given on the command line (repeatable)")
    p.add_argument("--lines", action="store_true", help="each non-empty line of a --text file is its own text")
    p.add_argument("--out", required=True, help="trace file to write (.npz keeps weights and metadata; .csv, .parquet)")
    p.add_argument("--max-length", type=int, default=2048,
                   help="tokens per forward sequence; longer texts are split (default 2048)")
    p.add_argument("--batch-size", type=int, default=1, help="sequences per forward pass (right-padded; default 1)")
    p.add_argument("--max-tokens", type=int, default=None, help="stop after this many tokens")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                   help="weights' dtype when loading (default: the checkpoint's)")
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda, cuda:N, or 'auto' to spread a large model over all GPUs "
                        "(device_map='auto', needs the accelerate package)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the checkpoint's own modelling code (only for checkpoints you trust)")
    p.add_argument("--name", default=None, help="model name stored in the trace (default: --model)")
    return p


def _read_texts(args: argparse.Namespace) -> list[tuple[str, str]]:
    texts: list[tuple[str, str]] = [(f"prompt{i}", t) for i, t in enumerate(args.prompt)]
    for path in args.text:
        if path == "-":
            body = sys.stdin.read()
        else:
            if not os.path.isfile(path):
                raise input_error("file not found; check the path", path, "--text")
            try:
                body = Path(path).read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise input_error(f"not UTF-8 text ({exc})", path, "--text") from exc
        if args.lines:
            texts += [(f"{path}:{n + 1}", line) for n, line in enumerate(body.splitlines()) if line.strip()]
        elif body.strip():
            texts.append((path, body))
    if not texts:
        raise input_error("no text to feed: give --text FILE or --prompt TEXT (non-empty)", field="--text")
    return texts


def _check_args(args: argparse.Namespace) -> None:
    suffix = Path(args.out).suffix.lower().lstrip(".")
    if suffix not in TRACE_FILE_FORMATS or suffix == "npy":
        raise input_error(f"cannot write a recorded trace as '{Path(args.out).suffix}'; use .npz (weights and "
                          "metadata), .csv or .parquet", args.out, "--out")
    for name in ("max_length", "batch_size", "max_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise input_error(f"must be a positive integer, got {value}", field="--" + name.replace("_", "-"))


def run(args: argparse.Namespace) -> int:
    """Load the model and tokenizer, record the texts, write the trace; exit status."""
    _check_args(args)
    texts = _read_texts(args)
    torch_dtype = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[args.dtype]
    transformers = require_transformers()
    if args.model.startswith((".", "/", "~")) and not os.path.isdir(os.path.expanduser(args.model)):
        raise input_error("no such checkpoint directory; give a local directory written by save_pretrained or a "
                          "hub id (owner/name)", args.model, "--model")
    try:
        config = transformers.AutoConfig.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise input_error(f"cannot load the model config ({str(exc).splitlines()[0]})", args.model, "--model") from exc
    _family_of(getattr(config.get_text_config() if hasattr(config, "get_text_config") else config,
                       "model_type", "?"), args.model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": args.trust_remote_code}
    if args.device == "auto":
        kwargs["device_map"] = "auto"
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    if args.device != "auto":
        model = model.to(args.device)
    model.eval()
    trace = record_texts(model, tokenizer, texts, max_length=args.max_length, batch_size=args.batch_size,
                         max_tokens=args.max_tokens, name=args.name or args.model, source=args.model)
    save_trace(trace, args.out)
    lay = trace.metadata["layout"]
    print(f"recorded {trace.num_tokens} tokens x {trace.num_layers} MoE layers (hidden layers "
          f"{lay['moe_layers'][0]}..{lay['moe_layers'][-1]} of {lay['num_hidden_layers']}) x top-{trace.top_k} of "
          f"{trace.num_experts} experts ({lay['rule']}) -> {args.out}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except PlacementInputError as exc:
        print(f"placement_runtime record: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
