"""The LLM side of an output modality: signal tokens and the Output Projector.

An output modality `name` (e.g. "goal_image") owns K signal tokens `<name_0>` ... `<name_{K-1}>`.
They are added to the tokenizer, but the frozen vocabulary has no rows for them: their input
embeddings come from `OutputHead.signal`, a small learned `(K, D)` table spliced in wherever the
tokens appear (NExT-GPT's `[IMG_k]` tokens). The LLM's last-layer hidden states at those positions,
`(B, K, D)`, go through the Output Projector into the generator's conditioning space `(B, N, C)`:

- `linear`: a linear map per token, then a linear mix of the K tokens into N.
- `mlp`: the same with a two-layer GELU MLP per token.
- `transformer`: N learned queries decoding the K hidden states with a small transformer
  (NExT-GPT's output projector); emits N tokens whatever K is.
- `prefix_attention`: the K signal-token states become queries that cross-attend to the LLM's
  last-layer states over the whole prompt (observation tokens, mission words), as pi0's action
  expert attends to the VLM prefix; then a linear mix of the K tokens into N. A signal token that
  knows the mission ("the red one") reads the matching object's state directly, instead of the LLM
  having to copy it into the signal token. Projectors with `reads_prefix = True` get
  `(hidden, prefix, prefix_mask)`.

An output head may also `observe` input modalities directly (Diffusion Policy's observation
conditioning, pi0's state token): their frozen encoder features `(B, T_m, F_m)` pass through a
linear map per modality into the LLM's width and join the signal tokens on the query side of a
`prefix_attention` projector. The LLM still decides *what* to do (its signal states are the queries: which object the
mission names); the observed features keep *where* exact, which a small or random LLM's
residual stream blurs.

Each projector is built from `configs/output_projector/<name>.yaml` with `in_dim`, `out_dim`,
`in_tokens` and `out_tokens` filled in when the output modality is grafted.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from graft.agent.example import Example
from torch import nn

if TYPE_CHECKING:
    from graft.agent.generators.base import Generator


class TokenMix(nn.Module):
    """A learned linear map over the token axis: `(B, K, C)` → `(B, N, C)` (identity when K == N)."""

    def __init__(self, in_tokens: int, out_tokens: int):
        super().__init__()
        self.mix = None if in_tokens == out_tokens else nn.Linear(in_tokens, out_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mix is None:
            return x
        return self.mix(x.transpose(1, 2)).transpose(1, 2)  # (B, N, C)


class LinearOutputProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, in_tokens: int, out_tokens: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.tokens = TokenMix(in_tokens, out_tokens)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.proj(h))  # (B, K, D) -> (B, N, C)


class MLPOutputProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, in_tokens: int, out_tokens: int, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or max(in_dim, out_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        self.tokens = TokenMix(in_tokens, out_tokens)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.mlp(h))  # (B, K, D) -> (B, N, C)


def decoder_and_out(kind: str, dim: int, num_heads: int, num_layers: int) -> tuple[nn.Module, nn.Module]:
    """A pre-norm transformer decoder of width `dim` and its output LayerNorm + Linear."""
    if dim % num_heads:
        raise ValueError(f"{kind} output projector: out_dim {dim} must be divisible by num_heads {num_heads}")
    layer = nn.TransformerDecoderLayer(dim, num_heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True,
                                       norm_first=True)
    return nn.TransformerDecoder(layer, num_layers), nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))


class TransformerOutputProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, in_tokens: int, out_tokens: int, num_layers: int = 2,
                 num_heads: int = 4):
        super().__init__()
        self.in_proj = nn.Linear(in_dim, out_dim)
        self.queries = nn.Parameter(torch.randn(out_tokens, out_dim) * out_dim**-0.5)
        self.decoder, self.out = decoder_and_out("transformer", out_dim, num_heads, num_layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        memory = self.in_proj(h)  # (B, K, C)
        q = self.queries.unsqueeze(0).expand(h.shape[0], -1, -1)  # (B, N, C)
        return self.out(self.decoder(q, memory))  # (B, N, C)


class PrefixAttentionOutputProjector(nn.Module):
    reads_prefix = True

    def __init__(self, in_dim: int, out_dim: int, in_tokens: int, out_tokens: int, num_layers: int = 2,
                 num_heads: int = 4):
        super().__init__()
        # LLM states can be large (random or un-normalised last layers): normalise before projecting,
        # or attention logits saturate and the queries cannot learn where to look
        self.query_proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))
        self.memory_proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))
        self.decoder, self.out = decoder_and_out("prefix_attention", out_dim, num_heads, num_layers)
        self.tokens = TokenMix(in_tokens, out_tokens)

    def forward(self, h: torch.Tensor, prefix: torch.Tensor, prefix_mask: torch.Tensor,
                observed: torch.Tensor | None = None) -> torch.Tensor:
        """Signal states `(B, K, D)`, prompt states `(B, L, D)` and their mask `(B, L)` (1 = real), and
        optionally observed feature tokens `(B, T, D)` → `(B, N, C)`. Observed tokens join the signal
        tokens on the decoder's query side (self-attention among a few tokens, each also reading the
        prompt), so a signal token picks one out without searching the whole prompt for it."""
        k = h.shape[1]
        q = h if observed is None else torch.cat([h, observed.to(h.dtype)], 1)  # (B, K + T, D)
        q = self.query_proj(q)  # (B, K (+ T), C)
        memory = self.memory_proj(prefix)  # (B, L, C)
        x = self.decoder(q, memory, memory_key_padding_mask=~prefix_mask.bool())  # (B, K (+ T), C)
        return self.tokens(self.out(x[:, :k]))  # (B, N, C)


class OutputHead(nn.Module):
    """Signal-token embeddings `(K, D)` + the output projector of one output modality."""

    def __init__(self, name: str, num_tokens: int, embed_dim: int, projector: nn.Module,
                 cond_tokens: int, cond_dim: int, init_std: float = 0.02, observe: dict[str, int] | None = None):
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"output '{name}' needs at least one signal token, got {num_tokens}")
        if observe and not getattr(projector, "reads_prefix", False):
            raise ValueError(f"output '{name}' observes {list(observe)} directly; that needs a projector that reads "
                             f"the prefix (output_projector: prefix_attention), got {type(projector).__name__}")
        self.observe = nn.ModuleDict({m: nn.Linear(int(f), embed_dim) for m, f in (observe or {}).items()})
        self.name, self.num_tokens = name, int(num_tokens)
        self.cond_tokens, self.cond_dim = int(cond_tokens), int(cond_dim)
        self.signal = nn.Parameter(torch.randn(self.num_tokens, embed_dim) * init_std)  # (K, D)
        self.projector = projector

    def token_strings(self) -> list[str]:
        return [f"<{self.name}_{k}>" for k in range(self.num_tokens)]

    @property
    def signal_text(self) -> str:
        """The K signal tokens as text, e.g. "<goal_image_0><goal_image_1>"."""
        return "".join(self.token_strings())

    @property
    def reads_prefix(self) -> bool:
        """Whether the projector also reads the LLM's states over the whole prompt."""
        return bool(getattr(self.projector, "reads_prefix", False))

    @property
    def observed(self) -> list[str]:
        """Input modalities whose encoder features this head reads directly."""
        return list(self.observe)

    def forward(self, hidden: torch.Tensor, prefix: torch.Tensor | None = None,
                prefix_mask: torch.Tensor | None = None,
                observations: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """LLM hidden states at the signal tokens `(B, K, D)` (+ over the prompt `(B, L, D)` and its
        mask `(B, L)` for a prefix-reading projector, + encoder features `{m: (B, T_m, F_m)}` of the
        observed modalities) → generator conditioning `(B, N, C)`."""
        if hidden.ndim != 3 or hidden.shape[1] != self.num_tokens:
            raise ValueError(f"output '{self.name}': expected hidden states (B, {self.num_tokens}, D), "
                             f"got shape {tuple(hidden.shape)}")
        if self.reads_prefix:
            if prefix is None or prefix_mask is None or prefix.shape[:2] != prefix_mask.shape:
                raise ValueError(f"output '{self.name}': the {type(self.projector).__name__} needs the prompt's "
                                 f"hidden states (B, L, D) and mask (B, L)")
            observed = None
            if self.observe:
                missing = [m for m in self.observe if m not in (observations or {})]
                if missing:
                    raise ValueError(f"output '{self.name}' observes {self.observed}; no features for {missing}")
                observed = torch.cat([self.observe[m](observations[m].to(hidden.dtype)) for m in self.observe],
                                     1)  # (B, sum T_m, D)
            cond = self.projector(hidden, prefix, prefix_mask, observed)
        else:
            cond = self.projector(hidden)
        if cond.shape[1:] != (self.cond_tokens, self.cond_dim):
            raise ValueError(f"output '{self.name}': projector gave {tuple(cond.shape[1:])}, the generator "
                             f"expects ({self.cond_tokens}, {self.cond_dim})")
        return cond  # (B, N, C)


@torch.no_grad()
def generate_output(mm: Any, name: str, generator: Generator, examples: Sequence[Example],
                    steps: int | None = None, seed: int = 0) -> Any:
    """The agent path: observation prompts → MM-LLM → signal-token hidden states → output projector →
    generator samples (uint8 images, action chunks in env units), from noise seeded by `seed`."""
    mm.eval()
    return generator.generate(mm.output_features(examples, name), steps=steps, seed=seed)
