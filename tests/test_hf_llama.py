"""Llama, Mistral and Qwen2 interop: tiny random transformers models load into plait.GPT with
equal logits on left-padded batches and token-identical greedy and beam generation; a rotary
plait GPT exports to a folder transformers loads unchanged; what plait cannot compute is refused
by name."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import randomize

import plait
from plait.hf import export, load
from plait.models import GPT, GPTConfig

transformers = pytest.importorskip("transformers")

ATOL = 1e-4
VOCAB = 97
CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
}
CASES = {  # name: (model_type, config overrides)
    "llama-gqa": ("llama", {}),
    "llama-mha-tied-theta": ("llama", {"num_key_value_heads": 4, "tie_word_embeddings": True,
                                       "rope_theta": 500.0}),
    "llama-biases-head_dim": ("llama", {"attention_bias": True, "mlp_bias": True,
                                        "head_dim": 12, "rms_norm_eps": 1e-5}),
    "mistral-mqa": ("mistral", {"num_key_value_heads": 1, "sliding_window": None}),
    "mistral-window-covers-all": ("mistral", {"sliding_window": 64, "num_hidden_layers": 3}),
    "qwen2-gqa": ("qwen2", {}),
    "qwen2-mha-tied-theta": ("qwen2", {"num_key_value_heads": 4, "tie_word_embeddings": True,
                                       "rope_theta": 1e6}),
}


def hf_model(folder, model_type: str, seed: int = 0, **kw) -> torch.nn.Module:
    """A random tiny transformers model, saved to ``folder``: every tensor ~ N(0, 0.3), norm
    gains ~ N(1, 0.3), so logits spread wide (no near ties for generation to flip on)."""
    config_class, model_class = CLASSES[model_type]
    theta = kw.pop("rope_theta", 10000.0)
    torch.manual_seed(seed)
    cfg = config_class(**{
        "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 56, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta}, **kw})
    model = randomize(model_class(cfg).eval())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(1.0)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    model_type, kw = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    ref = hf_model(folder, model_type, **kw)
    return ref, load(folder)


def left_padded(B: int, T: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for b in range(B):
        mask[b, : 2 * b] = 0  # row b has 2b pad tokens on the left
    return ids.masked_fill(mask == 0, 1), mask


def hf_logits(model, ids, mask):
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate() passes for left padding
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


def test_loaded_config(pair):
    ref, model = pair
    c, hf = model.config, ref.config
    assert isinstance(model, GPT) and not model.training
    assert (c.pos_encoding, c.norm, c.mlp) == ("rope", "rmsnorm", "swiglu")
    head_dim = getattr(hf, "head_dim", hf.hidden_size // hf.num_attention_heads)  # Qwen2: none
    assert c.kv_heads == hf.num_key_value_heads and c.head_dim == head_dim
    assert c.rope_base == hf.rope_parameters["rope_theta"]
    assert c.tie_embeddings == hf.tie_word_embeddings
    if hf.model_type == "qwen2":  # q, k, v carry (non-zero) biases; o_proj and the MLP none
        attn = model.transformer.blocks[0].attn
        assert (c.bias, c.qkv_bias) == (False, True) and attn.proj.bias is None
        assert attn.qkv.bias.abs().min() > 0
        assert torch.equal(attn.qkv.bias[:32], ref.model.layers[0].self_attn.q_proj.bias)


def test_logits_match_on_left_padded_batch(pair):
    ref, model = pair
    ids, mask = left_padded(4, 10)
    want = hf_logits(ref, ids, mask)
    with torch.no_grad():
        got = model(ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=ATOL, rtol=0)
    assert want[real].std() > 1.0  # far from init: a wrong weight would show
    with torch.no_grad():  # no mask at all: plain causal prefill
        torch.testing.assert_close(model(ids[:1]), ref(ids[:1]).logits, atol=ATOL, rtol=0)


def both(pair, ids, mask, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    ref, model = pair
    # pad 1, not 0: transformers' beam search fills with `pad_token_id or eos`
    kw = dict(do_sample=False, max_new_tokens=8, pad_token_id=1) | kw
    with torch.no_grad():
        want = ref.generate(ids, attention_mask=mask, **kw)
    return model.generate(ids, attention_mask=mask, **kw), want


def test_greedy_generation_matches(pair):
    ids, mask = left_padded(3, 7, seed=2)
    free, want = both(pair, ids, mask)
    assert torch.equal(free, want)
    T = ids.shape[1]
    eos = int(free[1, T + 2])  # row 1's third new token: it stops early, the others may not
    got, want = both(pair, ids, mask, eos_token_id=eos)
    assert torch.equal(got, want)
    assert (got[1, T + 3:] == 1).all()  # eos fired: the rest of row 1 is padding


def test_beam_search_matches(pair):
    ids, mask = left_padded(3, 7, seed=3)
    kw = dict(num_beams=3, num_return_sequences=2, length_penalty=0.8)
    free, _ = both(pair, ids, mask, **kw)
    eos = int(free[1, ids.shape[1] + 2])  # a token some beam reaches: hypotheses end early
    got, want = both(pair, ids, mask, eos_token_id=eos, **kw)
    assert torch.equal(got, want)
    assert (got[:, ids.shape[1]:] == eos).any()


EXPORTS = {  # name: (GPTConfig overrides, the transformers class that should read it)
    "llama-gqa": ({"n_kv_head": 2}, "LlamaForCausalLM"),
    "llama-biases-tied-head_dim": ({"bias": True, "tie_embeddings": True, "d_head": 12,
                                    "rope_base": 500.0}, "LlamaForCausalLM"),
    "qwen2": ({"qkv_bias": True, "n_kv_head": 1}, "Qwen2ForCausalLM"),
}


@pytest.mark.parametrize("name", list(EXPORTS))
def test_export_round_trip(tmp_path, name):
    change, arch = EXPORTS[name]
    torch.manual_seed(0)
    cfg = GPTConfig(**{"vocab_size": VOCAB, "n_layer": 2, "n_head": 4, "n_embd": 32,
                       "n_inner": 56, "block_size": 64, "pos_encoding": "rope", "norm": "rmsnorm",
                       "mlp": "swiglu", "bias": False, "tie_embeddings": False, **change})
    model = randomize(GPT(cfg).eval())
    export(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [arch]
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(ref).__name__ == arch
    ids, mask = left_padded(3, 9)
    with torch.no_grad():
        got = model(ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(hf_logits(ref, ids, mask)[real], got[real], atol=ATOL, rtol=0)
    back = load(tmp_path)
    assert back.config == cfg.replace(n_kv_head=cfg.kv_heads)  # the same config, spelled out
    with torch.no_grad():
        torch.testing.assert_close(back(ids, attention_mask=mask), got, atol=1e-6, rtol=0)


def test_mistral_exports_as_llama(pair, tmp_path):
    ref, model = pair
    export(model, tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    want = {"llama": "Llama", "mistral": "Llama", "qwen2": "Qwen2"}[ref.config.model_type]
    assert type(back).__name__ == f"{want}ForCausalLM"
    ids, mask = left_padded(2, 6)
    real = mask.bool()
    torch.testing.assert_close(hf_logits(back, ids, mask)[real], hf_logits(ref, ids, mask)[real],
                               atol=ATOL, rtol=0)


def test_bare_model_legacy_config_and_rotary_buffers(tmp_path):
    """A bare LlamaModel, rope_theta beside a null rope_scaling (transformers 4.x), and the
    rotary_emb.inv_freq buffers old checkpoints carried; the LM head is the token table."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=56,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, rope_parameters={
                                       "rope_type": "default", "rope_theta": 300.0})
    bare = randomize(transformers.LlamaModel(cfg).eval())
    state = dict(bare.state_dict())
    state["layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    old = {k: v for k, v in cfg.to_dict().items() if k != "rope_parameters"}
    (tmp_path / "config.json").write_text(json.dumps(
        {**old, "rope_theta": 300.0, "rope_scaling": None, "architectures": ["LlamaModel"]}))
    model = load(tmp_path)
    assert model.config.rope_base == 300.0 and model.config.tie_embeddings
    ids = torch.randint(0, VOCAB, (2, 7))
    with torch.no_grad():
        want = bare(ids).last_hidden_state @ bare.embed_tokens.weight.t()
        torch.testing.assert_close(model(ids), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("model_type, field, value", [
    ("llama", "rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}),
    ("llama", "rope_scaling", {"type": "dynamic", "factor": 2.0}),
    ("llama", "mlp_bias", True),
    ("llama", "hidden_act", "gelu"),
    ("llama", "architectures", ["LlamaForSequenceClassification"]),
    ("mistral", "sliding_window", 16),
    ("qwen2", "use_sliding_window", True),
    ("qwen2", "layer_types", ["full_attention", "sliding_attention"]),
])
def test_unsupported_config_names_field(tmp_path, model_type, field, value):
    hf_model(tmp_path, model_type, **({"sliding_window": None} if model_type == "mistral" else {}))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=field) as e:
        load(tmp_path)
    assert len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize("change, field", [
    ({"bias": True, "qkv_bias": False}, "qkv_bias"),  # biases plait has, neither family has
    ({"mlp": "geglu"}, "mlp"),
    ({"pos_encoding": "alibi"}, "pos_encoding"),
])
def test_export_refuses_what_no_family_writes(tmp_path, change, field):
    cfg = GPTConfig(**{"vocab_size": 50, "n_layer": 1, "n_head": 4, "n_embd": 32,
                       "pos_encoding": "rope", "norm": "rmsnorm", "mlp": "swiglu",
                       "bias": False, **change})
    with pytest.raises(ValueError, match=field) as e:
        export(GPT(cfg), tmp_path)
    assert len(str(e.value).splitlines()) == 1


def test_plain_gpt_still_exports_as_gpt2(tmp_path):
    export(GPT(GPTConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=16, block_size=8)), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gpt2"
    assert plait.load(tmp_path).config.pos_encoding == "learned"


def test_a_default_mlp_width_exports_as_a_number(tmp_path):
    """n_inner unset means 4 * n_embd; config.json once said null, which transformers refuses."""
    transformers = pytest.importorskip("transformers")
    cfg = GPTConfig(vocab_size=50, n_layer=1, n_head=4, n_embd=32, pos_encoding="rope",
                    norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False)
    model = GPT(cfg).eval()
    export(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["intermediate_size"] == 128
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 50, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-5, rtol=0)
