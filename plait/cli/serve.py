"""Serve models over an OpenAI-compatible HTTP API, with a web playground at /.

    plait serve --model runs/chat
    plait serve --model runs/chat --model runs/vlm_scenes --embeddings runs/clip_shapes \
        --index runs/clip_shapes/heldout.faiss --port 8000 --api-key s3cret

Each --model (a language model or a vision-language model folder; repeatable) is served under
its folder's name, with its own batching engine: concurrent requests share decoding steps.
--embeddings serves /v1/embeddings from a sentence encoder, BERT or CLIP folder; --index lets
the playground search an image index (built by `plait index`) by text. The server binds
127.0.0.1 unless --host says otherwise. Endpoints, limits and errors: docs/serving.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=[], metavar="DIR",
                        help="language or vision-language model folder (repeatable)")
    parser.add_argument("--embeddings", metavar="DIR",
                        help="sentence encoder, BERT or CLIP folder for /v1/embeddings")
    parser.add_argument("--index", metavar="INDEX", help="image index from `plait index`")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key", metavar="KEY",
                        help="require 'Authorization: Bearer KEY' on /v1/ routes")
    parser.add_argument("--max-batch", type=int, default=32,
                        help="sequences decoded together per model (default 32)")
    parser.add_argument("--max-queue", type=int, default=256,
                        help="requests waiting per model before 503s (default 256)")
    parser.add_argument("--max-tokens", type=int, default=1024,
                        help="the most new tokens one request may ask for (default 1024)")
    parser.add_argument("--max-prompt-tokens", type=int, default=None,
                        help="longest prompt accepted (default: the model's context - 1)")
    parser.add_argument("--max-body-mb", type=float, default=16.0,
                        help="largest request body in MiB (default 16)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--quantize", choices=["int8", "int4"], default=None,
                        help="serve every model with int8 (per channel) or int4 (groups of 32)"
                        " weights (docs/efficiency.md)")


def build(args: argparse.Namespace):
    """The Server for these arguments (models loaded, engines started)."""
    from plait.serving.app import Server
    from plait.serving.backends import Limits, load_embedder, load_generator, load_search

    for name, value in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue),
                        ("--max-tokens", args.max_tokens), ("--port", args.port)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if args.max_body_mb <= 0:
        raise ValueError(f"--max-body-mb must be positive, got {args.max_body_mb}")
    if not (args.model or args.embeddings):
        raise ValueError("nothing to serve: give --model DIR and/or --embeddings DIR")
    folders = [Path(m) for m in args.model]
    names = [f.name for f in folders]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two --model folders share the name {twice[0]!r}: models are served"
                         " under their folder's name, so give them different names")
    limits = Limits(max_batch=args.max_batch, max_queue=args.max_queue,
                    max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens,
                    max_body_bytes=int(args.max_body_mb * 2**20))
    server = Server(limits=limits)
    try:
        server.generators = [load_generator(f, limits, args.device, args.quantize)
                             for f in folders]
        if args.embeddings:
            server.embedder = load_embedder(Path(args.embeddings), args.device, args.quantize)
        if args.index:
            server.search = load_search(Path(args.index), args.device)
    except BaseException:
        server.close()
        raise
    return server


def check_port(host: str, port: int) -> None:
    """Fail now, in one line, if the address cannot be bound (uvicorn would exit later)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise ValueError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from plait.serving.app import create_app

    check_port(args.host, args.port)
    server = build(args)
    app = create_app(server, api_key=args.api_key)
    served = ", ".join([g.name for g in server.generators]
                       + ([server.embedder.name] if server.embedder else []))
    print(f"serving {served} on http://{args.host}:{args.port} (playground at /, API under"
          " /v1)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                    timeout_graceful_shutdown=5)
    finally:
        server.close()
    return 0
