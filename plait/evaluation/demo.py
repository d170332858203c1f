"""The CLIP demo: train on shape scenes, index the held-out scenes, search them by text.

``run_clip_demo()`` (called by ``plait/demo.py``) does, in order:

1. ``plait train configs/clip_shapes.toml`` (<= 3 minutes on a laptop CPU);
2. evaluates retrieval and zero-shot on held-out scenes (colour+shape pairs never trained on);
3. writes those scenes as PNG files to ``runs/clip_shapes/heldout/``, one per scene, named by
   content, and indexes them with faiss (``runs/clip_shapes/heldout.faiss``);
4. searches the index with a held-out caption, prints the top files and writes a PNG grid
   (``runs/clip_shapes/search_grid.png``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from plait.checkpoint import atomic_write


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
    from plait.evaluation.encoder import ClipEncoder
    from plait.evaluation.index import SearchIndex, embed_files, list_files, write_grid
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
