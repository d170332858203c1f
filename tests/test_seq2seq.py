"""The encoder–decoder against ``transformers``: BART, Marian and T5 folders load through
``plait.load`` with identical logits on right-padded sources, ``generate`` returns what
``transformers``' ``generate`` returns in every mode, and each exports back. Beside them the
properties a decoder must have: source padding never changes the output, the cached decoder
equals the uncached one, and the shift-right of teacher forcing."""

from __future__ import annotations

import re

import pytest
import torch
import transformers

import plait
from plait.cli.main import main
from plait.models import Seq2Seq, Seq2SeqConfig

ATOL = 1e-4
SHARP = re.compile(r"(q_proj|k_proj|\.q\.|\.k\.)weight$")


def randomize(model: torch.nn.Module, std: float = 0.2, qk: float = 1.0) -> None:
    """Matrices ~ N(0, std), query/key projections ~ N(0, qk): sharp attention, so a random
    model's tokens depend on its source and vary from step to step."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed_positions" not in name:
                p.normal_(0.0, qk if SHARP.search(name) else std)


def bart(**kw):
    return transformers.BartForConditionalGeneration(transformers.BartConfig(**{
        "vocab_size": 64, "d_model": 32, "encoder_layers": 2, "decoder_layers": 3,
        "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 48,
        "decoder_ffn_dim": 48, "max_position_embeddings": 40, **kw}))


def marian(**kw):
    return transformers.MarianMTModel(transformers.MarianConfig(**{
        "vocab_size": 64, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
        "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 48,
        "decoder_ffn_dim": 48, "max_position_embeddings": 64, "pad_token_id": 63,
        "decoder_start_token_id": 63, "eos_token_id": 0, "forced_eos_token_id": 0,
        "activation_function": "swish", "scale_embedding": True, **kw}))


def t5(**kw):
    return transformers.T5ForConditionalGeneration(transformers.T5Config(**{
        "vocab_size": 64, "d_model": 32, "d_kv": 8, "d_ff": 48, "num_layers": 2,
        "num_decoder_layers": 2, "num_heads": 4, "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 20, "decoder_start_token_id": 0, **kw}))


FAMILIES = {
    "bart": bart,
    "bart-gelu-untied": lambda: bart(tie_word_embeddings=False, scale_embedding=True),
    "marian": marian,
    "marian-separate-tables": lambda: marian(share_encoder_decoder_embeddings=False),
    "t5": t5,
    "t5-v1.1": lambda: t5(feed_forward_proj="gated-gelu", tie_word_embeddings=False, d_kv=12),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request, tmp_path_factory):
    torch.manual_seed(sum(map(ord, request.param)))
    hf = FAMILIES[request.param]().eval()
    randomize(hf)
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return hf, plait.load(folder), folder


def source(model: Seq2Seq, B: int = 3, S: int = 9, seed: int = 0):
    """Right-padded sources: row 0 full, the others shorter."""
    g = torch.Generator().manual_seed(seed)
    c = model.config
    ids = torch.randint(3, c.vocab_size - 1, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    for b in range(1, B):
        mask[b, S - 2 * b - 1:] = 0
    return ids.masked_fill(mask == 0, c.pad_token_id), mask


def test_logits_equal_transformers_on_padded_sources(pair):
    hf, ours, _ = pair
    assert isinstance(ours, Seq2Seq)
    ids, mask = source(ours)
    dec = torch.randint(3, ours.config.vocab_size - 1, (3, 6))
    dec[:, 0] = ours.config.decoder_start_token_id
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        got = ours(ids, mask, dec)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=12),
    dict(max_new_tokens=12, num_beams=4, num_return_sequences=2),
    dict(max_new_tokens=10, num_beams=3, length_penalty=2.0, early_stopping=True),
    dict(max_new_tokens=10, num_beams=3, length_penalty=0.5, early_stopping="never"),
    dict(max_new_tokens=10, no_repeat_ngram_size=2, repetition_penalty=1.3),
    dict(max_new_tokens=10, num_beams=2, no_repeat_ngram_size=3, min_new_tokens=4),
], ids=["greedy", "beams-returned", "beams-lp2-early", "beams-lp0.5-never", "penalties",
        "beams-ngram-min"])
def test_generate_equals_transformers(pair, kw):
    hf, ours, _ = pair
    ids, mask = source(ours, seed=1)
    with torch.no_grad():
        want = hf.generate(ids, attention_mask=mask, do_sample=False, **kw)
    got = ours.generate(ids, mask, **kw)
    assert torch.equal(got, want), (got, want)
    assert len(set(got[:, 1:].flatten().tolist())) > 2  # the tokens vary: the test can fail


def test_source_padding_never_changes_the_output(pair):
    _, ours, _ = pair
    ids, mask = source(ours, seed=2)
    pad = ours.config.pad_token_id
    wide = torch.cat([ids, torch.full((3, 4), pad)], 1)
    wide_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.long)], 1)
    dec = torch.full((3, 1), ours.config.decoder_start_token_id)
    with torch.no_grad():
        torch.testing.assert_close(ours(wide, wide_mask, dec), ours(ids, mask, dec),
                                   atol=1e-5, rtol=0)
    assert torch.equal(ours.generate(wide, wide_mask, max_new_tokens=8, num_beams=2),
                       ours.generate(ids, mask, max_new_tokens=8, num_beams=2))
    alone = ours.generate(ids[2:, :mask[2].sum()], None, max_new_tokens=8)  # row 2, unpadded
    assert torch.equal(alone, ours.generate(ids, mask, max_new_tokens=8)[2:])


def test_cached_decoder_equals_uncached(pair):
    _, ours, _ = pair
    ids, mask = source(ours, seed=3)
    dec = torch.randint(3, ours.config.vocab_size - 1, (3, 7))
    with torch.no_grad():
        full = ours(ids, mask, dec)
        memory = ours.encode(ids, mask)
        ours.setup_cache(3, 7)
        try:
            steps = [ours.prefill(dec[:, :3], None, encoder_hidden_states=memory,
                                  encoder_attention_mask=mask)]
            steps += [ours.step(dec[:, t:t + 1], None, t) for t in range(3, 7)]
        finally:
            ours.clear_cache()
    # decoding lays the weights out for GEMVs, which reorders float sums, and the sharp random
    # attention (T5 leaves its logits unscaled) amplifies that: 1e-4 of the logits' scale
    scale = full.abs().max().item()
    torch.testing.assert_close(torch.stack(steps[:-1], 1), full[:, 2:6], atol=1e-4 * scale,
                               rtol=0)


def test_exports_back_to_the_same_family(pair, tmp_path):
    hf, ours, _ = pair
    plait.hf.export(ours, tmp_path)
    back = type(hf).from_pretrained(tmp_path).eval()
    ids, mask = source(ours, seed=4)
    dec = torch.full((3, 1), ours.config.decoder_start_token_id)
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids, attention_mask=mask,
                                        decoder_input_ids=dec).logits,
                                   hf(input_ids=ids, attention_mask=mask,
                                      decoder_input_ids=dec).logits, atol=ATOL, rtol=0)
    assert back.config.model_type == hf.config.model_type


def test_save_and_load_as_a_plait_folder(pair, tmp_path):
    _, ours, _ = pair
    plait.save_model(ours, tmp_path)
    again = plait.load(tmp_path)
    ids, mask = source(ours, seed=5)
    assert again.config == ours.config
    assert torch.equal(again.generate(ids, mask, max_new_tokens=6),
                       ours.generate(ids, mask, max_new_tokens=6))


# -- the plain Transformer and its pieces -----------------------------------------------------
def test_the_original_transformer_builds_and_teacher_forces():
    torch.manual_seed(0)
    c = Seq2SeqConfig(vocab_size=40, n_layer=2, n_head=4, n_embd=32, n_inner=64, dropout=0.0)
    model = Seq2Seq(c).eval()
    assert model.lm_head.weight is model.wte.weight is model.dec_wte.weight  # one table
    ids = torch.randint(2, 40, (2, 7))
    labels = torch.randint(2, 40, (2, 5))
    labels[1, 3:] = -100  # ignored positions become padding in the decoder input
    dec = model.shift_right(labels)
    assert dec[:, 0].tolist() == [c.decoder_start_token_id] * 2
    assert torch.equal(dec[0, 1:], labels[0, :-1]) and dec[1, 4] == c.pad_token_id
    assert model(ids, None, dec).shape == (2, 5, 40)
    with pytest.raises(ValueError, match="decoder_input_ids is required"):
        model(ids)


def test_marian_sinusoids_are_halves_of_sine_then_cosine():
    from plait.nn import Sinusoidal

    pe = Sinusoidal(8, halves=True).embed(torch.arange(5)[None])[0]  # (5, 8)
    i = torch.arange(4, dtype=torch.float64)
    angles = torch.arange(5, dtype=torch.float64)[:, None] / 10000 ** (2 * i / 8)
    torch.testing.assert_close(pe, torch.cat([angles.sin(), angles.cos()], 1).float())


@pytest.mark.parametrize("kw,field", [
    ({"decoder_attention_heads": 2}, "decoder_attention_heads"),
    ({"decoder_ffn_dim": 40}, "decoder_ffn_dim"),
])
def test_asymmetric_stacks_are_refused_by_name(tmp_path, kw, field):
    bart(**kw).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=field):
        plait.load(tmp_path)


def test_an_unsupported_head_is_named_on_the_command_line(tmp_path, capsys):
    model = transformers.BartForSequenceClassification(transformers.BartConfig(
        vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=20,
        decoder_ffn_dim=20, max_position_embeddings=20))
    model.save_pretrained(tmp_path / "cls")
    capsys.readouterr()  # transformers' own progress output
    assert main(["convert", "--from-hf", str(tmp_path / "cls"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "BartForSequenceClassification" in err and err.count("\n") == 1
