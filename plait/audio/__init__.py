"""Audio preprocessing: read wav/flac as 16 kHz mono, and Whisper-exact log-mel features.

``load(path)`` gives float32 samples at 16 kHz (``len(x) / 16000`` seconds), and
``load_bytes(data)`` the same from a file's bytes in memory; ``log_mel(x)`` or
``log_mel([x, y, ...])`` gives (B, 80, 3000) features, each recording padded or cut to 30 s
(``n_samples=`` sets a shorter window), equal to transformers' ``WhisperFeatureExtractor``
within 1e-4 (see ``docs/audio.md``).
"""

from plait.audio.decode import SAMPLING_RATE, AudioError, load, load_bytes, resample
from plait.audio.features import (
    CHUNK_SECONDS,
    HOP_LENGTH,
    N_FFT,
    N_FRAMES,
    N_SAMPLES,
    log_mel,
    mel_filters,
)

__all__ = [
    "CHUNK_SECONDS", "HOP_LENGTH", "N_FFT", "N_FRAMES", "N_SAMPLES", "SAMPLING_RATE",
    "AudioError", "load", "load_bytes", "log_mel", "mel_filters", "resample",
]
