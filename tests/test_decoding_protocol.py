"""The decoding protocol: extra inputs reach the prefill once (one row per prefilled sequence),
``inputs_embeds`` are the tokens' embeddings in every respect, and one model object serves one
generation at a time, refusing (raw model) or queueing (TextGenerator) a second one."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import plait
from plait.generation import Decoder, ModelBusyError, generate, stream
from plait.inference import TextGenerator
from plait.models import GPT, GPTConfig
from plait.text import CharTokenizer


def tiny_gpt(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=40, n_layer=2, n_head=2, n_embd=32, block_size=64)
    model = GPT(GPTConfig(**{**cfg, **kw})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def left_padded() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[5, 17, 3, 9, 22], [1, 1, 30, 2, 8], [1, 1, 1, 11, 12]])
    mask = (torch.arange(5)[None] >= torch.tensor([[0], [2], [3]])).long()
    return ids, mask


def test_gpt_implements_the_protocol():
    assert isinstance(tiny_gpt(), Decoder)


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_inputs_embeds_logits_equal_token_logits(pos):
    model = tiny_gpt(pos_encoding=pos)
    ids, mask = left_padded()
    with torch.no_grad():
        want = model(ids, mask)
        got = model(inputs_embeds=model.wte(ids), attention_mask=mask)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(ids, inputs_embeds=model.wte(ids))


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=8),
    dict(max_new_tokens=8, num_beams=3, num_return_sequences=2),
    dict(max_new_tokens=8, do_sample=True, top_k=10, num_return_sequences=2),
    dict(max_new_tokens=6, repetition_penalty=1.4, no_repeat_ngram_size=2),
], ids=["greedy", "beams", "sampling", "penalties"])
def test_generation_with_inputs_embeds_equals_generation_from_ids(kw):
    model = tiny_gpt()
    ids, mask = left_padded()
    torch.manual_seed(3)
    want = generate(model, ids, mask, pad_token_id=0, **kw)
    torch.manual_seed(3)
    got = generate(model, ids, mask, inputs_embeds=model.wte(ids).detach(), pad_token_id=0, **kw)
    assert torch.equal(got, want)
    # the embeddings are what the model reads: other embeddings, other tokens
    other = generate(model, ids, mask, inputs_embeds=model.wte(ids.flip(1)).detach(),
                     pad_token_id=0, max_new_tokens=8)
    assert not torch.equal(other[:, 5:], generate(model, ids, mask, pad_token_id=0,
                                                  max_new_tokens=8)[:, 5:])


def test_inputs_embeds_alone_equal_transformers(tmp_path):
    """No input_ids: the prompt is embeddings only, and (as in transformers) only the new
    tokens come back; penalties see the new tokens alone."""
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50, n_layer=2, n_head=2, n_embd=32, n_positions=40,
                     bos_token_id=None, eos_token_id=None)
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
    hf.save_pretrained(tmp_path)
    ours = plait.load(tmp_path)
    ids, mask = left_padded()
    embeds = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(1))
    full = torch.ones_like(mask)
    # transformers 5.24 skips the repetition penalty on the first <padding length> new tokens of
    # an embeddings-only prompt (its prompt_ignore_length counts the padding into positions of
    # new tokens); plait penalises every new token, so that case is compared unpadded
    for kw, m in ((dict(max_new_tokens=7), mask), (dict(max_new_tokens=7, num_beams=2), mask),
                  (dict(max_new_tokens=7, repetition_penalty=1.5), full)):
        with torch.no_grad():
            want = hf.generate(inputs_embeds=embeds, attention_mask=m, do_sample=False,
                               pad_token_id=1, **kw)
        got = generate(ours, inputs_embeds=embeds, attention_mask=m, pad_token_id=1, **kw)
        assert got.shape == (3, 7) and torch.equal(got, want), kw
    with torch.no_grad():  # and the penalty does act on the new tokens
        plain = generate(ours, inputs_embeds=embeds, attention_mask=full, pad_token_id=1,
                         max_new_tokens=7)
    assert not torch.equal(plain, got)


class Spy:
    """A GPT behind the protocol, recording what each protocol call receives."""

    def __init__(self, model: GPT):
        self.model, self.calls = model, []
        self.config = model.config

    max_len = property(lambda self: self.model.max_len)

    def setup_cache(self, batch, max_len):
        self.calls.append(("setup_cache", batch))
        self.model.setup_cache(batch, max_len)

    def reorder_cache(self, index):
        self.model.reorder_cache(index)

    def clear_cache(self):
        self.model.clear_cache()

    def prefill(self, input_ids, attention_mask=None, *, inputs_embeds=None):
        self.calls.append(("prefill", input_ids.shape[0], inputs_embeds.shape[0]))
        return self.model.prefill(input_ids, attention_mask, inputs_embeds=inputs_embeds)

    def step(self, input_ids, attention_mask, input_pos):
        self.calls.append(("step", input_ids.shape[0]))
        return self.model.step(input_ids, attention_mask, input_pos)


@pytest.mark.parametrize("kw,rows", [
    (dict(), 3),
    (dict(do_sample=True, num_return_sequences=2), 6),  # every sample is prefilled: repeated
    (dict(num_beams=4, num_return_sequences=2), 3),  # each prompt prefilled once, then copied
], ids=["greedy", "samples", "beams"])
def test_model_inputs_reach_the_prefill_once_one_row_per_prefilled_sequence(kw, rows):
    model = tiny_gpt()
    spy = Spy(model)
    ids, mask = left_padded()
    embeds = model.wte(ids).detach()
    torch.manual_seed(4)
    got = generate(spy, ids, mask, inputs_embeds=embeds, max_new_tokens=5, pad_token_id=0, **kw)
    prefills = [c for c in spy.calls if c[0] == "prefill"]
    assert prefills == [("prefill", rows, rows)]  # once, ids and embeddings row for row
    assert spy.calls[0] == ("setup_cache", rows)
    steps = [c for c in spy.calls if c[0] == "step"]
    per_prompt = max(kw.get("num_beams", 1), kw.get("num_return_sequences", 1))
    assert steps and all(n == 3 * per_prompt for _, n in steps)  # every sequence steps
    torch.manual_seed(4)
    assert torch.equal(got, generate(model, ids, mask, max_new_tokens=5, pad_token_id=0, **kw))


def test_unknown_and_misshaped_model_inputs_are_named():
    model = tiny_gpt()
    ids, mask = left_padded()
    with pytest.raises(ValueError, match=r"unknown generation argument\(s\) \['pixel_values'\];"
                                         r".*GPT's inputs: inputs_embeds, encoder_hidden_states"):
        generate(model, ids, mask, pixel_values=torch.zeros(3, 3, 8, 8))
    with pytest.raises(ValueError, match=r"inputs_embeds shape \(2, 5, 32\) must begin with"):
        generate(model, ids, mask, inputs_embeds=torch.zeros(2, 5, 32))
    with pytest.raises(ValueError, match="inputs_embeds"):
        generate(model)  # neither ids nor embeddings


# -- one generation at a time per model object ---------------------------------------------------
def test_a_second_concurrent_generation_fails_clearly_and_never_corrupts_the_first():
    model = tiny_gpt()
    ids = torch.tensor([[3, 4, 5]])
    alone = generate(model, ids, max_new_tokens=12)
    first_running, second_done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def streamer(tok):  # the first generation pauses mid-way until the second has tried
        first_running.set()
        second_done.wait(timeout=30)

    def first():
        seen["first"] = generate(model, ids, max_new_tokens=12, streamer=streamer)

    def second():
        first_running.wait(timeout=30)
        try:
            generate(model, ids, max_new_tokens=12)
        except ModelBusyError as e:
            seen["second"] = e
        finally:
            second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert isinstance(seen["second"], ModelBusyError)
    assert "one generation at a time" in str(seen["second"])
    assert torch.equal(seen["first"], alone)  # the first ran on, untouched
    assert torch.equal(generate(model, ids, max_new_tokens=12), alone)  # and the model is free


def test_an_open_stream_holds_the_model_until_closed():
    model = tiny_gpt()
    tokens = stream(model, torch.tensor([[3, 4, 5]]), max_new_tokens=5)
    next(tokens)
    with pytest.raises(ModelBusyError):
        generate(model, torch.tensor([[1, 2]]), max_new_tokens=2)
    tokens.close()
    assert generate(model, torch.tensor([[1, 2]]), max_new_tokens=2).shape == (1, 4)


def test_text_generator_queues_concurrent_callers_and_refuses_nesting():
    tok = CharTokenizer.train("abcdefghij \n")
    model = tiny_gpt(vocab_size=tok.vocab_size)
    gen = TextGenerator(model, tok)
    alone = {p: gen.generate(p, max_new_tokens=10) for p in ("abc", "hij")}
    pieces = gen.stream("abc", max_new_tokens=10)
    head = next(pieces)  # the first caller holds the generator
    out: dict[str, str] = {}
    waiter = threading.Thread(target=lambda: out.setdefault("hij", gen.generate(
        "hij", max_new_tokens=10)))
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive()  # queued behind the open stream, not interleaved with it
    with pytest.raises(RuntimeError, match="already generating in this thread"):
        gen.generate("abc", max_new_tokens=2)
    assert head + "".join(pieces) == alone["abc"]
    waiter.join(timeout=60)
    assert out["hij"] == alone["hij"]
