"""Model folders: save/load round trip, atomic writes, and readable errors for broken folders."""

import json

import pytest
import torch

import plait
from plait.checkpoint import load_model, save_model
from plait.io import atomic_write, read_safetensors_metadata
from plait.models import GPT, GPTConfig


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=31, n_layer=2, n_head=2, n_embd=16, block_size=32, **kw))


@pytest.mark.parametrize("kw", [{}, {"pos_encoding": "rope", "norm": "rmsnorm", "mlp": "swiglu",
                                     "n_kv_head": 1, "bias": False}])
def test_save_load_round_trip(tmp_path, kw):
    model = tiny(**kw).eval()
    save_model(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["plait_model"] == "gpt"
    loaded = plait.load(tmp_path)
    assert not loaded.training and loaded.config == model.config
    x = torch.randint(0, 31, (2, 7))
    assert torch.equal(loaded(x), model(x))
    assert loaded.lm_head.weight is loaded.wte.weight  # tying survives the round trip


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old and good")

    def dies_midway(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half of the new")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, dies_midway)
    assert target.read_bytes() == b"old and good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp left


def test_broken_folders_give_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        plait.load(tmp_path / "nope")
    model = tiny()
    save_model(model, tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()

    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors.*truncated"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match=r"model\.safetensors.*truncated"):
        read_safetensors_metadata(weights)  # what --resume reads first

    weights.unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_model(tmp_path)

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt JSON"):
        load_model(tmp_path)

    (tmp_path / "config.json").write_text(json.dumps({"plait_model": "gpt", "n_embd": 15,
                                                       "n_head": 2}))
    with pytest.raises(ValueError, match="n_embd"):
        load_model(tmp_path)


def test_wrong_shape_and_missing_tensor_are_named(tmp_path):
    save_model(tiny(), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_embd"], cfg["n_head"] = 32, 2  # the weights are 16 wide
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shape_error = r"model\.safetensors: tensor '[a-z_.]+' has shape \(\d+, 16\), the model expects"
    with pytest.raises(ValueError, match=shape_error):
        load_model(tmp_path)
    cfg["n_embd"], cfg["n_layer"] = 16, 3  # one block more than stored
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"missing 'transformer\.blocks\.2"):
        load_model(tmp_path)
