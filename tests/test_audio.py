"""Audio: log-mel features against transformers' WhisperFeatureExtractor, the Slaney filterbank
against transformers' mel_filter_bank, file reading (resampling, mixdown) and its errors."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank

from plait.audio import AudioError, load, load_bytes, log_mel, mel_filters
from plait.audio.features import hz_to_mel, mel_to_hz

SR = 16_000
TOL = 1e-4  # fp32 features; measured differences are ~1e-7


@pytest.fixture(scope="module")
def extractor() -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor()  # defaults: 80 mels, 30 s, n_fft 400, hop 160


def reference(extractor, audio) -> np.ndarray:
    return extractor(audio, sampling_rate=SR, return_tensors="np").input_features


def max_diff(extractor, audio) -> float:
    ours = log_mel(audio).numpy()
    ref = reference(extractor, audio)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    return float(np.abs(ours - ref).max())


def noise(seconds: float, scale: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal(round(seconds * SR))).astype(np.float32)


def tone(hz: float, seconds: float, amplitude: float = 0.5, rate: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# -- features against transformers ------------------------------------------------------------
SIGNALS = {
    "noise": lambda: noise(5.0),
    "tone 100 Hz": lambda: tone(100, 2.0),
    "tone 440 Hz": lambda: tone(440, 2.0),
    "tone 1 kHz": lambda: tone(1000, 2.0),
    "tone 3.5 kHz": lambda: tone(3500, 2.0),
    "tone 7.9 kHz": lambda: tone(7900, 2.0),
    "silence": lambda: np.zeros(5 * SR, np.float32),
    "clipped": lambda: np.clip(4 * tone(300, 2.0), -1.0, 1.0),  # flat tops at +-1
    "quiet noise": lambda: noise(3.0, scale=1e-4),
    "float64": lambda: noise(2.0).astype(np.float64),
}


@pytest.mark.parametrize("name", list(SIGNALS))
def test_log_mel_matches_whisper_feature_extractor(extractor, name):
    audio = SIGNALS[name]()
    if name == "clipped":
        assert (np.abs(audio) == 1.0).mean() > 0.5
    assert max_diff(extractor, audio) < TOL


@pytest.mark.parametrize("seconds", [0.1, 1.0, 7.3, 30.0, 31.0])
def test_lengths_are_padded_or_cut_to_30_s(extractor, seconds):
    audio = noise(seconds, seed=int(seconds * 10))
    assert log_mel(audio).shape == (1, 80, 3000)
    assert max_diff(extractor, audio) < TOL
    if seconds > 30:  # the cut: the samples after 30 s change nothing, the reflect pad included
        assert torch.equal(log_mel(audio), log_mel(audio[: 30 * SR]))


def test_a_batch_takes_each_recordings_own_max(extractor):
    """A quiet and a loud recording in one batch: each row equals the recording alone, so the
    -8 floor is per recording; a batch-wide max would change the quiet row by far more."""
    batch = [noise(2.0, scale=1e-3), tone(440, 7.3, amplitude=0.9), np.zeros(SR, np.float32),
             noise(31.0, seed=3)]
    ours = log_mel(batch)
    assert ours.shape == (4, 80, 3000)
    assert np.abs(ours.numpy() - reference(extractor, batch)).max() < TOL
    for row, audio in zip(ours, batch, strict=True):
        torch.testing.assert_close(row, log_mel(audio)[0], rtol=0, atol=1e-6)
    # what a batch-wide floor would have given the quiet recording
    raw = ours * 4 - 4  # undo (x + 4) / 4: log10 mel, floored per recording
    batch_wide = (torch.maximum(raw[0], raw.max() - 8.0) + 4) / 4
    assert (batch_wide - ours[0]).abs().max() > 0.5


def test_tensors_and_other_mel_counts(extractor):
    audio = noise(4.0, seed=5)
    x = torch.from_numpy(audio).requires_grad_()  # features never track gradients
    out = log_mel(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, log_mel(audio), rtol=0, atol=0)
    frozen = audio[::-1].copy()
    frozen.setflags(write=False)  # read-only and reversed views are taken as they are
    torch.testing.assert_close(log_mel(frozen[::-1]), out, rtol=0, atol=0)
    v3 = WhisperFeatureExtractor(feature_size=128)  # large-v3 uses 128 mels
    ref = v3(audio, sampling_rate=SR, return_tensors="np").input_features
    assert np.abs(log_mel(audio, n_mels=128).numpy() - ref).max() < TOL


def test_a_shorter_window_is_the_first_frames_of_the_30_s_one():
    """Audio ending >= 41 samples before a 2 s window: its 200 frames are the 30 s result's
    first 200. The extra zeros' log (-10) is under any floor, and the last frame's reflect
    padding mirrors only silence; one sample from the end, the mirror reaches speech."""
    batch = [noise(1.3), tone(440, 0.5, amplitude=0.01), np.zeros(SR, np.float32),
             noise(2.0 - 41 / SR, seed=2)]
    short = log_mel(batch, n_samples=2 * SR)
    assert short.shape == (4, 80, 200)
    torch.testing.assert_close(short, log_mel(batch)[:, :, :200], rtol=0, atol=1e-6)
    almost = noise(2.0 - 1 / SR, seed=3)
    assert (log_mel(almost, n_samples=2 * SR) - log_mel(almost)[:, :, :200]).abs().max() > 1e-3


# -- the Slaney filterbank ------------------------------------------------------------------------
@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_transformers_slaney_bank(n_mels):
    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0,
                          max_frequency=8000.0, sampling_rate=SR, norm="slaney",
                          mel_scale="slaney")
    ours = mel_filters(n_mels)
    assert ours.shape == ref.shape == (201, n_mels)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


def test_slaney_mel_scale_is_linear_then_logarithmic():
    assert hz_to_mel(np.array(1000.0)) == 15.0  # the knee
    assert hz_to_mel(np.array(200.0)) == pytest.approx(3.0)  # 3 mels per 200 Hz below it
    assert hz_to_mel(np.array(6400.0)) == pytest.approx(15.0 + 27.0)  # 27 mels per 6.4x
    hz = np.array([0.0, 37.5, 999.0, 1000.0, 4321.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12)
    # area normalisation: every filter integrates to ~1 over frequency (sampled at 40 Hz bins,
    # so the narrow low filters miss by up to 8 %); unnormalised, the areas would be 67-1000
    areas = mel_filters().sum(axis=0) * 40.0
    assert np.abs(areas - 1).max() < 0.1 and abs(areas.mean() - 1) < 1e-3


# -- reading files --------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_load_resamples_to_16_khz(extractor, tmp_path, rate):
    seconds = 2.0
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, tone(1000, seconds, rate=rate), rate, subtype="PCM_16")
    x = load(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == math.ceil(seconds * rate * SR / rate) == 32_000
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    peak_hz = np.argmax(spectrum) * SR / len(x)
    assert abs(peak_hz - 1000.0) <= SR / len(x)  # within one bin (0.5 Hz)
    middle = x[SR // 4: -SR // 4]  # away from the filter's edge effects
    assert np.sqrt(np.mean(middle ** 2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.01)
    assert max_diff(extractor, x) < TOL


def test_load_reads_16_khz_wav_and_flac_unchanged(tmp_path):
    pcm = (tone(440, 1.0) * 32767).astype(np.int16)
    for name in ("a.wav", "a.flac"):
        sf.write(tmp_path / name, pcm, SR)
        np.testing.assert_array_equal(load(tmp_path / name), pcm / np.float32(32768))


def test_load_bytes_equals_load(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, tone(1000, 0.5, rate=22050), 22050, subtype="PCM_16")
    np.testing.assert_array_equal(load_bytes(path.read_bytes()), load(path))
    with pytest.raises(AudioError, match="espeak: cannot decode as audio"):
        load_bytes(b"not audio", name="espeak")


def test_load_mixes_stereo_to_the_channel_mean(tmp_path):
    left, right = tone(440, 1.0), noise(1.0, scale=0.2)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), SR, subtype="FLOAT")
    np.testing.assert_allclose(load(tmp_path / "stereo.wav"), (left + right) / 2, atol=1e-7)


def wav_header_only(path, bits: int) -> None:
    """A PCM wav whose samples are ``bits`` wide (64: libsndfile has no decoder for it)."""
    data = bytes(64)
    fmt = struct.pack("<HHIIHH", 1, 1, SR, SR * bits // 8, bits // 8, bits)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


@pytest.mark.parametrize("case,words", [
    ("text", "cannot decode as audio: Format not recognised"),
    ("empty", "empty file"),
    ("no frames", "no samples"),
    ("64-bit PCM", "unimplemented format"),
])
def test_load_rejects_bad_files_in_one_line(tmp_path, case, words):
    path = tmp_path / "bad.wav"
    if case == "text":
        path.write_text("this is not audio\njust text renamed .wav\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "no frames":
        sf.write(path, np.zeros((0, 1), np.float32), SR)
    else:
        wav_header_only(path, bits=64)
    with pytest.raises(ValueError, match=words) as e:
        load(path)
    assert isinstance(e.value, AudioError)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load(tmp_path / "missing.wav")


@pytest.mark.parametrize("call,words", [
    (lambda: log_mel(noise(1.0), sampling_rate=44100), "resample first"),
    (lambda: log_mel(np.zeros((2, SR), np.float32)), r"shape \(2, 16000\)"),
    (lambda: log_mel((tone(440, 1.0) * 32767).astype(np.int16)), "int16"),
    (lambda: log_mel([noise(1.0), np.full(SR, np.nan, np.float32)]), r"\[1\].*NaN"),
    (lambda: log_mel([]), "empty list"),
    (lambda: log_mel(noise(1.0), n_samples=16_001), "multiple of 160"),
    (lambda: log_mel(noise(1.0), n_samples=160), "at least 400"),
])
def test_log_mel_rejects_bad_input_in_one_line(call, words):
    with pytest.raises(ValueError, match=words) as e:
        call()
    assert "\n" not in str(e.value)


def test_plot_log_mel_writes_a_png(tmp_path):
    from plait.audio.plot import plot_log_mel

    t = np.arange(8000) / 16000
    out = plot_log_mel((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
                       tmp_path / "m.png", title="a tone")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
