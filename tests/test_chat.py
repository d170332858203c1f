"""The chat model: the template's render and spans, the loss mask, the dialogues' held-out rule
and determinism, the chat task end to end on a tiny GPT, and ``plait chat`` on piped input
(history, /reset, the context's limit, bad input)."""

from __future__ import annotations

import io
import itertools
import json
import re

import pytest
import torch

from plait import save_model
from plait.cli.main import main
from plait.data import dialogue as data
from plait.inference.text import TextGenerator
from plait.models.gpt import GPT, GPTConfig
from plait.text.chat import PLAIN, ChatTemplate
from plait.training import recipe_from_dict, train
from plait.training.config import TrainConfig
from plait.training.distributed import Dist
from plait.training.losses import IGNORE_INDEX
from plait.training.tasks.chat import ROLE_LINES, ChatData, ChatTask, chat_tokenizer, tokenize

CONVERSATION = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": "5"},
                {"role": "user", "content": "And in words?"},
                {"role": "assistant", "content": "five"}]


# -- the template and the loss mask -------------------------------------------------------------
def test_template_renders_turns_and_marks_the_assistant_spans():
    text = ROLE_LINES.render(CONVERSATION[:4])
    assert text == ("System: Be brief.\nUser: What is 2 + 3?\nAssistant: 5\n"
                    "User: And in words?\nAssistant:")
    spans = ROLE_LINES.spans(CONVERSATION)
    assert [t for t, a in spans if a] == ["5\n", "five\n"]  # the words and the stop string
    assert "".join(t for t, _ in spans) == ROLE_LINES.render(CONVERSATION, False)
    assert PLAIN.render(CONVERSATION[1:2]) == "user: What is 2 + 3?\nassistant:"
    again = ChatTemplate.from_dict(json.loads(json.dumps(ROLE_LINES.to_dict())))
    assert again == ROLE_LINES


def test_label_mask_covers_exactly_the_assistant_tokens():
    tok = chat_tokenizer()
    ids, targets = tokenize(tok, ROLE_LINES, CONVERSATION)
    # tokenised whole, as the model reads a conversation when it chats: " five" is one token
    assert ids == tok.encode(ROLE_LINES.render(CONVERSATION, add_generation_prompt=False))
    assert len(targets) == len(ids) and targets[-1] == IGNORE_INDEX
    trained = [i + 1 for i, t in enumerate(targets) if t != IGNORE_INDEX]
    assert [targets[i - 1] for i in trained] == [ids[i] for i in trained]  # the next token
    # what the model writes after each "Assistant:": the answer, its space and the stop
    assert [tok.itos[ids[i]] for i in trained] == [" ", "5", "\n", " five", "\n"]
    head = len(tok.encode("System: Be brief.\nUser: What is 2 + 3?\nAssistant:"))
    assert trained[0] == head and all(t == IGNORE_INDEX for t in targets[:head - 1])


def test_loss_is_the_mean_negative_log_likelihood_of_the_assistant_tokens(tmp_path):
    task = ChatTask(ChatData(batch_size=2), TrainConfig(out_dir=str(tmp_path)), Dist())
    torch.manual_seed(0)
    model = GPT(task.model_config(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64,
                                            pos_encoding="rope")))
    batch = task.batch([tokenize(task.tokenizer, ROLE_LINES, CONVERSATION)] * 2)
    text = ROLE_LINES.render(CONVERSATION, add_generation_prompt=False)
    ids = task.tokenizer.encode(text)
    ends = itertools.accumulate(len(task.tokenizer.itos[i]) for i in ids)
    answers = [range(m.start(1), m.end(1)) for m in re.finditer("Assistant:( .*\n)", text)]
    A = [i for i, end in enumerate(ends) if any(end - 1 in r for r in answers)]  # by chars
    logp = model(batch["input_ids"]).log_softmax(-1)[0]  # (T, V)
    want = -torch.stack([logp[i - 1, ids[i]] for i in A]).mean()  # -1/|A| sum log p(t_i|t<i)
    torch.testing.assert_close(task.loss(model, batch), want)


# -- the data ------------------------------------------------------------------------------------
def test_training_dialogues_never_hold_a_held_out_item():
    rows = list(itertools.islice(data.train_dialogues(0, 5, 0), 3000))
    assert {e.kind for d in rows for e in d.exchanges} == set(data.KINDS)
    for d in rows:
        text = d.text()
        assert not [n for n in re.findall(r"\d+", text) if data.is_held_out_number(int(n))], text
        assert "thirty-seven\n" not in text + "\n" and "thirty-seven\"" not in text, text
        years = re.findall(r"(\d{4})-\d\d-\d\d", text) + re.findall(r"[A-Z][a-z]+ \d+, (\d{4})",
                                                                      text)
        assert not [y for y in years if data.is_held_out_year(int(y))], text
        assert not [w for w in re.findall(r"[a-z]+", text) if w in data.count_words("heldout")]
        assert not [w for w in re.findall(r"[A-Z][a-z]+", text) if data.is_held_out_name(w)]
        assert not [e for e in d.exchanges if e.question.startswith("Give me") or e.new_phrasing]


def test_held_out_dialogues_ask_about_held_out_items_only():
    held = data.heldout_dialogues(0, 6)
    assert [d.exchanges[-1].kind for d in held] == [k for k in data.KINDS for _ in range(6)]
    for d in held:
        last = d.exchanges[-1]
        text = f"{last.question} {last.answer}"
        if last.kind in ("greeting", "name"):
            assert any(data.is_held_out_name(w) for w in re.findall(r"[A-Z][a-z]+", d.system))
        elif last.kind == "repeat":
            assert data.is_held_out_name(last.answer) or last.answer in data.count_words(
                "heldout")
        elif last.kind in ("date-words", "words-date", "next-date"):
            assert all(data.is_held_out_year(int(y)) for y in re.findall(r"\b\d{4}\b", text))
        elif last.kind == "count-letters":
            assert re.search(r'"([a-z]+)"', last.question)[1] in data.count_words("heldout")
        elif last.kind == "followup-words":
            assert last.answer.endswith("thirty-seven")
        elif last.kind != "weekday":  # numbers: 37 ends the question's number or the answer
            numbers = re.findall(r"\d+", text)
            assert last.answer.endswith("thirty-seven") or any(
                data.is_held_out_number(int(n)) for n in numbers), last
        assert not last.new_phrasing
    new = data.heldout_dialogues(0, 2, new_phrasing=True)
    assert all(d.exchanges[-1].question.startswith("Give me") for d in new)
    assert [d.exchanges[-1].kind for d in new] == [k for k in data.KINDS for _ in range(2)]


def test_dialogues_and_batches_are_a_pure_function_of_seed_and_step(tmp_path):
    def first(seed, step):
        return list(itertools.islice(data.train_dialogues(seed, step, 0), 20))

    assert first(0, 3) == first(0, 3) and first(0, 3) != first(0, 4) != first(1, 4)
    assert data.heldout_dialogues(0, 2) == data.heldout_dialogues(0, 2)
    task = ChatTask(ChatData(batch_size=4), TrainConfig(out_dir=str(tmp_path)), Dist())
    task.model_config(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=128))
    a, b = task.train_batch(7, 0), task.train_batch(7, 0)
    assert all(torch.equal(a[k], b[k]) for k in a) and a["input_ids"].shape[0] == 4
    assert a["input_ids"].shape[1] <= 128  # packed rows fit the context


def test_texts_fit_the_tokenizer_and_words_are_single_tokens():
    tok = chat_tokenizer()
    for d in data.heldout_dialogues(1, 3) + list(itertools.islice(data.train_dialogues(1, 0, 0),
                                                                   200)):
        text = ROLE_LINES.render(d.messages(), add_generation_prompt=False)
        assert tok.decode(tok.encode(text)) == text
    assert [tok.itos[i] for i in tok.encode("four hundred and thirty-seven")] == [
        "four", " hundred", " and", " thirty", "-", "seven"]
    assert len(tok.encode('"banana"')) == 8  # counted words are spelled out


# -- training and evaluating ---------------------------------------------------------------------
TINY = {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 128,
        "pos_encoding": "rope"}


def test_the_chat_task_trains_a_folder_that_chats_and_evaluates(tmp_path, capsys):
    out = tmp_path / "run"
    train(recipe_from_dict({
        "task": "chat", "model": TINY, "data": {"batch_size": 4, "heldout_per_kind": 2},
        "train": {"out_dir": str(out), "max_steps": 3, "warmup_steps": 1, "eval_interval": 0,
                  "threads": 1, "progress": False, "device": "cpu"}}))
    assert json.loads((out / "chat_template.json").read_text()) == ROLE_LINES.to_dict()
    assert (out / "tokenizer.json").is_file()
    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--task", "chat"]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    assert {"loss", "exact", "exact_double", "exact_new_phrasing"} <= set(printed)
    assert all(0.0 <= float(printed[k]) <= 1.0 for k in printed if k.startswith("exact"))


@pytest.mark.slow
def test_a_short_training_learns_to_greet_and_plait_chat_uses_it(tmp_path, capsys, monkeypatch):
    """About 90 s: 400 steps of a 2-layer GPT bring the answer loss from ln(365) = 5.9 nats to
    about 1.1 and teach the fixed greeting (the full recipe's numbers are in docs/chat.md)."""
    out = tmp_path / "run"
    metrics = train(recipe_from_dict({
        "task": "chat", "model": {**TINY, "n_layer": 2, "n_embd": 64, "mlp": "relu2"},
        "data": {"batch_size": 8, "heldout_per_kind": 10},
        "train": {"out_dir": str(out), "max_steps": 400, "lr": 3e-3, "warmup_steps": 50,
                  "min_lr": 0.0, "decay": "linear", "eval_interval": 0, "threads": 2,
                  "progress": False, "device": "cpu"}}))
    assert metrics["val_loss"] < 1.5
    capsys.readouterr()  # the training's own report is not the chat's answer
    code, answer, _, prompts = chat(["--model", str(out)], ["Hi!"], capsys, monkeypatch)
    assert code == 0 and prompts == ["User: Hi!\nAssistant:"]
    assert answer == data.HELLO + "\n"


# -- plait chat ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory):
    """A tiny random GPT with the chat tokenizer and template (context 40 tokens)."""
    folder = tmp_path_factory.mktemp("chatmodel")
    tok = chat_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16,
                          block_size=40, pos_encoding="rope"))
    save_model(model, folder)
    tok.save(folder)
    ROLE_LINES.save(folder)
    return folder


def chat(args, lines, capsys, monkeypatch):
    """``plait chat ARGS`` with ``lines`` piped in: (exit code, stdout, stderr, prompts)."""
    prompts = []
    stream = TextGenerator.stream

    def record(self, prompt, **kw):
        prompts.append(prompt)
        return stream(self, prompt, **kw)

    monkeypatch.setattr(TextGenerator, "stream", record)
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{x}\n" for x in lines)))
    code = main(["chat", *args])
    out, err = capsys.readouterr()
    return code, out, err, prompts


def test_chat_answers_each_piped_line_with_the_history_in_the_prompt(chat_folder, capsys,
                                                                     monkeypatch):
    code, out, err, prompts = chat(["--model", str(chat_folder), "--max-tokens", "4"],
                                   ["Hi", "Add 2 and 3.", "/reset", "Hi"], capsys, monkeypatch)
    assert code == 0 and err == ""
    answers = out.split("\n")[:-1]
    assert len(answers) == 3 and out.endswith("\n")
    assert prompts[0] == "User: Hi\nAssistant:"
    assert prompts[1] == f"User: Hi\nAssistant: {answers[0]}\nUser: Add 2 and 3.\nAssistant:"
    assert prompts[2] == prompts[0] and answers[2] == answers[0]  # /reset forgot, greedy again
    gen = TextGenerator.from_folder(chat_folder)
    want = gen.generate(prompts[1], stop=["\n"], max_new_tokens=4).strip()
    assert answers[1] == want


def test_chat_quantize_answers_as_the_quantised_generator_does(chat_folder, capsys,
                                                              monkeypatch):
    from plait.nn.quant import Int8Linear

    code, out, err, prompts = chat(["--model", str(chat_folder), "--max-tokens", "4",
                                    "--quantize", "int8"], ["Hi"], capsys, monkeypatch)
    assert code == 0 and err == ""
    gen = TextGenerator.from_folder(chat_folder, quantize="int8")
    assert isinstance(gen.model.lm_head, Int8Linear)
    assert out == gen.generate(prompts[0], stop=["\n"], max_new_tokens=4).strip() + "\n"


def test_chat_drops_the_oldest_turns_but_keeps_the_system_message(chat_folder, capsys,
                                                                  monkeypatch):
    lines = ["What is 2 + 3?", "What is 4 + 5?", "What is 6 + 7?"]
    code, out, err, prompts = chat(["--model", str(chat_folder), "--max-tokens", "4",
                                    "--system", "Be brief."], lines, capsys, monkeypatch)
    assert code == 0 and len(out.splitlines()) == 3
    assert "dropped the oldest 2 messages" in err and "40-token context" in err
    assert prompts[-1].startswith("System: Be brief.\n") and "2 + 3" not in prompts[-1]
    assert prompts[-1].endswith("User: What is 6 + 7?\nAssistant:")


def test_a_folder_without_template_chats_in_plain_text(chat_folder, tmp_path, capsys,
                                                       monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (plain / name).write_bytes((chat_folder / name).read_bytes())
    code, out, _, prompts = chat(["--model", str(plain), "--max-tokens", "3", "--temperature",
                                  "0.8", "--seed", "1"], ["hello"], capsys, monkeypatch)
    assert code == 0 and prompts == ["user: hello\nassistant:"] and len(out.splitlines()) == 1


@pytest.mark.parametrize("args,lines,needle", [
    (["--model", "no/such/folder"], ["hi"], "model folder not found"),
    (["--model", "{folder}", "--max-tokens", "0"], ["hi"], "--max-tokens must be at least 1"),
    (["--model", "{folder}", "--max-tokens", "40"], ["hi"], "40-token context, got 40"),
    (["--model", "{folder}", "--temperature", "-1"], ["hi"], "temperature"),
    (["--model", "{folder}"], ["caf\u00e9"], "not in the vocabulary"),
    (["--model", "{folder}", "--max-tokens", "8"], ["x" * 40], "context"),
    (["--model", "{broken}"], ["hi"], "not a chat template"),
    (["--model", "{bert}"], ["hi"], "does not generate text"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, lines, needle, chat_folder, tmp_path,
                                              capsys, monkeypatch):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (broken / name).write_bytes((chat_folder / name).read_bytes())
    (broken / "chat_template.json").write_text('{"turns": {"user": "{content}"}}')
    bert = tmp_path / "bert"
    if "{bert}" in args:
        from plait.models.bert import Bert, BertConfig

        save_model(Bert(BertConfig(vocab_size=400, n_layer=1, n_head=2, n_embd=16, n_inner=32,
                                   block_size=32)), bert)
        chat_tokenizer().save(bert)
    args = [a.format(folder=chat_folder, broken=broken, bert=bert) for a in args]
    code, out, err, _ = chat(args, lines, capsys, monkeypatch)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err, err
