"""LoRA (plait.nn.lora, plait.hf.peft, [lora] recipes): a new adapter changes nothing, only
adapters train, merge equals the unmerged forward and unmerge restores the weights, adapters
read and written in peft's format give peft's outputs (GPT-2 and Llama, both directions), a
recipe's run folder is a peft adapter plait.load reads back, and every mistake is one line."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch
from helpers import randomize

import plait
from plait.checkpoint import unique_state_dict
from plait.cli.main import main
from plait.hf import convert_folder, export
from plait.hf.peft import apply_adapter, lora_parts, save_adapter
from plait.io import read_safetensors
from plait.models import GPT, GPTConfig
from plait.nn.lora import LoRALinear, add_lora, lora_modules, merge, unmerge
from plait.training import recipe_from_dict, train

ATOL = 1e-5  # fp32, against peft
LLAMA = dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=1,
             n_inner=48, tie_embeddings=False)


def tiny_gpt(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(**{"vocab_size": 50, "n_layer": 2, "n_head": 4, "n_embd": 32,
                       "block_size": 16, **kw})
    return randomize(GPT(cfg)).eval()


def randomize_adapters(model: torch.nn.Module, std: float = 0.1, seed: int = 1) -> None:
    """Non-zero A and B everywhere (a new B is zero, which would hide any mistake)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def ids(vocab: int = 50, B: int = 3, T: int = 9) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("layout", [{}, LLAMA], ids=["gpt2", "llama"])
def test_a_new_adapter_changes_nothing_and_starts_as_peft_does(layout):
    model = tiny_gpt(**layout)
    x = ids()
    with torch.no_grad():
        before = model(x)
        add_lora(model, rank=4, targets=["qkv", "attn.proj", "fc"], parts=lora_parts(model))
        after = model(x)
    assert torch.equal(before, after)
    for lora in lora_modules(model).values():
        bound = 1 / lora.base.in_features ** 0.5  # kaiming-uniform, a = sqrt(5)
        assert lora.lora_A.abs().max() <= bound and lora.lora_A.std() > bound / 3
        assert not lora.lora_B.any()


def test_only_the_adapters_train():
    model = tiny_gpt(**LLAMA).train()
    add_lora(model, rank=2, alpha=4.0, targets=["qkv", "attn.proj"], parts=lora_parts(model))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"transformer.blocks.{i}.attn.{m}.lora_{ab}" for i in range(2)
                         for m in ("qkv", "proj") for ab in "AB"}
    qkv = model.transformer.blocks[0].attn.qkv
    assert qkv.parts == (32, 8, 8) and qkv.lora_A.shape == (3 * 2, 32)  # q, k, v: one each
    assert qkv.scale == 2.0
    frozen = {k: v.clone() for k, v in unique_state_dict(model).items() if "lora_" not in k}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        model(ids()).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(v, unique_state_dict(model)[k]) for k, v in frozen.items())
    assert qkv.lora_B.any()


def test_each_slice_gets_only_its_own_update():
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 12)
    lora = LoRALinear(base, rank=2, scale=0.5, parts=(8, 2, 2))
    randomize_adapters(lora)
    x = torch.randn(4, 16)
    A, B = lora.lora_A.split(2), lora.lora_B.split((8, 2, 2))
    naive = torch.cat([x @ a.T @ b.T for a, b in zip(A, B, strict=True)], dim=-1)
    torch.testing.assert_close(lora(x), base(x) + 0.5 * naive)
    torch.testing.assert_close(lora.delta(), 0.5 * torch.block_diag(*B) @ torch.cat(A))


@pytest.mark.parametrize("layout", [{}, LLAMA], ids=["gpt2", "llama"])
def test_merge_equals_the_adapted_forward_and_unmerge_restores_the_weights(layout, tmp_path):
    plain = tiny_gpt(**layout)
    keys = list(plain.state_dict())
    weights = {k: v.clone() for k, v in plain.state_dict().items()}
    model = tiny_gpt(**layout)
    add_lora(model, rank=4, dropout=0.1, targets=["qkv", "proj", "fc"], parts=lora_parts(model))
    randomize_adapters(model)
    x = ids()
    with torch.no_grad():
        adapted = model(x)
        adapters = merge(model)
        torch.testing.assert_close(model(x), adapted, atol=ATOL, rtol=0)
    assert not lora_modules(model) and list(model.state_dict()) == keys  # no LoRA keys left
    plait.save_model(model, tmp_path / "merged")
    export(model, tmp_path / "hf")
    for folder in ("merged", "hf"):
        with torch.no_grad():
            torch.testing.assert_close(plait.load(tmp_path / folder)(x), adapted, atol=ATOL,
                                       rtol=0)
    unmerge(model, adapters)
    assert set(lora_modules(model)) == set(adapters)
    for k, v in weights.items():
        torch.testing.assert_close(unique_state_dict(model).get(k, v), v, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), adapted, atol=ATOL, rtol=0)


# -- peft parity ----------------------------------------------------------------------------
try:  # both are in requirements.lock; without them only the tests against peft are skipped
    import peft
    import transformers
except ImportError:
    peft = transformers = None
needs_peft = pytest.mark.skipif(peft is None, reason="needs peft and transformers")

FAMILIES = {  # name: (make the transformers model, peft's target_modules, plait's targets)
    "gpt2": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4)),
        ["c_attn", "attn.c_proj", "c_fc"], ["qkv", "attn.proj", "fc"]),
    "llama": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)),
        ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj"], ["qkv", "proj", "fc"]),
}


def hf_base(folder, family: str):
    """A random tiny transformers model saved to ``folder``, read back from it (so peft records
    the folder as the base)."""
    torch.manual_seed(0)
    randomize(FAMILIES[family][0](), std=0.2).save_pretrained(folder)
    return transformers.AutoModelForCausalLM.from_pretrained(folder).eval()


def logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return getattr(out, "logits", out)


@needs_peft
@pytest.mark.parametrize("family", list(FAMILIES))
def test_peft_adapters_load_with_peft_outputs(family, tmp_path):
    ref = peft.get_peft_model(hf_base(tmp_path / "base", family), peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.1, target_modules=FAMILIES[family][1],
        task_type="CAUSAL_LM"))
    randomize_adapters(ref)
    ref.save_pretrained(tmp_path / "adapter")
    model = plait.load(tmp_path / "adapter")
    assert isinstance(model, GPT) and not model.training and lora_modules(model)
    x = ids()
    torch.testing.assert_close(logits(model, x), logits(ref.eval(), x), atol=ATOL, rtol=0)


@needs_peft
def test_an_adapter_on_a_bare_gpt2model_reads_too(tmp_path):
    """peft on GPT2Model names modules without "transformer."; plait's key map has it."""
    torch.manual_seed(0)
    randomize(FAMILIES["gpt2"][0]().transformer, std=0.2).save_pretrained(tmp_path / "base")
    bare = transformers.GPT2Model.from_pretrained(tmp_path / "base").eval()
    ref = peft.get_peft_model(bare, peft.LoraConfig(r=2, target_modules=["c_attn"]))
    randomize_adapters(ref)
    ref.save_pretrained(tmp_path / "adapter")
    x = ids()
    with torch.no_grad():  # a bare model's plait twin has its head tied to the token table
        want = ref.eval()(x).last_hidden_state @ bare.wte.weight.T
    torch.testing.assert_close(logits(plait.load(tmp_path / "adapter"), x), want, atol=ATOL,
                               rtol=0)


@needs_peft
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("split", [True, False], ids=["per-module", "one-over-fused"])
def test_plait_adapters_load_in_peft_with_equal_outputs(family, split, tmp_path):
    hf_base(tmp_path / "base", family)
    model = plait.load(tmp_path / "base")
    add_lora(model, rank=3, alpha=6.0, targets=FAMILIES[family][2],
             parts=lora_parts(model) if split else None)
    randomize_adapters(model)
    save_adapter(model, tmp_path / "adapter", str(tmp_path / "base"))
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["task_type"], cfg["r"], cfg["lora_alpha"]) == (
        "LORA", "CAUSAL_LM", 3, 6)
    want = {"gpt2": ["attn.c_proj", "c_attn", "c_fc"],
            "llama": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                      "v_proj"]}[family]
    assert cfg["target_modules"] == want and cfg["base_model_name_or_path"] == str(
        tmp_path / "base")
    ref = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base"),
        tmp_path / "adapter").eval()
    x = ids()
    torch.testing.assert_close(logits(ref, x), logits(model.eval(), x), atol=ATOL, rtol=0)
    again = apply_adapter(plait.load(tmp_path / "base"), tmp_path / "adapter")
    torch.testing.assert_close(logits(again, x), logits(model, x), atol=ATOL, rtol=0)


@needs_peft
def test_an_adapter_for_another_base_is_refused_by_name(tmp_path):
    hf_base(tmp_path / "gpt2", "gpt2")
    hf_base(tmp_path / "llama", "llama")
    model = plait.load(tmp_path / "llama")
    add_lora(model, rank=2, targets=["qkv"], parts=lora_parts(model))
    save_adapter(model, tmp_path / "adapter", str(tmp_path / "llama"))
    with pytest.raises(ValueError, match=r"adapts 'model\.layers\.0\.self_attn\.[qkv]_proj'"):
        apply_adapter(plait.load(tmp_path / "gpt2"), tmp_path / "adapter")
    wider = plait.load(tmp_path / "llama")
    wider = type(wider)(wider.config.replace(n_embd=48))
    with pytest.raises(ValueError, match=r"lora_A.weight' has shape \(2, 32\).*\(2, 48\)"):
        apply_adapter(wider, tmp_path / "adapter")


# -- recipes and the command line -------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny Llama-layout plait GPT trained for two steps on a char corpus: (data, folder)."""
    from plait.data.tokens import prepare_text

    folder = tmp_path_factory.mktemp("lora")
    rng = random.Random(0)
    words = ["the", "king", "queen", "crown", "night", "speak"]
    (folder / "corpus.txt").write_text("\n".join(
        " ".join(rng.choice(words) for _ in range(8)) + "." for _ in range(300)))
    prepare_text(folder / "corpus.txt", folder / "data", log=lambda _: None)
    train(recipe_from_dict(tree(folder / "data", folder / "base", model=LLAMA)))
    return folder / "data", folder / "base"


def tree(data, out, lora=None, model=None, **train_keys) -> dict:
    t = {"model": {"n_layer": 2, "n_head": 4, "n_embd": 32, "block_size": 16, **(model or {})},
         "data": {"dir": str(data), "batch_size": 4},
         "train": {"out_dir": str(out), "max_steps": 2, "warmup_steps": 1, "lr": 1e-2,
                   "eval_interval": 0, "eval_batches": 1, "threads": 1, "progress": False,
                   "device": "cpu", **train_keys}}
    return {**t, "lora": lora} if lora is not None else t


@needs_peft
def test_a_lora_recipe_writes_an_adapter_that_plait_and_peft_read(base, tmp_path):
    data, base_dir = base
    lora = {"rank": 2, "alpha": 4.0, "dropout": 0.1, "targets": ["qkv", "mlp.proj"]}
    train(recipe_from_dict(tree(data, tmp_path / "ft", lora, init_from=str(base_dir),
                                max_steps=4)))
    files = {p.name for p in (tmp_path / "ft").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= files
    assert not {"config.json", "model.safetensors"} & files  # only the adapters
    model, start = plait.load(tmp_path / "ft"), plait.load(base_dir)
    frozen = {k.replace(".base.", "."): v for k, v in unique_state_dict(model).items()
              if "lora_" not in k}
    assert frozen.keys() == unique_state_dict(start).keys()
    assert all(torch.equal(v, frozen[k]) for k, v in unique_state_dict(start).items())
    assert all(m.lora_B.any() for m in lora_modules(model).values())  # and the adapters trained
    x = ids(vocab=start.config.vocab_size)
    assert (logits(model, x) - logits(start, x)).abs().max() > 1e-4
    convert_folder(base_dir, tmp_path / "hf")  # peft needs a transformers base
    cfg = json.loads((tmp_path / "ft" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base_dir) and cfg["lora_dropout"] == 0.1
    ref = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf"), tmp_path / "ft")
    torch.testing.assert_close(logits(ref.eval(), x), logits(model, x), atol=ATOL, rtol=0)


class Crash(Exception):
    pass


def test_a_lora_run_resumes_bit_for_bit(base, tmp_path):
    """Killed at step 3 (last checkpoint: step 2) and resumed: the adapters of an unbroken run."""
    data, base_dir = base

    def run(out):
        return recipe_from_dict(tree(data, out, {"rank": 2, "dropout": 0.1, "targets": ["qkv"]},
                                     init_from=str(base_dir), max_steps=4, save_interval=2,
                                     log_interval=1))

    def crash_at_3(event):
        if event["event"] == "train" and event["step"] == 3:
            raise Crash

    train(run(tmp_path / "whole"))
    with pytest.raises(Crash):
        train(run(tmp_path / "broken"), callbacks=[crash_at_3])
    train(run(tmp_path / "broken"), resume=True)
    a, b = (read_safetensors(tmp_path / d / "adapter_model.safetensors")
            for d in ("whole", "broken"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def one_line_error(capsys, argv: list[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def lora_recipe(base, tmp_path):
    data, base_dir = base
    path = tmp_path / "lora.toml"
    lines = ['task = "lm"', "[model]", 'n_layer = 2', "[data]", f'dir = "{data}"',
             "batch_size = 4", "[train]", f'out_dir = "{tmp_path / "out"}"',
             f'init_from = "{base_dir}"', "max_steps = 1", "warmup_steps = 0",
             "eval_interval = 0", "eval_batches = 1", "threads = 1", "progress = false",
             "[lora]", "rank = 2", 'targets = ["qkv"]']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_lora_targets_are_one_line(lora_recipe, capsys):
    r = str(lora_recipe)
    one_line_error(capsys, ["train", r, "--lora.targets", "qkv,nope"], "'nope'", "matches no")
    one_line_error(capsys, ["train", r, "--lora.targets", "attn"], "'attn'", "SelfAttention",
                   "not a Linear")
    one_line_error(capsys, ["train", r, "--lora.rank", "0"], "lora.rank")
    one_line_error(capsys, ["train", r, "--train.init_from", ""], "train.init_from")
    one_line_error(capsys, ["train", r, "--model.dropout", "0.2"], "dropout 0.0 -> 0.2")
    out = lora_recipe.parent / "out"
    assert main(["train", r]) == 0
    one_line_error(capsys, ["train", r, "--train.init_from", str(out), "--train.out_dir",
                            str(out.parent / "again")], "is a LoRA adapter")


def test_an_adapter_whose_base_does_not_fit_is_one_line(lora_recipe, base, tmp_path, capsys):
    assert main(["train", str(lora_recipe)]) == 0
    out, cfg_path = tmp_path / "out", tmp_path / "out" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    wider = plait.load(base[1])
    plait.save_model(type(wider)(wider.config.replace(n_embd=48)), tmp_path / "wider")
    argv = ["generate", "--model", str(out), "--prompt", "the", "--max-new-tokens", "2"]
    assert main(argv) == 0  # the adapter folder generates as a model folder does
    relative = os.path.relpath(base[1], out)  # a base named relative to the adapter folder
    cfg_path.write_text(json.dumps({**cfg, "base_model_name_or_path": relative}))
    assert main(argv) == 0
    capsys.readouterr()
    cfg_path.write_text(json.dumps({**cfg, "base_model_name_or_path": str(tmp_path / "wider")}))
    one_line_error(capsys, argv, "lora_A.weight' has shape (2, 32)", "(2, 48)")
    cfg_path.write_text(json.dumps({**cfg, "base_model_name_or_path": "no/such/base"}))
    one_line_error(capsys, argv, "'no/such/base'", "not found")
    cfg_path.write_text(json.dumps({**cfg, "use_dora": True}))
    one_line_error(capsys, argv, "use_dora")
