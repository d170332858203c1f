"""``make demo`` (``python -m plait.demo``): plait end to end on a laptop CPU, in a few minutes.

1. Tokenize tiny Shakespeare by characters (``plait prepare-text``), unless already done.
2. Train a small GPT with ``configs/shakespeare_char.toml`` (under 5 minutes on 2 CPU cores)
   and report its loss on the *whole* validation split (the last 10% of the text).
3. Load the trained folder with ``plait.load`` and sample 300 characters from it.
4. Train a CLIP on synthetic shape scenes (``configs/clip_shapes.toml``, under 3 minutes),
   report held-out retrieval, index the held-out scenes with faiss and search them by text
   (:func:`run_clip_demo`).

The runs are left in ``runs/shakespeare_char/`` (a model folder, metrics.jsonl, loss.png) and
``runs/clip_shapes/`` (a CLIP folder, the held-out PNGs, the index and ``search_grid.png``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from plait.io import atomic_write

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


def write_heldout_pngs(folder: Path, n: int, image_size: int, seed: int = 0) -> list:
    """The retrieval gallery as files: ``017_red-triangle_blue-circle.png``."""
    from plait.data.scenes import distinct_scenes

    folder.mkdir(parents=True, exist_ok=True)
    gallery = distinct_scenes(n, "heldout", seed)
    for i, scene in enumerate(gallery):
        name = "_".join(f"{s.colour}-{s.kind}" for s in scene.shapes)
        img = scene.render(image_size)
        atomic_write(folder / f"{i:03d}_{name}.png", lambda tmp, im=img: im.save(tmp, "PNG"))
    return gallery


def run_clip_demo(config: str = "configs/clip_shapes.toml", overrides: dict[str, str] | None = None,
                  query: str | None = None, k: int = 5) -> dict[str, Any]:
    """Train, evaluate, index, search; returns the metrics and the search results."""
    from plait.evaluation.clip_eval import eval_shapes
    from plait.evaluation.index import SearchIndex, embed_files, list_files, write_grid
    from plait.inference import ClipEncoder
    from plait.training import load_recipe, train

    recipe = load_recipe(config, overrides or {})
    t0 = time.time()
    train(recipe)
    train_s = time.time() - t0
    out = Path(recipe.train.out_dir)
    enc = ClipEncoder.from_folder(out)
    size = recipe.data.image_size
    metrics = eval_shapes(enc, size, recipe.data.n_gallery, recipe.data.seed)
    print("held-out retrieval: " + ", ".join(f"{k_} {v:.3f}" for k_, v in metrics.items()))

    gallery = write_heldout_pngs(out / "heldout", recipe.data.n_gallery, size, recipe.data.seed)
    vectors, files = embed_files(enc, list_files(out / "heldout"), progress=False)
    index = SearchIndex.build(vectors, [str(f) for f in files], str(out.resolve()))
    index.save(out / "heldout.faiss")
    target = None
    if query is None:  # a two-shape held-out scene's caption: its file should come first
        target = next(i for i, s in enumerate(gallery) if len(s.shapes) == 2)
        query = gallery[target].captions[0]
    results = index.search(enc.embed_texts([query])[0].numpy(), k)
    print(f'search "{query}":')
    for file, score in results:
        mark = "  <- the scene this caption was written for" if (
            target is not None and Path(file).name.startswith(f"{target:03d}_")) else ""
        print(f"  {score:.3f}  {file}{mark}")
    write_grid(results, out / "search_grid.png")
    print(f"grid -> {out / 'search_grid.png'}  (train {train_s:.0f}s)")
    return {**metrics, "train_s": train_s, "query": query, "results": results}


def clip_part() -> None:
    banner("CLIP on synthetic scenes: held-out retrieval and text -> image search")
    run_clip_demo()


def main() -> None:
    t0 = time.perf_counter()
    shakespeare_part()
    clip_part()
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
