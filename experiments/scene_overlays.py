"""The picture in docs/tasks.md §3-4: held-out scenes, the detector's boxes and labels, and
the segmenter's class map (one colour per class, black background) with its shapes' labels.

    python -m experiments.scene_overlays --detect runs/detect_scenes \\
        --segment runs/segment_scenes --out docs/img/scenes_detect_segment.png
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw

from plait.data.detect import example
from plait.inference.scenes import ShapeDetector, ShapeSegmenter

SCALE = 4


def label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, side: int,
          colour: tuple[int, int, int]) -> None:
    """``text`` at ``xy``, moved left as far as it must to stay in the picture."""
    x, y = xy
    draw.text((max(0, min(x, side - draw.textlength(text) - 2)), y), text, fill=colour)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detect", required=True)
    parser.add_argument("--segment", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=4)
    args = parser.parse_args()
    detector = ShapeDetector.from_folder(args.detect)
    segmenter = ShapeSegmenter.from_folder(args.segment)
    rows = []
    for i in range(args.n):
        picture = example(i, "heldout", 0, 48).image
        big = picture.resize((48 * SCALE, 48 * SCALE), Image.NEAREST)
        boxes = big.copy()
        draw = ImageDraw.Draw(boxes)
        for found in detector.detect([picture], threshold=0.5)[0]:
            x0, y0, x1, y1 = (v * SCALE for v in found["box"])
            draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0), width=2)
            label(draw, (x0 + 3, y1 + 2 if y1 < 170 else y0 - 12),
                  f"{found['label']} {found['score']:.2f}", big.width, (0, 0, 0))
        mask, shapes = segmenter.segment(picture)
        classes = mask.convert("RGB").resize(big.size, Image.NEAREST)
        draw = ImageDraw.Draw(classes)
        for shape in shapes:
            x0, y0, x1, y1 = (v * SCALE for v in shape["box"])
            label(draw, (x0 + 3, y1 + 2 if y1 < 170 else y0 - 12), shape["label"], big.width,
                  (255, 255, 255))
        rows.append([big, boxes, classes])
    side, gap = 48 * SCALE, 6
    sheet = Image.new("RGB", (3 * side + 2 * gap, len(rows) * side + (len(rows) - 1) * gap),
                      (255, 255, 255))
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            sheet.paste(im, (c * (side + gap), r * (side + gap)))
    sheet.save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
