"""The dual-modality decoder: one Llama-2-style transformer over patches and tokens.

Pure PyTorch, no framework: RMSNorm, SwiGLU, rotary position embeddings and grouped-query
attention through ``scaled_dot_product_attention`` (causal). A sequence mixes patch
embeddings (a linear map of each patch's ink, then LayerNorm, as in PIXEL and the paper)
and token embeddings; a regression head predicts the next patch's pixels, an LM head the
next token. The text path is numerically the same model as Hugging Face's
``LlamaForCausalLM`` (tested), so its weights export to that format.

A row may hold several sequences (``Packing``): each attends only to itself, causally, and its
rotary positions start at 0, so its outputs are what they would be alone. The document mask is
dense for ``scaled_dot_product_attention``, applied block by block of queries over the keys
their sequences reach (``attention="mask"``, any device), or a block mask for ``flex_attention``
(``"flex"``, CUDA, compiled); ``"auto"`` takes flex on CUDA.

Generation (``generate.py``) runs the same layers incrementally over a ``KVCache``: each
layer's keys and values (its ``num_kv_heads``, not every head), preallocated for the whole
generation, and the slots that hold real inputs (rows of different lengths are left-padded;
padding is never attended to). With ``patch_stats`` a small head also predicts each next
patch's mean and spread, which turn a normalised prediction back into pixels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from functools import cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

ATTENTION = ("auto", "mask", "flex")
PATCH_LOSSES = ("mse", "bce")  # the patch head's loss: see losses.patch_errors

SIZES = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")


@dataclass
class ModelConfig:
    """The decoder's shape and options. The sizes have no defaults: an architecture is a preset,
    and the presets (paper, small, demo, tiny) live in one place, ``conf/model/``; the vocabulary
    is the tokenizer's."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_positions: int
    rms_norm_eps: float = 1e-5  # Llama 2's, as the paper's
    rope_theta: float = 10000.0
    patch_size: int = 16
    channels: int = 3
    init_std: float = 0.02
    attention: str = "auto"  # packed rows: "mask" (dense, any device), "flex" (CUDA); auto: flex on CUDA
    patch_stats: bool = False  # a head for each next patch's pixel mean and spread (pixel generation)
    patch_loss: str = "mse"  # mse: normalised pixels (the paper's); bce: ink bits (PIXAR's, binary strips)
    activation_checkpointing: bool = False  # recompute each block's activations in the backward pass

    def __post_init__(self) -> None:
        small = [
            f"model.{name}={getattr(self, name)!r}"
            for name in (*SIZES, "patch_size", "channels")
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1)
        ]
        if small:
            raise ValueError(f"{', '.join(small)}: each must be a whole number of at least 1")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must divide by model.num_heads ({self.num_heads}), "
                f"and num_heads by model.num_kv_heads ({self.num_kv_heads})"
            )
        if self.attention not in ATTENTION:
            raise ValueError(f"model.attention must be one of {ATTENTION}, got {self.attention!r}")
        if self.patch_loss not in PATCH_LOSSES:
            raise ValueError(f"model.patch_loss must be one of {PATCH_LOSSES}, got {self.patch_loss!r}")
        if self.patch_loss == "bce" and self.patch_stats:
            raise ValueError(
                "model.patch_loss=bce predicts each pixel's ink itself, which the patch_stats head's mean "
                "and spread would not de-normalise: set model.patch_stats=false"
            )
        if self.max_positions < 2:
            raise ValueError(
                f"model.max_positions must be at least 2 (a position and the next one it predicts), "
                f"got {self.max_positions}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.channels


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Packing(NamedTuple):
    """How sequences share the rows of a batch: each position's place in its own sequence (its
    rotary position) and the sequence it belongs to (an id per batch; -1 for padding)."""

    positions: Tensor  # int64 [B, L]
    segments: Tensor  # int64 [B, L]


class DocumentMask(NamedTuple):
    """A packed batch's attention for ``scaled_dot_product_attention``: each position attends to
    the earlier positions of its own sequence. ``blocks`` splits the queries into blocks, each
    with the first key any of them may see, so that a block of queries attends to the keys from
    there to its end only: short sequences cost a block or two of keys, not the whole row."""

    dense: Tensor  # [B, 1, L, L] bool
    blocks: tuple[tuple[int, int, int], ...]  # (first query, end of the queries, first key)


QUERY_BLOCK = 128


def document_mask(packing: Packing) -> DocumentMask:
    segments, positions = packing.segments, packing.positions
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    dense = ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]
    starts = torch.arange(length, device=segments.device) - positions  # where each one's sequence starts
    spans = list(itertools.pairwise([*range(0, length, QUERY_BLOCK), length]))
    firsts = torch.stack([starts[:, a:b].min() for a, b in spans]).tolist()  # (one transfer)
    return DocumentMask(dense, tuple((a, b, first) for (a, b), first in zip(spans, firsts, strict=True)))


@cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_block_mask(segments: Tensor):
    """The document mask as ``flex_attention``'s block mask (computed once per batch)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def same_sequence_causal(batch, head, query, key):
        return (segments[batch, query] == segments[batch, key]) & (query >= key)

    batch, length = segments.shape
    return create_block_mask(same_sequence_causal, batch, None, length, length, device=segments.device)


class KVCache:
    """Every layer's keys and values for a batch, preallocated for ``capacity`` positions.

    Inputs are appended in order (``length`` slots filled); ``real`` marks the slots that hold
    real inputs, so left padding is never attended to. ``static``: attention always spans the
    whole buffer, masked, so every decode step has the same shapes (for ``torch.compile`` on
    CUDA); otherwise it spans the filled slots only, which is cheaper eagerly.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch: int,
        capacity: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        static: bool = False,
    ):
        shape = (config.num_layers, batch, config.num_kv_heads, capacity, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.real = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.rotary = rotary_tables(config, capacity, torch.device(device))
        self.capacity, self.static, self.length = capacity, static, 0

    def extend(self, real: Tensor) -> tuple[Tensor, Tensor, int | None]:
        """Claim the next slots for new inputs (``real`` [B, L]: False for padding): their slot
        numbers [L], the attention mask of the new queries over the keys [B, 1, L, keys], and how
        many keys attention spans (None: the whole buffer)."""
        count = real.shape[1]
        if self.length + count > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} positions; {self.length + count} asked for")
        slots = torch.arange(self.length, self.length + count, device=real.device)
        self.real[:, slots] = real
        self.length += count
        visible = None if self.static else self.length
        keys = torch.arange(self.capacity if visible is None else visible, device=real.device)
        allowed = self.real[:, None, : len(keys)] & (keys[None, None, :] <= slots[None, :, None])
        allowed |= keys[None, None, :] == slots[None, :, None]  # (padding attends to itself alone)
        return slots, allowed[:, None], visible


class LayerCache(NamedTuple):
    """One layer's part of a ``KVCache`` for one forward pass."""

    keys: Tensor  # [B, kv_heads, capacity, head_dim], written in place
    values: Tensor
    slots: Tensor  # int64 [L]: where the new inputs' keys and values go
    visible: int | None  # attention spans keys [:visible]; None: the whole buffer


def rotary_tables(config: ModelConfig, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos and sin [length, head_dim] for positions 0..length-1 (halves repeated, as Llama)."""
    dim = config.head_dim
    inverse = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inverse)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask=None, cache: LayerCache | None = None
    ) -> Tensor:
        """``mask``: None (one causal sequence per row), a ``DocumentMask``, a flex block mask,
        or, with ``cache``, a bool tensor over the cached keys."""
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if cache is not None:
            cache.keys.index_copy_(2, cache.slots, k.to(cache.keys.dtype))
            cache.values.index_copy_(2, cache.slots, v.to(cache.values.dtype))
            k, v = cache.keys, cache.values
            if cache.visible is not None:
                k, v = k[:, :, : cache.visible], v[:, :, : cache.visible]
        gqa = self.heads != self.kv_heads
        if gqa and q.is_cuda and isinstance(mask, Tensor | DocumentMask):
            # (with a mask, CUDA's efficient kernel wants every head's keys)
            k, v = (t.repeat_interleave(self.heads // self.kv_heads, dim=1) for t in (k, v))
            gqa = False
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        elif isinstance(mask, Tensor):
            out = F.scaled_dot_product_attention(q, k, v, mask, enable_gqa=gqa)
        elif isinstance(mask, DocumentMask):
            parts = [
                F.scaled_dot_product_attention(
                    q[:, :, a:b],
                    k[:, :, first:b],
                    v[:, :, first:b],
                    mask.dense[:, :, a:b, first:b],
                    enable_gqa=gqa,
                )
                for a, b, first in mask.blocks
            ]
            out = torch.cat(parts, dim=2)
        else:
            out = _compiled_flex_attention()(q, k, v, block_mask=mask, enable_gqa=gqa)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class MLP(nn.Module):
    """SwiGLU."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask=None, cache: LayerCache | None = None
    ) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class PatchEmbedding(nn.Module):
    """A patch's ink (1 - pixel / 255, flattened row, column, channel) -> a vector, then LayerNorm.

    Ink rather than brightness: blank paper is zero, so the projection sees the glyphs, not a
    constant white vector that LayerNorm then spreads over every patch alike (with brightness
    inputs, a small model could not even fit a two-class task from pixels; measured).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.projection = nn.Linear(config.patch_dim, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, patches: Tensor) -> Tensor:
        return self.norm(self.projection(patches))


class PixelTextModel(nn.Module):
    """Decoder over a sequence of patches and tokens, with a patch head and a token head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_patches = PatchEmbedding(config)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.patch_head = nn.Linear(config.hidden_size, config.patch_dim, bias=False)
        if config.patch_stats:  # each next patch's pixel mean and standard deviation, in [0, 1]
            self.patch_stats_head = nn.Linear(config.hidden_size, 2)
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def embed(self, tokens: Tensor, patches: Tensor | None = None, is_patch: Tensor | None = None) -> Tensor:
        """Input vectors [B, L, H]: token embeddings, or patch embeddings where ``is_patch``.

        ``patches`` are uint8 pixels [B, L, patch_dim]; ``tokens`` hold any id at patch positions.
        """
        hidden = self.embed_tokens(tokens)
        if patches is not None and is_patch is not None:  # computed even if no patch: see losses
            ink = 1.0 - patches.to(hidden.dtype) / 255.0
            hidden = torch.where(is_patch[..., None], self.embed_patches(ink).to(hidden.dtype), hidden)
        return hidden

    def forward(
        self,
        tokens: Tensor,
        patches: Tensor | None = None,
        is_patch: Tensor | None = None,
        packing: Packing | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Final hidden states [B, L, H] (after the last norm); heads are applied by the caller
        only where there is something to predict. ``packing``: rows holding several sequences.

        With ``cache``, the inputs continue the cached ones (one sequence per row): ``packing``
        then gives their rotary positions and marks left padding (segment -1)."""
        x = self.embed(tokens, patches, is_patch)
        if cache is not None:
            return self._continue(x, packing, cache)
        if x.shape[1] > self.config.max_positions:
            raise ValueError(f"sequence of {x.shape[1]} positions; the model has {self.config.max_positions}")
        cos, sin = rotary_tables(self.config, x.shape[1], x.device)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        mask = None
        if packing is not None:  # each sequence's own positions, and a mask that keeps it to itself
            cos, sin = cos[packing.positions][:, None], sin[packing.positions][:, None]
            flex = self.config.attention == "flex" or (self.config.attention == "auto" and x.is_cuda)
            mask = flex_block_mask(packing.segments) if flex else document_mask(packing)
        for layer in self.layers:
            if self.config.activation_checkpointing and self.training:
                x = checkpoint(layer, x, cos, sin, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask)
        return self.norm(x)

    def _continue(self, x: Tensor, packing: Packing | None, cache: KVCache) -> Tensor:
        if packing is None:
            raise ValueError("a cached forward pass needs the inputs' positions (packing)")
        if cache.capacity > self.config.max_positions:
            raise ValueError(
                f"a cache of {cache.capacity} positions; the model has {self.config.max_positions}"
            )
        slots, mask, visible = cache.extend(packing.segments >= 0)
        cos, sin = (t.to(x.dtype)[packing.positions][:, None] for t in cache.rotary)
        for index, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, LayerCache(cache.keys[index], cache.values[index], slots, visible))
        return self.norm(x)

    def num_parameters(self, embeddings: bool = True) -> int:
        """Parameters (their full size, also when sharded: a DTensor counts its global shape)."""
        count = sum(p.numel() for p in self.parameters())
        return count if embeddings else count - self.embed_tokens.weight.numel()

    def training_flops(self, lengths: Tensor) -> float:
        """Training FLOPs (forward and backward) of sequences of these lengths: the usual 6N per
        position (N without the token embeddings, a lookup), plus 12 x layers x hidden x the
        sequence's length for attention."""
        config = self.config
        dense = self.num_parameters(embeddings=False)
        lengths = lengths.double()
        return float((6 * dense * lengths + 12 * config.num_layers * config.hidden_size * lengths**2).sum())


def one_channel(model: PixelTextModel) -> PixelTextModel:
    """A copy of an RGB ``model`` that takes one-channel (gray, binary) patches, as the official
    PIXEL-GPT code fine-tunes an RGB checkpoint on them: the patch embedding's weights averaged
    over the three channels, its bias kept. The patch head's outputs are averaged likewise, so
    the model stays whole (the official classifier has no patch head; fine-tuning uses none)."""
    if model.config.channels != 3:
        raise ValueError(f"a model of {model.config.channels} channel(s) is not RGB: nothing to average")
    state = dict(model.state_dict())
    embed, head = state["embed_patches.projection.weight"], state["patch_head.weight"]
    # (patches are flattened row, column, channel: the channel is the fastest index)
    state["embed_patches.projection.weight"] = embed.view(embed.shape[0], -1, 3).mean(dim=-1)
    state["patch_head.weight"] = head.view(-1, 3, head.shape[1]).mean(dim=1)
    converted = PixelTextModel(replace(model.config, channels=1))
    converted.load_state_dict(state)
    return converted.to(device=embed.device, dtype=embed.dtype)
