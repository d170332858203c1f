"""Request bodies of the OpenAI API subset plait serves, as pydantic models.

They are the server's OpenAPI schema too (``GET /openapi.json``), which the fuzzing test
(schemathesis) reads: every bound written here is checked before a request reaches a model,
and a value outside it is a 400 naming the field. Fields OpenAI defines and plait does not
implement (``logprobs``, ``tools``, ...) are ignored when absent or null and refused by name
otherwise, so a client never gets an answer computed without an option it asked for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

UNSUPPORTED = ("logprobs", "top_logprobs", "echo", "best_of", "logit_bias", "suffix", "tools",
               "tool_choice", "functions", "function_call", "response_format",
               "frequency_penalty", "presence_penalty")
MAX_N = 8
MAX_STOPS = 4


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> _Body:
        extra = self.model_extra or {}
        used = [k for k in UNSUPPORTED if extra.get(k) not in (None, False, 0, 0.0, [], {})]
        if used:
            raise ValueError(f"{', '.join(used)}: not supported by this server")
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


Stop = Annotated[str, Field(min_length=1, max_length=64)]


class _Sampling(_Body):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: Stop | list[Stop] | None = Field(default=None, max_length=MAX_STOPS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    def stops(self) -> tuple[str, ...]:
        return () if self.stop is None else (self.stop,) if isinstance(self.stop, str) \
            else tuple(self.stop)


class CompletionRequest(_Sampling):
    prompt: Annotated[str, Field(min_length=1)] | Annotated[
        list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=MAX_N)]

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ImageURL(BaseModel):
    url: str = Field(min_length=1)
    detail: str | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[Part]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def images(self) -> list[str]:
        if isinstance(self.content, str):
            return []
        return [p.image_url.url for p in self.content if isinstance(p, ImagePart)]


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class EmbeddingRequest(_Body):
    model: str = Field(min_length=1, max_length=256)
    input: Annotated[str, Field(min_length=1)] | Annotated[
        list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class SearchRequest(_Body):
    """plait's own: search the served image index by text (the playground uses it)."""

    query: str = Field(min_length=1, max_length=1000)
    k: int = Field(default=8, ge=1, le=100)


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude_none=True)


__all__ = ["ChatRequest", "CompletionRequest", "EmbeddingRequest", "Message", "SearchRequest",
           "StreamOptions"]
