"""The faiss index against brute-force cosine; retrieval metrics by hand; the index / search /
zero-shot / eval commands on a tiny random CLIP, including every kind of bad image file."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from plait.checkpoint import save_model
from plait.cli.main import main
from plait.evaluation.index import SearchIndex
from plait.evaluation.retrieval import (
    image_to_text_recall,
    text_to_image_recall,
    zero_shot_probs,
    zero_shot_weights,
)
from plait.training.tasks.clip import caption_tokenizer
from plait.vision import ImageConfig, write_preprocessor_config


def test_faiss_top_k_equals_brute_force_cosine():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(200, 24)).astype(np.float32)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    index = SearchIndex.build(unit, [f"f{i}" for i in range(200)], "m")
    for q in rng.normal(size=(5, 24)).astype(np.float32):
        cos = raw @ q / (np.linalg.norm(raw, axis=1) * np.linalg.norm(q))  # brute force
        want = np.argsort(-cos)[:10]
        got = index.search(q / np.linalg.norm(q), 10)
        assert [f for f, _ in got] == [f"f{i}" for i in want]
        np.testing.assert_allclose([s for _, s in got], cos[want], atol=1e-5)


def test_recall_conventions_by_hand():
    # 3 images; captions 0,1 -> image 0, caption 2 -> image 1, caption 3 -> image 2
    owner = torch.tensor([0, 0, 1, 2])
    sim = torch.tensor([[0.9, 0.1, 0.0],    # caption 0: image 0 first        (hit@1)
                        [0.2, 0.8, 0.1],    # caption 1: image 0 second       (hit@2)
                        [0.1, 0.7, 0.3],    # caption 2: image 1 first        (hit@1)
                        [0.5, 0.6, 0.4]])   # caption 3: image 2 third        (hit@3)
    t2i = text_to_image_recall(sim, owner, ks=(1, 2, 3))
    assert t2i == {1: 0.5, 2: 0.75, 3: 1.0}
    # image 0's best caption is 0 (own), image 1's is caption 1 (not own) then 2 (own),
    # image 2's ranking is 3 (own): ANY own caption counts
    i2t = image_to_text_recall(sim, owner, ks=(1, 2))
    assert i2t == pytest.approx({1: 2 / 3, 2: 1.0})


def test_zero_shot_ensemble_by_hand():
    e = torch.tensor([[[1.0, 0.0], [0.0, 2.0]],      # class 0: two prompts
                      [[-1.0, 0.0], [-1.0, 0.0]]])   # class 1
    w = zero_shot_weights(e)
    torch.testing.assert_close(w[0], torch.tensor([0.5, 0.5]) / 0.5 ** 0.5)
    p = zero_shot_probs(torch.tensor([[1.0, 1.0]]), w, 10.0)
    torch.testing.assert_close(p.sum(-1), torch.ones(1))
    assert p[0, 0] > 0.99


# -- the commands on a tiny random CLIP -----------------------------------------------------
@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from plait.models.clip import CLIP, CLIPConfig

    folder = tmp_path_factory.mktemp("clip")
    tok = caption_tokenizer(["a red circle", "a blue square", "a photo of a cat or dog"])
    torch.manual_seed(0)
    model = CLIP(CLIPConfig(
        vision={"kind": "vit", "image_size": 16, "patch_size": 8, "n_layer": 1, "n_head": 2,
                "n_embd": 32},
        text={"kind": "transformer", "vocab_size": tok.vocab_size, "n_layer": 1, "n_head": 2,
              "n_embd": 32, "block_size": 16, "pool": "last"},
        embed_dim=16))
    save_model(model, folder)
    tok.save(folder)
    write_preprocessor_config(folder, ImageConfig(size=16, crop_size=16))
    return folder


def bomb_png(path) -> None:
    """A 1x1 PNG whose header claims 10000 x 10000 (100 MP)."""
    Image.new("RGB", (1, 1)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 10_000, 10_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        arr = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"good{i}.png")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(folder / "g.jpg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "readme.txt").write_text("hello")
    (folder / "fake.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"junk" * 10)
    jpg = (folder / "g.jpg").read_bytes()
    (folder / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    bomb_png(folder / "huge.png")
    return folder


def test_index_skips_bad_files_and_search_finds(clip_dir, images, tmp_path, capsys):
    out = tmp_path / "idx.faiss"
    assert main(["index", "--model", str(clip_dir), str(images), "--out", str(out),
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    for bad in ("empty.png", "readme.txt", "fake.jpg", "trunc.jpg", "huge.png"):
        assert sum(bad in w for w in warnings) == 1, (bad, warnings)
    assert "indexed 6 images (5 skipped)" in captured.out
    index = SearchIndex.load(out)
    assert sorted(f.split("/")[-1] for f in index.files) == [
        "g.jpg", "good0.png", "good1.png", "good2.png", "good3.png", "good4.png"]

    assert main(["search", str(out), "a red circle", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(len(line.split()) == 2 for line in lines)
    grid = tmp_path / "grid.png"
    assert main(["search", str(out), "--image", str(images / "good2.png"), "-k", "2",
                 "--grid", str(grid)]) == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert first[1].endswith("good2.png") and float(first[0]) == pytest.approx(1.0, abs=1e-4)
    assert Image.open(grid).size == (2 * (128 + 4), 128 + 16)


def test_index_empty_folder_exits_2(clip_dir, tmp_path, capsys):
    (tmp_path / "none").mkdir()
    code = main(["index", "--model", str(clip_dir), str(tmp_path / "none"), "--out",
                 str(tmp_path / "x.faiss")])
    assert code == 2 and "no files in" in capsys.readouterr().err


def test_search_errors_are_one_line(tmp_path, capsys):
    assert main(["search", str(tmp_path / "missing.faiss"), "cat"]) == 2
    assert "index not found" in capsys.readouterr().err


def test_zero_shot_and_eval_commands(clip_dir, images, capsys):
    assert main(["zero-shot", "--model", str(clip_dir), str(images / "good0.png"),
                 str(images / "good1.png"), "--labels", "cat,dog"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    probs = [float(x.split()[-1]) for x in lines[0].split(": ")[1].split(", ")]
    assert sum(probs) == pytest.approx(1.0, abs=2e-3)
    assert main(["eval", "--model", str(clip_dir), "--task", "clip-digits"]) == 0
    assert "zero_shot_acc" in capsys.readouterr().out


def test_index_with_a_hugging_face_clip_folder(tmp_path, images, capsys):
    """`plait index --model HF_DIR`: preprocessing from preprocessor_config.json; the stored
    vectors equal transformers' normalised image features on its own processor's pixels."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config={"vocab_size": 50, "hidden_size": 32, "intermediate_size": 40,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 24, "patch_size": 8},
        projection_dim=16)
    ref = transformers.CLIPModel(cfg).eval()
    hf_dir = tmp_path / "hf"
    ref.save_pretrained(hf_dir)
    proc = transformers.CLIPImageProcessorPil(size={"shortest_edge": 24},
                                              crop_size={"height": 24, "width": 24})
    proc.save_pretrained(hf_dir)
    out = tmp_path / "hf.faiss"
    assert main(["index", "--model", str(hf_dir), str(images), "--out", str(out),
                 "--quiet"]) == 0
    index = SearchIndex.load(out)
    good = [f for f in index.files if "good" in f]
    pixels = proc([Image.open(f).convert("RGB") for f in good],
                  return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        feats = ref.get_image_features(pixel_values=pixels)
    feats = getattr(feats, "pooler_output", feats)
    want = torch.nn.functional.normalize(feats, dim=-1).numpy()
    rows = [index.files.index(f) for f in good]
    got = index.index.reconstruct_n(0, index.index.ntotal)[rows]
    np.testing.assert_allclose(got, want, atol=1e-4)
