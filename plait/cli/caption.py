"""Caption images with a vision-language folder, or clips with a clip captioner: one caption
per line.

    plait caption --model runs/vlm_scenes scene1.png scene2.png
    ls *.png | plait caption --model runs/vlm_scenes --num-beams 4
    plait caption --model runs/video_caption clip1.gif frames_folder/

The folder is plait's (plait train configs/vlm_scenes.toml, or configs/video_caption.toml for
clips: animated GIFs or folders of frames, resampled in time to the frames the model reads).
Inputs are read safely (a file that is not a readable image or clip is one error naming it; a
still image for a clip captioner, or a clip for an image captioner, is one error too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="vision-language folder")
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="image files (default: one path per line of standard input)")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search width (1: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.checkpoint import MODEL_KEY, read_model_config
    from plait.cli.common import in_chunks, read_texts
    from plait.inference.vlm import VisionAsker
    from plait.vision import open_image
    from plait.vision.video import is_clip

    paths = read_texts(args.images)
    if read_model_config(args.model).get(MODEL_KEY) == "clip-captioner":
        return caption_clips(args, paths)
    for p in paths:
        if is_clip(p):
            raise ValueError(f"{p} is a clip; {args.model} captions still images (caption clips"
                             " with a clip captioner: configs/video_caption.toml)")
    asker = VisionAsker.from_folder(args.model, device=args.device)
    images = [open_image(p) for p in paths]  # every file checked before any output

    def work(chunk: list[str]) -> list[str]:
        batch = [images[paths.index(p)] for p in chunk]
        return asker.caption(batch, args.max_new_tokens, args.num_beams)

    for caption in in_chunks(paths, work):
        sys.stdout.write(caption + "\n")
        sys.stdout.flush()
    return 0


def caption_clips(args: argparse.Namespace, paths: list[str]) -> int:
    """Clips (GIFs or folders of frames) -> one sentence each."""
    from plait.inference.video_caption import ClipDescriber
    from plait.vision.video import is_clip, read_clip

    describer = ClipDescriber.from_folder(args.model, device=args.device)
    for p in paths:
        if Path(p).exists() and not is_clip(p):  # a missing one: read_clip names it
            raise ValueError(f"{p} is not a clip (an animated GIF or a folder of frames):"
                             f" {args.model} captions clips")
    clips = [read_clip(p, describer.n_frames) for p in paths]  # all checked before output
    for i in range(0, len(clips), 32):
        for text in describer.caption(clips[i:i + 32]):
            sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return 0
