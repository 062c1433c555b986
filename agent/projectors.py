"""Input projectors: encoder features `(B, N, F)` → LLM embedding tokens `(B, N', D)`.

- `linear`: one linear map (LLaVA-1).
- `mlp2x_gelu`: Linear → GELU → Linear (LLaVA-1.5).
- `linear` and `mlp2x_gelu` take `tokens`: average-pool the projected tokens, laid out on their
  square grid (the 7×7 BabyAI view, a ViT's patch grid), down to `tokens` (a square: 16 → 4×4,
  9 → 3×3). A per-cell projection pooled afterwards keeps what each cell holds and roughly where;
  the LLM reads fewer tokens, and every prompt token costs training and control-step time.
- `resampler`: learned queries cross-attending to the features (Flamingo/BLIP-2 style); emits a
  fixed `num_queries` tokens whatever N is, so large images cost the LLM a fixed budget.
- `transformer_resampler`: the features (with learned positions) and `num_queries` learned queries
  go through a small transformer together (`depth` layers of width `width`, Q-Former style); the
  outputs at the queries are projected to the LLM's width. Deeper than `resampler`: a query can
  pick "the nearest object" out of a set, which one cross-attention step does not learn. The
  projector `anchor` trains (curricula/stages/anchor.py).

Each is built by `configs/projector/<name>.yaml`; `in_dim` and `out_dim` are filled in by the
MM-LLM when a modality is grafted.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def pool_tokens(x: torch.Tensor, tokens: int | None) -> torch.Tensor:
    """`(B, N, D)` tokens on their √N×√N grid, average-pooled to `tokens` (a square) → `(B, tokens, D)`."""
    if tokens is None or tokens >= x.shape[1]:
        return x
    side, out = math.isqrt(x.shape[1]), math.isqrt(tokens)
    if side * side != x.shape[1] or out * out != tokens:
        raise ValueError(f"projector: pooling {x.shape[1]} tokens to {tokens} needs two square counts "
                         f"(a {side}x{side} grid to e.g. 16 = 4x4)")
    grid = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)  # (B, D, S, S)
    return F.adaptive_avg_pool2d(grid, out).flatten(2).transpose(1, 2)  # (B, tokens, D)


class LinearProjector(nn.Module):
    """`init="identity"` (in_dim == out_dim) starts as the identity map: for encoders that already
    emit the LLM's own embeddings (agent/modalities/grid_words.py)."""

    def __init__(self, in_dim: int, out_dim: int, tokens: int | None = None, init: str = "default"):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.tokens = tokens
        if init == "identity":
            if in_dim != out_dim:
                raise ValueError(f"projector: an identity init needs in_dim == out_dim, got {in_dim} -> {out_dim}")
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(out_dim))
                self.proj.bias.zero_()
        elif init != "default":
            raise ValueError(f"projector init must be 'default' or 'identity', got {init!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_tokens(self.proj(x), self.tokens)  # (B, N', D)


class MLPProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, depth: int = 2, tokens: int | None = None):
        super().__init__()
        self.tokens = tokens
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_tokens(self.mlp(x), self.tokens)  # (B, N', D)


class ResamplerProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, num_queries: int = 8, num_heads: int = 4):
        super().__init__()
        if out_dim % num_heads:
            raise ValueError(f"resampler: out_dim {out_dim} must be divisible by num_heads {num_heads}")
        self.num_queries = num_queries
        self.queries = nn.Parameter(torch.randn(num_queries, out_dim) * out_dim**-0.5)
        self.kv_proj = nn.Linear(in_dim, out_dim)
        self.kv_norm = nn.LayerNorm(out_dim)
        self.attn = nn.MultiheadAttention(out_dim, num_heads, batch_first=True)
        self.out_norm = nn.LayerNorm(out_dim)
        self.ffn = nn.Sequential(nn.Linear(out_dim, 4 * out_dim), nn.GELU(), nn.Linear(4 * out_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = self.kv_norm(self.kv_proj(x))  # (B, N, D)
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, Q, D)
        h = q + self.attn(q, kv, kv, need_weights=False)[0]
        return h + self.ffn(self.out_norm(h))  # (B, Q, D)


class TransformerResamplerProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, num_queries: int = 16, width: int = 128, depth: int = 2,
                 num_heads: int = 4, max_inputs: int = 256):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"transformer_resampler: width {width} must be divisible by num_heads {num_heads}")
        self.num_queries, self.max_inputs = num_queries, max_inputs
        self.inp = nn.Linear(in_dim, width)
        self.positions = nn.Parameter(torch.randn(max_inputs, width) * 0.02)
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, num_heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        if N > self.max_inputs:
            raise ValueError(f"transformer_resampler: {N} input tokens, at most max_inputs={self.max_inputs}")
        h = self.inp(x) + self.positions[:N]  # (B, N, W)
        h = torch.cat([h, self.queries.expand(B, -1, -1)], 1)  # (B, N + Q, W)
        return self.out(self.norm(self.blocks(h)[:, N:]))  # (B, Q, D)
