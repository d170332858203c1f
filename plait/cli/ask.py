"""Ask a vision-language folder a question about an image or a clip: the answer on one line.

    plait ask --model runs/vlm_scenes scene.png "how many shapes are there?"
    plait ask --model runs/vlm_scenes scene.png "where is the red circle?" --attention-map att.png
    plait ask --model runs/vlm_scenes --asr runs/speech scene.png --audio question.wav
    plait ask --model runs/video_qa clip.gif "which way does the red circle move?"
    plait ask --model runs/fusion scene.png --audio red.wav "is there a star of the colour spoken?"

The image goes before the question; a question may instead place it with ``<image>`` (one per
image given). ``--attention-map FILE`` draws, for each answer word, where the decoder looked:
its attention over the image patches (mean over heads and layers), over the image.

With ``--audio FILE`` the question is spoken: the ``--asr`` speech folder transcribes it, the
transcript is printed on its own line (``heard: what colour is the circle``), its punctuation
is put back as the VLM was taught it ("?", or "." for "count the shapes"), and the answer
follows on the next line.

A video model (``configs/video_qa.toml``) takes one clip: an animated GIF or a folder of frames,
resampled in time to the frames the model reads (docs/video.md). A still image given to a video
model, or a clip given to an image model, is an error.

A fusion model (``configs/fusion_scenes.toml``) hears ``--audio`` itself: a picture, a
recording and a question, any left out where its mode allows (docs/fusion.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

INTERMIXED = True  # options may sit between the images and the question (plait.cli.main)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="vision-language folder")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE... QUESTION",
                        help="one or more image files (or one clip), then the question (none"
                        " with --audio)")
    parser.add_argument("--audio", metavar="FILE", help="the question, spoken (wav or flac)")
    parser.add_argument("--asr", metavar="DIR", help="speech folder that transcribes --audio")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search width (1: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--attention-map", metavar="FILE", help="write a PNG of where it looked")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.inference.fusion import is_fusion_folder
    from plait.inference.video import is_video_folder
    from plait.inference.vlm import VisionAsker
    from plait.vision import open_image
    from plait.vision.video import is_clip

    if Path(args.model).is_dir() and is_fusion_folder(args.model):
        return ask_fusion(args)
    spoken = bool(args.audio or args.asr)
    if spoken:
        paths, question = args.inputs, None
        check_spoken(args)
    elif len(args.inputs) < 2:
        raise ValueError("give an image and a question: plait ask --model DIR IMAGE QUESTION (a"
                         " vision-language model answers about an image; for text alone use"
                         " plait generate)")
    else:
        *paths, question = args.inputs
        if not question.strip():
            raise ValueError("the question is empty")
        if is_video_folder(args.model):
            return ask_clip(args, paths, question)
    for p in paths:
        if is_clip(p):
            raise ValueError(f"{p} is a clip, but {args.model} reads still images: give it an"
                             " image, or ask a video model (configs/video_qa.toml)")
    images = [open_image(p) for p in paths]
    asker = VisionAsker.from_folder(args.model, device=args.device)
    if question is None:  # everything else is checked: now listen
        question = heard(args)
    answer = asker.ask_one(images, question, args.max_new_tokens, args.num_beams)
    print(answer)
    if args.attention_map:
        from plait.inference.attention_map import draw_attention

        draw_attention(asker, images[0], question, answer, args.attention_map)
    return 0


def check_spoken(args: argparse.Namespace) -> None:
    """A spoken question needs --audio and --asr, and only images as the other inputs."""
    if not (args.audio and args.asr):
        raise ValueError("a spoken question needs both --audio FILE and --asr DIR (the speech"
                         " recognition folder that transcribes it)")
    for p in args.inputs:
        if not Path(p).is_file():
            raise ValueError(f"{p!r} is not an image file: with --audio the question is spoken,"
                             " so give only images")


def heard(args: argparse.Namespace) -> str:
    """The spoken question, transcribed (the transcript printed on its own line) and
    punctuated as the VLM reads questions."""
    from plait.data.speech import written_question
    from plait.inference.speech import Transcriber

    transcriber = Transcriber.from_folder(args.asr, device=args.device)
    [text] = transcriber.transcribe(transcriber.read([args.audio]), args.num_beams)
    if not text:
        raise ValueError(f"{args.audio}: no words were heard in the recording")
    print(f"heard: {text}", flush=True)
    return written_question(text)


def ask_clip(args: argparse.Namespace, paths: list[str], question: str) -> int:
    """One clip, one question, to a video model (a classifier: no beams, no attention map)."""
    from plait.inference.video import VideoAsker

    if len(paths) != 1:
        raise ValueError(f"{args.model} is a video model: give one clip (a GIF or a folder of"
                         f" frames) and a question, got {len(paths)} inputs before the question")
    if args.attention_map:
        raise ValueError("--attention-map draws a decoder's attention over an image; a video"
                         " model answers by classification and has none to draw")
    asker = VideoAsker.from_folder(args.model, device=args.device)
    print(asker.ask_file(paths[0], question))
    return 0


def ask_fusion(args: argparse.Namespace) -> int:
    """A fusion model: [IMAGE] QUESTION with --audio FILE, the recording a modality of its own
    (no --asr). A single input that is a file is the picture, else the question."""
    from plait.inference.fusion import FusionAsker

    if args.asr:
        raise ValueError(f"{args.model} is a fusion model: it hears --audio itself, no --asr")
    if args.attention_map or args.num_beams != 1:
        raise ValueError("a fusion model answers by classification: no --attention-map or"
                         " --num-beams")
    if len(args.inputs) > 2:
        raise ValueError(f"a fusion model takes at most one image and one question, got"
                         f" {len(args.inputs)} inputs")
    image, question = (args.inputs if len(args.inputs) == 2 else
                       (args.inputs[0], None) if Path(args.inputs[0]).is_file() else
                       (None, args.inputs[0]))
    asker = FusionAsker.from_folder(args.model, device=args.device)
    print(asker.ask_files(image, args.audio, question)[0])
    return 0
