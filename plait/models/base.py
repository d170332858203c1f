"""What every Transformer config and model here shares: the derived sizes, the checks, the stack.

GPT, BERT, ViT and CLIP's text tower all name their sizes alike (``n_layer``, ``n_head``,
``n_embd``, ``n_inner``, ``mlp``, ``norm_eps``, ``dropout``), validate them alike and build one
:class:`plait.nn.Stack` of blocks from them; they differ only by the block kind (pre- or
post-norm), the norm, the biases and whether blocks read a memory (cross-attention). So each of
those lives here once.
"""

from __future__ import annotations

from collections.abc import Iterable

from plait.config import (
    Config,
    ConfigError,
    require_choice,
    require_divisible,
    require_fraction,
    require_positive,
)
from plait.nn import Block, CrossAttention, PreNormBlock, SelfAttention, Stack, make_mlp, make_norm
from plait.nn.layers import ACTIVATIONS, GATED

MLP_KINDS = (*GATED, *ACTIVATIONS)


class TransformerConfig(Config):
    """Mixin for configs with ``n_layer, n_head, n_embd, n_inner, mlp, norm_eps, dropout``."""

    n_layer: int
    n_head: int
    n_embd: int
    n_inner: int | None
    mlp: str
    norm_eps: float
    dropout: float

    @property
    def head_dim(self) -> int:
        """Width of one head: ``d_head`` where a config has and sets it (T5's d_kv), else
        n_embd / n_head."""
        return getattr(self, "d_head", None) or self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        """The MLP's hidden width: ``n_inner``, or 4 * ``n_embd`` when that is unset."""
        return self.n_inner or 4 * self.n_embd

    def check_transformer(self, positive: Iterable[str] = ()) -> None:
        """The checks every stack needs, plus ``positive`` fields of the model's own."""
        require_positive(self, ("n_layer", "n_head", "n_embd", *positive))
        if self.n_inner is not None:
            require_positive(self, ("n_inner",))
        if getattr(self, "d_head", None) is None:
            require_divisible(self, "n_embd", "n_head")
        require_choice(self, "mlp", MLP_KINDS)
        require_fraction(self, "dropout")


def block_index(layer: int, n: int) -> int:
    """A feature layer as a count of blocks run: ``0..n``, or ``-1`` for all ``n`` (the last
    block's output), ``-2`` for all but the last, ... (Hugging Face's ``hidden_states[layer]``
    with the embeddings at 0). Out of range: a ValueError naming both."""
    k = layer if layer >= 0 else n + 1 + layer
    if not 0 <= k <= n:
        raise ValueError(f"feature layer {layer} out of range for {n} blocks"
                         f" (0..{n} or -{n + 1}..-1)")
    return k


def complete_tables(config: Config, tables: Iterable[tuple[str, type[Config]]]) -> None:
    """Validate a config's nested tables (``vision``, ``text``, ...: dicts of another config's
    keys) and store them complete, defaults filled in and command-line strings coerced, so
    ``config.json`` records exactly what was built. An error names ``model.<table>``."""
    for name, cls in tables:
        try:
            sub = cls.from_dict(dict(getattr(config, name)), where=f"model.{name}")
        except ConfigError:
            raise
        except ValueError as e:
            raise ValueError(f"model.{name}: {e}") from None
        object.__setattr__(config, name, sub.to_dict())


def build_stack(c: TransformerConfig, *, block: type[Block] = PreNormBlock,
                norm: str = "layernorm", final_norm: bool = True, bias: bool = True,
                qkv_bias: bool | None = None, n_kv_head: int | None = None,
                memory_dim: int | None = None, n_layer: int | None = None,
                attn_scale: float | None = None) -> Stack:
    """``n_layer`` (default ``c.n_layer``) blocks of self-attention (+ cross-attention over a
    memory of width ``memory_dim``, when given) and an MLP, then a final norm (or none, for
    post-norm stacks).

    Args:
        block: PreNormBlock (GPT-2, ViT, CLIP) or PostNormBlock (the original Transformer, BERT).
        norm: "layernorm" or "rmsnorm", for every norm in the stack.
        bias: biases of every Linear and LayerNorm; ``qkv_bias`` overrides it for the fused
            query/key/value projection alone.
        attn_scale: the attention logits' scale; None is 1/sqrt(head_dim).
    """
    def norm_layer():
        return make_norm(norm, c.n_embd, c.norm_eps, bias)

    head_dim = getattr(c, "d_head", None)  # None: n_embd / n_head

    def one_block() -> Block:
        cross = None
        if memory_dim is not None:
            cross = CrossAttention(c.n_embd, c.n_head, n_kv_head, memory_dim=memory_dim,
                                   bias=bias, dropout=c.dropout, scale=attn_scale,
                                   head_dim=head_dim)
        return block(
            SelfAttention(c.n_embd, c.n_head, n_kv_head, head_dim, bias=bias, qkv_bias=qkv_bias,
                          dropout=c.dropout, scale=attn_scale),
            make_mlp(c.mlp, c.n_embd, c.inner_dim, bias, c.dropout),
            norm_layer(), norm_layer(),
            cross_attn=cross, norm_cross=norm_layer() if cross is not None else None,
        )

    return Stack([one_block() for _ in range(n_layer or c.n_layer)],
                 final_norm=norm_layer() if final_norm else None)
