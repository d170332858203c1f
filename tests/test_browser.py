"""The web playground in a real browser (Debian's chromium, driven by Playwright): a typed
message's answer arrives piece by piece, an uploaded image gets an answer from the
vision-language model, a text search shows the index's images, and a server error is shown
as its message. ``make test`` installs chromium (``make system-deps``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import LiveServer
from PIL import Image
from test_serving import slowed, vlm_folder

from plait.checkpoint import save_model
from plait.cli.main import main
from plait.inference import TextGenerator
from plait.serving.app import Server, create_app
from plait.serving.backends import Limits, load_generator, load_search

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make"
                                " system-deps installs it)")
# what the machine's closed network needs: no background connections, no sandbox as root
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def clip_index(root: Path) -> Path:
    from plait.models.clip import CLIP, CLIPConfig
    from plait.text import CharTokenizer
    from plait.vision import ImageConfig
    from plait.vision.image import write_preprocessor_config

    folder = root / "tinyclip"
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz ", specials=("<pad>", "<s>", "</s>"))
    torch.manual_seed(0)
    save_model(CLIP(CLIPConfig(
        vision={"kind": "vit", "image_size": 16, "patch_size": 8, "n_layer": 1, "n_head": 2,
                "n_embd": 32},
        text={"kind": "transformer", "vocab_size": tok.vocab_size, "n_layer": 1, "n_head": 2,
              "n_embd": 32, "block_size": 32, "pool": "last"}, embed_dim=16)), folder)
    tok.save(folder)
    write_preprocessor_config(folder, ImageConfig(size=16, crop_size=16))
    pictures = root / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            pictures / f"p{i}.png")
    index = root / "pictures.faiss"
    assert main(["index", "--model", str(folder), str(pictures), "--out", str(index),
                 "--quiet"]) == 0
    return index


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from test_serving import gpt_folder

    root = tmp_path_factory.mktemp("browser")
    limits = Limits(max_batch=4)
    gpt = gpt_folder(root)
    # a pause in each step, so the answer really arrives over many network reads
    server = Server(generators=[slowed(gpt, 0.02, limits), load_generator(vlm_folder(root),
                                                                          limits)],
                    search=load_search(clip_index(root)), limits=limits)
    Image.new("RGB", (32, 32), (30, 200, 30)).save(root / "green.png")
    with LiveServer(create_app(server)) as srv:
        srv.root, srv.gpt = root, gpt
        yield srv
    server.close()


@pytest.fixture(scope="module")
def page(site):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(site.url + "/")
        page.wait_for_function("document.querySelectorAll('#model option').length == 2")
        yield page
        browser.close()


def test_a_typed_message_streams_its_answer_piece_by_piece(site, page):
    page.evaluate("""() => {
        window.seen = [];  // every text the answer showed, in order
        new MutationObserver(() => {
            const a = document.querySelector('[data-testid=assistant] span');
            if (a) window.seen.push(a.textContent);
        }).observe(document.getElementById('log'),
                   {subtree: true, childList: true, characterData: true});
    }""")
    page.select_option("#model", "tinygpt")
    page.fill("#max-tokens", "40")
    page.fill("#prompt", "hello")
    page.click("[data-testid=send]")
    page.wait_for_function("!document.getElementById('send').disabled", timeout=30_000)
    answer = page.inner_text("[data-testid=assistant]")
    want = TextGenerator.from_folder(site.gpt).generate(
        "user: hello\nassistant:", max_new_tokens=40, stop=["\nuser:", "\nsystem:",
                                                            "\nassistant:"])
    assert answer == want.strip() or answer == want
    seen = [s for s in page.evaluate("window.seen") if s]
    assert len(set(seen)) >= 5, seen  # many partial texts: it streamed
    assert all(b.startswith(a) for a, b in zip(seen, seen[1:], strict=False))
    assert page.inner_text("[data-testid=chat-error]") == ""


def test_an_uploaded_image_gets_an_answer(site, page):
    page.click("#clear")
    page.select_option("#model", "tinyvlm")
    page.set_input_files("[data-testid=image]", str(site.root / "green.png"))
    page.wait_for_selector("#preview img")
    page.fill("#prompt", "what colour is it?")
    page.click("[data-testid=send]")
    page.wait_for_function("!document.getElementById('send').disabled", timeout=30_000)
    assert page.inner_text("[data-testid=chat-error]") == ""
    assert page.locator("[data-testid=user] img").count() == 1
    assert page.locator("[data-testid=assistant]").count() == 1
    page.screenshot(path=str(site.root / "chat.png"))


def test_a_text_search_shows_the_index_images(site, page):
    page.fill("[data-testid=query]", "a red circle")
    page.click("[data-testid=search-button]")
    page.wait_for_selector("[data-testid=hit]")
    hits = page.locator("[data-testid=hit]")
    assert hits.count() == 4
    assert page.locator("[data-testid=hit] img").first.evaluate("i => i.naturalWidth") == 16


def test_a_server_error_is_shown_as_its_message(site, page):
    page.click("#clear")
    page.select_option("#model", "tinyvlm")  # a VLM needs an image: a 400 with a message
    page.fill("#prompt", "no picture here")
    page.click("[data-testid=send]")
    page.wait_for_function("document.getElementById('chat-error').textContent.length > 0")
    assert "attach one" in page.inner_text("[data-testid=chat-error]")
    assert page.locator("[data-testid=assistant]").count() == 0
