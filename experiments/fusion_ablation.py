"""Every fusion mode x every subset of the three modalities, trained and evaluated alike.

    python -m experiments.fusion_ablation --clip runs/fusion_scenes/clip --out runs/ablation
    python -m experiments.fusion_ablation ... --modes gmu --subsets text+image+audio,text+image

Each row is the final stage of ``configs/fusion_scenes.toml`` (the CLIP stage is trained once,
by that recipe, and every row reads its frozen image tower from ``--clip``) with
``model.mode`` and ``model.modalities`` set, in ``<out>/<mode>/<subset>``, for ``--steps``
steps (no clock: rows compare at equal steps however busy the machine) or under the time budget
``--minutes`` (the recipe's own budget unless either is given). A row already finished is read,
not retrained. Prints one line per row and writes ``<out>/ablation.json`` (every row's
metrics, steps and seconds) and ``<out>/ablation.png`` (accuracy per mode and subset).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

from plait.models.fusion import MODALITIES, MODES

SUBSETS = tuple("+".join(s) for k in (3, 2, 1) for s in itertools.combinations(MODALITIES, k))


def run_row(config: str, clip: str, out: Path, mode: str, subset: str,
            minutes: float | None, steps: int | None, seed: int) -> dict:
    from plait.loading import load
    from plait.training import load_recipe, train
    from plait.training.trainer import finished

    overrides = {"model.mode": mode, "model.modalities": subset.replace("+", ","),
                 "train.out_dir": str(out / mode / subset), "train.seed": str(seed)}
    if minutes is not None:
        overrides["train.max_minutes"] = str(minutes)
    if steps is not None:  # a step budget: rows compare at equal steps, whatever the load
        overrides |= {"train.max_steps": str(steps), "train.max_minutes": "0"}
    recipe = load_recipe(config, overrides)
    recipe = replace(recipe, stages=(), train=recipe.train.replace(init_from=clip))
    row_file = out / mode / subset / "row.json"
    if finished(recipe) and row_file.is_file():
        return json.loads(row_file.read_text())
    t0 = time.time()
    train(recipe)
    log = [json.loads(line) for line in
           (Path(recipe.train.out_dir) / "metrics.jsonl").read_text().splitlines()]
    final = next(r for r in reversed(log) if r.get("event") == "final")
    metrics = {k[4:]: v for k, v in final.items() if k.startswith("val_")}
    model = load(recipe.train.out_dir)
    trained = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("vision."))
    row = {"mode": mode, "subset": subset, "seconds": round(time.time() - t0, 1),
           "steps": final["step"], "train_s": round(final.get("train_s", 0.0), 1),
           "trainable_params": trained, **metrics}
    row_file.write_text(json.dumps(row) + "\n")
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(MODES)
    for k, mode in enumerate(MODES):
        acc = {r["subset"]: r["accuracy"] for r in rows if r["mode"] == mode}
        xs = [i + k * width for i, s in enumerate(SUBSETS) if s in acc]
        ax.bar(xs, [acc[s] for s in SUBSETS if s in acc], width, label=mode)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(SUBSETS))])
    ax.set_xticklabels(SUBSETS, rotation=20, fontsize=8)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("held-out accuracy")
    ax.legend(fontsize=8, ncol=5, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/fusion_scenes.toml")
    p.add_argument("--clip", required=True, help="the CLIP folder whose image tower rows read")
    p.add_argument("--out", default="runs/fusion_ablation")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--subsets", default=",".join(SUBSETS))
    p.add_argument("--minutes", type=float, default=None, help="each row's time budget")
    p.add_argument("--steps", type=int, default=None, help="each row's steps (no clock)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for mode in a.modes.split(","):
        for subset in a.subsets.split(","):
            row = run_row(a.config, a.clip, out, mode, subset, a.minutes, a.steps, a.seed)
            rows.append(row)
            print(f"ROW {mode:16s} {subset:18s} accuracy {row['accuracy']:.3f}  "
                  + " ".join(f"{k[9:]} {v:.3f}" for k, v in row.items()
                             if k.startswith("accuracy_"))
                  + f"  {row['steps']} steps {row['seconds']:.0f}s", flush=True)
    (out / "ablation.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, out / "ablation.png")


if __name__ == "__main__":
    main()
