"""Input projectors: encoder features `(B, N, F)` → LLM embedding tokens `(B, N', D)`.

- `linear`: one linear map (LLaVA-1).
- `mlp2x_gelu`: Linear → GELU → Linear (LLaVA-1.5).
- `resampler`: learned queries cross-attending to the features (Flamingo/BLIP-2 style); emits a
  fixed `num_queries` tokens whatever N is, so large images cost the LLM a fixed budget.

Each is built by `configs/projector/<name>.yaml`; `in_dim` and `out_dim` are filled in by the
MM-LLM when a modality is grafted.
"""
from __future__ import annotations

import torch
from torch import nn


class LinearProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, N, D)


class MLPProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)  # (B, N, D)


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
