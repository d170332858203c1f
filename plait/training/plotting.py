"""The run's record: ``metrics.jsonl`` (one JSON object per log/eval event) and a loss-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plait.io import atomic_write_text

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"


class MetricsLog:
    """Append-only JSON lines; ``truncate_after(step)`` drops events a resumed run will redo."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def write(self, event: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(event) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Keep only the events of steps <= ``step`` (those the checkpoint already covers)."""
        if self.enabled:
            kept = [e for e in self.read() if e.get("step", 0) <= step and e["event"] != "final"]
            atomic_write_text(self.path, "".join(json.dumps(e) + "\n" for e in kept))

    def reset(self) -> None:
        if self.enabled:
            self.path.write_text("")


def plot_losses(events: list[dict[str, Any]], path: Path) -> None:
    """Train and val loss against step, saved as a PNG (matplotlib's Agg backend: no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in events if e["event"] == "train"]
    val = [(e["step"], e["val_loss"]) for e in events if e["event"] in ("eval", "final")]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train", lw=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="val", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
