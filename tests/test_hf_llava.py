"""LLaVA interop: tiny random transformers LLaVA models (a CLIP tower, a Llama, Mistral or Qwen2
decoder) load into plait's VLM with equal logits on a left-padded batch of image prompts and
token-identical greedy and beam generation; the three key layouts of LLaVA checkpoints load
alike; a VLM with a CLIP tower exports to a folder transformers loads unchanged; what plait
cannot compute is refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import randomize
from safetensors.torch import load_file, save_file

from plait.hf import export, load
from plait.models.vlm import VLM, VLMConfig

transformers = pytest.importorskip("transformers")

ATOL = 1e-4
VOCAB = 97
IMG = 96  # the image placeholder id
TOWER = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
             image_size=32, patch_size=8)  # a 4 x 4 grid: 16 patches (+ the class token)
TEXT = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
        "qwen2": transformers.Qwen2Config}
CASES = {  # name: (text model_type, text_config overrides, LlavaConfig overrides)
    "llama-gqa-layer-2-default": ("llama", {}, {}),
    "qwen2-tied-last-full": ("qwen2", {"tie_word_embeddings": True}, {
        "vision_feature_layer": -1, "vision_feature_select_strategy": "full"}),
    "mistral-mqa-layer1-tanh-gelu-no-bias": (
        "mistral", {"num_key_value_heads": 1, "sliding_window": None},
        {"vision_feature_layer": 1, "projector_hidden_act": "gelu_pytorch_tanh",
         "multimodal_projector_bias": False, "tie_word_embeddings": True}),
}


def hf_model(folder, text_type: str = "llama", text: dict | None = None, seed: int = 0,
             **top) -> torch.nn.Module:
    """A random tiny LlavaForConditionalGeneration saved to ``folder``: every tensor ~ N(0, 0.3),
    norm gains ~ N(1, 0.3), so logits spread wide (no near ties for generation to flip on)."""
    torch.manual_seed(seed)
    text_cfg = TEXT[text_type](**{
        "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 56, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None, **(text or {})})
    cfg = transformers.LlavaConfig(vision_config=transformers.CLIPVisionConfig(**TOWER),
                                   text_config=text_cfg, image_token_index=IMG, **top)
    model = randomize(transformers.LlavaForConditionalGeneration(cfg).eval())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(1.0)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    text_type, text, top = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    ref = hf_model(folder, text_type, text, **top)
    return ref, load(folder)


def image_prompts(n_img: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two prompts, text + ``n_img`` placeholders + text; row 1 has 2 pad tokens on the left.
    Returns (ids, mask, pixel_values)."""
    g = torch.Generator().manual_seed(seed)
    rows = [[*range(3), *[IMG] * n_img, *range(5)], [0, *[IMG] * n_img, *range(5)]]
    T = len(rows[0])
    ids = torch.ones(2, T, dtype=torch.long)  # pad id 1
    mask = torch.zeros(2, T, dtype=torch.long)
    for b, row in enumerate(rows):
        words = torch.randint(2, IMG, (len(row),), generator=g)
        ids[b, T - len(row):] = torch.where(torch.tensor(row) == IMG, IMG, words)
        mask[b, T - len(row):] = 1
    return ids, mask, torch.randn(2, 3, 32, 32, generator=g)


def hf_logits(model, ids, mask, px):
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate() passes for left padding
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, pixel_values=px,
                     position_ids=pos).logits


def test_loaded_config(pair):
    ref, model = pair
    c, hf = model.config, ref.config
    assert isinstance(model, VLM) and not model.training
    assert c.feature_layer == hf.vision_feature_layer and c.image_token_id == IMG
    assert c.features == {"default": "patches", "full": "all"}[hf.vision_feature_select_strategy]
    assert c.tokens_per_image == 16 + (hf.vision_feature_select_strategy == "full")
    assert c.text_config.tie_embeddings == hf.tie_word_embeddings
    assert c.text_config.kv_heads == hf.text_config.num_key_value_heads
    assert (model.projector.fc1.bias is not None) == hf.multimodal_projector_bias
    fc1 = ref.model.multi_modal_projector.linear_1.weight
    assert fc1.abs().min() > 0 and torch.equal(model.projector.fc1.weight, fc1)
    tower = ref.model.vision_tower
    assert torch.equal(model.vision.cls[0, 0], tower.embeddings.class_embedding)


def test_logits_match_on_left_padded_batch(pair):
    ref, model = pair
    ids, mask, px = image_prompts(model.config.tokens_per_image)
    want = hf_logits(ref, ids, mask, px)
    with torch.no_grad():
        got = model(ids, px, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=ATOL, rtol=0)
    assert want[real].std() > 1.0  # far from init: a wrong weight would show
    with torch.no_grad():  # one unpadded prompt, no mask at all
        torch.testing.assert_close(model(ids[:1], px[:1]),
                                   ref(input_ids=ids[:1], pixel_values=px[:1]).logits,
                                   atol=ATOL, rtol=0)
        other = model(ids[:1], px[1:])  # the image matters
    assert (other - got[:1]).abs().max() > 0.1


def both(pair, **kw) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(plait's tokens, transformers', prompt length) on the same image prompts."""
    ref, model = pair
    ids, mask, px = image_prompts(model.config.tokens_per_image, seed=2)
    # pad 1, not 0: transformers' beam search fills with `pad_token_id or eos`
    kw = dict(do_sample=False, max_new_tokens=8, pad_token_id=1) | kw
    with torch.no_grad():
        want = ref.generate(ids, attention_mask=mask, pixel_values=px, **kw)
    return model.generate(ids, mask, pixel_values=px, **kw), want, ids.shape[1]


def test_greedy_generation_matches(pair):
    free, want, T = both(pair)
    assert torch.equal(free, want)
    eos = int(free[1, T + 2])  # row 1's third new token: it stops early
    got, want, _ = both(pair, eos_token_id=eos)
    assert torch.equal(got, want)
    assert (got[1, T + 3:] == 1).all()  # eos fired: the rest of row 1 is padding


def test_beam_search_matches(pair):
    kw = dict(num_beams=3, num_return_sequences=2, length_penalty=0.8)
    free, _, T = both(pair, **kw)
    eos = int(free[1, T + 2])  # a token some beam reaches: hypotheses end early
    got, want, _ = both(pair, eos_token_id=eos, **kw)
    assert torch.equal(got, want)
    assert (got[:, T:] == eos).any()


# -- checkpoint layouts ---------------------------------------------------------------------------
LAYOUTS = {  # how other transformers versions name the tensors transformers 5.24 saves
    "hub": lambda k: k.replace("vision_tower.", "vision_tower.vision_model.", 1),
    "modules": lambda k: ("lm_head." + k.removeprefix("language_model.lm_head.")
                          if k.startswith("language_model.lm_head.")
                          else "model." + k.replace("language_model.model.", "language_model.")),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llava")
    hf_model(folder)
    return folder


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_key_layout_loads_the_same_model(folder, tmp_path, layout):
    state = load_file(folder / "model.safetensors")
    assert any(k.startswith("vision_tower.encoder.") for k in state)  # what 5.24 writes
    renamed = {LAYOUTS[layout](k): v for k, v in state.items()}
    assert set(renamed) != set(state)
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    ids, mask, px = image_prompts(16)
    with torch.no_grad():
        want = load(folder)(ids, px, attention_mask=mask)
        torch.testing.assert_close(load(tmp_path)(ids, px, attention_mask=mask), want,
                                   atol=0, rtol=0)


# -- export ---------------------------------------------------------------------------------------
CLIP_TOWER = dict(image_size=32, patch_size=8, n_layer=3, n_head=4, n_embd=32, n_inner=48,
                  mlp="quick_gelu", norm_eps=1e-5, pre_norm=True, patch_bias=False)
EXPORTS = {  # name: (GPTConfig overrides, VLMConfig overrides)
    "llama-gqa-layer-2-patches": ({}, {}),
    "qwen2-mqa-tied-last-all": ({"qkv_bias": True, "n_kv_head": 1, "tie_embeddings": True},
                                {"feature_layer": -1, "features": "all",
                                 "projector_act": "gelu_tanh"}),
}


def plait_vlm(text: dict | None = None, vision: dict | None = None, **top) -> VLM:
    """A random VLM with a CLIP-shaped tower and a Llama-shaped decoder."""
    torch.manual_seed(0)
    decoder = dict(vocab_size=VOCAB, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, n_inner=56,
                   block_size=64, pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False,
                   tie_embeddings=False) | (text or {})
    cfg = VLMConfig(vision=CLIP_TOWER | (vision or {}), text=decoder,
                    **({"image_token_id": IMG, "feature_layer": -2} | top))
    model = randomize(VLM(cfg).eval())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(1.0)
    return model


@pytest.mark.parametrize("name", list(EXPORTS))
def test_export_round_trip(tmp_path, name):
    text, top = EXPORTS[name]
    model = plait_vlm(text, **top)
    export(model, tmp_path)
    hf_cfg = json.loads((tmp_path / "config.json").read_text())
    assert hf_cfg["architectures"] == ["LlavaForConditionalGeneration"]
    assert hf_cfg["text_config"]["model_type"] == ("qwen2" if "qkv_bias" in text else "llama")
    ref = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids, mask, px = image_prompts(model.config.tokens_per_image)
    with torch.no_grad():
        got = model(ids, px, attention_mask=mask)
    real = mask.bool()
    want = hf_logits(ref, ids, mask, px)
    torch.testing.assert_close(want[real], got[real], atol=ATOL, rtol=0)
    assert want[real].std() > 1.0
    back = load(tmp_path)
    assert back.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(back(ids, px, attention_mask=mask), got, atol=0, rtol=0)


@pytest.mark.parametrize("change, field", [
    ({"pixel_shuffle": 2}, "pixel_shuffle"),
    ({"projector": "linear"}, "projector"),
    ({"image_attention": "bidirectional"}, "image_attention"),  # LLaVA's decoder is causal
    ({"vision": {"pre_norm": False, "patch_bias": True}}, "pre_norm"),  # a plain ViT tower
    ({"text": {"pos_encoding": "learned", "norm": "layernorm", "mlp": "gelu"}}, "pos_encoding"),
])
def test_export_refuses_what_llava_cannot_express(tmp_path, change, field):
    model = plait_vlm(change.pop("text", None), change.pop("vision", None), **change)
    with pytest.raises(ValueError, match=field) as e:
        export(model, tmp_path)
    assert len(str(e.value).splitlines()) == 1


# -- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("vision_feature_layer", [-2, -1]),  # transformers concatenates several layers
    ("vision_feature_layer", 4),  # the tower has 3 layers: hidden_states[-4..3]
    ("vision_feature_select_strategy", "cls"),
    ("projector_hidden_act", "tanh"),
    ("architectures", ["LlavaNextForConditionalGeneration"]),
    ("vision_config.model_type", "siglip_vision_model"),
    ("vision_config.hidden_act", "tanh"),
    ("text_config.model_type", "gemma"),
    ("text_config.rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}),
])
def test_unsupported_config_names_field(folder, tmp_path, field, value):
    cfg = json.loads((folder / "config.json").read_text())
    *outer, key = field.split(".")
    (cfg[outer[0]] if outer else cfg)[key] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))  # refused before weights are read
    with pytest.raises(ValueError, match=f"{key}={value!r}".replace("[", r"\[")) as e:
        load(tmp_path)
    assert len(str(e.value).splitlines()) == 1
