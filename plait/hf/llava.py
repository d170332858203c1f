"""LLaVA (``model_type: llava``) <-> :class:`plait.models.vlm.VLM`: a CLIP image tower, a
two-layer MLP projector and a Llama, Mistral or Qwen2 decoder (Liu et al. 2023,
arXiv:2304.08485; the MLP projector of LLaVA-1.5, arXiv:2310.03744).

Both parts come from the families that already read them: the tower's config table and key map
from :mod:`plait.hf.clip`, the decoder's from :mod:`plait.hf.llama`, each under LLaVA's prefix
(:func:`plait.hf.keymap.nested`). The projector reads the tower's
``hidden_states[vision_feature_layer]`` (before ``post_layernorm``, which checkpoints carry and
nothing uses), without the class token under the "default" select strategy. One integer layer
only: a list, whose layers transformers concatenates, is refused.

Checkpoints name their tensors in one of three layouts, made one by ``normalize``:

- the Hub's (transformers 4.x): ``language_model.model.*``, ``language_model.lm_head.*``,
  ``vision_tower.vision_model.*``, ``multi_modal_projector.*``;
- transformers 5's ``save_pretrained``: the same, with ``vision_tower.*`` for the tower;
- transformers 5's module names: ``model.language_model.*``, ``lm_head.*``,
  ``model.vision_tower.*``, ``model.multi_modal_projector.*``.

Export writes the first, which both major versions of transformers read.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from plait.hf.clip import VISION, VISION_FIELDS, VISION_LAYOUT
from plait.hf.family import (
    ACTIVATIONS,
    Family,
    Field,
    fields_from_hf,
    fields_to_hf,
    require,
    require_export,
)
from plait.hf.keymap import Rule, expand, nested
from plait.hf.llama import LlamaFamily, MistralFamily, Qwen2Family
from plait.models.gpt import GPTConfig
from plait.models.vit import ViTConfig
from plait.models.vlm import VLM, VLMConfig

ARCH = "LlavaForConditionalGeneration"
TEXT_FAMILIES = {"llama": LlamaFamily, "mistral": MistralFamily, "qwen2": Qwen2Family}
# LlavaConfig's tower when config.json has no vision_config: CLIP ViT-L/14 at 336 px
DEFAULT_TOWER = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                 "num_attention_heads": 16, "image_size": 336, "patch_size": 14}
# (a transformers 5 module prefix, the Hub's name for it); a tower without CLIPVisionModel's
# inner vision_model (transformers 5 dropped it) gets it back
HUB_NAMES = (
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)
TOWER, CLIP_BODY = "vision_tower.", "vision_tower.vision_model."
PROJECTOR = tuple(Rule(f"multi_modal_projector.linear_{n}.{p}", f"projector.fc{n}.{p}")
                  for n in (1, 2) for p in ("weight", "bias"))


def hub_name(key: str) -> str:
    """A tensor's name in the Hub's layout, from any of the three."""
    for new, old in HUB_NAMES:
        if key.startswith(new):
            key = old + key.removeprefix(new)
            break
    if key.startswith(TOWER) and not key.startswith(CLIP_BODY):
        key = CLIP_BODY + key.removeprefix(TOWER)
    return key


def text_family(t: GPTConfig) -> LlamaFamily:
    """The decoder family that writes ``t``: Qwen2 for biases on q, k, v alone, else Llama
    (which refuses, by name, what it cannot write)."""
    return Qwen2Family() if t.qkv_bias and not t.bias else LlamaFamily()


class LlavaFamily(Family):
    name = "LLaVA"
    model_class = VLM
    FIELDS = (
        Field("image_token_index", "image_token_id", 32000),
        Field("vision_feature_layer", "feature_layer", -2),
        Field("vision_feature_select_strategy", "features", "default",
              (("default", "patches"), ("full", "all"))),
        Field("projector_hidden_act", "projector_act", "gelu", ACTIVATIONS),
        Field("multimodal_projector_bias", "projector_bias", True),
    )

    def rules(self, config: VLMConfig) -> list[Rule]:
        tower = expand(list(VISION), config.vision_config.n_layer)
        decoder = LlamaFamily().rules(config.text_config)  # Mistral's and Qwen2's are the same
        return (nested(tower, TOWER, "") + nested(decoder, "language_model.", "decoder.")
                + list(PROJECTOR))

    def normalize(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return {hub_name(k): v for k, v in state.items()}

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> VLMConfig:
        """VLMConfig from a LLaVA ``config.json``; unsupported values raise naming the field."""
        arch = (cfg.get("architectures") or [ARCH])[0]
        require(cfg, "architectures", arch == ARCH, f"supported: {ARCH}", where)
        if "image_token_index" not in cfg and "image_token_id" in cfg:  # the newer spelling
            cfg = {**cfg, "image_token_index": cfg["image_token_id"]}
        vision, text = self.tower_from_hf(cfg, where), self.decoder_from_hf(cfg, where)
        layer, n = cfg.get("vision_feature_layer", -2), vision.n_layer
        require(cfg, "vision_feature_layer", type(layer) is int and -n - 1 <= layer <= n,
                f"plait reads one layer of the tower, an integer in -{n + 1}..{n}, not a list",
                where)
        return VLMConfig(vision=vision.to_dict(), text=text.to_dict(),
                         **fields_from_hf(self.FIELDS, cfg, where))

    def tower_from_hf(self, cfg: dict[str, Any], where: str) -> ViTConfig:
        v, where = cfg.get("vision_config") or DEFAULT_TOWER, f"{where} vision_config"
        require(v, "model_type", v.get("model_type", "clip_vision_model") == "clip_vision_model",
                "plait reads a CLIP tower: clip_vision_model", where)
        return ViTConfig(**fields_from_hf(VISION_FIELDS, v, where), **VISION_LAYOUT)

    def decoder_from_hf(self, cfg: dict[str, Any], where: str) -> GPTConfig:
        t, where = cfg.get("text_config") or {}, f"{where} text_config"
        kind = t.get("model_type", "llama")
        require(t, "model_type", kind in TEXT_FAMILIES,
                f"supported: {', '.join(TEXT_FAMILIES)}", where)
        # the LM head is LLaVA's, so the text model's own architectures say nothing
        body = {k: v for k, v in t.items() if k != "architectures"}
        text = TEXT_FAMILIES[kind]().config_from_hf(body, where)
        # LlavaConfig ties when either level says so (it copies the text model's True up)
        tie = bool(cfg.get("tie_word_embeddings", False)) or text.tie_embeddings
        return text.replace(tie_embeddings=tie)

    def config_to_hf(self, config: VLMConfig) -> dict[str, Any]:
        """A LLaVA ``config.json``; what LLaVA cannot express raises naming the field."""
        require_export(config, {"tower": "vit", "projector": "mlp", "pixel_shuffle": 1,
                                "image_attention": "causal", "image_positions": "none",
                                "feature_groups": ()},
                       self.name)
        v, t = config.vision_config, config.text_config
        require_export(v, VISION_LAYOUT, self.name)  # a CLIP tower
        text = text_family(t).config_to_hf(t)
        del text["architectures"]
        vision = {"model_type": "clip_vision_model", **fields_to_hf(VISION_FIELDS, v, self.name),
                  "intermediate_size": v.inner_dim}
        return {"architectures": [ARCH], "model_type": "llava",
                **fields_to_hf(self.FIELDS, config, self.name),
                "image_seq_length": config.tokens_per_image,  # the processor's count
                "tie_word_embeddings": t.tie_embeddings,
                "vision_config": vision, "text_config": text}
