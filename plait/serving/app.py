"""The OpenAI-compatible HTTP API (FastAPI), a thin adapter over the engines in ``backends``.

    app = create_app(Server(generators=[...], embedder=..., search=...), api_key=None)

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions``,
``POST /v1/chat/completions``, ``POST /v1/embeddings``, plait's ``POST /v1/search`` (text ->
images of the served index), and the web playground at ``/``. Streaming answers are
server-sent events: one ``data: {chunk}`` line per piece, a blank line after each, and
``data: [DONE]`` last; with ``stream_options.include_usage`` one chunk with empty ``choices``
and the usage comes just before ``[DONE]`` (and every other chunk says ``"usage": null``).
A client that goes away mid-stream cancels its jobs: their rows are freed at the next step.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from plait.serving import errors
from plait.serving.backends import Embedder, Generator, ImageSearch, Limits
from plait.serving.engine import Event, Handle, QueueFullError
from plait.serving.errors import APIError
from plait.serving.schemas import ChatRequest, CompletionRequest, EmbeddingRequest, SearchRequest


@dataclass
class Server:
    generators: list[Generator] = field(default_factory=list)
    embedder: Embedder | None = None
    search: ImageSearch | None = None
    limits: Limits = field(default_factory=Limits)
    created: int = field(default_factory=lambda: int(time.time()))

    def generator(self, name: str) -> Generator:
        for g in self.generators:
            if g.name == name:
                return g
        return self._unknown(name, [g.name for g in self.generators], "generation")

    def embeddings(self, name: str) -> Embedder:
        if self.embedder is not None and self.embedder.name == name:
            return self.embedder
        names = [self.embedder.name] if self.embedder else []
        return self._unknown(name, names, "embedding")

    @staticmethod
    def _unknown(name: str, names: list[str], what: str):
        served = ", ".join(names) if names else f"none (this server has no {what} model)"
        raise APIError(404, f"the model {name!r} does not exist here; {what} models served:"
                       f" {served}", "model", "model_not_found")

    def close(self) -> None:
        for g in self.generators:
            g.close()


def create_app(server: Server, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="plait", version="1", summary="OpenAI-compatible API over plait models")
    app.state.server = server
    errors.install(app)
    app.add_middleware(errors.BodyLimit, limit=server.limits.max_body_bytes)

    def authorise(request: Request) -> None:
        if api_key is None:
            return
        got = request.headers.get("authorization", "")
        if not secrets.compare_digest(got.encode(), f"Bearer {api_key}".encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           None, "invalid_api_key")

    auth = [Depends(authorise)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def playground() -> HTMLResponse:
        page = resources.files("plait.serving").joinpath("static/playground.html")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "models": {g.name: dict(zip(("decoding", "waiting"),
                                                           g.engine.load, strict=True))
                                           for g in server.generators}}

    @app.get("/v1/models", dependencies=auth)
    def models() -> dict[str, Any]:
        data = [_model_card(g.name, server.created, "vision" if g.vision else "text",
                            g.context) for g in server.generators]
        if server.embedder is not None:
            data.append(_model_card(server.embedder.name, server.created, "embeddings", None))
        return {"object": "list", "data": data}

    @app.post("/v1/completions", dependencies=auth)
    async def completions(body: CompletionRequest, request: Request):
        gen = server.generator(body.model)
        jobs, read = [], 0
        for prompt in body.prompts():
            ids = gen.encode(prompt, "prompt")
            jobs += _jobs(gen, body, ids, {}, body.stops(), body.max_tokens, "prompt")
            read += len(ids)
        return await _answer(request, gen, body, jobs, False, read)

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat(body: ChatRequest, request: Request):
        gen = server.generator(body.model)
        ids, inputs, template_stops = gen.chat_prompt(body.messages)
        jobs = _jobs(gen, body, ids, inputs, template_stops + body.stops(), body.token_limit())
        return await _answer(request, gen, body, jobs, True, len(ids))

    @app.post("/v1/embeddings", dependencies=auth)
    def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        emb = server.embeddings(body.model)
        vectors, tokens = emb.embed(body.texts())
        data = []
        for i, v in enumerate(vectors):
            value: Any = v.tolist()
            if body.encoding_format == "base64":
                value = base64.b64encode(v.numpy().astype("<f4").tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {"object": "list", "data": data, "model": emb.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.post("/v1/search", dependencies=auth)
    def search(body: SearchRequest) -> dict[str, Any]:
        if server.search is None:
            raise APIError(404, "this server has no image index (start it with --index)", None,
                           "no_index")
        return {"object": "list", "data": server.search.search(body.query, body.k)}

    return app


def _model_card(name: str, created: int, kind: str, context: int | None) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "plait",
            "kind": kind, "context_length": context}


def _jobs(gen: Generator, body: Any, ids: list[int], inputs: dict, stops: tuple[str, ...],
          max_tokens: int | None, param: str = "messages") -> list:
    """One engine job per choice (``n``); seeded choices use seed, seed + 1, ..."""
    return [gen.job(ids, max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                    stop=stops, seed=None if body.seed is None else body.seed + i,
                    inputs=inputs, param=param) for i in range(body.n)]


def _submit(gen: Generator, jobs: list) -> list[Handle]:
    loop = asyncio.get_running_loop()
    handles: list[Handle] = []
    try:
        for job in jobs:
            handles.append(gen.engine.submit(job, loop))
    except QueueFullError as e:
        for h in handles:
            h.cancel()
        raise APIError(503, f"the server is busy: {e}", None, "queue_full") from None
    return handles


async def _merged(handles: list[Handle]) -> AsyncIterator[tuple[int, Event]]:
    """Every handle's events, tagged with the handle's index, as they come."""
    q: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

    async def pump(i: int, h: Handle) -> None:
        async for ev in h:
            await q.put((i, ev))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    try:
        left = len(handles)
        while left:
            i, ev = await q.get()
            left -= ev.finish is not None
            yield i, ev
    finally:
        for t in tasks:
            t.cancel()
        for h in handles:
            h.cancel()  # a no-op for finished jobs; frees the rows of a client that left


async def _answer(request: Request, gen: Generator, body: Any, jobs: list, chat: bool,
                  prompt_tokens: int):
    """Run the jobs; one JSON answer, or a stream. Usage counts each prompt once (as OpenAI
    does for ``n`` > 1) and every generated token."""
    handles = _submit(gen, jobs)
    rid = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    created = int(time.time())
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(handles, rid, created, gen.name, chat, usage,
                                      prompt_tokens),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    texts = [""] * len(handles)
    finish: list[str | None] = [None] * len(handles)
    completion = 0
    async for i, ev in _merged(handles):
        if await request.is_disconnected():
            break
        texts[i] += ev.text
        if ev.finish is not None:
            if ev.finish == "error":
                raise APIError(500, f"generation failed: {ev.error}")
            finish[i] = ev.finish
            completion += ev.completion_tokens
    choices = [({"index": i, "message": {"role": "assistant", "content": t}} if chat else
                {"index": i, "text": t}) | {"finish_reason": f, "logprobs": None}
               for i, (t, f) in enumerate(zip(texts, finish, strict=True))]
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
             "total_tokens": prompt_tokens + completion}
    return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                         "created": created, "model": gen.name, "choices": choices,
                         "usage": usage})


async def _sse(handles: list[Handle], rid: str, created: int, model: str,
               chat: bool, include_usage: bool, prompt_tokens: int) -> AsyncIterator[bytes]:
    """The stream's frames. When the client goes away the server's ``send`` fails and this
    generator is closed; closing cancels the jobs, whose rows the engine frees at once."""
    try:
        async with contextlib.aclosing(_frames(handles, rid, created, model, chat,
                                               include_usage, prompt_tokens)) as frames:
            async for frame in frames:
                yield frame
    finally:
        for h in handles:
            h.cancel()


async def _frames(handles: list[Handle], rid: str, created: int, model: str, chat: bool,
                  include_usage: bool, prompt_tokens: int) -> AsyncIterator[bytes]:
    obj = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": rid, "object": obj, "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}
    completion = 0

    def chunk(choices: list[dict[str, Any]], **more: Any) -> bytes:
        return f"data: {json.dumps(head | {'choices': choices} | extra | more)}\n\n".encode()

    if chat:
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                      "finish_reason": None, "logprobs": None} for i in range(len(handles))])
    async with contextlib.aclosing(_merged(handles)) as merged:
        async for i, ev in merged:
            if ev.finish == "cancelled":
                return
            if ev.finish == "error":
                err = errors.body(500, f"generation failed: {ev.error}")
                yield f"data: {json.dumps(err)}\n\n".encode()
                return
            piece = ({"delta": {"content": ev.text} if ev.text else {}} if chat
                     else {"text": ev.text})
            if ev.text or ev.finish is not None:
                yield chunk([{"index": i, **piece, "finish_reason": ev.finish, "logprobs": None}])
            if ev.finish is not None:
                completion += ev.completion_tokens
    if include_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                 "total_tokens": prompt_tokens + completion}
        yield f"data: {json.dumps(head | {'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


__all__ = ["Server", "create_app"]
