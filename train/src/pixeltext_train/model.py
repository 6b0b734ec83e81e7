"""The dual-modality decoder: one Llama-2-style transformer over patches and tokens.

Pure PyTorch, no framework: RMSNorm, SwiGLU, rotary position embeddings and grouped-query
attention through ``scaled_dot_product_attention`` (causal). A sequence mixes patch
embeddings (a linear map of each patch's ink, then LayerNorm, as in PIXEL and the paper)
and token embeddings; a regression head predicts the next patch's pixels, an LM head the
next token. The text path is numerically the same model as Hugging Face's
``LlamaForCausalLM`` (tested), so its weights export to that format.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ModelConfig:
    vocab_size: int = 32000
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    num_kv_heads: int = 8
    intermediate_size: int = 2816
    max_positions: int = 1024
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    patch_size: int = 16
    channels: int = 3
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must divide by model.num_heads ({self.num_heads}), "
                f"and num_heads by model.num_kv_heads ({self.num_kv_heads})"
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

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.heads != self.kv_heads)
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

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class PatchEmbedding(nn.Module):
    """A patch's ink (1 - pixel / 255, flattened row, column, channel) -> a vector, then LayerNorm.

    Ink rather than brightness: blank paper is zero, so the projection sees the glyphs, not a
    constant white vector that LayerNorm then spreads over every patch alike (with brightness
    inputs, a small model could not even fit a two-class task from pixels; measured in #5).
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
        self, tokens: Tensor, patches: Tensor | None = None, is_patch: Tensor | None = None
    ) -> Tensor:
        """Final hidden states [B, L, H] (after the last norm); heads are applied by the caller
        only where there is something to predict."""
        x = self.embed(tokens, patches, is_patch)
        if x.shape[1] > self.config.max_positions:
            raise ValueError(f"sequence of {x.shape[1]} positions; the model has {self.config.max_positions}")
        cos, sin = rotary_tables(self.config, x.shape[1], x.device)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)

    def num_parameters(self, embeddings: bool = True) -> int:
        count = sum(p.numel() for p in self.parameters())
        return count if embeddings else count - self.embed_tokens.weight.numel()

    @cached_property
    def dense_parameters(self) -> int:
        """Parameters without the token embeddings (counted once: read on every step)."""
        return self.num_parameters(embeddings=False)

    def flops_per_position(self, length: int) -> float:
        """Training FLOPs (forward and backward) per sequence position, the usual 6N + attention."""
        config = self.config
        attention = 12 * config.num_layers * config.hidden_size * length
        return 6 * self.dense_parameters + attention
