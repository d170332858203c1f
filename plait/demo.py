"""``make demo`` (``python -m plait.demo``): plait end to end on a laptop CPU, in a few minutes.

1. Tokenize tiny Shakespeare by characters (``plait prepare-text``), unless already done.
2. Train a small GPT with ``configs/shakespeare_char.toml`` (under 5 minutes on 2 CPU cores)
   and report its loss on the *whole* validation split (the last 10% of the text).
3. Load the trained folder with ``plait.load`` and sample 300 characters from it.
4. Train a CLIP on synthetic shape scenes (``configs/clip_shapes.toml``, under 3 minutes),
   report held-out retrieval, index the held-out scenes with faiss and search them by text
   (:func:`plait.evaluation.run_clip_demo`).

The runs are left in ``runs/shakespeare_char/`` (a model folder, metrics.jsonl, loss.png) and
``runs/clip_shapes/`` (a CLIP folder, the held-out PNGs, the index and ``search_grid.png``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

TEXT = Path("data/tinyshakespeare.txt")
CHAR_DATA = Path("data/shakespeare_char")
CHAR_RECIPE = Path("configs/shakespeare_char.toml")


def banner(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def prepare_shakespeare(text: Path = TEXT, out: Path = CHAR_DATA) -> Path:
    """Character-level train.bin / val.bin (last 10% of the text is validation)."""
    from plait.data.tokens import prepare_text

    if (out / "meta.json").is_file():
        print(f"using prepared data in {out}")
        return out
    if not text.is_file():
        raise FileNotFoundError(f"{text} not found: run `make demo` (it copies tiny Shakespeare"
                                f" there) or put the text file at that path")
    prepare_text(text, out, tokenizer="char")
    return out


def train_shakespeare(recipe_path: Path = CHAR_RECIPE) -> tuple[Path, float]:
    """Train the recipe; returns (output folder, val loss on the whole val split)."""
    from plait.training import load_recipe, train

    recipe = load_recipe(recipe_path)
    print(f"model {recipe.model.n_layer} layers x {recipe.model.n_embd} wide, context"
          f" {recipe.model.block_size}; {recipe.train.max_steps} steps of"
          f" {recipe.data.batch_size} x {recipe.model.block_size} characters")
    result = train(recipe)
    return Path(recipe.train.out_dir), result["val_loss"]


def sample_text(folder: Path, n_chars: int = 300, prompt: str = "\n", seed: int = 0) -> str:
    """``n_chars`` characters sampled from the model in ``folder`` (temperature 0.8, top-k 40).

    The model was trained on ``block_size`` characters of context (RoPE would run past it, but
    badly), so longer samples slide a window: each round keeps the last half-context as the
    prompt and generates the next half.
    """
    import plait
    from plait.text import load_tokenizer

    model, tok = plait.load(folder), load_tokenizer(folder)
    ids = torch.tensor([tok.encode(prompt)])  # (1, T)
    start = ids.shape[1]
    half = max(1, model.config.block_size // 2)  # the context it was trained on, halved
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        while ids.shape[1] - start < n_chars:
            context = ids[:, -half:]
            new = min(half, n_chars - (ids.shape[1] - start))
            out = model.generate(context, max_new_tokens=new, do_sample=True, temperature=0.8,
                                 top_k=40, generator=g)
            ids = torch.cat([ids, out[:, context.shape[1]:]], dim=1)
    return tok.decode(ids[0, start:].tolist())


def shakespeare_part() -> None:
    banner("character-level GPT on tiny Shakespeare")
    prepare_shakespeare()
    t0 = time.perf_counter()
    folder, val = train_shakespeare()
    print(f"training took {time.perf_counter() - t0:.0f}s; whole-split val loss {val:.4f};"
          f" loss curve: {folder / 'loss.png'}")
    banner("300 characters sampled from the trained model")
    print(sample_text(folder))


def clip_part() -> None:
    from plait.evaluation import run_clip_demo

    banner("CLIP on synthetic scenes: held-out retrieval and text -> image search")
    run_clip_demo()


def main() -> None:
    t0 = time.perf_counter()
    shakespeare_part()
    clip_part()
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
