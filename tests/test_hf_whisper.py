"""Whisper against ``transformers``: folders of ``WhisperForConditionalGeneration`` (and the bare
``WhisperModel``) load through ``plait.load`` with identical encoder outputs and logits, decode
token for token as transformers does, and export back.

Which ``generate`` the decoding is compared with: ``WhisperForConditionalGeneration.generate``
wraps the generic ``transformers.GenerationMixin.generate`` with Whisper's own steps (prompt
tokens from the generation config, suppress-token processors, timestamps, long-form windows,
temperature fallback) and returns the new tokens only, its trailing eos cut and rows re-padded.
The parity tests call the generic ``GenerationMixin.generate`` on the same model with the
decoder prompt given explicitly (the call Whisper's wrapper makes for one short-form window),
which returns prompt + new tokens as plait does; the configs carry no suppress tokens, so
nothing is added to it. One test checks that the wrapper itself, with no eos to cut, gives the
same new tokens.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers

import plait
from plait.models import Whisper

ATOL = 1e-4
# padding is eos, as in Whisper's checkpoints (transformers' beam search would also pad with
# eos for a pad id 0, which it reads as no pad id at all)
BASE = dict(vocab_size=96, pad_token_id=1, bos_token_id=1, eos_token_id=1,
            decoder_start_token_id=2, suppress_tokens=None, begin_suppress_tokens=None)
SHAPES = {
    # d_model, encoder/decoder layers, heads, FFN, mel bands, encoder positions
    "d64-2+3-h4-mel80": dict(d_model=64, encoder_layers=2, decoder_layers=3,
                             encoder_attention_heads=4, decoder_attention_heads=4,
                             encoder_ffn_dim=96, decoder_ffn_dim=96, num_mel_bins=80,
                             max_source_positions=50, max_target_positions=40),
    # untied output layer, ReLU, and scale_embedding (transformers never applies it)
    "d96-3+1-h2-mel128-untied": dict(d_model=96, encoder_layers=3, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2,
                                     encoder_ffn_dim=80, decoder_ffn_dim=80, num_mel_bins=128,
                                     max_source_positions=30, max_target_positions=32,
                                     tie_word_embeddings=False, activation_function="relu",
                                     scale_embedding=True),
}


def whisper_config(shape: str, **kw) -> transformers.WhisperConfig:
    return transformers.WhisperConfig(**{**BASE, **SHAPES[shape], **kw})


def randomize(model: torch.nn.Module) -> None:
    """Matrices ~ N(0, 0.2), query/key projections ~ N(0, 0.5) (sharp attention, so the tokens
    depend on the audio and vary), norm scales ~ N(1, 0.1), biases ~ N(0, 0.1); the fixed
    sinusoids stay."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "encoder.embed_positions" in name:
                continue
            if "layer_norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1)
                continue
            sharp = p.dim() == 2 and ("q_proj" in name or "k_proj" in name)
            p.normal_(0.0, 0.5 if sharp else 0.2 if p.dim() > 1 else 0.1)


@pytest.fixture(scope="module", params=list(SHAPES))
def pair(request, tmp_path_factory):
    torch.manual_seed(sum(map(ord, request.param)))
    hf = transformers.WhisperForConditionalGeneration(whisper_config(request.param)).eval()
    randomize(hf)
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return hf, plait.load(folder)


def features(model: Whisper, B: int = 2, seed: int = 0) -> torch.Tensor:
    """Log-mel-like input (B, n_mels, 2 * max_source_positions)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, model.config.n_mels, model.n_frames, generator=g)


def prompt(B: int = 2) -> torch.Tensor:
    """A fixed decoder prompt: the start token and two "task" tokens."""
    return torch.tensor([[2, 5, 6]]).repeat(B, 1)


def test_encoder_output_and_logits_equal_transformers(pair):
    hf, ours = pair
    assert isinstance(ours, Whisper)
    x = features(ours)
    dec = torch.randint(3, 96, (2, 7), generator=torch.Generator().manual_seed(1))
    dec[:, 0] = 2
    with torch.no_grad():
        want = hf(input_features=x, decoder_input_ids=dec)
        memory, logits = ours.encode(x), ours(x, dec)
    torch.testing.assert_close(memory, want.encoder_last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, want.logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=12),
    dict(max_new_tokens=10, num_beams=3, length_penalty=2.0),
    dict(max_new_tokens=10, num_beams=3, length_penalty=0.5, num_return_sequences=2),
], ids=["greedy", "beams3-lp2", "beams3-lp0.5-returned"])
def test_generate_equals_transformers(pair, kw):
    hf, ours = pair
    x = features(ours, B=3, seed=2)
    with torch.no_grad():
        want = transformers.GenerationMixin.generate(hf, x, decoder_input_ids=prompt(3),
                                                     do_sample=False, **kw)
    got = ours.generate(x, decoder_input_ids=prompt(3), **kw)
    assert torch.equal(got, want), (got, want)
    assert len(set(got[:, 3:].flatten().tolist())) > 3  # the tokens vary: the test can fail


@pytest.mark.parametrize("num_beams", [1, 3])
def test_whispers_own_generate_gives_the_same_new_tokens(pair, num_beams):
    """``WhisperForConditionalGeneration.generate`` returns the new tokens alone; with no eos
    (nothing to cut) they are plait's."""
    hf, ours = pair
    x = features(ours, B=2, seed=3)
    kw = dict(max_new_tokens=8, num_beams=num_beams, eos_token_id=None)
    with torch.no_grad():
        want = hf.generate(x, decoder_input_ids=prompt(), do_sample=False, **kw)
    got = ours.generate(x, decoder_input_ids=prompt(), **kw)
    assert got[:, -1].ne(1).all()  # a final pad token would be cut by transformers' wrapper
    assert torch.equal(got[:, 3:], want), (got, want)


def test_decoding_defaults_to_the_start_token(pair):
    _, ours = pair
    x = features(ours, B=1, seed=4)
    out = ours.generate(x, max_new_tokens=4, eos_token_id=None)
    assert out[0, 0] == ours.config.decoder_start_token_id and out.shape == (1, 5)
    with pytest.raises(ValueError, match=r"input_features must be .*frames="):
        ours.encode(x[..., :-2])


def test_exports_back(pair, tmp_path):
    hf, ours = pair
    plait.hf.export(ours, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["suppress_tokens"] is None and cfg["begin_suppress_tokens"] is None
    back = transformers.WhisperForConditionalGeneration.from_pretrained(tmp_path).eval()
    again = plait.load(tmp_path)
    x, dec = features(ours, seed=5), prompt()
    with torch.no_grad():
        want = hf(input_features=x, decoder_input_ids=dec).logits
        torch.testing.assert_close(back(input_features=x, decoder_input_ids=dec).logits, want,
                                   atol=ATOL, rtol=0)
        torch.testing.assert_close(again(x, dec), want, atol=ATOL, rtol=0)


def test_save_and_load_as_a_plait_folder(pair, tmp_path):
    _, ours = pair
    plait.save_model(ours, tmp_path)
    again = plait.load(tmp_path)
    x = features(ours, seed=6)
    assert again.config == ours.config
    assert torch.equal(again.generate(x, max_new_tokens=5), ours.generate(x, max_new_tokens=5))


def test_a_key_bias_changes_nothing_and_is_not_exported(pair, tmp_path):
    """Whisper has no key bias; plait's fused bias holds zeros there. Any value gives the same
    outputs (a constant per query under the softmax), and export leaves it out."""
    ours = copy.deepcopy(pair[1])
    x, dec = features(ours, seed=7), prompt()
    with torch.no_grad():
        before = ours(x, dec)
        C = ours.config.n_embd
        for block in ours.encoder.blocks:
            assert not block.attn.qkv.bias[C:2 * C].any()
            block.attn.qkv.bias[C:2 * C].normal_(0.0, 1.0)
        for block in ours.decoder.blocks:
            block.attn.qkv.bias[C:2 * C].normal_(0.0, 1.0)
            block.cross_attn.kv.bias[:C].normal_(0.0, 1.0)
        torch.testing.assert_close(ours(x, dec), before, atol=ATOL, rtol=0)
        plait.hf.export(ours, tmp_path)
        back = transformers.WhisperForConditionalGeneration.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(back(input_features=x, decoder_input_ids=dec).logits,
                                   before, atol=ATOL, rtol=0)


def test_the_bare_whisper_model_loads_with_its_table_as_output_layer(tmp_path):
    torch.manual_seed(0)
    bare = transformers.WhisperModel(whisper_config("d64-2+3-h4-mel80")).eval()
    randomize(bare)
    bare.save_pretrained(tmp_path)
    ours = plait.load(tmp_path)
    x, dec = features(ours, seed=8), prompt()
    with torch.no_grad():
        h = bare(input_features=x, decoder_input_ids=dec).last_hidden_state
        torch.testing.assert_close(ours(x, dec), h @ bare.decoder.embed_tokens.weight.T,
                                   atol=ATOL, rtol=0)


def test_whisper_sinusoids_are_transformers_and_not_vaswanis():
    from transformers.models.whisper.modeling_whisper import sinusoids

    from plait.nn import Sinusoidal, whisper_sinusoids

    torch.testing.assert_close(whisper_sinusoids(50, 64), sinusoids(50, 64), atol=1e-5, rtol=0)
    vaswani = Sinusoidal(64, halves=True).embed(torch.arange(50)[None])[0]
    assert (vaswani - whisper_sinusoids(50, 64)).abs().max() > 0.1  # the last frequencies differ


@pytest.mark.parametrize("kw,field", [
    ({"decoder_attention_heads": 2}, "decoder_attention_heads"),
    ({"decoder_ffn_dim": 64}, "decoder_ffn_dim"),
    ({"activation_function": "tanh"}, "activation_function"),
    ({"architectures": ["WhisperForAudioClassification"]}, "architectures"),
    ({"eos_token_id": [1, 2]}, "eos_token_id"),
])
def test_unsupported_config_values_are_refused_in_one_line(tmp_path, kw, field):
    cfg = whisper_config("d64-2+3-h4-mel80").to_dict()
    cfg.update(model_type="whisper", **kw)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=field) as err:
        plait.load(tmp_path)
    assert "\n" not in str(err.value) and "config.json" in str(err.value)
