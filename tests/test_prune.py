"""Pruning (plait.nn.prune, `plait prune`): the slicing removes exactly the units it scores
lowest, the pruned model is smaller, saves, reloads and generates, and bad amounts are one line."""

import copy

import pytest
import torch

import plait
from plait import save_model
from plait.cli.main import main
from plait.models.gpt import GPT, GPTConfig
from plait.nn import prune

VOCAB = 50


def tiny_gpt(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=32, block_size=64) | kw
    model = GPT(GPTConfig(**cfg))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)  # far from init: every unit matters, logits are not flat
    return model.eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids)


def silence_channels(model, channels):
    """Zero the output columns of these MLP channels in every block: they then add nothing."""
    with torch.no_grad():
        for b in model.transformer.blocks:
            b.mlp.proj.weight[:, channels] = 0


def silence_heads(model, heads):
    hs = model.config.head_dim
    with torch.no_grad():
        for b in model.transformer.blocks:
            for h in heads:
                b.attn.proj.weight[:, h * hs:(h + 1) * hs] = 0


@pytest.mark.parametrize("kw", [{}, {"mlp": "swiglu", "pos_encoding": "rope", "bias": False}])
def test_pruning_silent_mlp_channels_keeps_the_logits(kw):
    model = tiny_gpt(**kw)
    dead = [3, 17, 40, 41, 77, 100, 101, 127]  # 8 of 128
    silence_channels(model, dead)
    ids = torch.randint(0, VOCAB, (2, 9))
    ref = logits(model, ids)
    scores = prune.channel_scores(model.transformer.blocks[0].mlp)
    assert scores[dead].eq(0).all() and scores.ne(0).sum() == 120
    prune.prune_mlp(model, 8 / 128)
    mlp = model.transformer.blocks[1].mlp
    assert mlp.proj.in_features == 120 and model.config.n_inner == 120
    assert mlp.fc.out_features == (240 if kw else 120)
    torch.testing.assert_close(logits(model, ids), ref, rtol=1e-5, atol=1e-5)


def test_a_gated_channel_is_silent_when_its_gate_and_up_rows_are_zero():
    """The input side of the score: gate row j and up row j (fc rows j and h + j) both zero."""
    model = tiny_gpt(mlp="swiglu", bias=False)
    ids = torch.randint(0, VOCAB, (1, 7))
    with torch.no_grad():
        for b in model.transformer.blocks:
            b.mlp.fc.weight[[5, 6, 128 + 5, 128 + 6]] = 0
    ref = logits(model, ids)
    prune.prune_mlp(model, 2 / 128)
    torch.testing.assert_close(logits(model, ids), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw, dead", [({}, [1]), ({"pos_encoding": "rope"}, [0, 3]),
                                      ({"n_head": 8, "n_kv_head": 4}, [2, 3])])
def test_pruning_silent_heads_keeps_the_logits(kw, dead):
    """With GQA (8 query heads over 4 kv heads) a unit is a kv head and its 2 query heads."""
    model = tiny_gpt(**kw)
    silence_heads(model, dead)
    ids = torch.randint(0, VOCAB, (2, 9))
    ref = logits(model, ids)
    n_kv, hs, n_head = model.config.kv_heads, model.config.head_dim, model.config.n_head
    prune.prune_heads(model, (len(dead) // (n_head // n_kv)) / n_kv)
    attn = model.transformer.blocks[0].attn
    assert model.config.d_head == model.config.head_dim == attn.head_dim == hs
    assert attn.n_head == model.config.n_head == n_head - len(dead)
    assert attn.proj.in_features == attn.n_head * hs
    assert attn.qkv.out_features == (attn.n_head + 2 * attn.n_kv_head) * hs
    torch.testing.assert_close(logits(model, ids), ref, rtol=1e-5, atol=1e-5)


def test_the_lowest_scoring_units_go_not_others():
    """Pruning live units changes the logits (so the tests above can fail), and removes the
    lowest scores: a channel scaled far down goes first."""
    model = tiny_gpt()
    with torch.no_grad():
        for b in model.transformer.blocks:
            b.mlp.proj.weight[:, 9] *= 1e-3
    ids = torch.randint(0, VOCAB, (1, 9))
    ref = logits(model, ids)
    twin = copy.deepcopy(model)
    w = model.transformer.blocks[0].mlp.fc.weight.detach().clone()
    prune.prune_mlp(model, 1 / 128)
    assert torch.equal(model.transformer.blocks[0].mlp.fc.weight, torch.cat((w[:9], w[10:])))
    prune.prune_mlp(twin, 0.3)
    assert not torch.allclose(logits(twin, ids), ref, atol=1e-3)


def test_pruned_model_is_smaller_saves_reloads_and_generates(tmp_path):
    model = tiny_gpt(n_kv_head=2)
    n = sum(p.numel() for p in model.parameters())
    prune.prune_heads(model, 0.5)
    prune.prune_mlp(model, 0.25)
    assert sum(p.numel() for p in model.parameters()) < n - 2 * (32 * 32 + 2 * 32 * 32)
    save_model(model, tmp_path)
    again = plait.load(tmp_path)
    assert again.config == model.config and again.config.n_kv_head == 1
    ids = torch.randint(0, VOCAB, (2, 6))
    torch.testing.assert_close(logits(again, ids), logits(model, ids), rtol=0, atol=0)
    out = again.generate(ids, max_new_tokens=5)
    assert out.shape == (2, 11) and torch.equal(out, model.generate(ids, max_new_tokens=5))


def test_magnitude_pruning_zeroes_the_smallest_and_keeps_shapes():
    model = tiny_gpt()
    lins = prune.block_linears(model)
    shapes = [lin.weight.shape for lin in lins]
    smallest = min(lin.weight.abs().min() for lin in lins)
    largest = max(lin.weight.abs().max() for lin in lins)
    zeroed = prune.magnitude_prune(lins, 0.5)
    total = sum(lin.weight.numel() for lin in lins)
    assert zeroed == total // 2 and prune.sparsity(lins) == pytest.approx(0.5, abs=1 / total)
    assert [lin.weight.shape for lin in lins] == shapes
    assert max(lin.weight.abs().max() for lin in lins) == largest and smallest != 0
    kept = torch.cat([lin.weight[lin.weight != 0].abs() for lin in lins])
    assert kept.min() > 0 and model.lm_head.weight.ne(0).all()
    prune.magnitude_prune(prune.mlp_linears(model), 0.8, per_layer=True)
    for lin in prune.mlp_linears(model):
        assert prune.sparsity([lin]) == pytest.approx(0.8, abs=1e-3)


def test_refusals_name_the_problem():
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match=f"strictly between 0 and 1.*got {bad}"):
            prune.prune_mlp(tiny_gpt(), bad)
    with pytest.raises(ValueError, match="removes none"):
        prune.prune_heads(tiny_gpt(), 0.1)
    with pytest.raises(ValueError, match="ALiBi positions"):
        prune.prune_heads(tiny_gpt(pos_encoding="alibi"), 0.25)
    quant = plait.nn.quantize(tiny_gpt(), "int8")
    with pytest.raises(ValueError, match="Int8Linear layers cannot be pruned"):
        prune.prune_mlp(quant, 0.25)


def test_the_cli_prunes_a_folder_and_refuses_bad_amounts(tmp_path, capsys):
    from plait.text import CharTokenizer

    tok = CharTokenizer.train("abcdefgh \n")
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_model(tiny_gpt(vocab_size=tok.vocab_size), src)
    tok.save(src)
    assert main(["prune", "--model", str(src), "--out", str(dst), "--mlp", "0.3",
                 "--heads", "0.25", "--magnitude", "0.2"]) == 0
    assert "wrote" in capsys.readouterr().out
    model = plait.load(dst)
    assert model.config.n_inner == 128 - 38 and model.config.n_head == 3
    assert prune.sparsity(prune.block_linears(model)) >= 0.2
    assert (dst / "tokenizer.json").is_file()
    for args in (["--mlp", "1.0"], ["--heads", "0"], ["--magnitude", "-0.5"], []):
        code = main(["prune", "--model", str(src), "--out", str(tmp_path / "x"), *args])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("plait prune: error:"), err
    assert "--mlp must be a fraction strictly between 0 and 1" in main_err(
        capsys, ["--mlp", "1.0"], src, tmp_path)
    assert main(["prune", "--model", str(tmp_path / "nope"), "--out", str(dst), "--mlp",
                 "0.3"]) == 2
    assert "model folder not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def main_err(capsys, args, src, tmp_path) -> str:
    main(["prune", "--model", str(src), "--out", str(tmp_path / "x"), *args])
    return capsys.readouterr().err


def test_the_speed_benchmark_runs_small(capsys):
    from benchmarks import prune_speed

    prune_speed.main(["--small", "--reps", "1", "--tokens", "16", "--new-tokens", "2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == 4 and rows[0].startswith("| dense |")
    params = [int(r.split("|")[2].replace(",", "")) for r in rows]
    assert params[0] > params[1] > params[2] and params[3] == params[0]


def test_the_sweep_writes_its_table_and_plot(tmp_path):
    from experiments import prune_sweep
    from plait.data.tokens import prepare_text
    from plait.text import load_tokenizer

    (tmp_path / "t.txt").write_text("to be or not to be, that is the question.\n" * 40)
    prepare_text(tmp_path / "t.txt", tmp_path / "data", log=lambda s: None)
    tok = load_tokenizer(tmp_path / "data")
    save_model(tiny_gpt(vocab_size=tok.vocab_size, block_size=32), tmp_path / "model")
    rows = prune_sweep.main(["--model", str(tmp_path / "model"), "--data",
                             str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--small"])
    assert [r["amount"] for r in rows] == [0.0, 0.3, 0.6]
    assert rows[0]["structured"] == rows[0]["magnitude"] and rows[2]["params"] < rows[0]["params"]
    assert rows[2]["structured"] != rows[0]["structured"]
    assert (tmp_path / "out" / "prune_sweep.png").stat().st_size > 1000
    assert "| 30% |" in (tmp_path / "out" / "prune_sweep.md").read_text()
    from argparse import Namespace

    from benchmarks import prune_speed

    line = prune_speed.ppl(Namespace(ppl_model=tmp_path / "model", ppl_data=tmp_path / "data"))
    assert line[0].count("(+") + line[0].count("(-") == 4 and "dense: " in line[0]
