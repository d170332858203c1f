"""Generation against references: brute force, full recomputation, and transformers' processors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from transformers.generation import logits_process as hf

from plait import GPT, GPTConfig
from plait.generation import (
    DecodeState,
    SamplingParams,
    generate,
    min_new_tokens,
    no_repeat_ngram,
    repetition_penalty,
    stream,
    temperature,
    top_k,
    top_p,
)


def tiny_gpt(vocab: int = 40, pos: str = "learned", seed: int = 0, std: float = 0.3) -> GPT:
    """A 2-layer GPT whose weights are large enough that next-token choices are not near ties."""
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=vocab, n_layer=2, n_head=2, n_embd=32, block_size=32,
                      pos_encoding=pos))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, std)
    return m.eval()


def padded_batch(prompts: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(map(len, prompts))
    ids = torch.full((len(prompts), T), pad)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):] = torch.tensor(p)
        mask[i, T - len(p):] = 1
    return ids, mask


# -- search ---------------------------------------------------------------------------------
@torch.no_grad()
def brute_force(model: GPT, prompt: list[int], n_new: int, eos: int, lp: float) -> list[tuple]:
    """Every continuation (ending at eos or after n_new tokens), scored sum log p / len**lp."""
    V, P = model.config.vocab_size, len(prompt)
    scored = []
    for n in range(1, n_new + 1):
        conts = [c for c in itertools.product(range(V), repeat=n)
                 if eos not in c[:-1] and (n == n_new or c[-1] == eos)]
        seqs = torch.tensor([prompt + list(c) for c in conts])  # one forward for all of them
        logp = model(seqs).log_softmax(-1)[:, P - 1:-1]  # (S, n, V)
        totals = logp.gather(2, seqs[:, P:, None]).sum((1, 2))
        scored += [(s / n ** lp, c) for s, c in zip(totals.tolist(), conts, strict=True)]
    return sorted(scored, reverse=True)


@pytest.mark.parametrize("lp", [-0.5, 0.5, 2.0])
def test_beam_search_equals_brute_force(lp):
    model = tiny_gpt(vocab=6, seed=1)
    prompt, n_new, eos, nb, r = [1, 2], 3, 5, 64, 4
    out = generate(model, torch.tensor([prompt]), max_new_tokens=n_new, num_beams=nb,
                   num_return_sequences=r, length_penalty=lp, early_stopping="never",
                   eos_token_id=eos, pad_token_id=0)
    best = brute_force(model, prompt, n_new, eos, lp)[:r]
    for row, (_, cont) in zip(out.tolist(), best, strict=True):
        got = row[len(prompt):]
        assert got[:len(cont)] == list(cont)
        assert all(t == 0 for t in got[len(cont):])  # padded after eos


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_greedy_with_cache_equals_full_recompute(pos):
    model = tiny_gpt(pos=pos)
    ids, mask = padded_batch([[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]])
    out = generate(model, ids, mask, max_new_tokens=8)
    ref, ref_mask = ids, mask
    with torch.no_grad():
        for _ in range(8):
            nxt = model(ref, ref_mask)[:, -1].argmax(-1, keepdim=True)
            ref = torch.cat([ref, nxt], 1)
            ref_mask = torch.cat([ref_mask, torch.ones_like(nxt)], 1)
    assert torch.equal(out, ref)


def test_padded_batch_beams_equal_each_prompt_alone():
    model = tiny_gpt(vocab=30, seed=2)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    ids, mask = padded_batch(prompts, pad=0)
    kw = dict(max_new_tokens=6, num_beams=4, num_return_sequences=2, length_penalty=0.7,
              eos_token_id=3, pad_token_id=0, repetition_penalty=1.2, no_repeat_ngram_size=2)
    batch = generate(model, ids, mask, **kw)
    T = ids.shape[1]
    for i, p in enumerate(prompts):
        alone = generate(model, torch.tensor([p]), **kw)
        for j in range(2):
            got, want = batch[2 * i + j, T:].tolist(), alone[j, len(p):].tolist()
            n = max(len(got), len(want))
            assert got + [0] * (n - len(got)) == want + [0] * (n - len(want))


def test_eos_mid_sequence_pads_finished_rows():
    model = tiny_gpt(seed=3)
    ids, mask = padded_batch([[1, 2, 3], [4, 5, 6, 7]])
    free = generate(model, ids, mask, max_new_tokens=10)  # no eos: the reference path
    T = ids.shape[1]
    eos = free[0, T + 2].item()  # a token row 0 produces as its 3rd new token
    out = generate(model, ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=39)
    ends = []
    for row in range(2):
        new = free[row, T:].tolist()
        ends.append(new.index(eos) + 1 if eos in new else len(new))
    assert out.shape[1] == T + max(ends)  # stops once every row has finished
    for row, end in enumerate(ends):
        assert out[row, T:T + end].tolist() == free[row, T:T + end].tolist()
        assert (out[row, T + end:] == 39).all()


def test_min_new_tokens_delays_eos():
    model = tiny_gpt(seed=3)
    ids = torch.tensor([[1, 2, 3]])
    eos = generate(model, ids, max_new_tokens=1)[0, -1].item()  # the very first greedy token
    assert generate(model, ids, max_new_tokens=5, eos_token_id=eos).shape[1] == 4
    out = generate(model, ids, max_new_tokens=5, eos_token_id=eos, min_new_tokens=3)
    assert eos not in out[0, 3:6].tolist()


def test_stop_sequences_streamer_and_stream():
    model = tiny_gpt(seed=4)
    ids = torch.tensor([[1, 2, 3]])
    free = generate(model, ids, max_new_tokens=8)[0, 3:].tolist()
    seen = []
    out = generate(model, ids, max_new_tokens=8, stop=[free[2:4]], streamer=seen.append)
    assert out[0, 3:].tolist() == free[:4]
    assert [int(t) for t in seen] == free[:4]
    assert list(stream(model, ids, max_new_tokens=8)) == free
    eos = free[5]
    assert list(stream(model, ids, max_new_tokens=8, eos_token_id=eos)) == free[:free.index(eos)]
    it = stream(model, ids, max_new_tokens=8)
    next(it)
    it.close()  # breaking out early frees the cache
    assert model.transformer.blocks[0].attn.kv_cache is None


# -- sampling -------------------------------------------------------------------------------
def test_temperature_zero_is_greedy_and_seeded_sampling_reproduces():
    model = tiny_gpt(seed=5)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    greedy = generate(model, ids, max_new_tokens=6)
    assert torch.equal(generate(model, ids, max_new_tokens=6, do_sample=True, temperature=0.0),
                       greedy)
    assert torch.equal(generate(model, ids, max_new_tokens=6, do_sample=True, top_k=1), greedy)

    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return generate(model, ids, max_new_tokens=6, do_sample=True, top_p=0.9, top_k=20,
                        temperature=1.5, num_return_sequences=3, generator=g)

    a = sample(0)
    assert a.shape == (6, 9)
    assert torch.equal(a, sample(0))
    assert not torch.equal(a, sample(1))


# -- processors vs transformers' classes ----------------------------------------------------
def _state(ids: torch.Tensor, valid: torch.Tensor | None = None, prompt_len: int = 0):
    return DecodeState(ids, torch.ones_like(ids, dtype=torch.bool) if valid is None else valid,
                       prompt_len)


def test_repetition_penalty_matches_transformers():
    torch.manual_seed(0)
    logits, ids = torch.randn(4, 30), torch.randint(0, 30, (4, 12))
    got = repetition_penalty(logits, _state(ids), penalty=1.3)
    want = hf.RepetitionPenaltyLogitsProcessor(1.3)(ids, logits.clone())
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # left padding is ignored, as transformers does with prompt_ignore_length
    pads = torch.tensor([0, 3, 5, 11])
    valid = torch.arange(12)[None] >= pads[:, None]
    got = repetition_penalty(logits, _state(ids, valid), penalty=0.7)
    want = hf.RepetitionPenaltyLogitsProcessor(0.7, prompt_ignore_length=pads)(ids, logits.clone())
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_matches_transformers(n):
    torch.manual_seed(n)
    logits, ids = torch.randn(5, 4), torch.randint(0, 4, (5, 15))
    got = no_repeat_ngram(logits, _state(ids), n=n)
    want = hf.NoRepeatNGramLogitsProcessor(n)(ids, logits.clone())
    assert torch.equal(got, want)
    assert torch.isinf(got).any()  # the test exercised banning


def test_min_new_tokens_matches_transformers():
    logits, ids = torch.randn(2, 10), torch.randint(0, 10, (2, 6))
    ref = hf.MinNewTokensLengthLogitsProcessor(4, 3, [2, 7])
    for t in (4, 5, 6):  # 0, 1, 2 new tokens so far
        got = min_new_tokens(logits, _state(ids[:, :t], prompt_len=4), n=3 if t < 6 else 2,
                             eos=(2, 7))
        want = hf.MinNewTokensLengthLogitsProcessor(4, 3 if t < 6 else 2, [2, 7])(
            ids[:, :t], logits.clone())
        assert torch.equal(got, want)
    assert ref.min_new_tokens == 3


@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_temperature_matches_transformers(t):
    logits = torch.randn(3, 50)
    got = temperature(logits, t=t)
    torch.testing.assert_close(got, hf.TemperatureLogitsWarper(t)(None, logits.clone()))


def test_temperature_zero_keeps_only_the_argmax():
    logits = torch.randn(3, 50)
    got = temperature(logits, t=0.0)
    assert torch.equal(got.argmax(-1), logits.argmax(-1))
    assert (torch.isfinite(got).sum(-1) == 1).all()


@pytest.mark.parametrize("k,keep", [(1, 1), (5, 1), (5, 8), (100, 1)])
def test_top_k_matches_transformers(k, keep):
    logits = torch.randn(4, 60)
    got = top_k(logits, k=k, min_keep=keep)
    want = hf.TopKLogitsWarper(k, min_tokens_to_keep=keep)(None, logits.clone())
    assert torch.equal(got, want)
    assert (torch.isfinite(got).sum(-1) == min(max(k, keep), 60)).all()


def test_top_k_keeps_ties_with_the_kth_logit():
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    got = top_k(logits, k=2)  # 3.0, and both 2.0s tie for second place
    assert torch.isfinite(got).tolist() == [[True, False, True, True, False]]
    assert torch.equal(got, hf.TopKLogitsWarper(2)(None, logits.clone()))


@pytest.mark.parametrize("p,keep", [(0.0, 1), (0.3, 1), (0.9, 1), (0.9, 3), (1.0, 1)])
def test_top_p_matches_transformers(p, keep):
    logits = torch.randn(4, 60) * 3
    got = top_p(logits, p=p, min_keep=keep)
    want = hf.TopPLogitsWarper(p, min_tokens_to_keep=keep)(None, logits.clone())
    assert torch.equal(got, want)
    assert (torch.isfinite(got).sum(-1) >= keep).all()


def test_processors_do_not_mutate_and_follow_transformers_order():
    params = SamplingParams(do_sample=True, temperature=0.7, top_k=10, top_p=0.8,
                            repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=5,
                            eos_token_id=3)
    names = [f.func.__name__ for f in params.processors()]
    assert names == ["repetition_penalty", "no_repeat_ngram", "min_new_tokens", "temperature",
                     "top_k", "top_p"]
    torch.manual_seed(0)
    logits, ids = torch.randn(2, 20), torch.randint(0, 20, (2, 9))
    before = logits.clone()
    got = logits
    for f in params.processors():
        got = f(got, _state(ids, prompt_len=6))
    assert torch.equal(logits, before)
    chain = hf.LogitsProcessorList([
        hf.RepetitionPenaltyLogitsProcessor(1.3), hf.NoRepeatNGramLogitsProcessor(2),
        hf.MinNewTokensLengthLogitsProcessor(6, 5, 3), hf.TemperatureLogitsWarper(0.7),
        hf.TopKLogitsWarper(10), hf.TopPLogitsWarper(0.8)])
    assert torch.equal(got, chain(ids, logits.clone()))
    assert SamplingParams(temperature=0.7, top_k=3).processors() == []  # greedy: no warpers


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,msg", [
    (dict(temperature=-1.0), "`temperature` has to be a non-negative float"),
    (dict(top_p=1.5), "`top_p` has to be a float in [0, 1]"),
    (dict(top_k=-2), "`top_k` has to be a non-negative integer"),
    (dict(repetition_penalty=0.0), "`repetition_penalty` has to be a strictly positive"),
    (dict(num_beams=0), "`num_beams` has to be a positive integer"),
    (dict(num_beams=2, num_return_sequences=3), "has to be <= `num_beams` (2)"),
    (dict(num_return_sequences=2), "set do_sample=True or num_beams > 1"),
    (dict(early_stopping="sometimes"), "True, False or 'never'"),
    (dict(max_new_tokens=0), "`max_new_tokens` has to be a positive integer"),
    (dict(eos_token_id=-1), "`eos_token_id` has to be"),
])
def test_invalid_params_raise_clear_errors(kw, msg):
    with pytest.raises(ValueError) as e:
        SamplingParams(**kw)
    assert msg in str(e.value)


def test_prompt_too_long_and_bad_inputs_raise():
    model = tiny_gpt()  # block_size 32
    with pytest.raises(ValueError, match=r"prompt of 30 tokens \+ max_new_tokens=5 = 35 exceeds"
                                         r" the model's maximum length 32"):
        generate(model, torch.ones(1, 30, dtype=torch.long), max_new_tokens=5)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        generate(model, torch.tensor([[1, 40]]))
    with pytest.raises(ValueError, match=r"unknown generation argument\(s\) \['top_n'\]"):
        generate(model, torch.tensor([[1, 2]]), top_n=3)
    with pytest.raises(ValueError, match="num_beams=1 only"):
        generate(model, torch.tensor([[1, 2]]), num_beams=2, stop=[[3]])
    with pytest.raises(ValueError, match=r"shape \(1, T\)"):
        stream(model, torch.tensor([[1, 2], [3, 4]]))  # raises before the first token
    assert math.isfinite(model(torch.tensor([[1, 2]])).sum().item())  # model left usable


# -- command line ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def char_folder(tmp_path_factory):
    from plait import save_model
    from plait.text import CharTokenizer

    tok = CharTokenizer.train("abcdefgh \n")
    model = tiny_gpt(vocab=tok.vocab_size, seed=6)
    folder = tmp_path_factory.mktemp("charmodel")
    save_model(model, folder)
    tok.save(folder)
    return folder, model, tok


def run_cli(args, capsys):
    from plait.cli.main import main

    code = main(["generate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_streams_greedy_text_and_stops_before_stop_string(char_folder, capsys):
    folder, model, tok = char_folder
    ids = torch.tensor([tok.encode("abc")])
    want = tok.decode(generate(model, ids, max_new_tokens=12)[0, 3:].tolist())
    code, out, _ = run_cli(["--model", str(folder), "--prompt", "abc", "--temperature", "0",
                            "--max-new-tokens", "12"], capsys)
    assert code == 0 and out == "abc" + want + "\n"
    k = next(k for k in range(3, 10) if want.index(want[k:k + 3]) == k)  # stop mid-text
    stop = want[k:k + 3]
    code, out, _ = run_cli(["--model", str(folder), "--prompt", "abc", "--temperature", "0",
                            "--max-new-tokens", "12", "--stop", stop], capsys)
    assert out == "abc" + want[:k] + "\n"
    beams = tok.decode(generate(model, ids, max_new_tokens=6, num_beams=3)[0, 3:].tolist())
    code, out, _ = run_cli(["--model", str(folder), "--prompt", "abc", "--num-beams", "3",
                            "--max-new-tokens", "6"], capsys)
    assert out == "abc" + beams + "\n"


def test_cli_seeded_sampling_is_reproducible(char_folder, capsys):
    folder = str(char_folder[0])
    args = ["--model", folder, "--prompt", "ab", "--seed", "3", "--top-k", "4", "--top-p", "0.9"]
    assert run_cli(args, capsys)[1] == run_cli(args, capsys)[1]


@pytest.mark.parametrize("args,msg", [
    (["--model", "/nonexistent/folder", "--prompt", "a"], "model folder not found"),
    (["--prompt", "xyz"], "not in the vocabulary"),
    (["--prompt", "a" * 30, "--max-new-tokens", "5"], "exceeds the model's maximum length 32"),
    (["--prompt", "a", "--top-p", "2"], "`top_p` has to be"),
])
def test_cli_user_errors_are_one_line(char_folder, capsys, args, msg):
    if "--model" not in args:
        args = ["--model", str(char_folder[0]), *args]
    code, out, err = run_cli(args, capsys)
    assert code == 2 and msg in err and err.count("\n") == 1 and out == ""


def test_stop_text_holds_back_partial_stop_strings():
    from plait.inference import StopText
    from plait.text import CharTokenizer

    tok = CharTokenizer.train("abcXY")
    text = StopText(tok, ["XY"])
    released = [text.add(tok.encode(ch)[0]) for ch in "abXaX"]
    assert released == ["a", "b", "", "Xa", ""]  # an "X" waits: it may start "XY"
    assert not text.stopped
    assert text.add(tok.encode("Y")[0]) == "" and text.stopped
    assert text.flush() == ""  # the stop string and what it held back are never shown
    text = StopText(tok, ["XY"])
    assert [text.add(tok.encode(ch)[0]) for ch in "aX"] == ["a", ""]
    assert text.flush() == "X"  # the end of the text releases a tail that never completed
