"""Token-for-token parity of plait's generate with transformers' GPT2LMHeadModel.generate.

Tiny random GPT-2s are saved with ``save_pretrained`` and loaded through ``plait.hf.load``.
Their matrices are drawn wider than GPT-2's init (std 0.15, not 0.02) so next-token choices are
not near ties, where 1e-7 float differences could flip a token, and outputs vary.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import plait.hf
from plait.generation import generate

SHAPES = [  # (vocab, n_layer, n_head, n_embd, n_positions)
    (64, 2, 2, 32, 48),
    (97, 3, 4, 48, 64),
]


def make_pair(folder, vocab: int, n_layer: int, n_head: int, n_embd: int, n_pos: int,
              std: float = 0.15) -> tuple[GPT2LMHeadModel, torch.nn.Module]:
    """A random GPT2LMHeadModel (matrices ~ N(0, std)) and plait's load of its saved folder."""
    torch.manual_seed(vocab)
    cfg = GPT2Config(vocab_size=vocab, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                     n_positions=n_pos, bos_token_id=None, eos_token_id=None)
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std)
    hf.save_pretrained(folder)
    return hf, plait.hf.load(folder)


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: "v{}-l{}-h{}-c{}".format(*s))
def pair(request, tmp_path_factory):
    return make_pair(tmp_path_factory.mktemp("gpt2"), *request.param)


def left_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(map(len, prompts))
    ids = torch.full((len(prompts), T), pad)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):], mask[i, T - len(p):] = torch.tensor(p), 1
    return ids, mask


def both(pair, ids, mask=None, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    hf, ours = pair
    # not 0: transformers' beam search fills with `pad_token_id or eos`, so pad 0 becomes eos
    kw.setdefault("pad_token_id", 1)
    mask = torch.ones_like(ids) if mask is None else mask
    want = hf.generate(ids, attention_mask=mask, do_sample=False, **kw)
    return generate(ours, ids, mask, **kw), want


PROMPTS = [[5, 17, 3, 9, 22, 1, 8], [30, 2], [11, 12, 13, 4]]


def test_greedy(pair):
    got, want = both(pair, torch.tensor([PROMPTS[0], PROMPTS[0][::-1]]), max_new_tokens=12)
    assert torch.equal(got, want)
    ids, mask = left_pad(PROMPTS, pad=1)
    got, want = both(pair, ids, mask, max_new_tokens=12)
    assert torch.equal(got, want)


def test_repetition_penalty_and_no_repeat_ngram_on_padded_batch(pair):
    ids, mask = left_pad(PROMPTS, pad=1)
    got, want = both(pair, ids, mask, max_new_tokens=16, repetition_penalty=1.3,
                     no_repeat_ngram_size=3)
    assert torch.equal(got, want)
    plain, _ = both(pair, ids, mask, max_new_tokens=16)
    assert not torch.equal(got, plain)  # the processors changed the output


@pytest.mark.parametrize("length_penalty", [0.5, 2.0])
@pytest.mark.parametrize("early_stopping", [True, False])
def test_beam_search(pair, length_penalty, early_stopping):
    kw = dict(max_new_tokens=8, num_beams=4, num_return_sequences=2,
              length_penalty=length_penalty, early_stopping=early_stopping)
    early = 0
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        # eos := the 3rd token of the runner-up beam, so hypotheses finish at different steps
        eos = int(generate(pair[1], ids, **kw)[1, len(prompt) + 2])
        got, want = both(pair, ids, eos_token_id=eos, **kw)
        assert torch.equal(got, want), (prompt, got, want)
        early += int((got[:, len(prompt):] == eos).any())
    # short hypotheses win under a small length penalty: the eos path was exercised
    assert early > 0 or length_penalty > 1


def test_beam_search_padded_batch(pair):
    ids, mask = left_pad(PROMPTS, pad=1)
    got, want = both(pair, ids, mask, max_new_tokens=8, num_beams=3, num_return_sequences=3,
                     length_penalty=1.5, repetition_penalty=1.3, eos_token_id=7)
    assert torch.equal(got, want)


def test_eos_fires_mid_sequence(pair):
    ids, mask = left_pad(PROMPTS, pad=1)
    free, _ = both(pair, ids, mask, max_new_tokens=12)
    T = ids.shape[1]
    eos = int(free[1, T + 3])  # row 1's fourth new token: it finishes early, others may not
    got, want = both(pair, ids, mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=2)
    assert torch.equal(got, want)
    new = got[1, T:].tolist()
    stop = new.index(eos) + 1
    assert stop <= 4 and all(t == 2 for t in new[stop:])


@pytest.mark.parametrize("kw", [
    dict(temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2, num_return_sequences=2),
    dict(num_beams=3, temperature=1.5, eos_token_id=7),  # beam sampling
    dict(num_beams=2, top_k=1, top_p=0.5),  # beam sampling keeps min_keep=2 tokens
], ids=["sample", "beam-sample", "beam-sample-topk"])
def test_sampling_with_the_same_global_seed(pair, kw):
    """Not promised, but it holds: same processors, same order, same draws from torch's RNG."""
    ids, mask = left_pad(PROMPTS, pad=1)
    # top_k=0 spelled out: transformers' GenerationConfig defaults to top_k=50, plait to 0 (off)
    kw = dict(max_new_tokens=10, do_sample=True, top_k=0, pad_token_id=1) | kw
    hf, ours = pair
    torch.manual_seed(5)
    got = generate(ours, ids, mask, **kw)
    torch.manual_seed(5)
    assert torch.equal(got, hf.generate(ids, attention_mask=mask, **kw))


def test_min_new_tokens_and_ngrams_in_beams(pair):
    ids, mask = left_pad(PROMPTS, pad=1)
    free, _ = both(pair, ids, mask, max_new_tokens=10)
    eos = int(free[1, ids.shape[1] + 1])  # would end row 1 after two tokens
    got, want = both(pair, ids, mask, max_new_tokens=10, eos_token_id=eos, min_new_tokens=5)
    assert torch.equal(got, want)
    assert (got[:, ids.shape[1]:ids.shape[1] + 5] != eos).all()
    got, want = both(pair, ids, mask, max_new_tokens=10, num_beams=3, eos_token_id=eos,
                     min_new_tokens=4, no_repeat_ngram_size=2, length_penalty=0.8)
    assert torch.equal(got, want)


# -- the same parity with decoding's thread-split GEMVs (plait.nn.linear) in use ----------------
@pytest.fixture(scope="module")
def wide_pair(tmp_path_factory):
    """A GPT-2 wide enough (256) for :class:`plait.nn.Linear` to split its products."""
    return make_pair(tmp_path_factory.mktemp("gpt2-wide"), 600, 2, 4, 256, 64, std=0.06)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_split_gemv_decoding_matches_transformers(wide_pair, two_threads, monkeypatch):
    calls = []
    baddbmm = torch.baddbmm
    monkeypatch.setattr(torch, "baddbmm", lambda *a, **k: calls.append(1) or baddbmm(*a, **k))
    ids, mask = left_pad(PROMPTS, pad=1)
    got, want = both(wide_pair, ids, mask, max_new_tokens=12, repetition_penalty=1.3)
    assert torch.equal(got, want)
    assert calls, "the split path was not taken"
    split = [m for m in wide_pair[1].modules() if getattr(m, "split_weight", None) is not None]
    assert len(split) == 2 * 3 + 1  # qkv, fc and mlp proj of each layer, and the LM head
    for prompt in PROMPTS:  # 4 beams: 4 rows per step
        ids = torch.tensor([prompt])
        got, want = both(wide_pair, ids, max_new_tokens=8, num_beams=4, num_return_sequences=2,
                         length_penalty=0.5, eos_token_id=int(got[0, -1]))
        assert torch.equal(got, want)
