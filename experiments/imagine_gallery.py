"""Pictures an imagine folder draws for held-out prompts, beside the prompts: the figure of
docs/fusion.md.

    python -m experiments.imagine_gallery --model runs/imagine_scenes \
        --out docs/img/imagine_heldout.png

Rows are ``--rows`` prompts of each held-out split, half of one shape and half of two
(``heldout``: training pairs in new draws; ``heldout-pair``: a colour-shape pair never pictured
in training); each row shows the real scene first, then ``--num`` drawings (one generator,
seeded 0), each marked with whether it passes the pixel check. The folder's own sampling
settings are used.
"""

from __future__ import annotations

import argparse


def pick(split: str, n: int) -> list[tuple]:
    """The first ``n // 2`` one-shape and ``n - n // 2`` two-shape prompts of ``split``."""
    from plait.data import imagine as prompts

    out: list[tuple] = []
    for shapes_wanted, k in ((1, n // 2), (2, n - n // 2)):
        i = 0
        while sum(len(s) == shapes_wanted for _, s, _ in out) < k:
            shapes, prompt = prompts.prompt_at(i, split)
            if len(shapes) == shapes_wanted:
                out.append((split, shapes, prompt))
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, metavar="DIR")
    parser.add_argument("--out", required=True, metavar="PNG")
    parser.add_argument("--rows", type=int, default=4, help="prompts per held-out split")
    parser.add_argument("--num", type=int, default=6, help="drawings per prompt")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plait.data import imagine as prompts
    from plait.data.palette import to_rgb
    from plait.inference.imagine import Artist
    from plait.io import atomic_write

    artist = Artist.from_folder(args.model)
    rows = [row for split in ("heldout", "heldout-pair") for row in pick(split, args.rows)]
    fig, axes = plt.subplots(len(rows), args.num + 1, figsize=(1.1 * (args.num + 1),
                                                               1.3 * len(rows)))
    for r, (split, shapes, prompt) in enumerate(rows):
        drawn = artist.draw_indices(prompt, args.num, seed=0)
        pictures = [prompts.picture(shapes), *drawn]
        for c, (ax, pic) in enumerate(zip(axes[r], pictures, strict=True)):
            ax.imshow(to_rgb(pic), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c:
                ok = prompts.check(pic, prompt)
                ax.set_xlabel("pass" if ok else "fail", fontsize=7,
                              color="green" if ok else "red")
        axes[r][0].set_xlabel("real", fontsize=7)
        axes[r][0].set_title(f"{prompt}  ({split})", fontsize=7, loc="left")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.96, bottom=0.02, wspace=0.08, hspace=0.55)
    atomic_write(args.out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
