"""Training fast path: padding-free packing, and LM-head logits only where a label is predicted.

`MMLLM.forward` right-pads a batch to its longest sequence, and the LM head turns every position
into full-vocabulary logits. In a training batch of short prompts with one long observation,
padding can be a quarter of the positions, and on a small model with a large vocabulary (SmolLM2:
49 k words × 576) the head is a fifth of a step's FLOPs, though only the few response tokens
carry a label. Two options, each giving the same loss as the padded path (to float tolerance):

- `pack`: all sequences in one row `(1, ΣL, D)` with position ids restarting at each sequence and
  no attention mask, so transformers builds a block-diagonal causal mask from the position ids
  (its packed-sequence path; it needs `use_cache=False`). No pad position is computed, but
  attention covers all ΣL² pairs of the row; `pack="auto"` packs only when that costs fewer
  FLOPs than the padding it removes (`worth_packing`: yes on SmolLM2, no on the tiny test model).
- `label_logits`: the LM head runs only at positions whose next token has a label
  (`logits_to_keep` with those indices); the loss is the same mean cross-entropy. `.logits` then
  holds `(B, n, V)`, only those positions.

Both change the shape of `.logits`, so they are options (`MMLLM.pack`, `MMLLM.logits_at`) and
off by default: a caller that reads full logits (e.g. distillation over every position) keeps the
padded layout.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def packed(seqs: list[torch.Tensor], labels: list[torch.Tensor]) -> dict:
    """Sequences `(L_i, D)` and their labels in one row: `(1, ΣL, D)`, restarting positions."""
    device = seqs[0].device
    positions = torch.cat([torch.arange(s.shape[0], device=device) for s in seqs])[None]  # (1, ΣL)
    return {"inputs_embeds": torch.cat(seqs)[None], "position_ids": positions, "labels": torch.cat(labels)[None],
            "use_cache": False}


def worth_packing(lengths: list[int], config) -> bool:
    """Whether one packed row costs fewer FLOPs than the padded batch: the linear layers skip the pad
    positions, but attention over one row of ΣL positions computes all ΣL² pairs (the mask hides
    the cross-sequence ones, it does not skip them) instead of Σ L_i²."""
    d = int(config.hidden_size)
    inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
    per_token = 2 * (4 * d * d + 3 * d * int(inner))  # linear FLOPs per position and layer (upper bound)
    pads = len(lengths) * max(lengths) - sum(lengths)
    extra_pairs = sum(lengths) ** 2 - sum(n * n for n in lengths)
    return pads * per_token > extra_pairs * 4 * d


def label_logits_forward(model, batch: dict):
    """Forward with the LM head only where a label is predicted; `.loss` as the full forward's."""
    batch = dict(batch)
    target = batch.pop("labels")  # (B, L)
    shifted = target[:, 1:]  # position p predicts token p + 1
    keep = (shifted != IGNORE).any(0).nonzero().squeeze(-1)  # (n,)
    out = model(**batch, logits_to_keep=keep)
    y = shifted[:, keep]  # (B, n)
    out.loss = F.cross_entropy(out.logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)
    return out
