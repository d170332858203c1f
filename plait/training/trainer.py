"""The training loop: one explicit loop for every model, in the style of nanoGPT's ``train.py``.

Each optimizer step (``Trainer.train_step``):

    for micro in range(grad_accum):            # gradient accumulation
        loss = task.loss(model, batch) / grad_accum   (bf16 autocast on CUDA)
        loss.backward()                        # DDP / FSDP sync grads on the last micro-step
    clip_grad_norm_(grad_clip); lr = lr_at(step); AdamW.step(); zero_grad(set_to_none=True)

The task's ``param_groups`` give AdamW its groups (weight decay on 2-D weights only, per-part
peak rates, frozen parts left out; :mod:`plait.training.optim`). Around the step,
``Trainer.fit`` logs loss, items/s and ETA every ``log_interval`` steps to a progress bar and
``metrics.jsonl``, evaluates every ``eval_interval`` steps (early stopping after ``patience``
evals without a better loss), saves a resumable checkpoint every ``save_interval`` steps, and at
the end evaluates the *whole* validation split, prints ``val loss X.XX`` and every other metric
the task returned (with the task's units), saves, and plots the loss curve.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from plait.io import atomic_write_text
from plait.nn import checkpoint_activations, row_major
from plait.progress import progress
from plait.training import distributed
from plait.training.build import build_model, distributed_rank
from plait.training.lora import adapt
from plait.training.optim import make_optimizer, set_lrs
from plait.training.plotting import METRICS_NAME, PLOT_NAME, MetricsLog, plot_losses
from plait.training.recipe import Recipe
from plait.training.state import (
    RECIPE_NAME,
    STATE_NAME,
    copy_file,
    load_run_weights,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from plait.training.tasks import get_task, to_device

Callback = Callable[[dict[str, Any]], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def autocast(dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast (weights and optimizer stay fp32) or nothing; "auto" = bf16 on CUDA only."""
    if dtype == "auto":
        use = device.type == "cuda" and torch.cuda.is_bf16_supported()
    else:
        use = dtype == "bfloat16"
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class Trainer:
    """Runs one recipe: ``Trainer(recipe, resume).fit()`` -> final metrics."""

    def __init__(self, recipe: Recipe, resume: bool = False, callbacks: Sequence[Callback] = ()):
        t = self.t = recipe.train
        self.recipe, self.callbacks = recipe, list(callbacks)
        self.dist, self.device = distributed.setup(t.device)
        if t.threads:
            torch.set_num_threads(t.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        seed_everything(t.seed)  # the same on every rank, so every replica starts identical
        self.task = get_task(recipe.task)(recipe.data, t, self.dist)
        self.task.prepare()  # before the clock: a time budget is for steps, not data building
        self.model = adapt(build_model(recipe, self.task, self.device), recipe.lora, t)
        if t.activation_checkpointing:
            checkpoint_activations(self.model)
        self.lr = t.lr  # the scheduled rate at train.lr's peak (parts scale from their own)
        self.out = Path(t.out_dir)
        self.metrics = MetricsLog(self.out / METRICS_NAME, enabled=self.dist.is_main)
        self.state: dict[str, Any] = {"step": 0, "best_val": math.inf, "bad_evals": 0,
                                      "seconds": 0.0}
        saved = load_trainer_state(self.out) if resume else None
        if saved is not None:  # the whole weights, into the plain model before any sharding
            load_run_weights(self.out, self.model)  # (or a [lora] run's adapters)
        # DDP wraps; FSDP shards self.model in place, so the optimizer comes after
        self.ddp = distributed.wrap(self.model, self.dist, self.device, t.strategy)
        self.optimizer = make_optimizer(self.task.param_groups(self.model), t, self.device)
        if saved is not None:
            self._restore(saved)
        else:
            self._start()
        self._event({"event": "resume" if resume else "start", "step": self.state["step"],
                     "task": recipe.task, "units": self.task.units, **self._parameters()})
        self.net = torch.compile(self.ddp) if t.compile else self.ddp

    def _start(self) -> None:
        if self.dist.rank:
            seed_everything(self.t.seed + self.dist.rank)  # each rank its own dropout masks
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.metrics.reset()

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from ``out_dir`` (weights already loaded): optimizer, progress, RNG, metrics
        up to the step. On another rank count, rank r takes rank r's RNG streams (a new rank a
        fresh one): the data are the same, dropout masks differ (docs/efficiency.md §4)."""
        distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"],
                                         self.dist)
        self.state = {k: state[k] for k in ("step", "best_val", "bad_evals")}
        self.state["seconds"] = state.get("seconds", 0.0)  # training time before the stop
        rngs = state["rng"]
        if self.dist.rank < len(rngs):
            set_rng_state(rngs[self.dist.rank])
        else:  # resumed on more ranks than before: the new ones start a fresh stream
            seed_everything(self.t.seed + self.dist.rank + self.state["step"])
        self.metrics.truncate_after(self.state["step"])

    def _parameters(self) -> dict[str, int]:
        """Trainable and frozen parameter counts (printed when some are frozen)."""
        params = list(self.model.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        frozen = sum(p.numel() for p in params if not p.requires_grad)
        if self.dist.is_main and (frozen or self.t.part_lr):
            parts = ", ".join(f"{k} at lr {v:g}" for k, v in self.t.part_lr.items())
            why = ", ".join(self.t.freeze) or ("all but the LoRA adapters" if self.recipe.lora
                                                else "")
            print(f"parameters: {trainable:,} trainable, {frozen:,} frozen"
                  + (f" ({why})" if frozen else "")
                  + (f"; {parts}" if parts else ""), flush=True)
        return {"trainable_params": trainable, "frozen_params": frozen}

    # -- one optimizer step ------------------------------------------------------------------
    def schedule_step(self, step: int, seconds: float) -> float:
        """Where the lr schedule stands: ``step``, or under a time budget (``max_minutes``) the
        used fraction of the budget times ``max_steps`` once that is further along, so that on a
        slow machine the decay still ends when the time does instead of being cut off."""
        t = self.t
        if t.max_minutes <= 0 or step < t.warmup_steps:
            return step
        return max(step, seconds / (60 * t.max_minutes) * t.max_steps)

    def train_step(self, step: int, schedule_step: float | None = None) -> tuple[torch.Tensor, int]:
        """Accumulate ``grad_accum`` micro-batches, clip, step. Returns (loss, items seen).

        ``schedule_step``: the (fractional) step the lr schedule reads; default ``step``."""
        t, A = self.t, self.t.grad_accum
        self.lr = set_lrs(self.optimizer, step if schedule_step is None else schedule_step, t)
        total, items = torch.zeros((), device=self.device), 0
        for micro in range(A):
            batch = to_device(self.task.train_batch(step, micro), self.device)
            last = micro == A - 1
            # DDP: all-reduce the gradients once, after the last micro-batch
            with distributed.no_sync(self.ddp, self.dist, last):
                with autocast(t.dtype, self.device):
                    loss = self.task.loss(self.net, batch) / A
                loss.backward()
            total += loss.detach()
            items += self.task.count(batch)
        if t.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, items

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train to ``max_steps`` (or early stop / time budget), then the whole-split eval."""
        t, s, main = self.t, self.state, self.dist.is_main
        bar = progress(total=t.max_steps, initial=s["step"], disable=not (main and t.progress),
                       unit="step", desc="train")
        start = time.perf_counter() - s["seconds"]  # a resumed run continues the clock
        window = {"time": 0.0, "items": 0, "steps": 0, "train_time": 0.0}
        stop = ""
        elapsed = self._clock(start)
        while s["step"] < t.max_steps and not stop:
            tic = time.perf_counter()
            loss, items = self.train_step(s["step"], self.schedule_step(s["step"], elapsed))
            s["step"] += 1
            elapsed = s["seconds"] = self._clock(start)
            dt = time.perf_counter() - tic
            window["time"] += dt
            window["items"] += items * self.dist.world
            window["train_time"] += dt
            window["steps"] += 1
            step = s["step"]
            if step % t.log_interval == 0 or step == t.max_steps:
                self._log_train(step, loss, window, bar)
            if t.eval_interval and step % t.eval_interval == 0 and step < t.max_steps:
                stop = self._periodic_eval(step, bar)
            if t.max_minutes > 0 and not stop and elapsed > 60 * t.max_minutes:
                stop = (f"time budget of {t.max_minutes} min reached at step {step} of"
                        f" {t.max_steps}; the lr decay followed the clock to its end")
            if t.save_interval and step % t.save_interval == 0 and step < t.max_steps and not stop:
                self.save()  # (the last step is saved by _finish)
            bar.update(1)
        bar.close()
        return self._finish(stop, time.perf_counter() - start)

    def _clock(self, start: float) -> float:
        """Seconds since ``start``; under a time budget, rank 0's, so every rank agrees."""
        elapsed = time.perf_counter() - start
        if self.t.max_minutes > 0:
            elapsed = distributed.broadcast_value(elapsed, self.dist, self.device)
        return elapsed

    def _log_train(self, step: int, loss: torch.Tensor, w: dict[str, float], bar: Any) -> None:
        loss_v = distributed.all_sum([float(loss)], self.dist, self.device)[0] / self.dist.world
        tok_s = w["items"] / max(w["time"], 1e-9)
        sec_per_step = w["train_time"] / max(w["steps"], 1)
        eta = (self.t.max_steps - step) * sec_per_step
        bar.set_postfix(loss=f"{loss_v:.4f}", items_s=f"{tok_s:,.0f}")
        self._event({"event": "train", "step": step, "loss": loss_v, "lr": self.lr,
                     "tok_per_s": round(tok_s, 1), "eta_s": round(eta, 1)})
        w["time"], w["items"] = 0.0, 0

    def _evaluate(self, max_batches: int | None) -> dict[str, float]:
        self.model.eval()
        with distributed.whole(self.model), torch.no_grad(), autocast(self.t.dtype, self.device):
            metrics = self.task.evaluate(self.net, self.device, max_batches)
        row_major(self.model)  # an evaluation that generated may have changed weight layouts
        self.model.train()
        if "loss" not in metrics:
            raise ValueError(f"{type(self.task).__name__}.evaluate must return a 'loss' (early"
                             f" stopping and the loss curve read it); it returned {list(metrics)}")
        return {k: float(v) for k, v in metrics.items()}

    def _describe(self, metrics: dict[str, float]) -> str:
        """``t2i_r1 0.9080 recall, ...``: every metric but the loss, with its unit."""
        return ", ".join(f"{k} {v:.4f}" + (f" {self.task.unit(k)}" if self.task.unit(k) else "")
                         for k, v in metrics.items() if k != "loss")

    def _periodic_eval(self, step: int, bar: Any) -> str:
        """Evaluate; update early stopping. Returns why to stop, or ""."""
        s = self.state
        metrics = self._evaluate(self.t.eval_batches or None)
        val = metrics["loss"]
        if val < s["best_val"]:
            s["best_val"], s["bad_evals"] = val, 0
        else:
            s["bad_evals"] += 1
        self._event({"event": "eval", "step": step, **_prefixed(metrics),
                     "best_val": s["best_val"]})
        if self.dist.is_main:
            others = self._describe(metrics)
            bar.write(f"step {step}: val loss {val:.4f} {self.task.unit('loss')} (best"
                      f" {s['best_val']:.4f})" + (f"; {others}" if others else ""))
        if self.t.patience and s["bad_evals"] >= self.t.patience:
            return f"early stop: no better val loss in {self.t.patience} evals"
        return ""

    def _finish(self, stop: str, seconds: float) -> dict[str, float]:
        metrics = self._evaluate(None)  # the whole validation split
        val, step = metrics["loss"], self.state["step"]
        self._event({"event": "final", "step": step, **_prefixed(metrics), "train_s": seconds,
                     "stopped": stop or "max_steps"})
        self.save()
        if self.dist.is_main:
            plot_losses(self.metrics.read(), self.out / PLOT_NAME)
            if stop:
                print(stop)
            print(f"val loss {val:.2f} (whole val split, {val:.4f} {self.task.unit('loss')})"
                  f" after {step} steps in {seconds:.0f}s -> {self.out}")
            if len(metrics) > 1:
                print(f"val {self._describe(metrics)}", flush=True)
        return {"step": step, "val_loss": val, "train_s": seconds,
                **{f"val_{k}": v for k, v in metrics.items() if k != "loss"}}

    def _event(self, event: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.metrics.write(event)
        for callback in self.callbacks:
            callback(event)

    # -- checkpoints -------------------------------------------------------------------------
    def save(self) -> None:
        """Write a resumable checkpoint: every rank gathers RNG states (and under FSDP the
        whole weights and optimizer state); rank 0 writes."""
        rngs = distributed.all_gather(rng_state(), self.dist)
        weights = distributed.full_weights(self.model, self.dist)  # None unless sharded
        optimizer = distributed.optimizer_state(self.model, self.optimizer, self.dist)
        if not self.dist.is_main:
            return
        state = {**self.state, "optimizer": optimizer, "rng": rngs, "world": self.dist.world}
        save_checkpoint(self.out, distributed.unwrap(self.model), state, weights=weights,
                        adapter_base=self.t.init_from if self.recipe.lora else "")
        for src in self.task.files():
            if src.is_file():
                copy_file(src, self.out / src.name)
        atomic_write_text(self.out / RECIPE_NAME, json.dumps(self.recipe.to_dict(), indent=2))


def _prefixed(metrics: dict[str, float]) -> dict[str, float]:
    """``{"loss": x, "t2i_r1": y}`` -> ``{"val_loss": x, "val_t2i_r1": y}`` for metrics.jsonl."""
    return {f"val_{k}": v for k, v in metrics.items()}


def train(recipe: Recipe, resume: bool = False,
          callbacks: Sequence[Callback] = ()) -> dict[str, float]:
    """Run ``recipe`` (its stages first, then itself); returns the last run's final metrics.

    ``resume``: a stage that already finished is skipped, and the first unfinished run
    continues from its checkpoint (or starts, if it has none yet)."""
    runs = recipe.runs()
    metrics: dict[str, float] = {}
    for i, run in enumerate(runs):
        if len(runs) > 1 and distributed_rank() == 0:
            label = run.name or "final"
            print(f"== stage {i + 1} of {len(runs)}: {label} (task {run.task}) ->"
                  f" {run.train.out_dir}", flush=True)
        if resume and i < len(runs) - 1 and finished(run):
            continue
        # a stage not begun yet starts; a lone run asked to resume must have a checkpoint
        again = resume and (len(runs) == 1 or (Path(run.train.out_dir) / STATE_NAME).is_file())
        metrics = _train_one(run, again, callbacks)
    return metrics


def finished(run: Recipe) -> bool:
    """The run's folder records a final evaluation: it completed."""
    log = Path(run.train.out_dir) / METRICS_NAME
    return log.is_file() and '"event": "final"' in log.read_text()


def _train_one(recipe: Recipe, resume: bool, callbacks: Sequence[Callback]) -> dict[str, float]:
    try:
        metrics = Trainer(recipe, resume, callbacks).fit()
    except BaseException:
        distributed.teardown(clean=False)
        raise
    distributed.teardown()
    return metrics
