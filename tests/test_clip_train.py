"""The CLIP loss against its formula, its symmetry, and 2 data-parallel processes == 1 process.

The model returns features (``CLIP.forward``), the loss receives rank and world size in its
constructor, and nothing patches ``forward`` at run time: DDP wraps the plain model."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from plait.training.losses import MAX_LOGIT_SCALE, ClipLoss

clip_loss = ClipLoss()  # one process: rank 0 of 1


def naive_infonce(img: torch.Tensor, txt: torch.Tensor, t: float) -> torch.Tensor:
    """Loop-by-loop: -log softmax of the matching pair, rows and columns, averaged."""
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    s = math.exp(min(t, math.log(100)))
    n = img.shape[0]
    total_i, total_t = 0.0, 0.0
    for i in range(n):
        row = [s * float(img[i] @ txt[j]) for j in range(n)]  # image i vs every text
        col = [s * float(txt[i] @ img[j]) for j in range(n)]  # text i vs every image
        total_i += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        total_t += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    return torch.tensor((total_i / n + total_t / n) / 2)


def test_loss_equals_formula():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    for t in (0.0, math.log(1 / 0.07), 3.0):
        got = clip_loss(img, txt, torch.tensor(t))
        torch.testing.assert_close(got, naive_infonce(img, txt, t).float(), atol=1e-5, rtol=1e-5)


def test_logit_scale_clamped_at_100():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    t = torch.tensor(10.0, requires_grad=True)  # exp(10) >> 100
    loss = clip_loss(img, txt, t)
    torch.testing.assert_close(loss, clip_loss(img, txt, torch.tensor(MAX_LOGIT_SCALE)))
    loss.backward()
    assert t.grad == 0  # clamped: no push further up


def test_symmetric_in_image_and_text():
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    t = torch.tensor(2.0)
    # the two terms swap places when the modalities swap, so the total is unchanged
    i2t = F.cross_entropy(math.exp(2.0) * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T,
                          torch.arange(6))
    t2i = F.cross_entropy(math.exp(2.0) * F.normalize(txt, dim=-1) @ F.normalize(img, dim=-1).T,
                          torch.arange(6))
    torch.testing.assert_close(clip_loss(img, txt, t), (i2t + t2i) / 2)
    torch.testing.assert_close(clip_loss(img, txt, t), clip_loss(txt, img, t))
    assert not torch.allclose(i2t, t2i)  # the terms themselves differ: the test can fail


def test_perfect_alignment_gives_low_loss():
    x = torch.eye(4) * 3
    assert clip_loss(x, x, torch.tensor(MAX_LOGIT_SCALE)) < 1e-3
    assert clip_loss(x, x.roll(1, 0), torch.tensor(MAX_LOGIT_SCALE)) > 10


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        clip_loss(torch.randn(3, 4), torch.randn(2, 4), torch.tensor(0.0))


# -- data parallel: 2 processes == 1 process ----------------------------------------------------
def tiny_clip():
    from plait.models.clip import CLIP, CLIPConfig

    torch.manual_seed(0)
    return CLIP(CLIPConfig(
        vision={"kind": "vit", "image_size": 16, "patch_size": 8, "n_layer": 1, "n_head": 2,
                "n_embd": 32},
        text={"kind": "transformer", "vocab_size": 20, "n_layer": 1, "n_head": 2, "n_embd": 32,
              "block_size": 8, "pool": "last"},
        embed_dim=16))


def tiny_batch(n: int = 8):
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(n, 3, 16, 16, generator=g)
    ids = torch.randint(1, 20, (n, 6), generator=g)
    mask = torch.ones(n, 6, dtype=torch.long)
    mask[::3, 4:] = 0  # some right padding
    return pixels, ids, mask


def train_steps(model: nn.Module, rows: slice, rank: int = 0, world_size: int = 1,
                steps: int = 3) -> list[float]:
    """SGD on the CLIP loss; returns the global-batch loss before each step."""
    criterion = ClipLoss(rank, world_size)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    pixels, ids, mask = (t[rows] for t in tiny_batch())
    losses = []
    for _ in range(steps):
        loss = criterion(*model(pixels, ids, mask))  # features and log-temperature, via DDP
        opt.zero_grad()
        loss.backward()
        opt.step()
        mean = loss.detach().clone()
        if world_size > 1:  # the global loss is the mean of the ranks' local losses
            torch.distributed.all_reduce(mean)
            mean /= world_size
        losses.append(mean.item())
    return losses


def ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=world_size)
    try:
        model = nn.parallel.DistributedDataParallel(tiny_clip())
        half = 8 // world_size
        losses = train_steps(model, slice(rank * half, (rank + 1) * half), rank, world_size)
        if rank == 0:
            torch.save({"losses": losses, "state": model.module.state_dict()}, out)
        torch.distributed.barrier()  # see plait.training.distributed.teardown
    finally:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # spawns 2 processes (~10 s idle, ~50 s on a busy 2-core machine)
def test_two_processes_equal_one(tmp_path):
    single = tiny_clip()
    losses = train_steps(single, slice(0, 8))
    out = str(tmp_path / "ddp.pt")
    mp.spawn(ddp_worker, args=(2, free_port(), out), nprocs=2, join=True)
    ddp = torch.load(out)
    # the gathered loss is the global-batch loss, and its gradient the one-process gradient:
    # losses AND weights after 3 SGD steps agree (to float reordering in the all-reduce)
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(losses),
                               atol=1e-5, rtol=1e-5)
    for name, p in single.state_dict().items():
        torch.testing.assert_close(ddp["state"][name], p, atol=1e-5, rtol=1e-4, msg=name)
    assert losses[-1] < losses[0]  # the steps did something


def test_without_gather_the_gradient_differs():
    """Why the gather matters: averaging two half-batch losses (each half sees only its own
    negatives, i.e. DDP without the gather) gives a different gradient from the global loss."""
    def grad(rows_list):
        model = tiny_clip()
        total = 0.0
        for rows in rows_list:
            pixels, ids, mask = (t[rows] for t in tiny_batch())
            total = total + clip_loss(*model(pixels, ids, mask))
        (total / len(rows_list)).backward()
        return model.text_proj.weight.grad

    full = grad([slice(0, 8)])
    halves = grad([slice(0, 4), slice(4, 8)])
    assert not torch.allclose(full, halves, atol=1e-4)


def test_clip_task_batches_split_over_ranks_and_files_load(tmp_path):
    """Rank shares of a global batch concatenate to the one-process batch; the tokenizer and
    preprocessor files the task writes load back as the same tokenizer / image settings."""
    from plait.text.load import load_tokenizer
    from plait.training.config import TrainConfig
    from plait.training.distributed import Dist
    from plait.training.tasks.clip import ClipData, ClipTask
    from plait.vision import read_preprocessor_config

    data = ClipData(n_train=40, n_gallery=10, batch_size=8, image_size=32, dir=str(tmp_path))
    one = ClipTask(data, TrainConfig(), Dist())
    parts = [ClipTask(data, TrainConfig(), Dist(r, 2)).train_batch(3, 1) for r in (0, 1)]
    full = one.train_batch(3, 1)
    assert set(full) == {"pixel_values", "input_ids", "attention_mask"}
    px = "pixel_values"
    torch.testing.assert_close(torch.cat([p[px] for p in parts]), full[px])

    def texts(b):
        pairs = zip(b["input_ids"], b["attention_mask"], strict=True)
        return [ids[m.bool()].tolist() for ids, m in pairs]

    assert texts(parts[0]) + texts(parts[1]) == texts(full)
    assert not torch.equal(one.train_batch(4, 1)[px], full[px])  # another step, another batch
    aug = data.replace(crop_scale=(0.8, 1.0))  # random crops are drawn per global row, too
    parts = [ClipTask(aug, TrainConfig(), Dist(r, 2)).train_batch(3, 1)[px] for r in (0, 1)]
    aug_full = ClipTask(aug, TrainConfig(), Dist()).train_batch(3, 1)[px]
    torch.testing.assert_close(torch.cat(parts), aug_full)
    assert not torch.allclose(aug_full, full[px])
    tok = load_tokenizer(tmp_path)
    caption = one.items[0].captions[0]
    assert tok.encode(caption) == one.tokenizer.encode(caption)
    assert read_preprocessor_config(tmp_path).crop_size == 32
