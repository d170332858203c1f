"""A picture of a recording's log-mel features, with its transcript as the title."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plait.audio.decode import SAMPLING_RATE
from plait.audio.features import HOP_LENGTH, log_mel


def plot_log_mel(audio: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Save the waveform above its log-mel features (only the frames that hold the recording,
    not the window's padding) as a PNG; matplotlib's Agg backend, so no display is needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_frames = max(1, -(-len(audio) // HOP_LENGTH))  # ceil: the frames the sound reaches
    window = -(-len(audio) // HOP_LENGTH) * HOP_LENGTH + HOP_LENGTH
    feats = log_mel(audio, n_samples=max(window, 400))[0, :, :n_frames].numpy()
    seconds = len(audio) / SAMPLING_RATE
    fig, (wave, mel) = plt.subplots(2, 1, figsize=(8, 4.2), sharex=True,
                                    gridspec_kw={"height_ratios": [1, 2.2]})
    wave.plot(np.arange(len(audio)) / SAMPLING_RATE, audio, lw=0.4, color="0.2")
    wave.set_ylabel("sample")
    wave.set_title(title, fontsize=10)
    im = mel.imshow(feats, origin="lower", aspect="auto", cmap="magma",
                    extent=(0.0, n_frames * HOP_LENGTH / SAMPLING_RATE, 0, feats.shape[0]))
    mel.set_xlim(0.0, seconds)
    mel.set_xlabel("seconds")
    mel.set_ylabel("mel band")
    fig.colorbar(im, ax=[wave, mel], label="(log10 power + 4) / 4", shrink=0.8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
