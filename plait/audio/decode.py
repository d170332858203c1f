"""Reading audio files: decode with libsndfile, mix down to mono, resample to 16 kHz.

Whisper's own loader pipes every file through ``ffmpeg -ac 1 -ar 16000``; plait reads wav and
flac (everything libsndfile decodes) with ``soundfile`` and resamples with a polyphase filter
(``scipy.signal.resample_poly``), so no subprocess and no ffmpeg are needed. The mixdown is the
channel mean, which is what ffmpeg does for stereo.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from plait.io import file_kind, head_of

SAMPLING_RATE = 16_000  # Whisper's rate: every model input is 16 kHz mono


class AudioError(ValueError):
    """An audio file that cannot be used: names the file and why, on one line."""


def load(path: str | Path) -> np.ndarray:
    """Read ``path`` as float32 mono samples at 16 kHz, in [-1, 1] for integer formats.

    The recording is returned whole: its duration is ``len(x) / 16000`` seconds, and
    :func:`plait.audio.log_mel` keeps only the first 30 s (as Whisper does), so a caller
    with longer files splits them first.

    Raises FileNotFoundError for a missing path and AudioError (a ValueError, one line naming
    the file) for an empty file, a file that is not audio or is corrupt, a sample format
    libsndfile cannot decode, and a recording with no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    return _decode(path, str(path))


def load_bytes(data: bytes, name: str = "audio bytes") -> np.ndarray:
    """:func:`load` for a file's bytes held in memory (a synthesiser's wav on stdout, say), so
    nothing goes through a temporary file. ``name`` stands for the path in error messages."""
    if not data:
        raise AudioError(f"{name}: empty (0 bytes)")
    return _decode(io.BytesIO(data), name)


def _decode(source: Path | io.BytesIO, name: str) -> np.ndarray:
    try:
        # always_2d: (frames, channels) for mono and multichannel alike; integer PCM is scaled
        # to [-1, 1) by libsndfile, as ffmpeg's f32le output is
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError) as e:
        # libsndfile's own reason ("Format not recognised.", "File contains data in an
        # unimplemented format."), without soundfile's "Error opening '<path>': " prefix
        reason = getattr(e, "error_string", None) or str(e)
        head = source.getvalue()[:16] if isinstance(source, io.BytesIO) else head_of(source)
        kind = file_kind(head)
        if kind is not None and "audio" not in kind:  # an image given where sound belongs
            raise AudioError(f"{name}: this is {kind}, not audio: give a wav or flac"
                             " recording") from e
        raise AudioError(f"{name}: cannot decode as audio: {one_line(reason)}") from e
    if samples.shape[0] == 0:
        raise AudioError(f"{name}: the recording has no samples (0 frames)")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    return resample(mono, rate)


def resample(x: np.ndarray, rate: int, target: int = SAMPLING_RATE) -> np.ndarray:
    """1-D ``x`` sampled at ``rate`` Hz -> float32 at ``target`` Hz (polyphase FIR filter).

    ``up / down`` is the ratio in lowest terms (44.1 kHz -> 16 kHz is 160 / 441; 48 kHz is
    1 / 3): the low-pass filter's length is set by ``max(up, down)``. scipy reduces the ratio
    as well; doing it here keeps the ratio visible. The output has ``ceil(len(x) * up / down)``
    samples.
    """
    if rate <= 0:
        raise ValueError(f"sampling rate must be positive, got {rate}")
    x = np.asarray(x, dtype=np.float32)
    if rate == target:
        return np.ascontiguousarray(x)
    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32, copy=False)


def one_line(text: str) -> str:
    """``text`` with line breaks folded, so an error message stays one line."""
    return " ".join(text.split())
