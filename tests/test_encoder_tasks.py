"""The encoder and encoder–decoder tasks end to end on tiny models: data rules (held-out dates,
numbers, speeches, frames and names never in training), recipes with stages, and the commands
on the folders they leave (translate, classify, tag, eval), bad input included."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from plait.cli.main import main
from plait.config import ConfigError
from plait.data import ner, speakers, translate
from plait.loading import load
from plait.models.bert import Bert, BertConfig, masked_mean
from plait.text.base import in_pieces, pad_batch
from plait.training import recipe_from_dict, train
from plait.training.config import TrainConfig
from plait.training.distributed import Dist
from plait.training.tasks.classify import SpeakersData, SpeakersTask, sif_weights

TINY_BERT = {"arch": "bert", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_inner": 64,
             "block_size": 64, "dropout": 0.0}
FAST = {"max_steps": 6, "warmup_steps": 2, "eval_interval": 0, "threads": 1, "progress": False,
        "device": "cpu", "lr": 3e-3}


# -- the held-out rules -----------------------------------------------------------------------
def test_translation_data_never_trains_on_held_out_years_or_endings():
    rows = translate.train_examples(0, 3, 1, 2000)
    assert {e.kind for e in rows} == {"date", "number"}
    for e in rows:
        if e.kind == "date":
            assert int(e.target[:4]) % 10 != 7
        else:
            assert int(e.target) % 100 != 37
    held = translate.heldout_examples(0, 5)
    assert {e.group for e in held} == {f"date-{x}" for x in translate.DATE_LOCALES} | {
        f"number-{x}" for x in translate.NUMBER_LANGS}
    assert all((int(e.target[:4]) % 10 == 7) if e.kind == "date" else
               (int(e.target) % 100 == 37) for e in held)
    assert translate.train_examples(0, 3, 1, 5) == translate.train_examples(0, 3, 1, 5)
    alphabet = set(translate.alphabet())
    assert all(set(e.source) <= alphabet for e in held)  # nothing unseen to tokenize


def test_translate_tokenizer_reads_every_word_as_one_token():
    """Each month, weekday and number word of the sources is a single token (so "тридцать" and
    "триста" are two symbols); digits stay characters; decoding gives the text back."""
    from plait.text.char import LETTERS, CharTokenizer

    text = translate.vocabulary_text().replace("\n", " ")
    tok = CharTokenizer.train(text, ("<pad>", "<s>", "</s>"), min_word_count=1)
    rows = translate.train_examples(0, 0, 0, 300) + translate.heldout_examples(0, 5)
    for e in rows:
        ids = tok.encode(e.source)
        words = [w for w in LETTERS.findall(e.source) if len(w) > 1]
        assert all(w in tok.word_ids for w in words), e.source
        assert len(ids) == len(e.source) - sum(len(w) - 1 for w in words)
        assert tok.decode(ids) == e.source
        assert tok.encode(e.target) == [tok.stoi[c] for c in e.target]
    assert tok.encode("тридцать")[0] != tok.encode("триста")[0]


def test_speaker_split_holds_out_every_tenth_speech_of_each_list():
    text = "data/tinyshakespeare.txt"
    top = speakers.speakers(text)
    assert len(top) == speakers.N_SPEAKERS
    train_set, held = speakers.speeches(text, "train"), speakers.speeches(text, "heldout")
    theirs = sorted(train_set + held, key=lambda s: s.index)
    assert [s.index for s in held] == [s.index for k, s in enumerate(theirs) if k % 10 == 9]
    assert {s.speaker for s in held} == set(top)  # every speaker is tested
    corpus = speakers.pretraining_text(text)  # the file's speeches, name lines and all ...
    everything = speakers.parse(Path(text).read_text(encoding="utf-8"))
    assert len(corpus) == len(everything) - len(held)
    assert corpus[0] == f"{everything[0].speaker}:\n{everything[0].text}"
    left_in = set(corpus)  # ... but not the held-out ones (unless said word for word elsewhere)
    for s in held:
        again = [o for o in everything if o.index != s.index and (o.speaker, o.text) == (
            s.speaker, s.text) and o.index not in {h.index for h in held}]
        assert (f"{s.speaker}:\n{s.text}" in left_in) == bool(again)


def test_speaker_validation_split_is_every_ninth_training_speech_and_unseen():
    text = "data/tinyshakespeare.txt"
    train_set = speakers.speeches(text, "train")
    fit, val = speakers.speeches(text, "train", True), speakers.speeches(text, "heldout", True)
    assert [s.index for s in val] == [s.index for k, s in enumerate(train_set) if k % 9 == 8]
    assert sorted(s.index for s in fit + val) == [s.index for s in train_set]
    assert {s.speaker for s in val} == set(speakers.speakers(text))
    rest = {s.index for s in speakers.rest(text, validation=True)}
    held = {s.index for s in speakers.speeches(text, "heldout")}
    assert not rest & ({s.index for s in val} | held)  # neither is pretrained on
    assert len(rest) == speakers.count(text) - len(val) - len(held)
    assert len(speakers.pretraining_text(text, validation=True)) == len(rest)


def test_ner_test_sentences_use_unseen_frames_and_names():
    train_s, test_s = ner.sentences("train", 300), ner.sentences("heldout", 300)
    train_frames, test_frames = set(ner.frames("train")), set(ner.frames("heldout"))
    assert len(ner.FRAMES) >= 50 and not train_frames & test_frames
    names = {t: {s.text[a:b] for s in train_s for t2, a, b in s.entities if t2 == t}
             for t in ner.TYPES}
    for s in test_s:
        for t, a, b in s.entities:
            assert s.text[a:b] not in names[t]
    for s in train_s[:50]:  # tags agree with the entity spans
        assert sum(tag.startswith("B-") for tag in s.tags) == len(s.entities)


# -- the tasks, trained a few steps, and the commands on their folders ----------------------------
@pytest.fixture(scope="module")
def translate_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("translate")
    train(recipe_from_dict({
        "task": "translate",
        "model": {"arch": "seq2seq", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_inner": 64,
                  "pre_norm": True, "dropout": 0.0},
        "data": {"batch_size": 8, "heldout_per_group": 2, "eval_per_group": 1,
                 "decoder_dropout": 0.3},
        "train": {**FAST, "out_dir": str(out)}}))
    return out


def test_translate_trains_and_reports_every_group(translate_run):
    final = [json.loads(x) for x in (translate_run / "metrics.jsonl").read_text().splitlines()
             if '"final"' in x][0]
    for g in ("date-ru", "date-zh", "number-en"):
        assert f"val_exact_{g}" in final and f"val_bleu_{g}" in final
    assert "val_exact_beam4" in final


def test_translate_command_and_its_errors(translate_run, capsys):
    capsys.readouterr()
    assert main(["translate", "--model", str(translate_run), "9 mars 2017", "trente-sept"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["translate", "--model", str(translate_run), "   "]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["translate", "--model", str(translate_run), "☃ snowman"]) == 2
    err = capsys.readouterr().err
    assert "not in the vocabulary" in err and err.count("\n") == 1
    assert main(["eval", "--model", str(translate_run), "--task", "translate"]) == 0
    assert "exact_date-ja" in capsys.readouterr().out


def test_translate_on_a_gpt_folder_is_refused_by_name(tmp_path, capsys):
    from plait.checkpoint import save_model
    from plait.models import GPT, GPTConfig

    save_model(GPT(GPTConfig(vocab_size=10, n_layer=1, n_head=2, n_embd=16, block_size=8)),
               tmp_path)
    assert main(["translate", "--model", str(tmp_path), "hello"]) == 2
    assert "holds a GPT, not an encoder-decoder of text" in capsys.readouterr().err


def test_speakers_recipe_runs_its_pretraining_stage_first(tmp_path, capsys):
    out = tmp_path / "speakers"
    model = {**TINY_BERT, "pooling": "weighted", "read": "aux"}
    result = train(recipe_from_dict({
        "task": "classify-speakers", "model": model,
        "data": {"batch_size": 8, "max_length": 64, "window": 1000},
        "train": {**FAST, "out_dir": str(out)},
        "stages": [{"name": "pretrain", "task": "mlm",
                    "data": {"corpus": "speakers", "vocab_size": 300, "block_size": 64,
                             "batch_size": 8, "eval_batches": 1}}]}))
    printed = capsys.readouterr().out
    assert "stage 1 of 2: pretrain (task mlm)" in printed and "stage 2 of 2: final" in printed
    new = printed.split("; new: ")[1].split(";")[0]
    assert "pooler.dense.weight" in new and "aux_table" in new  # where MLM ended, and fresh
    capsys.readouterr()
    assert (out / "pretrain" / "model.safetensors").is_file()
    trained, n = load(out), speakers.count("data/tinyshakespeare.txt")
    assert trained.config.aux_labels == -(-n // 1000) == trained.aux_head.out_features
    assert trained.pool_weight.min() < 0.1 and trained.pool_weight.max() == 1.0  # SIF, saved
    torch.testing.assert_close(trained.aux_table.sum(1), torch.ones(trained.config.aux_labels))
    assert 0 <= result["val_accuracy"] <= 1 and 0 <= result["val_baseline_accuracy"] <= 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["head"] == "classify" and cfg["labels"] == list(speakers.speakers(
        "data/tinyshakespeare.txt"))
    assert main(["classify", "--model", str(out), "--probs", "O Romeo, Romeo!"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["label"] in cfg["labels"] and abs(sum(line["probs"].values()) - 1) < 1e-5
    assert main(["tag", "--model", str(out), "Romeo"]) == 2  # a classifier is not a tagger
    assert "'tag' head" in capsys.readouterr().err
    assert train(recipe_from_dict({  # resuming a finished pretraining stage skips it
        "task": "classify-speakers", "model": model,
        "data": {"batch_size": 8, "max_length": 64, "window": 1000},
        "train": {**FAST, "out_dir": str(out), "max_steps": 8},
        "stages": [{"name": "pretrain", "task": "mlm",
                    "data": {"corpus": "speakers", "vocab_size": 300, "block_size": 64,
                             "batch_size": 8, "eval_batches": 1}}]}), resume=True)["step"] == 8


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    return str(path)


def test_classify_your_own_texts_and_bad_labels_are_named(tmp_path, capsys):
    """task = "classify" on JSON Lines files learns a separable pair of labels; an unknown
    label, a malformed line and an empty text are each one line naming file and line, exit 2."""
    rng = random.Random(0)
    rows = [(" ".join(rng.choice(words) for _ in range(6)), label) for _ in range(200)
            for label, words in (("sea", ["waves", "salt", "ship"]), ("land", ["hill", "tree"]))]
    train_file = write_jsonl(tmp_path / "train.jsonl", rows[:300])
    eval_file = write_jsonl(tmp_path / "eval.jsonl", rows[300:])
    out = tmp_path / "run"
    recipe = {"task": "classify", "model": TINY_BERT,
              "data": {"batch_size": 16, "vocab_size": 60, "train_file": train_file,
                       "eval_file": eval_file},
              "train": {**FAST, "max_steps": 40, "out_dir": str(out)}}
    result = train(recipe_from_dict(recipe))
    assert result["val_accuracy"] > 0.9  # chance is 0.5
    assert json.loads((out / "config.json").read_text())["labels"] == ["land", "sea"]
    capsys.readouterr()
    assert main(["classify", "--model", str(out), "salt ship waves"]) == 0
    assert capsys.readouterr().out.strip() == "sea"
    for bad, needle in ((json.dumps({"text": "x", "label": "sky"}), "line 2: unknown label 'sky'"),
                        ("{not json", "line 2: not JSON"),
                        (json.dumps({"text": " ", "label": "sea"}), "line 2: empty text")):
        (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "hill", "label": "land"})
                                            + "\n" + bad + "\n")
        toml = tmp_path / "bad.toml"
        toml.write_text(f"""task = "classify"
[model]
arch = "bert"
n_layer = 1
n_head = 2
n_embd = 32
[data]
train_file = "{train_file}"
eval_file = "{tmp_path / 'bad.jsonl'}"
[train]
out_dir = "{tmp_path / 'bad'}"
""")
        assert main(["train", str(toml)]) == 2
        err = capsys.readouterr().err
        assert needle in err and "bad.jsonl" in err and err.count("\n") == 1, err


def test_ner_tags_words_and_the_command_gives_character_spans(tmp_path, capsys):
    out = tmp_path / "ner"
    train(recipe_from_dict({"task": "ner", "model": TINY_BERT,
                            "data": {"batch_size": 8, "vocab_size": 400,
                                     "vocab_sentences": 500, "heldout": 40},
                            "train": {**FAST, "out_dir": str(out)}}))
    text = "Anna Weber flew from Lyon to Genova on 3 March 2021."
    capsys.readouterr()  # the training's own output
    assert main(["tag", "--model", str(out), text]) == 0
    spans = json.loads(capsys.readouterr().out)
    assert isinstance(spans, list)
    for e in spans:  # whatever a few steps learned, offsets point into the input
        assert text[e["start"]:e["end"]] == e["text"] and e["type"] in ner.TYPES
    assert main(["eval", "--model", str(out), "--task", "ner"]) == 0
    assert "f1" in capsys.readouterr().out


def test_first_piece_labels_ignore_continuations_and_specials():
    from plait.data.ner import first_piece_labels

    # [CLS] Wie ##loch ##-Bol runs across word 0; word 1 is one piece; [SEP]
    assert first_piece_labels([-1, 0, 0, 0, 1, -1], [3, 0]) == [-100, 3, -100, -100, 0, -100]


def test_bio_spans_merge_words_and_start_on_stray_inside_tags():
    from plait.inference.bert import spans

    text = "Anna Weber met Bosch GmbH"
    offsets = [(0, 4), (5, 10), (11, 14), (15, 20), (21, 25)]
    got = spans(text, offsets, ["B-PER", "I-PER", "O", "I-ORG", "I-ORG"])
    assert got == [{"type": "PER", "text": "Anna Weber", "start": 0, "end": 10},
                   {"type": "ORG", "text": "Bosch GmbH", "start": 15, "end": 25}]


def test_label_smoothing_reduces_to_cross_entropy_and_handles_unpadded_batches():
    from plait.training.losses import CrossEntropy

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(3, 5, 7, generator=g), torch.randint(0, 7, (3, 5), generator=g)
    plain = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), y.reshape(-1))
    torch.testing.assert_close(CrossEntropy(0.0)(logits, y), plain)
    smooth = CrossEntropy(0.1)(logits, y)  # no ignored position at all: no division by zero
    assert torch.isfinite(smooth) and smooth > plain * 0.5


def test_weighted_pooling_is_the_weighted_mean_and_sif_weighs_rare_pieces_more():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, n_layer=1, n_head=2, n_embd=16, n_inner=32, block_size=16,
                     head="classify", num_labels=3, pooling="weighted")
    m = Bert(cfg).eval()
    ids, mask = torch.randint(1, 40, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    h = m(ids, mask)
    assert torch.allclose(m.pool(h, mask, ids), m.pooler(masked_mean(h, mask)[:, None]))
    m.pool_weight.uniform_(0.1, 1.0)
    w = m.pool_weight[ids] * mask  # (B, T)
    by_hand = torch.stack([(w[b, :, None] * h[b]).sum(0) / w[b].sum() for b in range(2)])
    assert torch.allclose(m.pool(h, mask, ids), m.pooler(by_hand[:, None]), atol=1e-6)
    assert torch.allclose(m.logits(ids, mask), m.head(m.pool(h, mask, ids)), atol=1e-6)
    with pytest.raises(ValueError, match="pass input_ids"):
        m.pool(h, mask)

    class Pieces:  # a tokenizer of single letters
        vocab_size = 5

        def encode(self, text):
            return ["abcde".index(c) for c in text]

    weights = sif_weights(Pieces(), ["aab", "a"], a=0.1)  # p(a) = 3/4, p(b) = 1/4, c-e unseen
    assert torch.allclose(weights, torch.tensor([0.1 / 0.85, 0.1 / 0.35, 1.0, 1.0, 1.0]))


def test_window_rows_ride_beside_the_speakers_and_are_never_held_out(tmp_path):
    data = SpeakersData(batch_size=4, max_length=32, vocab_size=300, window=100)
    task = SpeakersTask(data, TrainConfig(out_dir=str(tmp_path)), Dist())
    held = {s.index for s in speakers.speeches(data.text, "heldout")}
    rest = speakers.rest(data.text)  # every speech but the held-out ones, any speaker
    assert not held & {s.index for s in rest} and len(rest) == speakers.count(data.text) - len(held)
    assert task.located == [(s.text, s.index // 100, k) for k, s in enumerate(rest)]
    batch = task.train_batch(3, 0)
    assert batch["input_ids"].shape[0] == 8 and task.count(batch) == 4
    assert batch["aux_labels"].max() < -(-speakers.count(data.text) // 100)
    assert torch.equal(batch["labels"], task.batch(task.draw(task.train_set, "", 3, 0))["labels"])
    cfg = task.model_config(BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "arch"},
                                       pooling="weighted"))
    model = Bert(cfg)
    task.fit_model(model)
    loss = task.loss(model, batch)
    loss.backward()
    assert loss.isfinite() and model.aux_head.weight.grad.abs().sum() > 0


def test_token_dropout_thins_training_batches_only_and_repeats_with_the_seed(tmp_path):
    def task(p, seed=0):
        data = SpeakersData(batch_size=8, max_length=32, vocab_size=300, window=100,
                            token_dropout=p)
        return SpeakersTask(data, TrainConfig(out_dir=str(tmp_path), seed=seed), Dist())

    t0, t4 = task(0.0), task(0.4)
    plain, thin = t0.train_batch(5, 0), t4.train_batch(5, 0)
    assert torch.equal(plain["labels"], thin["labels"])
    assert 0.5 < thin["attention_mask"].sum() / plain["attention_mask"].sum() < 0.75
    assert torch.equal(thin["input_ids"], t4.train_batch(5, 0)["input_ids"])
    scored = t4.batch(t4.heldout[:4])  # what evaluation reads: every piece
    assert scored["attention_mask"].sum(1).tolist() == [
        len(t4.tokenizer.encode(text, max_length=32)) for text, _ in t4.heldout[:4]]
    with pytest.raises(ValueError, match="token_dropout"):
        SpeakersData(token_dropout=1.0)


def test_reading_the_speaker_through_the_window_head(tmp_path):
    """read = "aux": p(speaker | x) = sum_w p(w | x) T[w, speaker], T the training speakers'
    counts per window + 1, each row normalised; a task without windows refuses it by name."""
    data = SpeakersData(batch_size=4, max_length=32, vocab_size=300, window=100)
    task = SpeakersTask(data, TrainConfig(out_dir=str(tmp_path)), Dist())
    base = {k: v for k, v in TINY_BERT.items() if k != "arch"}
    model = Bert(task.model_config(BertConfig(**base, pooling="weighted", read="aux"))).eval()
    task.fit_model(model)
    counts = torch.zeros(len(task.labels))
    for s in speakers.speeches(data.text, "train"):
        if s.index // 100 == 11:
            counts[task.labels.index(s.speaker)] += 1
    assert counts.sum() > 0  # window 11 is Richard III's: Gloucester speaks there
    torch.testing.assert_close(model.aux_table[11], (counts + 1) / (counts + 1).sum())
    batch = task.batch(task.heldout[:3])
    pooled = task.pooled(model, batch)
    by_hand = (model.aux_head(pooled).softmax(-1) @ model.aux_table).log()
    torch.testing.assert_close(model.logits(batch["input_ids"], batch["attention_mask"]), by_hand)
    assert not torch.allclose(by_hand, model.head(pooled).log_softmax(-1))
    with pytest.raises(ValueError, match="aux_labels > 0"):
        Bert(BertConfig(**base, head="classify", read="aux"))
    rows = [("a b", "x"), ("c d", "y")]
    plain = recipe_from_dict({"task": "classify", "model": {**TINY_BERT, "aux_labels": 2,
                                                            "read": "aux"},
                              "data": {"train_file": write_jsonl(tmp_path / "t.jsonl", rows),
                                       "eval_file": write_jsonl(tmp_path / "e.jsonl", rows)},
                              "train": {**FAST, "out_dir": str(tmp_path / "plain")}})
    with pytest.raises(ConfigError, match="no auxiliary classes"):
        train(plain)


def test_a_long_text_is_read_in_pieces_and_pooled_as_one():
    assert in_pieces([[1, 5, 6, 7, 8, 9, 2], [1, 3, 2]], 5)[0] == [[1, 5, 6, 7, 2], [1, 8, 9, 2],
                                                                    [1, 3, 2]]
    assert in_pieces([[1, 5, 6, 7, 8, 9, 2], [1, 3, 2]], 5)[1].tolist() == [0, 0, 1]
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, n_layer=1, n_head=2, n_embd=16, n_inner=32, block_size=8,
                     head="classify", num_labels=3, pooling="weighted")
    m = Bert(cfg).eval()
    m.pool_weight.uniform_(0.1, 1.0)
    long, short = [2, *torch.randint(5, 40, (15,)).tolist(), 3], [2, 7, 9, 3]
    rows, owner = in_pieces([long, short], 8)
    assert len(rows) == 4 and max(map(len, rows)) == 8 and owner.tolist() == [0, 0, 0, 1]
    ids, mask = pad_batch(rows, 0)
    h = m(ids, mask)
    w = m.pool_weight[ids] * mask  # every piece's tokens, [CLS] and [SEP] each time
    first = (w[:3, :, None] * h[:3]).sum((0, 1)) / w[:3].sum()
    pooled = m.pooled(ids, mask, owner=owner)
    torch.testing.assert_close(pooled[0], m.pooler(first[None, None])[0])
    alone = m.pooled(*pad_batch([short], 0))  # a text in one piece pools as it always did
    torch.testing.assert_close(pooled[1], alone[0])
    cut = m.pooled(*pad_batch([long[:7] + [3]], 0))[0]
    assert not torch.allclose(pooled[0], cut)
    with pytest.raises(ValueError, match="pooling 'mean' or 'weighted'"):
        Bert(BertConfig(**{**cfg.__dict__, "pooling": "cls"})).pooled(ids, mask, owner=owner)
