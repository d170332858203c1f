"""Where a vision-language model looked: the decoder's attention over the image patches, for
each word of an answer, drawn over the image.

Attention weights are softmax(q k^T * scale + mask) of every self-attention layer, recorded by
:func:`record_attention` while the prompt and the answer run through the model once (SDPA
itself returns no weights, so the recorder recomputes them from the same q, k and mask). The
token at position p is predicted from the query at p - 1, so a word's map is the mean, over
its tokens, heads and layers, of those queries' weights on the image positions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor


def _weights(attn, q: Tensor, k: Tensor, mask: Tensor | None, is_causal: bool) -> Tensor:
    """(B, nh, Tq, Tk) attention probabilities, as SDPA computes them."""
    if attn.n_kv_head != attn.n_head:
        k = k.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)
    scores = (q @ k.transpose(-1, -2)).float() * attn.scale
    Tq, Tk = scores.shape[-2:]
    if is_causal:
        causal = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
        scores = scores.masked_fill(~causal, float("-inf"))
    if mask is not None:
        scores = (scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool
                  else scores + mask)
    return scores.softmax(-1)


@contextlib.contextmanager
def record_attention(decoder) -> Iterator[list[Tensor]]:
    """Within the block, every self-attention layer of ``decoder`` (a GPT) appends its weights
    (B, nh, Tq, Tk) to the yielded list, one entry per layer per call."""
    maps: list[Tensor] = []
    blocks = decoder.transformer.blocks
    for block in blocks:
        attn, original = block.attn, block.attn.attend

        def attend(q, k, v, mask, is_causal, _attn=attn, _original=original):
            maps.append(_weights(_attn, q, k, mask, is_causal))
            return _original(q, k, v, mask, is_causal)

        attn.attend = attend  # an instance attribute shadows the method until deleted
    try:
        yield maps
    finally:
        for block in blocks:
            del block.attn.attend


@torch.no_grad()
def word_maps(asker, image: Image.Image, question: str,
              answer: str) -> list[tuple[str, Tensor]]:
    """(word, (g, g) attention over the image's token grid) for each word of ``answer``; with
    ``feature_groups``, a cell's attention is the sum over its groups' tokens."""
    from plait.inference.vlm import prompt_ids

    t, model = asker.tokenizer, asker.model
    prompt = prompt_ids(t, question, asker.tokens_per_image, question_first=asker.question_first)
    ids = torch.tensor([prompt + t.encode(answer)])
    device = next(model.parameters()).device
    with record_attention(model.decoder) as maps:
        model(ids.to(device), asker.pixels([image]).to(device))
    mean = torch.stack([m[0].mean(0) for m in maps]).mean(0).cpu()  # (T, T)
    image_cols = (ids[0] == model.config.image_token_id).nonzero().squeeze(1)
    cells = model.config.image_cells
    g = int(round(cells**0.5))
    out: list[tuple[str, list[int]]] = []
    for p in range(len(prompt), ids.shape[1]):  # group the answer's tokens into words
        piece = t.decode([int(ids[0, p])])
        if not piece.strip():
            continue
        # a piece goes on the word before it unless a space comes between (a space token, or
        # one carried at the front of a word token)
        if out and p - 1 == out[-1][1][-1] and not piece[0].isspace():
            out[-1] = (out[-1][0] + piece, out[-1][1] + [p])
        else:
            out.append((piece.strip(), [p]))
    groups = len(image_cols) // cells
    return [(word, mean[[p - 1 for p in rows]][:, image_cols].mean(0).reshape(groups, cells)
             .sum(0)[:g * g].reshape(g, g)) for word, rows in out]


def draw_attention(asker, image: Image.Image, question: str, answer: str,
                   path: str | Path) -> Path:
    """A PNG: the image, then one panel per answer word with its attention map over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from plait.io import atomic_write

    maps = word_maps(asker, image, question, answer)
    if not maps:
        raise ValueError(f"the answer {answer!r} has no words to draw attention for")
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(2.2 * (len(maps) + 1), 2.6))
    side = asker.processor.config.crop_size
    shown = np.asarray(image.convert("RGB").resize((side, side)))
    axes[0].imshow(shown)
    axes[0].set_title(question if len(question) < 28 else question[:25] + "...", fontsize=8)
    for ax, (word, grid) in zip(axes[1:], maps, strict=True):
        ax.imshow(shown)
        ax.imshow(grid.numpy(), cmap="inferno", alpha=0.6, extent=(0, side, side, 0),
                  interpolation="bilinear")
        ax.set_title(word, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path
