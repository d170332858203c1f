"""Convert a plait model folder to a Hugging Face folder (``--to-hf``) or back (``--from-hf``).

    plait convert --to-hf runs/gpt my-gpt2        # transformers' from_pretrained loads it
    plait convert --from-hf gpt2-folder my-plait  # a plait folder (config.json + safetensors)

GPT exports as GPT-2 (learned positions, LayerNorm, GELU-family MLP, full attention heads);
Bert, ViT and CLIP export as their Hugging Face namesakes. A feature the target lacks
(RoPE, RMSNorm, SwiGLU, grouped-query attention, ...) is an error naming the config field.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to-hf", action="store_true",
                           help="SRC is a plait folder, DST becomes a Hugging Face folder")
    direction.add_argument("--from-hf", action="store_true",
                           help="SRC is a Hugging Face folder, DST becomes a plait folder")
    parser.add_argument("src", metavar="SRC", help="folder to read")
    parser.add_argument("dst", metavar="DST", help="folder to write (created if needed)")


def run(args: argparse.Namespace) -> int:
    from plait import hf
    from plait.checkpoint import is_plait_folder, save_model

    src, dst = Path(args.src), Path(args.dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"SRC and DST are the same folder ({src}); write to a new folder")
    if args.to_hf:
        if not is_plait_folder(src):
            raise ValueError(f"{src} is not a plait folder (no 'plait_model' in config.json);"
                             " to read a Hugging Face folder use --from-hf")
        hf.convert_folder(src, dst)
    else:
        model = hf.load(src)
        save_model(model, dst)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "vocab.txt"):
            if (src / name).is_file():
                shutil.copyfile(src / name, dst / name)
    print(f"wrote {dst}")
    return 0
