"""A frame-sequence classifier for questions about clips: VisualBERT's single stream
(:mod:`plait.models.vl_encoders`) over the question's tokens and the clip's tokens, each clip
token carrying a learned temporal position.

The image tower reads the clip frame by frame (the frames are a batch of B * T images). Its
patch states are then grouped in space and time: each r x r block of neighbouring patches
(the VLM's pixel shuffle) of k consecutive frames (a tubelet) becomes one token, k r^2 times
wider, and is projected. For tubelet tau = 1..T/k and token j:

    V_t = f_img(frame_t)[layer]                                       (B, N, Cv) per frame
    U_{tau, j} = [shuffle_r(V_{k tau}) ; ... ; shuffle_r(V_{k tau + k - 1})]_j    (k r^2 Cv)
    u_{tau, j} = W_v U_{tau, j} + P_v[j] + P_tau[tau] + S_1                        (C)
    x = [E_w(ids) + P_t + S_0 ;  u_1 ; ... ; u_{T/k}]                 (B, L + T/k N/r^2, C)
    logits = W_o h_0,   h = Encoder(x)

P_v says where in the frame a token is and P_tau when. This is ViViT's spatio-temporal
attention over tubelet tokens (Arnab et al. 2021, arXiv:2103.15691, §3.2 "tubelet embedding",
§3.3 Model 1), except that the tubelet is formed after a per-frame encoder rather than by a 3-D
patch embedding, so the tower may be an image model's (a CLIP's, frozen). A token that holds
the same place in two frames shows motion by itself; attention over all tokens at once
compares places across the whole clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from plait.models.vl_encoders import VisualBert, VisualBertConfig
from plait.models.vlm import pixel_shuffle


@dataclass(frozen=True)
class VideoVisualBertConfig(VisualBertConfig):
    """VisualBERT's fields, plus the frames a clip has and how their patches become tokens."""

    n_frames: int = 8  # frames per clip; a reader resamples a clip in time to this many
    tubelet: int = 1  # k: consecutive frames whose patch states make one token
    pixel_shuffle: int = 1  # r: r x r neighbouring patches of a frame in one token

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_frames < 2 or self.tubelet < 1 or self.n_frames % self.tubelet:
            raise ValueError(f"model.n_frames ({self.n_frames}) must be at least 2 and a multiple"
                             f" of model.tubelet ({self.tubelet})")
        grid = self.vision_config.grid
        if self.pixel_shuffle < 1 or grid % self.pixel_shuffle:
            raise ValueError(f"model.pixel_shuffle ({self.pixel_shuffle}) must divide the patch"
                             f" grid ({grid} x {grid})")

    @property
    def image_tokens(self) -> int:
        """Tokens one tubelet adds to the sequence."""
        return (self.vision_config.grid // self.pixel_shuffle) ** 2

    @property
    def image_width(self) -> int:
        return self.vision_config.n_embd * self.pixel_shuffle**2 * self.tubelet


class VideoVisualBert(VisualBert):
    """``model(input_ids, attention_mask, pixel_values (B, T, 3, H, W)) -> logits (B, labels)``."""

    config_class = VideoVisualBertConfig

    def __init__(self, config: VideoVisualBertConfig):
        super().__init__(config)
        n_steps = config.n_frames // config.tubelet
        self.frame_pos = nn.Parameter(torch.zeros(1, n_steps, 1, config.n_embd))
        nn.init.normal_(self.frame_pos, std=0.02)

    def image_input(self, pixel_values: Tensor) -> Tensor:
        """(B, T, 3, H, W) frames -> (B, T/k * N', C) tubelet tokens, in time order."""
        c = self.config
        if pixel_values.dim() != 5 or pixel_values.shape[1] != c.n_frames:
            raise ValueError(f"a clip must be (batch, {c.n_frames} frames, 3, height, width), got"
                             f" {tuple(pixel_values.shape)}: resample it to {c.n_frames} frames")
        B, T = pixel_values.shape[:2]
        x = pixel_shuffle(self.patches(pixel_values.flatten(0, 1)), c.pixel_shuffle)
        x = x.unflatten(0, (B, T // c.tubelet, c.tubelet))  # (B, T/k, k, N', r^2 Cv)
        x = self.visual_proj(x.transpose(2, 3).flatten(3))  # (B, T/k, N', C)
        x = x + self.image_pos[:, None] + self.frame_pos + self.segment[1]
        return x.flatten(1, 2)
