"""Every error the server sends, in OpenAI's one nested shape, and never a traceback::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens",
               "code": "invalid_value"}}

400 a malformed body or bad value, 401 a missing or wrong API key, 404 an unknown model or
path, 405 a wrong method, 413 a body or prompt over the limits, 503 a full queue, 500 only for
a bug (its message names the exception, the details go to the server's log).
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("plait.serving")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "invalid_request_error", 405: "invalid_request_error",
         413: "invalid_request_error", 503: "server_error"}


class APIError(Exception):
    """Raised anywhere in a request; becomes the JSON error response."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error"),
                      "param": param, "code": code}}


def response(status: int, message: str, param: str | None = None,
             code: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body(status, message, param, code), status_code=status, headers=headers)


def _validation(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {}
    kind = first.get("type", "")
    if kind == "json_invalid":
        return response(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error')})",
                        None, "invalid_json")
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # drop pydantic's union-branch names ("str", "list[...]") from the path a user reads
    loc = [p for p in loc if not p.startswith(("str", "list[", "function-", "tagged-"))]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if kind == "missing":
        return response(400, f"{param}: a required field is missing", param, "missing_field")
    if not loc and kind == "model_attributes_type":
        return response(400, "the body must be a JSON object", None, "invalid_body")
    return response(400, f"{param}: {msg}" if param else msg, param, "invalid_value")


def install(app: FastAPI) -> None:
    """Route every failure through :func:`response`."""

    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError) -> JSONResponse:
        return response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return response(404, f"no such path: {request.method} {request.url.path}", None,
                            "not_found")
        if exc.status_code == 405:
            return response(405, f"{request.method} is not allowed on {request.url.path}",
                            None, "method_not_allowed")
        return response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return response(500, f"internal error ({type(exc).__name__}); see the server log")


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is a 413 before any route reads it.

    The body is read here (declared length first, then the bytes actually sent, so a chunked
    upload cannot slip past) and handed on unchanged."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send)
            if not msg.get("more_body"):
                break
        data = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        payload = json.dumps(body(413, f"the request body is over the limit of {self.limit}"
                                       " bytes", None, "body_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


__all__ = ["APIError", "BodyLimit", "body", "install", "response"]
