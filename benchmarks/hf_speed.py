"""plait against Hugging Face ``transformers``, side by side, on the same random weights.

Each family's reference model is built from its ``transformers`` config class with random
weights, saved with ``save_pretrained`` and loaded into plait with ``plait.load``: both sides
hold identical weights, run in this one process, under ``torch.inference_mode``, and take turns
(see :mod:`benchmarks.timing`). Every row carries its parity evidence (equal tokens, or the
largest output difference), so a speed-up can never come from computing something else.

    python -m benchmarks.hf_speed                  # GPT-2 124M, BERT-base, ViT-B/16, CLIP B/32,
                                                   # BART-base, LLaVA (CLIP B/32 + Llama 125M),
                                                   # whisper-tiny
    python -m benchmarks.hf_speed --small          # tiny configs: a quick check of the script
    python -m benchmarks.hf_speed --device cuda --dtype bf16

A family whose plait loader is missing is skipped with a note, not an error.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
import transformers

import plait
from benchmarks import bandwidth
from benchmarks.timing import Row, interleaved, table

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def side_by_side(hf_model: torch.nn.Module, args: argparse.Namespace
                 ) -> tuple[torch.nn.Module, torch.nn.Module | None, str]:
    """(HF model, the same weights loaded by plait or None, a note on why not)."""
    dtype = DTYPES[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        try:
            ours = plait.load(tmp)
        except (ValueError, KeyError, ImportError, NotImplementedError) as e:
            ours, note = None, f"skipped: plait cannot load it yet ({str(e)[:90]})"
        else:
            ours, note = ours.to(args.device, dtype).eval(), ""
            assert type(ours).__module__.startswith("plait."), type(ours)
    return hf_model.to(args.device, dtype).eval(), ours, note


def diff(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape:
        return f"shapes differ {tuple(a.shape)} vs {tuple(b.shape)}"
    return f"max abs diff {(a.float() - b.float()).abs().max().item():.1e}"


def skipped(names: list[tuple[str, str]], note: str) -> list[Row]:
    return [Row(name, unit, 1, [], [], note) for name, unit in names]


# -- GPT-2: decoding ------------------------------------------------------------------------------
def gpt2_config(small: bool) -> transformers.GPT2Config:
    if small:
        return transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000,
                                       n_positions=256)
    return transformers.GPT2Config()  # 124M: 12 layers, 768 wide, 12 heads, 50257 tokens


def decode_row(name: str, hf, ours, ids: torch.Tensor, args,
               extra: dict[str, Callable[[], object]] | None = None, **gen) -> Row:
    """Tokens/s of ``generate`` on both sides (new tokens of all rows / wall time).

    ``extra`` cases join each round (their seconds land in ``Row.extra``): the bandwidth
    measurement, so that each round's decode meets the bandwidth of its own moment.
    """
    mask = torch.ones_like(ids)
    gen = {"max_new_tokens": args.new_tokens, "do_sample": False, **gen}
    # no eos: random weights would stop at random places; both sides make exactly N tokens
    hf_gen = {**gen, "eos_token_id": None, "pad_token_id": 0}
    out: dict[str, torch.Tensor] = {}
    cases = {
        "hf": lambda: out.__setitem__("hf", hf.generate(ids, attention_mask=mask, **hf_gen)),
        "plait": lambda: out.__setitem__("plait", ours.generate(ids, mask, **gen)),
    }
    hf.generate(ids, attention_mask=mask, **{**hf_gen, "max_new_tokens": 2})  # cheap warm-up
    ours.generate(ids, mask, **{**gen, "max_new_tokens": 2})
    t = interleaved({**cases, **(extra or {})}, args.gen_reps, args.device, warmup=0)
    same = "tokens equal" if torch.equal(out["hf"], out["plait"]) else "TOKENS DIFFER"
    return Row(name, "tok/s", ids.shape[0] * args.new_tokens, t.pop("hf"), t.pop("plait"), same,
               extra=t)


def prefill_row(hf, ours, ids: torch.Tensor, args) -> Row:
    """Latency of the prompt pass that starts generation: KV cache filled, last logits only."""
    B, T = ids.shape
    out: dict[str, torch.Tensor] = {}

    def ours_prefill() -> None:
        ours.setup_cache(B, T)
        out["plait"] = ours(ids, input_pos=0, last_only=True)
        ours.clear_cache()

    cases = {
        "hf": lambda: out.__setitem__(
            "hf", hf(ids, use_cache=True, logits_to_keep=1).logits),
        "plait": ours_prefill,
    }
    t = interleaved(cases, args.reps, args.device)
    return Row(f"GPT-2 prefill, batch {B}, prompt {T}", "ms", 0, t["hf"], t["plait"],
               diff(out["hf"], out["plait"]))


def roofline_note(row: Row, stream: bandwidth.Stream, weight_bytes: int) -> str:
    """Batch-1 decode as a fraction of the roofline, round by round: the host's bandwidth
    drifts, so each round's tokens/s is set against the bandwidth measured in that round."""
    gb_s = [stream.bytes / t / 1e9 for t in row.extra["read"]]
    frac = {side: statistics.median(
        row.work / t / (bw * 1e9 / weight_bytes) for t, bw in zip(times, gb_s, strict=True))
        for side, times in (("plait", row.plait_s), ("HF", row.hf_s))}
    bw = statistics.median(gb_s)
    return (f"memory read bandwidth {bw:.2f} GB/s (median of {len(gb_s)} rounds, range"
            f" {min(gb_s):.1f}-{max(gb_s):.1f}); GPT-2 fp32 weights {weight_bytes / 1e6:.0f} MB"
            f" read per token -> roofline {bw * 1e9 / weight_bytes:.1f} tok/s; batch-1 decode"
            f" reaches {frac['plait']:.0%} of it (plait) and {frac['HF']:.0%} (HF),"
            " medians of per-round fractions")


def bench_gpt2(args: argparse.Namespace, notes: list[str]) -> list[Row]:
    torch.manual_seed(0)
    cfg = gpt2_config(args.small)
    hf, ours, note = side_by_side(transformers.GPT2LMHeadModel(cfg), args)
    b1 = f"GPT-2 greedy decode, batch 1 ({args.prompt}+{args.new_tokens} tokens)"
    b8 = f"GPT-2 greedy decode, batch 8 ({args.prompt}+{args.new_tokens} tokens)"
    beam = f"GPT-2 beam search, 4 beams ({args.prompt}+{args.new_tokens} tokens)"
    if ours is None:
        return skipped([(b1, "tok/s"), (b8, "tok/s"), (beam, "tok/s")], note)
    ids = torch.randint(0, cfg.vocab_size, (8, max(args.prompt, 128)), device=args.device)
    p = ids[:, :args.prompt]
    if args.device == "cpu" and args.dtype == "fp32" and not args.small:
        stream = bandwidth.Stream()  # one read of 1 GiB in every round, beside both decodes
        rows = [decode_row(b1, hf, ours, p[:1], args, extra={"read": stream})]
        notes.append(roofline_note(rows[0], stream, bandwidth.weight_bytes(ours)))
        del stream
    else:
        rows = [decode_row(b1, hf, ours, p[:1], args)]
    rows.append(decode_row(b8, hf, ours, p, args))
    rows.append(decode_row(beam, hf, ours, p[:1], args, num_beams=4))
    rows.append(prefill_row(hf, ours, p[:1], args))
    rows.append(prefill_row(hf, ours, ids[:1, :128], args))
    return rows


# -- encoders: BERT, ViT, CLIP ------------------------------------------------------------------
def encoder_row(name: str, unit: str, work: int, hf_fn: Callable[[], torch.Tensor],
                plait_fn: Callable[[], torch.Tensor], args) -> Row:
    """Items/s of one forward pass on both sides, and how far apart their outputs are."""
    out: dict[str, torch.Tensor] = {}
    t = interleaved({"hf": lambda: out.__setitem__("hf", hf_fn()),
                     "plait": lambda: out.__setitem__("plait", plait_fn())}, args.reps, args.device)
    return Row(name, unit, work, t["hf"], t["plait"], diff(out["hf"], out["plait"]))


def bench_bert(args: argparse.Namespace, notes: list[str]) -> list[Row]:
    torch.manual_seed(0)
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, vocab_size=1000)
    cfg = transformers.BertConfig(**(small if args.small else {}))  # default: BERT-base
    hf, ours, note = side_by_side(transformers.BertModel(cfg), args)
    name = f"BERT encoder, {args.batch} x 128 tokens"
    if ours is None:
        return skipped([(name, "seq/s")], note)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, 128), device=args.device)
    mask = torch.ones_like(ids)
    return [encoder_row(name, "seq/s", args.batch,
                        lambda: hf(ids, attention_mask=mask).last_hidden_state,
                        lambda: ours(ids, mask), args)]


def pixels(args: argparse.Namespace, size: int) -> torch.Tensor:
    return torch.randn(args.batch, 3, size, size, device=args.device, dtype=DTYPES[args.dtype])


def bench_vit(args: argparse.Namespace, notes: list[str]) -> list[Row]:
    torch.manual_seed(0)
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, image_size=32, patch_size=8)
    cfg = transformers.ViTConfig(**(small if args.small else {}))  # default: ViT-B/16, 224 px
    hf, ours, note = side_by_side(transformers.ViTModel(cfg), args)
    name = f"ViT-B/16 encoder, {args.batch} images {cfg.image_size} px"
    if ours is None:
        return skipped([(name, "img/s")], note)
    x = pixels(args, cfg.image_size)
    return [encoder_row(name, "img/s", args.batch, lambda: hf(x).last_hidden_state,
                        lambda: ours(x), args)]


def clip_config(small: bool) -> transformers.CLIPConfig:
    if not small:
        return transformers.CLIPConfig()  # ViT-B/32 image tower, 12-layer 512-wide text tower
    tower = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128)
    return transformers.CLIPConfig(text_config=dict(tower, vocab_size=1000),
                                   vision_config=dict(tower, image_size=32, patch_size=8),
                                   projection_dim=32)


def features(out) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features; 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def bench_clip(args: argparse.Namespace, notes: list[str]) -> list[Row]:
    torch.manual_seed(0)
    cfg = clip_config(args.small)
    hf, ours, note = side_by_side(transformers.CLIPModel(cfg), args)
    img = f"CLIP B/32 image tower, {args.batch} images"
    txt = f"CLIP text tower, {args.batch} x 77 tokens"
    if ours is None:
        return skipped([(img, "img/s"), (txt, "text/s")], note)
    x = pixels(args, cfg.vision_config.image_size)
    ids = torch.randint(0, cfg.text_config.vocab_size, (args.batch, 77), device=args.device)
    mask = torch.ones_like(ids)
    return [
        encoder_row(img, "img/s", args.batch,
                    lambda: features(hf.get_image_features(pixel_values=x)),
                    lambda: ours.encode_image(x), args),
        encoder_row(txt, "text/s", args.batch,
                    lambda: features(hf.get_text_features(input_ids=ids, attention_mask=mask)),
                    lambda: ours.encode_text(ids, mask), args),
    ]


# -- encoder-decoder: BART ------------------------------------------------------------------------
def bart_config(small: bool) -> transformers.BartConfig:
    if small:
        return transformers.BartConfig(vocab_size=1000, d_model=64, encoder_layers=2,
                                       decoder_layers=2, encoder_attention_heads=4,
                                       decoder_attention_heads=4, encoder_ffn_dim=128,
                                       decoder_ffn_dim=128, max_position_embeddings=256)
    # BART-base sizes (BartConfig() alone is BART-large): 6 + 6 layers, 768 wide, 50265 tokens
    return transformers.BartConfig(encoder_layers=6, decoder_layers=6, d_model=768,
                                   encoder_attention_heads=12, decoder_attention_heads=12,
                                   encoder_ffn_dim=3072, decoder_ffn_dim=3072)


def bench_bart(args: argparse.Namespace, notes: list[str]) -> list[Row]:
    torch.manual_seed(0)
    cfg = bart_config(args.small)
    hf, ours, note = side_by_side(transformers.BartForConditionalGeneration(cfg), args)
    enc = f"BART-base encoder, {args.batch} x 128 tokens"
    beam = f"BART-base beam search, 4 beams (source 32, {args.new_tokens} new tokens)"
    greedy = f"BART-base greedy decode, batch 1 (source 32, {args.new_tokens} new tokens)"
    if ours is None:
        return skipped([(enc, "seq/s"), (beam, "tok/s"), (greedy, "tok/s")], note)
    ids = torch.randint(3, cfg.vocab_size, (args.batch, 128), device=args.device)
    mask = torch.ones_like(ids)
    # no eos, no forced eos: random weights would stop at random places
    gen = {"eos_token_id": None, "forced_eos_token_id": None}
    return [
        encoder_row(enc, "seq/s", args.batch,
                    lambda: hf.model.encoder(ids, attention_mask=mask).last_hidden_state,
                    lambda: ours.encode(ids, mask), args),
        decode_row(beam, hf, ours, ids[:1, :32], args, num_beams=4, **gen),
        decode_row(greedy, hf, ours, ids[:1, :32], args, **gen),
    ]


# -- speech: Whisper ------------------------------------------------------------------------------
def whisper_config(small: bool) -> transformers.WhisperConfig:
    # no suppress tokens: transformers would add processors plait does not have
    quiet = dict(suppress_tokens=None, begin_suppress_tokens=None)
    if small:
        return transformers.WhisperConfig(vocab_size=1000, d_model=64, encoder_layers=2,
                                          decoder_layers=2, encoder_attention_heads=4,
                                          decoder_attention_heads=4, encoder_ffn_dim=128,
                                          decoder_ffn_dim=128, max_source_positions=50,
                                          max_target_positions=128, pad_token_id=0,
                                          eos_token_id=1, decoder_start_token_id=2, **quiet)
    return transformers.WhisperConfig(**quiet)  # whisper-tiny: 4 + 4 layers, 384 wide, 6 heads


def bench_whisper(args: argparse.Namespace, notes: list[str]) -> list[Row]:
    """The encoder on one 30-s window, and greedy decoding over a given encoder output (the
    encoder ran once before; both sides get the same one), with Whisper's usual four-token
    prompt (start, language, task, no timestamps) when the vocabulary has those ids."""
    torch.manual_seed(0)
    cfg = whisper_config(args.small)
    hf, ours, note = side_by_side(transformers.WhisperForConditionalGeneration(cfg), args)
    frames = 2 * cfg.max_source_positions
    enc = f"Whisper-tiny encoder, 1 x {frames // 100} s ({frames} frames)"
    greedy = (f"Whisper-tiny greedy decode, batch 1 (prompt 4, {args.new_tokens} new tokens,"
              " encoder output given)")
    if ours is None:
        return skipped([(enc, "utt/s"), (greedy, "tok/s")], note)
    x = torch.randn(1, cfg.num_mel_bins, frames, device=args.device, dtype=DTYPES[args.dtype])
    rows = [encoder_row(enc, "utt/s", 1, lambda: hf.model.encoder(x).last_hidden_state,
                        lambda: ours.encode(x), args)]
    memory = ours.encode(x)
    start = cfg.decoder_start_token_id
    task = [50259, 50359, 50363] if cfg.vocab_size > 50363 else [3, 4, 5]
    prompt = torch.tensor([[start, *task]], device=args.device)
    gen = dict(max_new_tokens=args.new_tokens, eos_token_id=None)
    out: dict[str, torch.Tensor] = {}
    encoded = transformers.modeling_outputs.BaseModelOutput(last_hidden_state=memory)

    def hf_decode() -> None:  # Whisper's own generate; it returns the new tokens only
        out["hf"] = hf.generate(encoder_outputs=encoded, decoder_input_ids=prompt,
                                do_sample=False, **gen)

    def ours_decode() -> None:
        out["plait"] = ours.generate_over(memory, None, prompt, **gen)[:, prompt.shape[1]:]

    t = interleaved({"hf": hf_decode, "plait": ours_decode}, args.gen_reps, args.device)
    same = "tokens equal" if torch.equal(out["hf"], out["plait"]) else "TOKENS DIFFER"
    rows.append(Row(greedy, "tok/s", args.new_tokens, t["hf"], t["plait"], same))
    return rows


# -- vision-language: LLaVA ----------------------------------------------------------------------
def llava_config(small: bool) -> transformers.LlavaConfig:
    if small:
        tower = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, image_size=32, patch_size=8)
        text = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2)
    else:  # CLIPVisionConfig's defaults are ViT-B/32 at 224 px; a 125M Llama with GQA
        tower = {}
        text = dict(vocab_size=32064, hidden_size=768, intermediate_size=2048,
                    num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4)
    # no generation ids: LlamaConfig's eos 2 would end random decoding early
    text = transformers.LlamaConfig(**text, bos_token_id=None, eos_token_id=None,
                                    pad_token_id=None)
    return transformers.LlavaConfig(vision_config=transformers.CLIPVisionConfig(**tower),
                                    text_config=text, image_token_index=text.vocab_size - 1)


def bench_llava(args: argparse.Namespace, notes: list[str]) -> list[Row]:
    torch.manual_seed(0)
    cfg = llava_config(args.small)
    hf, ours, note = side_by_side(transformers.LlavaForConditionalGeneration(cfg), args)
    v, img = cfg.vision_config, cfg.image_token_index
    n_img = (v.image_size // v.patch_size) ** 2  # the "default" strategy drops the class token
    name = (f"LLaVA greedy decode, batch 1 ({n_img} image + {args.prompt} text tokens,"
            f" {args.new_tokens} new)")
    if ours is None:
        return skipped([(name, "tok/s")], note)
    text = torch.randint(0, img, (1, args.prompt), device=args.device)
    image = torch.full((1, n_img), img, device=args.device)
    ids = torch.cat((text[:, :1], image, text[:, 1:]), dim=1)  # BOS-like token, image, text
    x = torch.randn(1, 3, v.image_size, v.image_size, device=args.device,
                    dtype=DTYPES[args.dtype])
    return [decode_row(name, hf, ours, ids, args, pixel_values=x)]


FAMILIES = {"gpt2": bench_gpt2, "bert": bench_bert, "vit": bench_vit, "clip": bench_clip,
            "bart": bench_bart, "llava": bench_llava, "whisper": bench_whisper}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny configs (checks the script)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--reps", type=int, default=5, help="timed rounds for forward passes")
    p.add_argument("--gen-reps", type=int, default=5, help="timed rounds for generate")
    p.add_argument("--prompt", type=int, default=16, help="prompt length for decoding")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=8, help="batch of the encoder benchmarks")
    p.add_argument("--only", default=",".join(FAMILIES),
                   help=f"comma-separated subset of {','.join(FAMILIES)}")
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(FAMILIES)
    if unknown:
        p.error(f"unknown --only {sorted(unknown)} (allowed: {', '.join(FAMILIES)})")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda asked for, but torch sees no CUDA device")
    return args


def header(args: argparse.Namespace) -> str:
    cpu = platform.processor() or platform.machine()
    if args.device.startswith("cuda"):
        cpu = torch.cuda.get_device_name()
    return (f"device={args.device} ({cpu}) dtype={args.dtype} threads={torch.get_num_threads()}"
            f" torch={torch.__version__} transformers={transformers.__version__}"
            f" plait={plait.__version__} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()  # random small configs trip token-id warnings
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    print(header(args), flush=True)
    rows: list[Row] = []
    notes: list[str] = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for name in args.only.split(","):
            t1 = time.perf_counter()
            new = FAMILIES[name](args, notes)
            rows += new
            print(table(new).split("\n", 2)[2], flush=True)  # progress: this family's lines
            print(f"  ({name}: {time.perf_counter() - t1:.0f} s)", flush=True)
    print(f"\n{table(rows)}\n")
    for n in notes:
        print(f"- {n}")
    print(f"- total {time.perf_counter() - t0:.0f} s; medians of {args.gen_reps} (generate) and"
          f" {args.reps} (forward) interleaved rounds after one warm-up round")


if __name__ == "__main__":
    main()
