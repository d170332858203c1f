"""``[train]``: how to train, the same for every model and task (the loop in ``trainer.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from plait.config import Config


@dataclass(frozen=True)
class TrainConfig(Config):
    """How to train: optimizer, schedule, evaluation, checkpoints, precision, devices."""

    out_dir: str = "runs/run"
    max_steps: int = 1000  # optimizer steps; the LR schedule decays over exactly these
    # > 0: a wall-time budget. The run stops when it is spent, and the lr decay follows
    # whichever runs out first, steps or time, so a slow machine still ends the schedule.
    # The clock makes such a run machine-dependent; 0 keeps it a pure function of the step.
    max_minutes: float = 0.0
    lr: float = 1e-3
    min_lr: float = 1e-4
    decay: Literal["cosine", "linear"] = "cosine"  # shape of the lr decay after warmup
    warmup_steps: int = 100
    weight_decay: float = 0.1  # applied to 2-D weights only (matmuls, embeddings)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    grad_accum: int = 1  # micro-batches per optimizer step
    label_smoothing: float = 0.0
    eval_interval: int = 250  # steps between evaluations; 0 = only at the end
    eval_batches: int = 20  # batches per periodic eval (per rank); 0 = whole split, as the final
    patience: int = 0  # stop after this many evals without a better val loss; 0 = never
    save_interval: int = 0  # steps between checkpoints; 0 = only at the end
    log_interval: int = 10
    seed: int = 1337
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on CUDA, else fp32
    compile: bool = False  # torch.compile the model
    # under torchrun: "ddp" keeps a whole replica per rank; "fsdp" shards parameters, gradients
    # and optimizer state over the ranks (FSDP2, per block); see plait.training.distributed
    strategy: Literal["ddp", "fsdp"] = "ddp"
    # recompute each transformer block's activations in the backward pass (memory for time)
    activation_checkpointing: bool = False
    threads: int = 0  # torch CPU threads; 0 = torch's default
    init_from: str = ""  # a plait or Hugging Face model folder to fine-tune (plait.load)
    progress: bool = True  # progress bar on rank 0 (a line every few seconds when not a tty)
    # parts of the model by parameter name: a module path ("vision", "text.encoder.blocks.0")
    # or a glob ("*.norm_*"); see plait.training.optim
    freeze: tuple[str, ...] = ()  # parameters left exactly as they are
    part_lr: dict[str, float] = field(default_factory=dict)  # pattern -> its peak lr

    def __post_init__(self) -> None:
        for name in ("max_steps", "grad_accum", "log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_interval", "eval_batches", "patience",
                     "save_interval", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr <= self.lr:
            raise ValueError(f"train.min_lr ({self.min_lr}) must be in [0, lr={self.lr}]")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"train.betas must be two numbers in [0, 1), got {self.betas}")
        for pattern, lr in self.part_lr.items():
            if not lr >= 0:
                raise ValueError(f"train.part_lr.{pattern} must be >= 0, got {lr}")
