"""What the server serves: generation models (each with its batching engine), an embedding
model and an image index, each loaded from a folder and named by the folder's name.

Requests are turned into engine jobs here: a completion's prompt is tokenised as
:class:`plait.inference.TextGenerator` does; a chat is rendered with the folder's chat template
(``chat_template.json``, or the plain ``role: content`` default); a vision-language folder
answers the last user message about the images of the conversation, with the prompt its
training used (:func:`plait.inference.vlm.prompt_ids`).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from plait.generation import SamplingParams
from plait.serving.engine import Engine, Job, context_of
from plait.serving.errors import APIError
from plait.text.chat import ChatTemplate, load_template
from plait.vision.image import DEFAULT_MAX_PIXELS, to_rgb

# below this, logits / temperature overflows float32 (1e-280 was found by fuzzing): the limit
# t -> 0 of sampling is the argmax, so such a request is decoded greedily
MIN_TEMPERATURE = 1e-4


@dataclass
class Limits:
    max_batch: int = 32  # rows decoding together, per model
    max_queue: int = 256  # requests waiting beyond those, per model
    max_prompt_tokens: int | None = None  # default: the model's context
    max_tokens: int = 1024  # the most a request may ask for
    max_body_bytes: int = 16 * 2**20
    max_image_pixels: int = DEFAULT_MAX_PIXELS


class Generator:
    """A language model or a vision-language model, its tokenizer and its engine."""

    def __init__(self, folder: Path, model: Any, tokenizer: Any, limits: Limits,
                 processor: Any = None):
        self.name, self.folder = folder.name, folder
        self.model, self.tokenizer, self.limits = model, tokenizer, limits
        self.processor = processor  # an ImageProcessor for a vision-language model, else None
        self.template: ChatTemplate = load_template(folder)
        self.context = context_of(model)
        self.engine = Engine(model, tokenizer, max_batch=limits.max_batch,
                             max_queue=limits.max_queue, width=self.context)

    @property
    def vision(self) -> bool:
        return self.processor is not None

    def close(self) -> None:
        self.engine.close()

    def encode(self, text: str, param: str) -> list[int]:
        try:
            ids = self.tokenizer.encode(text)
        except ValueError as e:
            raise APIError(400, f"{param}: {e}", param, "invalid_value") from None
        if not ids:
            raise APIError(400, f"{param}: the text holds no tokens", param, "invalid_value")
        return ids

    def job(self, ids: list[int], *, max_tokens: int | None, temperature: float, top_p: float,
            stop: tuple[str, ...], seed: int | None, inputs: dict | None = None,
            param: str = "messages") -> Job:
        """An engine job, or a 413 / 400 naming the limit the request is over."""
        n, ctx = len(ids), self.context
        most = min(self.limits.max_prompt_tokens or ctx, ctx - 1)
        if n > most:
            raise APIError(413, f"the prompt is {n} tokens; this model accepts at most {most}"
                           f" (context {ctx} tokens, one left to answer)", param,
                           "context_length_exceeded")
        if max_tokens is not None and max_tokens > self.limits.max_tokens:
            raise APIError(400, f"max_tokens: {max_tokens} is over this server's limit of"
                           f" {self.limits.max_tokens}", "max_tokens", "invalid_value")
        if max_tokens is not None and n + max_tokens > ctx:
            raise APIError(400, f"max_tokens: the prompt's {n} tokens + max_tokens {max_tokens}"
                           f" exceed the context of {ctx} tokens; ask for at most"
                           f" {ctx - n}", "max_tokens", "context_length_exceeded")
        new = max_tokens if max_tokens is not None else min(ctx - n, self.limits.max_tokens)
        eos = self.tokenizer.eos_token_id
        sample = temperature >= MIN_TEMPERATURE
        params = SamplingParams(max_new_tokens=new, do_sample=sample,
                                temperature=temperature if sample else 1.0,
                                top_p=top_p, eos_token_id=eos, pad_token_id=eos)
        return Job(ids, params, tuple(stop), seed, inputs or {})

    def chat_prompt(self, messages: list[Any]) -> tuple[list[int], dict, tuple[str, ...]]:
        """(prompt ids, prefill inputs, stop strings) for a conversation."""
        images = [url for m in messages for url in m.images()]
        if not self.vision:
            if images:
                raise APIError(400, f"model {self.name!r} reads text only: it cannot take"
                               " images (serve a vision-language model folder for that)",
                               "messages", "images_not_supported")
            text = self.template.render([{"role": m.role, "content": m.text()}
                                         for m in messages])
            return self.encode(text, "messages"), {}, self.template.stop
        from plait.inference.vlm import prompt_ids

        if not images:
            raise APIError(400, f"model {self.name!r} answers questions about images: attach"
                           " one (an image_url content part)", "messages", "image_missing")
        question = next((m.text() for m in reversed(messages) if m.role == "user"), "")
        pictures = [decode_image(u, self.limits.max_image_pixels) for u in images]
        try:
            c = self.model.config
            ids = prompt_ids(self.tokenizer, question, c.tokens_per_image, len(pictures),
                             c.question_first)
        except ValueError as e:
            raise APIError(400, f"messages: {e}", "messages", "invalid_value") from None
        pixels = self.processor.batch(pictures)[None].to(self.engine_device)
        return ids, {"pixel_values": pixels}, ()

    @property
    def engine_device(self) -> torch.device:
        return next(self.model.parameters()).device


class Embedder:
    """Texts -> L2-normalised vectors, from a sentence encoder or a CLIP's text tower."""

    def __init__(self, folder: Path, encoder: Any):
        self.name, self.folder, self.encoder = folder.name, folder, encoder

    @property
    def tokenizer(self) -> Any:
        return self.encoder.tokenizer

    def embed(self, texts: list[str]) -> tuple[torch.Tensor, int]:
        """(N, D) unit vectors and the number of tokens read."""
        tokens = sum(len(self.tokenizer.encode(t)) for t in texts)
        if hasattr(self.encoder, "embed_texts"):
            vectors = self.encoder.embed_texts(texts)
        else:
            vectors = self.encoder.encode(texts)
        return torch.nn.functional.normalize(vectors.float(), dim=-1), tokens


class ImageSearch:
    """A ``plait index`` of images, searched by text with the CLIP that built it."""

    def __init__(self, path: Path, index: Any, encoder: Any):
        self.path, self.index, self.encoder = path, index, encoder

    def search(self, query: str, k: int) -> list[dict[str, Any]]:
        vector = self.encoder.embed_texts([query])[0]
        out = []
        for file, score in self.index.search(vector.numpy(), k):
            out.append({"file": Path(file).name, "score": round(float(score), 4),
                        "image": data_url(Path(file))})
        return out


def data_url(path: Path) -> str | None:
    """A file as a ``data:`` URL (None if it is gone), so the browser needs no file route."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    kind = {".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif"}.get(path.suffix.lower(), "png")
    return f"data:image/{kind};base64,{base64.b64encode(raw).decode()}"


def decode_image(url: str, max_pixels: int) -> Image.Image:
    """An RGB picture from a ``data:image/...;base64,`` URL, or a 400 saying what is wrong."""
    def bad(why: str) -> APIError:
        return APIError(400, f"image_url: {why}", "messages", "invalid_image")

    if not url.startswith("data:"):
        raise bad("only data: URLs are read (data:image/png;base64,...): this server fetches"
                  " nothing from the network")
    head, _, payload = url.partition(",")
    if not head.endswith(";base64") or not payload:
        raise bad("the data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad("the data URL's payload is not valid base64") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(raw)) as probe:
                w, h = probe.size
                if w * h > max_pixels:
                    raise bad(f"{w}x{h} pixels is over the limit of {max_pixels}")
                probe.verify()
            with Image.open(io.BytesIO(raw)) as img:
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
        except APIError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise bad(f"could not decode the image ({reason})") from None


def load_generator(folder: Path, limits: Limits, device: str = "cpu",
                   quantize: str | None = None) -> Generator:
    """A served language model or vision-language model; ValueError for another kind."""
    from plait.inference import TextGenerator, VisionAsker, from_folder

    obj = from_folder(folder, device, quantize=quantize)
    if isinstance(obj, TextGenerator):
        return Generator(folder, obj.model, obj.tokenizer, limits)
    if isinstance(obj, VisionAsker):
        return Generator(folder, obj.model, obj.tokenizer, limits, obj.processor)
    raise ValueError(f"{folder} holds a {type(obj).__name__}: --model takes a language model"
                     " or a vision-language model (give text encoders and CLIP with"
                     " --embeddings)")


def load_embedder(folder: Path, device: str = "cpu", quantize: str | None = None) -> Embedder:
    from plait.inference import ClipEncoder, SentenceEncoder, from_folder

    obj = from_folder(folder, device, quantize=quantize)
    if not isinstance(obj, ClipEncoder | SentenceEncoder):
        raise ValueError(f"{folder} holds a {type(obj).__name__}: --embeddings takes a sentence"
                         " encoder, a BERT or a CLIP folder")
    return Embedder(folder, obj)


def load_search(path: Path, device: str = "cpu") -> ImageSearch:
    from plait.evaluation.index import SearchIndex
    from plait.inference import ClipEncoder

    index = SearchIndex.load(path)
    return ImageSearch(path, index, ClipEncoder.from_folder(index.model, device=device))


__all__ = ["Embedder", "Generator", "ImageSearch", "Limits", "decode_image", "load_embedder",
           "load_generator", "load_search"]
