"""Text, image and audio decided together: one encoder per modality, one width, one fusion.

Each modality is encoded and projected to the fused width ``d`` (``n_embd``):

    text   T = Encoder_t(E[ids] + P_t)               (B, L, d)   a bidirectional Transformer
    image  V = W_v shuffle_r(ViT(pixels)[layer]) + P_v   (B, N/r^2, d)   one block's patches
                                                      (or a ResNet's map after one block)
    audio  A = W_a Encoder_a(Stem(log-mel) + P_a)    (B, S, d)   Whisper's encoder wiring

and pooled (``x_m``: the mean over a modality's positions, padding left out). Then one fusion
(``mode``), over the modalities present (``M``):

    add              h = sum_m x_m
    concat           h = W_c [x_t; x_i; x_a] + b_c
    gated            a = W_g [x_t; x_i; x_a],  alpha = softmax_m(a_m),  h = sum_m alpha_m * x_m
                     (two modalities: alpha_t = sigmoid(W_t x_t + W_i x_i), the usual gate)
    gmu              h_m = tanh(W_m x_m),  z_m = sigmoid(W_zm [x_t; x_i; x_a]),  h = sum_m z_m h_m
                     (the Gated Multimodal Unit, Arevalo et al. 2017, arXiv:1702.01992)
    cross-attention  q = [c; T],  mem = [n; V + e_i; A + e_a],  q = Block(q; memory = mem) x k,
                     h = q_0   (a learned query c, a learned "nothing" slot n, type embeddings e)

and a classifier head reads ``h``: ``logits = W_2 gelu(W_1 LN(h))``.

**A modality may be absent** at inference (``None``) where the fusion is over a set: ``add``
sums the ones present, ``gated`` takes its softmax over them, ``gmu`` sums their gated terms
(an absent input adds zeros to every gate's argument) and ``cross-attention`` leaves it out of
the memory (the "nothing" slot keeps that memory non-empty; with no text, the learned query
asks alone). ``concat`` has a place for every modality it was built with and refuses to guess
one: a clear error. A model built without a modality (``modalities``) has no encoder for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from plait.models.base import TransformerConfig, build_stack, complete_tables
from plait.models.clip import VISION_TOWERS, tower_classes, tower_config
from plait.models.resnet import ResNetConfig
from plait.models.vit import ViTConfig
from plait.models.vlm import pixel_shuffle
from plait.models.whisper import ConvStem
from plait.nn import AttnInputs, make_attn_mask, whisper_sinusoids

MODALITIES = ("text", "image", "audio")
MODES = ("add", "concat", "gated", "gmu", "cross-attention")


@dataclass(frozen=True)
class AudioEncoderConfig(TransformerConfig):
    """Whisper's encoder at a small size and a short window: log-mel (n_mels, n_frames) ->
    a stride-2 convolution stem -> fixed sinusoids -> pre-norm blocks -> (n_frames / 2, C)."""

    n_mels: int = 80
    n_frames: int = 96  # 10 ms frames a recording is padded or cut to (even)
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    n_inner: int | None = None
    mlp: str = "gelu"
    norm_eps: float = 1e-5
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.check_transformer(("n_mels", "n_frames"))
        if self.n_frames % 2:
            raise ValueError(f"audio n_frames must be even (the stem halves it), got"
                             f" {self.n_frames}")


class AudioEncoder(nn.Module):
    """(B, n_mels, n_frames) log-mel features -> (B, n_frames / 2, C)."""

    def __init__(self, c: AudioEncoderConfig):
        super().__init__()
        self.config = c
        self.stem = ConvStem(c.n_mels, c.n_embd)
        self.register_buffer("pos", whisper_sinusoids(c.n_frames // 2, c.n_embd),
                             persistent=False)
        self.encoder = build_stack(c)

    def forward(self, mel: Tensor) -> Tensor:
        c = self.config
        if mel.dim() != 3 or tuple(mel.shape[1:]) != (c.n_mels, c.n_frames):
            raise ValueError(f"audio features must be (batch, {c.n_mels}, {c.n_frames}) log-mel"
                             f" frames, got {tuple(mel.shape)}")
        return self.encoder(self.stem(mel) + self.pos, AttnInputs())


@dataclass(frozen=True)
class FusionConfig(TransformerConfig):
    """The fusion, its width and the text side (``n_layer`` text blocks, ``n_cross_layer``
    cross-attention blocks), the image tower's table (``ViTConfig``) and the audio encoder's
    (:class:`AudioEncoderConfig`)."""

    mode: str = "cross-attention"
    modalities: tuple[str, ...] = MODALITIES
    vocab_size: int = 100
    block_size: int = 32  # text positions
    pad_token_id: int = 0
    n_layer: int = 1
    n_cross_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    n_inner: int | None = None
    mlp: str = "gelu"
    norm_eps: float = 1e-5
    dropout: float = 0.0
    vision: dict[str, Any] = field(default_factory=dict)  # a ViT's keys, or kind = "resnet"
    image_size: int = 48  # the pictures' side (a ViT's table says it again)
    feature_layer: int = -2  # the tower's block whose patch states (or map) are read
    pixel_shuffle: int = 1  # r: each r x r block of patches one image token (as the VLM's)
    audio: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ("no", "yes")
    # auxiliary heads on the fused h: name -> outputs (``aux_logits``), trained beside the
    # answer on what h must carry (the fusion task's: the word said, the count asked about)
    aux: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check_transformer(("vocab_size", "block_size", "n_cross_layer"))
        if not all(isinstance(n, int) and n > 0 for n in self.aux.values()):
            raise ValueError(f"model.aux must map names to output sizes > 0, got {self.aux}")
        if self.mode not in MODES:
            raise ValueError(f"model.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"model.modalities must be distinct names among"
                             f" {', '.join(MODALITIES)}, at least one; got {self.modalities}")
        object.__setattr__(self, "modalities",
                           tuple(m for m in MODALITIES if m in self.modalities))
        complete_tables(self, (("audio", AudioEncoderConfig),))
        kind = self.vision.get("kind", "vit")  # a ViT's table keeps no kind (older folders)
        tower = tower_config(VISION_TOWERS, self.vision, "vit", "model.vision")
        object.__setattr__(self, "vision", ({"kind": kind} if kind != "vit" else {})
                           | tower.to_dict())
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise ValueError("model.labels must be distinct answers, at least one")
        r, (side, _) = self.pixel_shuffle, self.image_grid
        if r < 1 or side % r:
            raise ValueError(f"model.pixel_shuffle ({r}) must divide the patch grid"
                             f" ({side} x {side})")

    @property
    def vision_config(self) -> ViTConfig | ResNetConfig:
        return tower_config(VISION_TOWERS, self.vision, "vit", "model.vision")

    @property
    def image_grid(self) -> tuple[int, int]:
        """(side, width) of the tower's states at ``feature_layer``: a ViT's patch grid, a
        ResNet's map."""
        v = self.vision_config
        if isinstance(v, ResNetConfig):
            return v.feature_shape(self.image_size, self.feature_layer)
        return v.grid, v.n_embd

    @property
    def audio_config(self) -> AudioEncoderConfig:
        return AudioEncoderConfig.from_dict(self.audio)


class Fusion(nn.Module):
    """``model(input_ids, attention_mask, pixel_values, input_features) -> logits (B, labels)``;
    any input may be None where the mode allows (module docstring)."""

    config_class = FusionConfig

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = c = config
        d, mods = c.n_embd, c.modalities
        if "text" in mods:
            self.wte = nn.Embedding(c.vocab_size, d)
            self.text_pos = nn.Parameter(0.02 * torch.randn(1, c.block_size, d))
            self.text = build_stack(c)
        if "image" in mods:
            v = c.vision_config
            self.vision = tower_classes(VISION_TOWERS, c.vision.get("kind", "vit"),
                                        "model.vision")[1](v)
            r, (side, width) = c.pixel_shuffle, c.image_grid
            self.image_proj = nn.Linear(r * r * width, d)
            self.image_pos = nn.Parameter(0.02 * torch.randn(1, (side // r) ** 2, d))
        if "audio" in mods:
            self.audio = AudioEncoder(c.audio_config)
            self.audio_proj = nn.Linear(c.audio_config.n_embd, d)
        M = len(mods)
        if c.mode == "concat":
            self.fuse = nn.Linear(M * d, d)
        elif c.mode in ("gated", "gmu"):
            self.gate = nn.Linear(M * d, M * d)
            if c.mode == "gmu":
                self.transform = nn.ModuleDict({m: nn.Linear(d, d) for m in mods})
        elif c.mode == "cross-attention":
            self.query = nn.Parameter(0.02 * torch.randn(1, 1, d))
            self.nothing = nn.Parameter(0.02 * torch.randn(1, 1, d))
            self.kind = nn.Parameter(0.02 * torch.randn(2, d))  # image, audio
            self.cross = build_stack(c, memory_dim=d, n_layer=c.n_cross_layer)
        self.aux_heads = nn.ModuleDict({k: nn.Linear(d, n) for k, n in c.aux.items()})
        self.head = nn.Sequential(nn.LayerNorm(d, eps=c.norm_eps), nn.Linear(d, d), nn.GELU(),
                                  nn.Linear(d, len(c.labels)))

    # -- the encoders ------------------------------------------------------------------------
    def encode(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
               pixel_values: Tensor | None = None,
               input_features: Tensor | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """Each modality given -> (states (B, T_m, d), keep (B, T_m) bool)."""
        c = self.config
        given = {"text": input_ids, "image": pixel_values, "audio": input_features}
        extra = [m for m, x in given.items() if x is not None and m not in c.modalities]
        if extra:
            raise ValueError(f"this fusion model was built without {', '.join(extra)} (its"
                             f" modalities: {', '.join(c.modalities)})")
        present = {m: x for m, x in given.items() if x is not None}
        if not present:
            raise ValueError(f"no input: give at least one of {', '.join(c.modalities)}")
        if len({len(x) for x in present.values()}) > 1:
            raise ValueError("text, image and audio inputs must have one row each per example:"
                             f" got batch sizes {({m: len(x) for m, x in present.items()})}")
        out = {}
        if input_ids is not None:
            out["text"] = self.encode_text(input_ids, attention_mask)
        if pixel_values is not None:
            patches = self.vision.features(pixel_values, c.feature_layer)
            if getattr(self.vision, "cls", None) is not None:
                patches = patches[:, 1:]
            x = self.image_proj(pixel_shuffle(patches, c.pixel_shuffle)) + self.image_pos
            out["image"] = x, x.new_ones(x.shape[:2], dtype=torch.bool)
        if input_features is not None:
            x = self.audio_proj(self.audio(input_features))
            out["audio"] = x, x.new_ones(x.shape[:2], dtype=torch.bool)
        return out

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor,
                                                                                     Tensor]:
        n, limit = input_ids.shape[1], self.config.block_size
        if n > limit:
            raise ValueError(f"a question of {n} tokens exceeds the model's {limit}")
        keep = (attention_mask.bool() if attention_mask is not None
                else torch.ones_like(input_ids, dtype=torch.bool))
        mask, _ = make_attn_mask(n, n, causal=False, key_padding=keep)
        x = self.text(self.wte(input_ids) + self.text_pos[:, :n], AttnInputs(mask))
        return x, keep

    # -- the fusions -------------------------------------------------------------------------
    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                pixel_values: Tensor | None = None,
                input_features: Tensor | None = None,
                aux_logits: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Answer logits (B, labels); with ``aux_logits`` also each auxiliary head's."""
        states = self.encode(input_ids, attention_mask, pixel_values, input_features)
        if self.config.mode == "cross-attention":
            h = self.attend(states)
        else:
            h = self.fuse_pooled({m: _mean(x, keep) for m, (x, keep) in states.items()})
        if not aux_logits:
            return self.head(h)
        return self.head(h), {k: head(h) for k, head in self.aux_heads.items()}

    def fuse_pooled(self, pooled: dict[str, Tensor]) -> Tensor:
        """The pooled modes: {modality: (B, d)} of the modalities present -> h (B, d)."""
        c, mods = self.config, self.config.modalities
        if c.mode == "add":
            return sum(pooled.values())  # type: ignore[return-value]
        if c.mode == "concat":
            missing = [m for m in mods if m not in pooled]
            if missing:
                raise ValueError(f"concat fusion needs every modality it was built with"
                                 f" ({', '.join(mods)}); {', '.join(missing)} missing: use a"
                                 " set mode (add, gated, gmu, cross-attention) to leave one out")
            return self.fuse(torch.cat([pooled[m] for m in mods], dim=-1))
        x, here, g = self._gated(pooled)
        if c.mode == "gated":
            return (g * x).sum(dim=1)
        h = torch.stack([torch.tanh(self.transform[m](x[:, k])) for k, m in enumerate(mods)], 1)
        return (g * h * here).sum(dim=1)  # gmu

    def gates(self, pooled: dict[str, Tensor]) -> Tensor:
        """The gated and gmu modes' gates (B, M, d), each in (0, 1): alpha (0 for an absent
        modality) or z."""
        return self._gated(pooled)[2]

    def _gated(self, pooled: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(x (B, M, d) with zeros for an absent modality, present (1, M, 1) bool, the gates
        (B, M, d)) from the gates' arguments W_g [x_t; x_i; x_a]: a softmax over the modalities
        present (gated) or a sigmoid each (gmu)."""
        mods = self.config.modalities
        some = next(iter(pooled.values()))
        x = torch.stack([pooled.get(m, torch.zeros_like(some)) for m in mods], dim=1)
        here = torch.tensor([m in pooled for m in mods], device=x.device)[None, :, None]
        a = self.gate(x.flatten(1)).view_as(x)
        if self.config.mode == "gated":
            return x, here, a.masked_fill(~here, float("-inf")).softmax(dim=1)
        return x, here, torch.sigmoid(a)

    def attend(self, states: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        """Cross-attention: the learned query and the text tokens attend to the image patches
        and audio frames present (and the "nothing" slot); h is the query's state."""
        some = next(iter(states.values()))[0]
        B = some.shape[0]
        q = self.query.expand(B, 1, -1)
        q_keep = torch.ones(B, 1, dtype=torch.bool, device=some.device)
        if "text" in states:
            t, keep = states["text"]
            q, q_keep = torch.cat([q, t], dim=1), torch.cat([q_keep, keep], dim=1)
        memory = [self.nothing.expand(B, 1, -1)]
        for k, m in enumerate(("image", "audio")):
            if m in states:
                memory.append(states[m][0] + self.kind[k])
        mem = torch.cat(memory, dim=1)
        mask, _ = make_attn_mask(q.shape[1], q.shape[1], causal=False, key_padding=q_keep)
        return self.cross(q, AttnInputs(mask), mem, None, rows=0)[:, 0]

    def train(self, mode: bool = True) -> Fusion:
        """A frozen image tower stays in eval mode while the rest trains: a ResNet's batch norm
        would otherwise normalise by each batch and move its running statistics."""
        super().train(mode)
        tower = getattr(self, "vision", None)
        if tower is not None and not any(p.requires_grad for p in tower.parameters()):
            tower.eval()
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _mean(x: Tensor, keep: Tensor) -> Tensor:
    """Mean over the kept positions: (B, T, d), (B, T) -> (B, d)."""
    w = keep.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


__all__ = ["MODALITIES", "MODES", "AudioEncoder", "AudioEncoderConfig", "Fusion",
           "FusionConfig"]
