"""placement_runtime.record: the trace recorded from a tiny random transformers MoE model equals the
router decisions recomputed here, in float64 numpy, from each router's own weights and inputs.

No checkpoint is downloaded: every model is built from a config with random weights.  The reference
rules below are written from the families' published routing (Mixtral: softmax then top-k, renormalised;
Qwen-MoE: the same, renormalised only with ``norm_topk_prob``; DeepSeek-V3: sigmoid scores plus the
correction bias, the best ``topk_group`` groups by the sum of their two best scores, top-k inside them,
weights the unbiased scores renormalised, times ``routed_scaling_factor``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from placement.trace import load_trace  # noqa: E402
from placement_runtime.record import (  # noqa: E402
    ROUTER_RULES,
    RoutingRecorder,
    find_moe_gates,
    main,
    model_layout,
    token_positions,
)

pytestmark = [pytest.mark.runtime, pytest.mark.usefixtures("one_torch_thread")]

VOCAB, H = 48, 32
COMMON = dict(vocab_size=VOCAB, hidden_size=H, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=64)


def _configs():
    """Tiny configs: model_type -> (config, expected MoE hidden layers, expected layout fields)."""
    t = transformers
    out = {
        "mixtral": (t.MixtralConfig(**COMMON, num_hidden_layers=3, intermediate_size=16, num_local_experts=8,
                                    num_experts_per_tok=2),
                    [0, 1, 2], dict(num_experts=8, top_k=2, num_groups=1, norm_topk_prob=True)),
        # Qwen2-MoE with a dense layer in the middle (mlp_only_layers) and a shared expert 2x the routed width
        "qwen2_moe": (t.Qwen2MoeConfig(**COMMON, num_hidden_layers=3, intermediate_size=16, moe_intermediate_size=8,
                                       shared_expert_intermediate_size=16, num_experts=8, num_experts_per_tok=2,
                                       norm_topk_prob=False, mlp_only_layers=[1]),
                      [0, 2], dict(num_experts=8, top_k=2, num_shared_experts=2, norm_topk_prob=False)),
        # Qwen3-MoE with every second layer sparse (decoder_sparse_step=2: hidden layers 1 and 3)
        "qwen3_moe": (t.Qwen3MoeConfig(**COMMON, num_hidden_layers=4, intermediate_size=16, moe_intermediate_size=8,
                                       num_experts=16, num_experts_per_tok=4, norm_topk_prob=True,
                                       decoder_sparse_step=2, head_dim=8),
                      [1, 3], dict(num_experts=16, top_k=4, norm_topk_prob=True)),
    }
    if hasattr(t, "DeepseekV3Config"):
        out["deepseek_v3"] = (
            t.DeepseekV3Config(**{**COMMON, "num_key_value_heads": 4}, num_hidden_layers=4, intermediate_size=16,
                               moe_intermediate_size=8,
                               n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2,
                               first_k_dense_replace=1, n_shared_experts=1, routed_scaling_factor=2.5,
                               norm_topk_prob=True, q_lora_rank=16, kv_lora_rank=8, qk_rope_head_dim=4,
                               qk_nope_head_dim=4, v_head_dim=8),
            [1, 2, 3], dict(num_experts=16, top_k=4, num_groups=4, topk_groups=2, num_shared_experts=1,
                            routed_scaling_factor=2.5))
    return out


CONFIGS = _configs()


def _model(model_type: str):
    config = CONFIGS[model_type][0]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for _, gate in find_moe_gates(model):
            gate.weight.normal_(0.0, 1.0)  # wide logits: well separated choices
            if hasattr(gate, "e_score_correction_bias"):  # exercise the bias that changes the choice only
                gate.e_score_correction_bias.copy_(torch.linspace(-0.3, 0.3, gate.weight.shape[0]))
    return model


@pytest.fixture(scope="module", params=list(CONFIGS))
def tiny(request):
    return request.param, _model(request.param)


# ------------------------------------------------------------------------------------------ the reference
def _reference(x: np.ndarray, gate, model_type: str, config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 ``(ids [n, k] sorted by weight, weights [n, k], margin [n])`` from the gate's weights.

    ``margin`` is the score gap that decided the choice (k-th vs (k+1)-th expert, and for DeepSeek-V3
    the last kept vs first dropped group): float32 vs float64 may choose differently only when tiny.
    """
    W = gate.weight.detach().double().numpy()
    logits = x @ W.T
    n, E = logits.shape
    k = config.num_experts_per_tok
    if model_type == "deepseek_v3":
        s = 1.0 / (1.0 + np.exp(-logits))
        c = s + gate.e_score_correction_bias.detach().double().numpy()
        G, per = config.n_group, E // config.n_group
        gs = np.sort(c.reshape(n, G, per), axis=2)[:, :, -2:].sum(axis=2)
        order_g = np.argsort(-gs, axis=1)
        keep = np.zeros((n, G), dtype=bool)
        np.put_along_axis(keep, order_g[:, :config.topk_group], True, axis=1)
        c = np.where(np.repeat(keep, per, axis=1), c, -np.inf)
        order = np.argsort(-c, axis=1)
        ids = order[:, :k]
        w = np.take_along_axis(s, ids, 1)
        w = w / (w.sum(axis=1, keepdims=True) + 1e-20) * config.routed_scaling_factor
        sorted_c = np.take_along_axis(c, order, 1)
        sorted_g = np.take_along_axis(gs, order_g, 1)
        margin = np.minimum(sorted_c[:, k - 1] - sorted_c[:, k], sorted_g[:, config.topk_group - 1]
                            - sorted_g[:, config.topk_group])
    else:
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        order = np.argsort(-p, axis=1)
        ids = order[:, :k]
        w = np.take_along_axis(p, ids, 1)
        if model_type == "mixtral" or config.norm_topk_prob:
            w = w / w.sum(axis=1, keepdims=True)
        sorted_p = np.take_along_axis(p, order, 1)
        margin = sorted_p[:, k - 1] - sorted_p[:, k]
    by_w = np.argsort(-w, axis=1, kind="stable")
    return np.take_along_axis(ids, by_w, 1), np.take_along_axis(w, by_w, 1), margin


def _record_with_inputs(model, input_ids, mask):
    """Record ``input_ids`` and capture every router's input (for the reference) in the same pass."""
    inputs: dict[int, np.ndarray] = {}
    handles = [gate.register_forward_pre_hook(
        lambda mod, args, layer=layer: inputs.__setitem__(layer, args[0].detach().double().reshape(-1, H).numpy()))
        for layer, gate in find_moe_gates(model)]
    try:
        with RoutingRecorder(model) as rec:
            rec.run(input_ids, mask, names=["a", "b"], offsets=[0, 5])
            trace = rec.trace(name="tiny")
    finally:
        for h in handles:
            h.remove()
    keep = mask.numpy().reshape(-1).astype(bool)
    return trace, {layer: x[keep] for layer, x in inputs.items()}


def _batch():
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, VOCAB, (2, 40), generator=g)
    mask = torch.ones_like(input_ids)
    mask[1, 25:] = 0  # the second row is padded: 25 real tokens
    return input_ids, mask


# ------------------------------------------------------------------------------------------ tests
def test_recorded_trace_equals_the_router_recomputed_from_the_gate_weights(tiny):
    model_type, model = tiny
    config, moe_layers, fields = CONFIGS[model_type]
    input_ids, mask = _batch()
    trace, inputs = _record_with_inputs(model, input_ids, mask)

    n = int(mask.sum())
    assert trace.num_tokens == n == 65
    assert trace.experts.shape == (n, len(moe_layers), config.num_experts_per_tok)
    ref_counts = np.zeros((len(moe_layers), trace.num_experts), dtype=np.int64)
    for j, layer in enumerate(sorted(inputs)):
        ids, w, margin = _reference(inputs[layer], dict(find_moe_gates(model))[layer], model_type, config)
        clear = margin > 1e-6
        assert clear.mean() > 0.95, "the reference's choices are too close to call"
        np.testing.assert_array_equal(trace.experts[clear, j], ids[clear])
        np.testing.assert_allclose(trace.weights[clear, j], w[clear], rtol=1e-4, atol=1e-5)
        np.add.at(ref_counts[j], ids.ravel(), 1)
    # selections per expert per layer (every token's choice is clear in these models)
    np.testing.assert_array_equal(trace.layer_counts(), ref_counts)

    layout = trace.metadata["layout"]
    assert layout["moe_layers"] == moe_layers and layout["num_hidden_layers"] == config.num_hidden_layers
    assert layout["hidden_size"] == H and trace.model.hidden_size == H
    assert trace.model.first_moe_layer == moe_layers[0] and list(trace.model.moe_layers) == moe_layers
    assert trace.model.num_hidden_layers == config.num_hidden_layers
    for key, value in fields.items():
        assert layout[key] == value, key
        if hasattr(trace.model, key):
            assert getattr(trace.model, key) == value, key


def test_rule_applied_to_logits_equals_the_models_router(tiny):
    """The fallback for routers that return only logits (transformers 4's nn.Linear gates)."""
    model_type, model = tiny
    layout = model_layout(model)
    x = torch.randn(200, H, generator=torch.Generator().manual_seed(2))
    for _, gate in find_moe_gates(model):
        with torch.no_grad():
            _, want_w, want_ids = gate(x)
            w, ids = ROUTER_RULES[layout.rule].route(torch.nn.functional.linear(x, gate.weight), gate, layout)
        want = torch.sort(want_ids, dim=1).values
        np.testing.assert_array_equal(torch.sort(ids, dim=1).values.numpy(), want.numpy())
        np.testing.assert_allclose(torch.sort(w, dim=1).values.numpy(),
                                   torch.sort(want_w.float(), dim=1).values.numpy(), rtol=1e-5, atol=1e-6)


def test_positions_follow_the_sequences_and_padding_is_dropped():
    model = _model("mixtral")
    input_ids, mask = _batch()
    trace, _ = _record_with_inputs(model, input_ids, mask)
    seq, pos = token_positions(trace)
    np.testing.assert_array_equal(seq, [0] * 40 + [1] * 25)
    np.testing.assert_array_equal(pos, list(range(40)) + list(range(25)))
    assert [(s["name"], s["first_token"], s["tokens"], s["offset"]) for s in trace.metadata["sequences"]] == [
        ("a", 0, 40, 0), ("b", 40, 25, 5)]
    # recording the second row alone gives the same routing: padding changed nothing
    with RoutingRecorder(model) as rec:
        rec.run(input_ids[1:, :25])
        alone = rec.trace()
    np.testing.assert_array_equal(alone.experts, trace.experts[40:])


def _save_tiny_checkpoint(path):
    """A tiny Mixtral and a word-level tokenizer saved as a local checkpoint directory."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = ["[UNK]", "[PAD]"] + [f"w{i}" for i in range(VOCAB - 2)]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    fast.save_pretrained(path)
    _model("mixtral").save_pretrained(path)


def test_cli_records_a_local_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "tiny-mixtral"
    _save_tiny_checkpoint(ckpt)
    text = tmp_path / "prompts.txt"
    text.write_text("w1 w2 w3 w4 w5 w6 w7\n\nw8 w9 w10\n", encoding="utf-8")
    out = tmp_path / "rec.npz"
    code = main(["--model", str(ckpt), "--text", str(text), "--lines", "--max-length", "4", "--batch-size", "2",
                 "--out", str(out), "--name", "tiny-mixtral"])
    assert code == 0, capsys.readouterr().err
    trace = load_trace(out)
    assert trace.num_tokens == 10 and trace.model.name == "tiny-mixtral"
    assert [(s["name"].rsplit(":", 1)[1], s["tokens"], s["offset"]) for s in trace.metadata["sequences"]] == [
        ("1", 4, 0), ("1", 3, 4), ("3", 3, 0)]
    assert trace.weights is not None and trace.metadata["layout"]["moe_layers"] == [0, 1, 2]
    # the same tokens fed through the recorder directly give the same trace
    model = transformers.AutoModelForCausalLM.from_pretrained(ckpt).eval()
    ids = [[2 + i for i in (1, 2, 3, 4)], [2 + i for i in (5, 6, 7)], [2 + i for i in (8, 9, 10)]]
    with RoutingRecorder(model) as rec:
        for row in ids:
            rec.run(torch.tensor([row]))
        direct = rec.trace()
    np.testing.assert_array_equal(trace.experts, direct.experts)
    np.testing.assert_allclose(trace.weights, direct.weights, rtol=1e-5, atol=1e-6)  # batched vs alone


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "rec.npz"
    assert main(["--model", str(tmp_path), "--out", str(out)]) == 2
    assert "--text" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing"), "--prompt", "hi", "--out", str(out)]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["--model", str(tmp_path), "--prompt", "hi", "--out", str(tmp_path / "rec.npy")]) == 2
    assert "--out" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_unsupported_family_is_refused():
    config = transformers.MistralConfig(**COMMON, num_hidden_layers=1, intermediate_size=16)
    model = transformers.AutoModelForCausalLM.from_config(config)
    from placement.errors import PlacementInputError

    with pytest.raises(PlacementInputError, match="model_type 'mistral'"):
        model_layout(model)
