"""Load on ``plait serve``: one client at a time, then 32 concurrent streaming clients, then
clients that hang up mid-stream; throughput, latency, errors and the server's memory.

    .venv/bin/python -m benchmarks.serve_load                      # GPT-2-sized, 60 s of load
    .venv/bin/python -m benchmarks.serve_load --model runs/chat --clients 32 --seconds 60
    .venv/bin/python -m benchmarks.serve_load --small              # seconds: checks the script

The server is a separate process (``plait serve``) on 127.0.0.1, so the clients (asyncio +
httpx in this process) do not share its interpreter. Without ``--model`` a GPT with GPT-2's
shape (12 x 768, context 1024) and random weights is written first, with a byte-level BPE
tokenizer of 8,192 tokens trained on tiny Shakespeare; random weights decode as fast as
trained ones. Every request streams (``stream_options.include_usage``) a prompt of Shakespeare
for ``--max-tokens`` new tokens, sampled (temperature 1) so no two are alike.

Reported: completion tokens per second of all clients together, requests per second, the p50 /
p99 of time to first token and of whole-request latency, errors (any non-200, a stream
without ``[DONE]``, a transport error), and the server's resident memory (VmRSS) after
warm-up, after the load and after the hang-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TEXT = Path("data/tinyshakespeare.txt")


def write_model(folder: Path, small: bool) -> Path:
    """A random GPT (GPT-2's shape, or a tiny one) with a BPE tokenizer, saved to folder."""
    import torch

    from plait.checkpoint import save_model
    from plait.models.gpt import GPT, GPTConfig
    from plait.text import BPETokenizer

    text = TEXT.read_text(encoding="utf-8")
    tok = BPETokenizer.train(text, 512 if small else 8192)
    shape = (dict(n_layer=2, n_head=2, n_embd=64, block_size=256) if small else
             dict(n_layer=12, n_head=12, n_embd=768, block_size=1024))
    torch.manual_seed(0)
    save_model(GPT(GPTConfig(vocab_size=tok.vocab_size, pos_encoding="learned", **shape)),
               folder)
    tok.save(folder)
    return folder


@dataclass
class Tally:
    tokens: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)


async def one_request(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int,
                      tally: Tally, hang_up_after: int | None = None) -> None:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 1.0,
            "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, done, usage, chunks = None, False, None, 0
    try:
        async with http.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                tally.errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                elif chunk["choices"] and chunk["choices"][0]["text"]:
                    chunks += 1
                    first = first or time.perf_counter()
                if hang_up_after is not None and chunks >= hang_up_after:
                    return  # leaving the block closes the connection mid-stream
    except httpx.HTTPError as e:
        tally.errors.append(f"{type(e).__name__}: {e}")
        return
    if not done or usage is None:
        tally.errors.append("stream ended without usage and [DONE]")
        return
    now = time.perf_counter()
    tally.tokens += usage["completion_tokens"]
    tally.requests += 1
    tally.ttft.append((first or now) - t0)
    tally.latency.append(now - t0)


async def load(url: str, model: str, clients: int, seconds: float, max_tokens: int,
               prompts: list[str], hang_up_after: int | None = None) -> tuple[Tally, float]:
    tally = Tally()
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)

    async def client(i: int) -> None:
        rng = random.Random(i)
        while time.perf_counter() < stop_at:
            await one_request(http, model, rng.choice(prompts), max_tokens, tally,
                              hang_up_after)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        return tally, time.perf_counter() - t0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def start_server(folder: Path, port: int, max_batch: int, threads: int) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "plait.cli.main", "serve", "--model", str(folder),
           "--port", str(port), "--max-batch", str(max_batch)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read()}")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the server did not start in 300 s")


def row(name: str, t: Tally, wall: float) -> str:
    return (f"| {name} | {t.requests} | {t.tokens / wall:.1f} | {t.requests / wall:.2f} |"
            f" {1000 * pct(t.ttft, 50):.0f} / {1000 * pct(t.ttft, 99):.0f} |"
            f" {pct(t.latency, 50):.2f} / {pct(t.latency, 99):.2f} | {len(t.errors)} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="model folder (default: a random GPT-2-sized one)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the concurrent load")
    ap.add_argument("--single-seconds", type=float, default=30.0, help="one client at a time")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="the server's torch threads")
    ap.add_argument("--small", action="store_true", help="tiny model, seconds of load")
    args = ap.parse_args(argv)
    if args.small:
        args.seconds, args.single_seconds, args.clients = 3.0, 2.0, 8
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or write_model(Path(tmp) / "gpt2-shape", args.small)
        text = TEXT.read_text(encoding="utf-8")
        prompts = [text[i:i + 80] for i in range(0, 200_000, 5_000)]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = start_server(folder, port, args.clients, args.threads)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(load(url, folder.name, 1, 2.0, args.max_tokens, prompts))  # warm-up
            rss = [rss_mib(server.pid)]
            single, t1 = asyncio.run(load(url, folder.name, 1, args.single_seconds,
                                          args.max_tokens, prompts))
            many, tn = asyncio.run(load(url, folder.name, args.clients, args.seconds,
                                        args.max_tokens, prompts))
            rss.append(rss_mib(server.pid))
            gone, tg = asyncio.run(load(url, folder.name, args.clients, args.seconds / 3,
                                        args.max_tokens, prompts, hang_up_after=3))
            time.sleep(1.0)
            rss.append(rss_mib(server.pid))
            health = httpx.get(url + "/health").json()
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    print(f"model {folder.name}, {args.max_tokens} new tokens per request, server torch threads"
          f" {args.threads}, {os.cpu_count()} CPUs")
    print("| load | requests | tokens/s | requests/s | TTFT p50 / p99 (ms) |"
          " latency p50 / p99 (s) | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(row("1 client at a time", single, t1))
    print(row(f"{args.clients} concurrent clients, {args.seconds:.0f} s", many, tn))
    print(row(f"{args.clients} clients hanging up after 3 chunks", gone, tg).replace(
        f"| {gone.requests} |", f"| {len(gone.ttft)} done |", 1))
    ratio = (many.tokens / tn) / max(single.tokens / t1, 1e-9)
    print(f"throughput {args.clients} clients / 1 client: {ratio:.2f}x")
    print(f"server RSS (MiB): after warm-up {rss[0]:.0f}, after the load {rss[1]:.0f}, after"
          f" the hang-ups {rss[2]:.0f}; rows still decoding / waiting: {health['models']}")
    for e in (single.errors + many.errors + gone.errors)[:5]:
        print("error:", e)
    return 0 if not (single.errors or many.errors or gone.errors) else 1


if __name__ == "__main__":
    sys.exit(main())
