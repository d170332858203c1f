"""Peak resident memory of training and inference, per shipped recipe and for GPT-2 124M.

    python -m benchmarks.memory            # the CPU recipes in configs/ + GPT-2 124M
    python -m benchmarks.memory --small    # one recipe, a tiny GPT: the test's run (seconds)

Every measurement runs in a fresh Python process (``--child``), since a process's peak
resident set (``ru_maxrss``) only ever grows. A child first imports torch and plait and records
that idle baseline, then builds what it measures and reports its peak; the table shows the
peak and the peak minus the baseline (what the work itself added: weights, gradients, AdamW
moments, activations, data). Rows:

- each recipe's last run (a multi-stage recipe's own model; the stages before it are not
  trained: a freshly initialised model of the same shapes stands in for each): (a) ``--steps``
  optimizer steps at the recipe's batch size and accumulation, (b) inference at batch 1: the
  task's loss forward under ``no_grad`` (+ a 64-token greedy ``generate`` for the language
  model tasks). Every recipe's data are built first, in one process, each under
  ``--prepare-timeout`` (into ``--work``, kept for the next run: the first run spends minutes
  building them); a recipe whose build fails or is not reached says so. Recipes written for
  CUDA (``device = "cuda"``) are left out unless named in ``--recipes``; everything runs on
  the CPU, one thread per recipe child, ``--jobs`` children at a time;
- GPT-2 124M (plait's GPT, GPT-2 small's config, random init): inference (a 64-token greedy
  generate from an 8-token prompt at batch 1) and training at ``--batch`` x ``--seq`` with and
  without activation checkpointing (peak and seconds per step, the first step not timed).

CPU only; numbers from a shared machine are noisy, the ratios less so (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GPT2 = {"vocab_size": 50257, "n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024}
TINY = {"vocab_size": 97, "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 128}
GENERATE_TASKS = ("lm", "chat")  # whose model generates from a prompt of input_ids alone


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- children: each prints JSON lines -------------------------------------------------------
def recipe_runs(path: str, work: str) -> list[Any]:
    """The recipe's runs (its stages, then itself), each with its out_dir under ``work`` and
    starting from the one before."""
    from plait.training import load_recipe

    out: list[Any] = []
    for i, r in enumerate(load_recipe(path).runs()):
        t = r.train.replace(out_dir=f"{work}/{Path(path).stem}/{i}", progress=False, threads=1,
                            eval_interval=0, device="cpu")
        if i:
            t = t.replace(init_from=out[-1].train.out_dir)
        out.append(replace(r, train=t))
    return out


def child_prepare(a: dict[str, Any]) -> dict[str, Any]:
    """Build every recipe's data, and for a multi-stage recipe stand in for each earlier
    stage's trained model with a freshly initialised one (the same shapes, so the same
    memory), saved where the next stage starts from. One line per recipe."""
    import shutil

    import torch

    from plait.checkpoint import save_model
    from plait.training import get_task
    from plait.training.build import build_model
    from plait.training.distributed import Dist

    def over(*_: Any) -> None:
        raise TimeoutError(f"data build over {a['timeout']:.0f} s")

    signal.signal(signal.SIGALRM, over)
    for path in a["recipes"]:
        tic = time.perf_counter()
        signal.alarm(int(a["timeout"]))
        try:
            runs = recipe_runs(path, a["work"])
            for r in runs:
                task = get_task(r.task)(r.data, r.train, Dist())
                task.prepare()
                if r is not runs[-1]:
                    save_model(build_model(r, task, torch.device("cpu")), r.train.out_dir)
                    for f in task.files():
                        if f.is_file():
                            shutil.copyfile(f, Path(r.train.out_dir) / f.name)
            row = {"recipe": path, "seconds": time.perf_counter() - tic}
        except Exception as e:  # noqa: BLE001 (reported in the table)
            row = {"recipe": path, "error": f"{type(e).__name__}: {e}"[:120]}
        signal.alarm(0)
        print(json.dumps(row), flush=True)
    return {"done": True}


def child_train(a: dict[str, Any]) -> dict[str, Any]:
    from plait.training import Trainer

    base = peak_mb()
    r = recipe_runs(a["recipe"], a["work"])[-1]
    trainer = Trainer(r)
    for step in range(a["steps"]):
        trainer.train_step(step)
    return {"base": base, "peak": peak_mb()}


def first_row(batch: dict[str, Any]) -> dict[str, Any]:
    """Batch 1: the first row of every tensor or list that has one per example."""
    import torch

    rows = {len(v) for v in batch.values() if isinstance(v, torch.Tensor | list) and len(v)}
    B = max(rows) if rows else 1
    return {k: v[:1] if isinstance(v, torch.Tensor | list) and len(v) == B else v
            for k, v in batch.items()}


def child_infer(a: dict[str, Any]) -> dict[str, Any]:
    import torch

    from plait.training import get_task
    from plait.training.build import build_model
    from plait.training.distributed import Dist

    base = peak_mb()
    r = recipe_runs(a["recipe"], a["work"])[-1]
    task = get_task(r.task)(r.data, r.train, Dist())
    model = build_model(r, task, torch.device("cpu")).eval()
    batch = task.train_batch(0, 0)
    with torch.no_grad():
        try:
            task.loss(model, first_row(batch))
            kind = "forward B=1"
        except Exception:  # noqa: BLE001 (a loss that needs more than one row)
            task.loss(model, batch)
            kind = f"forward of a training batch ({task.count(batch)} items)"
        if r.task in GENERATE_TASKS:
            model.generate(batch["input_ids"][:1, :8], max_new_tokens=64)
            kind += " + generate 64"
    return {"base": base, "peak": peak_mb(), "kind": kind}


def child_gpt(a: dict[str, Any]) -> dict[str, Any]:
    """GPT (``a["config"]``): generate 64 tokens at batch 1, or train ``a["steps"]`` AdamW
    steps at ``a["batch"]`` x ``a["seq"]`` (activation checkpointing if ``a["ac"]``)."""
    import torch
    import torch.nn.functional as F

    from plait.models.gpt import GPT, GPTConfig
    from plait.nn import checkpoint_activations

    torch.set_num_threads(2)
    base = peak_mb()
    torch.manual_seed(0)
    model = GPT(GPTConfig(**a["config"], dropout=0.0))
    V = a["config"]["vocab_size"]
    if a["mode"] == "infer":
        with torch.no_grad():
            model.eval().generate(torch.randint(0, V, (1, 8)), max_new_tokens=64)
        return {"base": base, "peak": peak_mb()}
    if a["ac"]:
        checkpoint_activations(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, V, (a["batch"], a["seq"] + 1))
    times = []
    for _ in range(a["steps"]):
        tic = time.perf_counter()
        logits = model(ids[:, :-1])  # (B, T, V)
        F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tic)
    step_s = sum(times[1:]) / max(len(times) - 1, 1)  # the first step allocates: not timed
    return {"base": base, "peak": peak_mb(), "step_s": step_s}


CHILDREN = {"prepare": child_prepare, "train": child_train, "infer": child_infer,
            "gpt": child_gpt}


def child(args: dict[str, Any]) -> None:
    import torch  # noqa: F401  (the baseline includes torch and plait's training imports)

    import plait.training  # noqa: F401

    print(json.dumps(CHILDREN[args["kind"]](args)), flush=True)


# -- the parent: one process per measurement, then the table ---------------------------------
def spawn(args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run a child; its JSON, or ``{"error": why}``."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", json.dumps(args)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cell(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"skipped: {r['error']}"
    return f"{r['peak']:,.0f} (+{r['peak'] - r['base']:,.0f})"


def prepare_all(recipes: list[str], work: str, timeout: float) -> dict[str, dict[str, Any]]:
    """Each recipe's data build (one process for all, each build under ``timeout``):
    ``{path: {"seconds": s} or {"error": why}}``."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child",
           json.dumps({"kind": "prepare", "recipes": recipes, "work": work, "timeout": timeout})]
    total = timeout * len(recipes) + 60
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=total)
        stdout, why = proc.stdout, (proc.stderr.strip().splitlines() or ["failed"])[-1][:120]
    except subprocess.TimeoutExpired as e:
        stdout, why = (e.stdout or b"").decode(), f"builds over {total:.0f} s in all"
    rows = [json.loads(x) for x in stdout.splitlines() if x.startswith('{"recipe"')]
    done = {r["recipe"]: r for r in rows}
    return {p: done.get(p, {"error": why}) for p in recipes}


def recipe_rows(recipes: list[str], steps: int, work: str, prep_timeout: float,
                jobs: int) -> list[str]:
    """One row per recipe; ``jobs`` children at a time (each its own process, so each peak is
    its own; only the time is shared)."""
    rows = ["| recipe (its last run) | train: peak MB (+ over idle) |"
            " inference: peak MB (+ over idle) | inference is |", "|---|---|---|---|"]
    built = prepare_all(recipes, work, prep_timeout)
    todo = [p for p in recipes if "error" not in built[p]]
    with ThreadPoolExecutor(jobs) as pool:
        train = {p: pool.submit(spawn, {"kind": "train", "recipe": p, "work": work,
                                        "steps": steps}, 300) for p in todo}
        infer = {p: pool.submit(spawn, {"kind": "infer", "recipe": p, "work": work}, 300)
                 for p in todo}
        for path in recipes:
            name = Path(path).stem
            if path not in train:
                rows.append(f"| {name} | not built: {built[path]['error']} | | |")
                continue
            tr, inf = train[path].result(), infer[path].result()
            rows.append(f"| {name} | {cell(tr)} | {cell(inf)} | {inf.get('kind', '')} |")
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def cpu_recipes() -> list[str]:
    """configs/*.toml but those written for CUDA (their CPU twins are measured)."""
    import tomllib

    paths = sorted(str(f) for f in (ROOT / "configs").glob("*.toml"))
    return [p for p in paths
            if tomllib.loads(Path(p).read_text()).get("train", {}).get("device") != "cuda"]


def gpt_rows(config: dict[str, int], batch: int, seq: int, steps: int) -> list[str]:
    rows = ["| GPT | run | peak MB (+ over idle) | s/step |", "|---|---|---|---|"]
    r = spawn({"kind": "gpt", "mode": "infer", "config": config}, 300)
    rows.append(f"| {config['n_layer']}L {config['n_embd']}d | generate 64 tokens, B=1 |"
                f" {cell(r)} | |")
    for ac in (False, True):
        r = spawn({"kind": "gpt", "mode": "train", "config": config, "ac": ac, "batch": batch,
                   "seq": seq, "steps": steps}, 400)
        what = f"train B={batch} T={seq}" + (", activation checkpointing" if ac else "")
        step = f"{r['step_s']:.2f}" if "step_s" in r else ""
        rows.append(f"| {config['n_layer']}L {config['n_embd']}d | {what} | {cell(r)} | {step} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="one recipe and a tiny GPT (the test)")
    p.add_argument("--recipes", nargs="*", help="recipe files (default: configs/*.toml)")
    p.add_argument("--steps", type=int, default=2, help="training steps per recipe")
    p.add_argument("--batch", type=int, default=4, help="GPT-2 training batch")
    p.add_argument("--seq", type=int, default=256, help="GPT-2 training sequence length")
    p.add_argument("--gpt-steps", type=int, default=3, help="GPT-2 steps (the first untimed)")
    p.add_argument("--work", default="/tmp/plait_memory", help="scratch out_dir root")
    p.add_argument("--prepare-timeout", type=float, default=90,
                   help="seconds a recipe's data (and stand-in stages) may take to build")
    p.add_argument("--jobs", type=int, default=2, help="recipe measurements at a time")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(json.loads(a.child))
        return ""
    recipes = a.recipes or cpu_recipes()
    if a.small:
        recipes = a.recipes or [str(ROOT / "configs" / "shakespeare_char.toml")]
        a.steps, a.batch, a.seq, a.gpt_steps = 1, 2, 32, 2
    config = TINY if a.small else GPT2
    out = "\n".join([*recipe_rows(recipes, a.steps, a.work, a.prepare_timeout, a.jobs), "",
                     *gpt_rows(config, a.batch, a.seq, a.gpt_steps)])
    print(out)
    return out


if __name__ == "__main__":
    main()
