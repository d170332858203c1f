"""The question before the image (``VLMConfig.question_first``): one prompt layout for
training, ``VisionAsker``, attention maps and the server, and image tokens that read it."""

from __future__ import annotations

import base64
import io

import pytest
import torch
from PIL import Image

from plait.data.scenes import scene_at
from plait.inference.vlm import VisionAsker, prompt_ids
from plait.models.vlm import VLM, VLMConfig
from plait.training.distributed import Dist
from plait.training.tasks.vlm import scene_tokenizer
from plait.vision import ImageConfig

T = scene_tokenizer()
IMG = T.specials.index("<image>")


def vlm(**kw) -> VLM:
    torch.manual_seed(0)
    vision = dict(kind="segmenter", image_size=48, n_embd=8,
                  vision=dict(patch_size=8, n_layer=1, n_head=2, n_embd=16))
    text = dict(vocab_size=T.vocab_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                block_size=96, pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    config = dict(vision=vision, text=text, image_token_id=IMG, pixel_shuffle=2,
                  projector="linear", image_positions="learned", feature_groups=[7, 4],
                  image_attention="bidirectional") | kw
    return VLM(VLMConfig(**config)).eval()


def noisy(m: VLM) -> VLM:
    """Large random weights: what such a model writes depends on what it reads."""
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    return m


def test_the_question_comes_before_the_image_tokens():
    q = "What colour is the star?"
    words = T.encode("what colour is the star? ")
    first = prompt_ids(T, q, 4, question_first=True)
    assert first == [T.bos_token_id, *words, *[IMG] * 4, *T.encode("\n")]
    assert prompt_ids(T, q, 4) == [T.bos_token_id, *[IMG] * 4, *T.encode("what colour is the"
                                                                         " star?\n")]
    two = prompt_ids(T, q, 4, n_images=2, question_first=True)
    assert two[len(words) + 1:len(words) + 9] == [IMG] * 8
    placed = "compare <image> and <image>"  # a question that places its images keeps them
    assert prompt_ids(T, placed, 4, 2, question_first=True) == prompt_ids(T, placed, 4, 2)
    assert prompt_ids(T, q, 4, 0, question_first=True) == prompt_ids(T, q, 4, 0)  # text alone
    assert VLMConfig.from_dict(vlm(question_first=True).config.to_dict()).question_first


def _image_states(m: VLM, question: str, px: torch.Tensor, first: bool) -> torch.Tensor:
    seen = []
    hook = m.decoder.transformer.norm.register_forward_hook(
        lambda _m, args, _o: seen.append(args[0]))
    ids = torch.tensor([prompt_ids(T, question, m.config.tokens_per_image,
                                   question_first=first)])
    with torch.no_grad():
        m(ids, px)
    hook.remove()
    return seen[0][ids == IMG]


def test_image_tokens_read_the_question_only_when_it_comes_first():
    px = torch.randn(1, 3, 48, 48)
    m = vlm(question_first=True)
    a = _image_states(m, "what colour is the star?", px, True)
    b = _image_states(m, "what colour is the square?", px, True)
    assert a.shape == (18, 32) and not torch.allclose(a, b)
    plain = vlm()  # LLaVA's layout: the image before the question cannot read it
    torch.testing.assert_close(_image_states(plain, "what colour is the star?", px, False),
                               _image_states(plain, "what colour is the square?", px, False))


def test_the_asker_and_the_attention_map_use_the_models_layout():
    from plait.inference.attention_map import word_maps

    m = noisy(vlm(question_first=True))
    asker = VisionAsker(m, T, ImageConfig(size=48, crop_size=48))
    image = scene_at(3, "heldout").render(48)
    q = "what colour is the star?"
    row = prompt_ids(T, q, 18, question_first=True)
    want = asker._generate([row], asker.pixels([image]), 5, 1)
    assert asker.ask([image], [q], max_new_tokens=5) == want
    assert asker.ask_one([image], q, max_new_tokens=5) == want[0]
    other = asker._generate([prompt_ids(T, q, 18)], asker.pixels([image]), 5, 1)
    assert want != other  # the two layouts are different prompts
    maps = word_maps(asker, image, q, "red and blue")
    assert [w for w, _ in maps] == ["red", "and", "blue"]
    assert all(g.shape == (3, 3) and 0 < float(g.sum()) <= 1 + 1e-5 for _, g in maps)


def test_training_rows_put_the_question_first_when_the_model_does(tmp_path):
    from plait.training import TASKS, TrainConfig

    cls = TASKS.get("scenes-vqa")
    task = cls(cls.data_config(n_train=16, batch_size=8, caption_share=0.5),
               TrainConfig(out_dir=str(tmp_path), device="cpu"), Dist())
    config = task.model_config(vlm(question_first=True).config)
    assert task.question_first and task.n_image_tokens == 18
    ids = task.train_batch(0, 0)["input_ids"]
    for row in ids.tolist():
        at = row.index(IMG)
        assert T.bos_token_id in row[:at] and len(row[row.index(T.bos_token_id):at]) > 3
        assert row[at:at + 18] == [IMG] * 18
    task.model_config(config.replace(question_first=False))
    assert task.train_batch(0, 0)["input_ids"][0].tolist().index(IMG) <= (
        ids[0].tolist().index(T.bos_token_id) + 1)


def test_the_server_asks_in_the_models_layout(tmp_path):
    openai = pytest.importorskip("openai")
    from helpers import LiveServer

    from plait.checkpoint import save_model
    from plait.serving.app import Server, create_app
    from plait.serving.backends import Limits, load_generator
    from plait.vision.image import write_preprocessor_config

    folder = tmp_path / "qfirst"
    save_model(noisy(vlm(question_first=True)), folder)
    T.save(folder)
    write_preprocessor_config(folder, ImageConfig(size=48, crop_size=48))
    buf = io.BytesIO()
    scene_at(2, "heldout").render(48).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    q = "what colour is the star?"
    asker = VisionAsker.from_folder(folder)
    want = asker.ask([Image.open(io.BytesIO(buf.getvalue()))], [q], max_new_tokens=8)[0]
    limits = Limits(max_batch=2)
    server = Server(generators=[load_generator(folder, limits)], limits=limits)
    try:
        with LiveServer(create_app(server)) as srv:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
            content = [{"type": "text", "text": q},
                       {"type": "image_url", "image_url": {"url": url}}]
            r = client.chat.completions.create(model="qfirst", max_tokens=8, temperature=0,
                                               messages=[{"role": "user", "content": content}])
    finally:
        server.close()
    assert r.choices[0].message.content.strip() == want


def test_the_held_out_loss_reads_one_turn_a_row_as_training_does(tmp_path):
    from plait.training import TASKS, TrainConfig

    cls = TASKS.get("scenes-vqa")
    task = cls(cls.data_config(n_train=4, n_eval=3), TrainConfig(out_dir=str(tmp_path)), Dist())
    m = vlm(question_first=True)
    task.model_config(m.config)
    seen: list[list] = []
    batch = task.batch
    task.batch = lambda images, turns: (seen.extend(turns), batch(images, turns))[1]
    with torch.no_grad():
        out = task.evaluate(m, torch.device("cpu"), None)
    held = task.heldout(3)[0]
    assert all(len(t) == 1 for t in seen)  # never a question after an earlier answer
    assert len(seen) == sum(1 + len(s.qa) for s in held) and out["loss"] > 0
