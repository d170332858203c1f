"""Screenshots of the web playground with trained models, for docs/serving.md.

    .venv/bin/python experiments/playground_shots.py --chat runs/chat --vlm runs/vlm_scenes \
        --index runs/scenes.faiss --image scene.png --out docs/img
    .venv/bin/python experiments/playground_shots.py --chat runs/chat     # the chat alone

Starts ``plait serve`` on a free loopback port with the given folders, opens the page in
headless Chromium (Playwright), asks the chat model a few questions, searches the index (with
``--index``), asks the VLM about ``--image`` (with ``--vlm``), and writes
``playground_chat.png`` (and ``playground_image.png``) into ``--out``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ask(page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("[data-testid=send]")
    page.wait_for_function("!document.getElementById('send').disabled", timeout=120_000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chat", type=Path, required=True)
    ap.add_argument("--vlm", type=Path, help="a vision-language model (with --image)")
    ap.add_argument("--index", type=Path, help="an image index to search")
    ap.add_argument("--image", type=Path, help="the picture to ask the VLM about")
    ap.add_argument("--questions", nargs="+",
                    default=["what is 128 plus 256?", "and in words?"])
    ap.add_argument("--image-question", default="how many shapes are there?")
    ap.add_argument("--query", default="a red circle and a blue square")
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "plait.cli.main", "serve", "--model", str(args.chat),
           "--port", str(port)]
    cmd += ["--model", str(args.vlm)] if args.vlm else []
    cmd += ["--index", str(args.index)] if args.index else []
    server = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        with sync_playwright() as p:
            chromium = shutil.which("chromium") or "chromium"
            browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.goto(url + "/")
            page.wait_for_function("document.querySelectorAll('#model option').length > 0")
            page.select_option("#model", args.chat.name)
            for q in args.questions:
                ask(page, q)
            if args.index:
                page.fill("[data-testid=query]", args.query)
                page.click("[data-testid=search-button]")
                page.wait_for_selector("[data-testid=hit]")
            args.out.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out / "playground_chat.png"))
            if not (args.vlm and args.image):
                browser.close()
                return 0
            page.click("#clear")
            page.select_option("#model", args.vlm.name)
            page.set_input_files("[data-testid=image]", str(args.image))
            page.wait_for_selector("#preview img")
            ask(page, args.image_question)
            page.screenshot(path=str(args.out / "playground_image.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        print(f"screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
