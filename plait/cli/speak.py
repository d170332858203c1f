"""Say a text with a text-to-speech folder: a 16 kHz mono wav (or flac) file per text.

    plait speak --model runs/tts "set a timer for 25 minutes" --out timer.wav
    plait speak --model runs/tts "what colour is the star?" "count the shapes." --out q.wav
        (two texts: q-1.wav and q-2.wav)

The folder is what ``plait train configs/tts.toml`` writes: a Transformer TTS that writes
log-mel features, turned into a waveform by Griffin-Lim (``--iterations``). Digits are said as
words ("25" -> "twenty five"). Each output path is printed when written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

AUDIO_TYPES = (".wav", ".flac")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="text-to-speech folder (plait train configs/tts.toml)")
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="what to say")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="audio file to write (.wav or .flac); with several texts,"
                        " FILE-1.wav, FILE-2.wav, ...")
    parser.add_argument("--pace", type=float, default=1.0,
                        help="duration scale: 1.2 speaks 20%% slower (default 1)")
    parser.add_argument("--iterations", type=int, default=32,
                        help="Griffin-Lim iterations (default 32)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def outputs(out: Path, n: int) -> list[Path]:
    """The files to write, each checked: a known audio type, a place it can be written."""
    from plait.cli.common import can_write

    if out.suffix.lower() not in AUDIO_TYPES:
        raise ValueError(f"cannot write audio to {out}: give a file name ending in .wav or"
                         " .flac")
    paths = [out] if n == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}")
                                  for i in range(1, n + 1)]
    for p in paths:
        can_write(p, "audio")
    return paths


def check_text(text: str) -> None:
    """A text, not a file someone meant to give another command (an image, a recording)."""
    path = Path(text)
    if len(text) < 256 and "\n" not in text and path.suffix and path.is_file():
        raise ValueError(f"{text} is a file: plait speak says text, e.g. plait speak --model"
                         " DIR \"set a timer for 25 minutes\" --out timer.wav")


def write_audio(path: Path, audio: np.ndarray) -> None:
    """Written whole or not at all (a reader never sees half a file); the type from the
    suffix."""
    import soundfile

    from plait.audio import SAMPLING_RATE
    from plait.io import atomic_write

    atomic_write(path, lambda tmp: soundfile.write(tmp, audio, SAMPLING_RATE,
                                                   format=path.suffix[1:].upper()))


def run(args: argparse.Namespace) -> int:
    from plait.inference.tts import Speaker, normalise
    from plait.models.tts import ALPHABET

    if args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    for text in args.texts:
        check_text(text)
        normalise(text, ALPHABET)  # says what is wrong before the model loads
    paths = outputs(Path(args.out), len(args.texts))
    speaker = Speaker.from_folder(args.model, device=args.device)
    speaker.n_iter = args.iterations
    for path, audio in zip(paths, speaker.speak(args.texts, args.pace), strict=True):
        write_audio(path, audio)
        print(path)
    return 0
