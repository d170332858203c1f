"""Evaluate a trained folder on a built-in task's held-out data, and print its metrics.

    plait eval --model runs/clip_shapes --task clip-shapes
    plait eval --model runs/clip_digits --task clip-digits
    plait eval --model runs/translate --task translate
    plait eval --model runs/speakers --task classify-speakers
    plait eval --model runs/ner --task ner
    plait eval --model runs/relations --task relations
    plait eval --model runs/summarise --task summarise
    plait eval --model runs/recommend --task recommend
    plait eval --model runs/detect_scenes --task detect     (or segment_scenes --task segment)
    plait eval --model runs/video_caption --task video-caption
    plait eval --model runs/vlm_scenes --task scenes-vqa     (or scenes-caption)
    plait eval --model runs/speech --task speech
    plait eval --model runs/tts --task tts [--asr runs/speech]
    plait eval --model runs/video_qa --task video-qa
    plait eval --model runs/fusion_scenes --task fusion [--without audio]
    plait eval --model runs/imagine_scenes --task imagine
    plait eval --model runs/chat --task chat
    plait eval --model runs/vlm_scenes --task voice-qa --asr runs/speech --n 200

clip-shapes: text->image and image->text recall@1/5/10 on held-out scenes whose colour+shape
pairs never occur in training, and zero-shot accuracy naming the pair of one-shape held-out
scenes. clip-digits: zero-shot accuracy on held-out digits with unseen prompt templates.
translate, classify-speakers, ner, relations, mlm, scenes-caption, scenes-vqa, chat: the task's
own final evaluation (the one training ends with), read with the data settings in the folder's
recipe.json (scenes-caption reads a scenes-vqa folder's: the two share their data); speech:
WER and CER of greedy transcripts of held-out voices, overall and per phrase kind; video-qa:
accuracy on every question of held-out clips (colour+shape pairs never in training), per
question kind. fusion: accuracy on held-out scenes and voices, overall, per question family and
on colour-kind questions about a held-out pair, as one line (``--without audio``: asked with
that modality absent). imagine: pictures drawn for held-out prompts, the share that pass the
pixel check (exactly the colours and number of shapes asked), for prompts of training pairs and
of a held-out pair, and the recipe's CLIP judge's recall@1 of each prompt from its picture
beside the same for real pictures. voice-qa:
held-out scenes asked by held-out voices (espeak-ng), transcribed by the --asr folder and
answered by the --model VLM, against the same VLM given the written question
(plait/evaluation/voice_qa.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

CLIP_TASKS = ("clip-shapes", "clip-digits")
RECIPE_TASKS = ("translate", "classify-speakers", "ner", "relations", "summarise", "recommend",
                "detect", "segment", "video-caption", "tts", "mlm",
                "scenes-caption", "scenes-vqa", "scenes-vqa-classify", "speech", "video-qa",
                "fusion", "imagine", "chat")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="trained model folder")
    parser.add_argument("--task", required=True,
                        choices=(*CLIP_TASKS, *RECIPE_TASKS, "voice-qa"))
    parser.add_argument("--seed", type=int, default=0, help="data seed the model was trained on"
                        " (CLIP tasks and voice-qa's scenes; the others read it from"
                        " recipe.json)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--asr", metavar="DIR", help="voice-qa, tts: the speech recognition"
                        " folder (tts: default the recipe's data.asr)")
    parser.add_argument("--n", type=int, default=200, help="voice-qa: questions asked")
    parser.add_argument("--without", action="append", default=[], metavar="MODALITY",
                        choices=("text", "image", "audio"),
                        help="fusion: ask with this modality absent (repeatable); a mode that"
                        " cannot leave it out says so")


def run(args: argparse.Namespace) -> int:
    if args.task == "voice-qa":
        metrics = voice_qa(args)
    elif args.task in CLIP_TASKS:
        metrics = clip(args)
    else:
        metrics = from_recipe(args)
    if args.task == "fusion":  # one row of docs/fusion.md's table
        print(fusion_row(args, metrics))
        return 0
    width = max(20, *map(len, metrics))
    for name, value in metrics.items():
        print(f"{name:>{width}}  {value:.4f}")
    return 0


def fusion_row(args: argparse.Namespace, metrics: dict[str, float]) -> str:
    """``mode  modalities  accuracy 0.971  count-colour 0.980 ...`` on one line."""
    from plait.checkpoint import read_model_config

    config = read_model_config(args.model)
    used = [m for m in config.get("modalities", ()) if m not in args.without]
    parts = [f"{k.removeprefix('accuracy_')} {v:.3f}" for k, v in metrics.items()
             if k.startswith("accuracy_")]
    return (f"{config.get('mode', '?')}  {'+'.join(used)}  accuracy {metrics['accuracy']:.3f}  "
            + "  ".join(parts) + f"  loss {metrics['loss']:.4f}")


def clip(args: argparse.Namespace) -> dict[str, float]:
    from plait.evaluation.clip_eval import evaluate
    from plait.inference import ClipEncoder

    enc = ClipEncoder.from_folder(args.model, device=args.device)
    return evaluate(enc, args.task, enc.processor.config.crop_size, seed=args.seed)


def voice_qa(args: argparse.Namespace) -> dict[str, float]:
    from plait.data.speech import written_question
    from plait.evaluation.voice_qa import evaluate_voice_qa
    from plait.inference.voice import VoiceAsker

    if not args.asr:
        raise ValueError("--task voice-qa needs --asr DIR, the speech recognition folder that"
                         " hears the questions (--model is the vision-language folder)")
    voice = VoiceAsker.from_folders(args.model, args.asr, args.device, written_question)
    return evaluate_voice_qa(voice, n=args.n, seed=args.seed)


def from_recipe(args: argparse.Namespace) -> dict[str, float]:
    """The task's evaluation of the folder, with the data settings it was trained with."""
    import torch

    from plait.checkpoint import read_model_config
    from plait.loading import load
    from plait.training import TASKS, TrainConfig
    from plait.training.distributed import Dist

    folder = Path(args.model)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    recipe_file = folder / "recipe.json"
    recipe = json.loads(recipe_file.read_text()) if recipe_file.is_file() else {}
    task_cls = TASKS.get(args.task)
    trained = recipe.get("task")
    same_data = trained in TASKS and TASKS.get(trained).data_config is task_cls.data_config
    data_tree = recipe.get("data", {}) if same_data else {}
    data_tree = {k: v for k, v in data_tree.items() if k != "dir"}
    if args.task == "tts" and args.asr:  # the recogniser that judges, if not the recipe's
        data_tree["asr"] = args.asr
    data = task_cls.data_config.from_dict(data_tree, where="data")
    model = load(folder, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:  # files the task builds go nowhere
        train = TrainConfig(init_from=str(folder), out_dir=tmp, device="cpu")
        task = task_cls(data, train, Dist())
        wanted, have = task.model_config(model.config).to_dict(), model.config.to_dict()
        saved = read_model_config(folder)  # a field it does not name came after it was saved
        diff = [f"{k}={have[k]!r} (the task needs {v!r})" for k, v in wanted.items()
                if have.get(k) != v and k in saved]
        if diff:
            raise ValueError(f"{folder} does not fit task '{args.task}': {', '.join(diff[:3])}")
        if args.without:
            if args.task != "fusion":
                raise ValueError("--without is for --task fusion (a modality left out)")
            task.absent = frozenset(args.without)
        with torch.no_grad():
            return task.evaluate(model, torch.device(args.device), None)
