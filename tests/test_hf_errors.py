"""Broken Hugging Face folders fail with one line naming the file (and the tensor), exit code 2,
through ``plait convert --from-hf`` and ``plait embed``, and as ValueError from ``plait.load``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import plait
from plait.cli.main import main

transformers = pytest.importorskip("transformers")


@pytest.fixture
def gpt2_folder(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    folder = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture
def bert_folder(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=40,
                                  max_position_embeddings=16)
    folder = tmp_path / "bert"
    transformers.BertModel(cfg).save_pretrained(folder)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return folder


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def convert(folder, tmp_path):
    return ["convert", "--from-hf", str(folder), str(tmp_path / "out")]


def test_truncated_safetensors(gpt2_folder, tmp_path, capsys):
    path = gpt2_folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    err = one_line_error(capsys, convert(gpt2_folder, tmp_path))
    assert "model.safetensors" in err and "truncated" in err


def test_folder_without_weights(gpt2_folder, tmp_path, capsys):
    (gpt2_folder / "model.safetensors").unlink()
    err = one_line_error(capsys, convert(gpt2_folder, tmp_path))
    assert "no weights" in err and str(gpt2_folder) in err


def test_unsupported_architecture(gpt2_folder, tmp_path, capsys):
    cfg = json.loads((gpt2_folder / "config.json").read_text())
    cfg.update(model_type="mamba", architectures=["MambaForCausalLM"])
    (gpt2_folder / "config.json").write_text(json.dumps(cfg))
    err = one_line_error(capsys, convert(gpt2_folder, tmp_path))
    assert "config.json" in err and "mamba" in err and "gpt2" in err


def test_wrong_shape_tensor(gpt2_folder, tmp_path, capsys):
    path = gpt2_folder / "model.safetensors"
    state = load_file(path)
    state["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(32, 100)
    save_file(state, path, metadata={"format": "pt"})
    err = one_line_error(capsys, convert(gpt2_folder, tmp_path))
    assert "model.safetensors" in err and "transformer.h.1.mlp.c_fc.weight" in err
    assert "(32, 100)" in err


def test_missing_and_unexpected_tensors(gpt2_folder):
    path = gpt2_folder / "model.safetensors"
    state = load_file(path)
    del state["transformer.h.0.ln_1.bias"]
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.safetensors.*transformer\.h\.0\.ln_1\.bias"):
        plait.load(gpt2_folder)
    state = load_file(path)
    state["transformer.h.0.ln_1.bias"] = torch.zeros(32)
    state["transformer.h.7.extra"] = torch.zeros(1)
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"unexpected.*transformer\.h\.7\.extra"):
        plait.load(gpt2_folder)


def test_embed_errors_are_one_line(bert_folder, tmp_path, capsys):
    path = bert_folder / "model.safetensors"
    state = load_file(path)
    state["encoder.layer.0.attention.self.key.weight"] = torch.zeros(32, 31)
    save_file(state, path, metadata={"format": "pt"})
    err = one_line_error(capsys, ["embed", "--model", str(bert_folder), "hello world"])
    assert "model.safetensors" in err and "encoder.layer.0.attention.self.key.weight" in err
    path.unlink()
    err = one_line_error(capsys, ["embed", "--model", str(bert_folder), "hello"])
    assert "no weights" in err
    err = one_line_error(capsys, ["embed", "--model", str(tmp_path / "nowhere"), "hello"])
    assert "nowhere" in err


def test_tiny_bert_folder_embeds(bert_folder, capsys):
    """A plain BERT folder (no modules.json): mean pooling of the last hidden states."""
    assert main(["embed", "--model", str(bert_folder), "hello world", "world"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ref = transformers.BertModel.from_pretrained(bert_folder).eval()
    with torch.no_grad():
        h = ref(torch.tensor([[2, 5, 6, 3]])).last_hidden_state
    torch.testing.assert_close(torch.tensor(rows[0]), h[0].mean(0), atol=1e-5, rtol=0)
    assert len(rows) == 2


def test_plait_bert_folder_embeds_the_same(bert_folder, tmp_path, capsys):
    assert main(["convert", "--from-hf", str(bert_folder), str(tmp_path / "plait")]) == 0
    capsys.readouterr()
    outs = []
    for folder in (bert_folder, tmp_path / "plait"):
        assert main(["embed", "--model", str(folder), "hello world"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    torch.testing.assert_close(torch.tensor(outs[0]), torch.tensor(outs[1]))


def test_embed_refuses_a_gpt(gpt2_folder, capsys):
    err = one_line_error(capsys, ["embed", "--model", str(gpt2_folder), "hello"])
    assert "BERT" in err and "GPT" in err
