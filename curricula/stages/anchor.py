"""Anchoring: a new modality's projector learns to say what an onboarded modality already says.

An input stage with `anchor: {modality: grid, ...}` first runs an `align` phase (before MM PT): its
projector is trained, with no LLM forward, so that the tokens it makes from an observation match the
tokens the anchor modality's frozen encoder and projector make from the same moment of the env —
ImageBind's idea (bind each modality to one that is already understood) applied to LLM input
tokens. When the anchor reads words the LLM already knows (grid_words), the new sensor starts MM PT
speaking them too, instead of learning its way into the LLM's embedding space from a few hundred
captioned samples. Measured on BabyAI's rgb stage (SmolLM2, seed 0, README): no gain over the
plain stage after its IT (perception gain 0.008 vs -0.02, success 0.62 vs 0.59 of 100 episodes),
so it is opt-in.

    anchor:
      modality: grid         an input modality grafted by an earlier stage (its weights stay frozen)
      steps: 1000            optimiser steps of the align phase (0: no align phase)
      batch_size: 64
      lr: 1.0e-3
      observations: 20000    paired observations, from random-policy episodes of the run's env
      episode_steps: 30      at most this many steps per episode
      adapter: fresh         fresh: the stage's LoRA adapter starts at zero, as any graft's; copy: as a
                             copy of the anchor's (what the LLM learned to do with the anchor's tokens
                             carries over, but a prompt routing both adapters then applies it twice:
                             SmolLM2's text perplexity with both on went from ~42 to ~3,000, seed 0)

The paired observations come from their own seeds (from 2**32 + 10**6 * seed up: the datagen,
expert and held-out rollout episodes all draw theirs below 2**32), so no test or rollout episode
is seen, with or without labels; they carry no language at all. The loss is the mean squared
distance of the two token sequences, position by position, over the anchor tokens' mean squared
norm (1.0 = as far as predicting zeros), plus a contrastive term (`anchor_loss`). The projector
has to emit as many tokens as the anchor; `InputStage.graft` sets its `tokens` to the anchor's
count when the stage's config leaves it out.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ANCHOR_DEFAULTS = {"steps": 1000, "batch_size": 64, "lr": 1.0e-3, "observations": 20000, "episode_steps": 30,
                   "adapter": "fresh"}
SEED_BASE = 2**32


def anchor_settings(spec: Mapping[str, Any] | None, modality: str, steps_scale: float = 1.0) -> dict | None:
    """The stage's `anchor` entry with defaults filled in (None without one); `steps_scale` scales
    its steps like every other phase's."""
    if not spec:
        return None
    spec = dict(spec)
    unknown = sorted(set(spec) - set(ANCHOR_DEFAULTS) - {"modality"})
    if unknown:
        raise ValueError(f"stage '{modality}': unknown anchor setting(s) {unknown}; known: modality, "
                         f"{', '.join(ANCHOR_DEFAULTS)}")
    if not spec.get("modality"):
        raise ValueError(f"stage '{modality}': anchor needs `modality:` (an input modality grafted by an earlier stage)")
    if spec["modality"] == modality:
        raise ValueError(f"stage '{modality}': a modality cannot be anchored to itself")
    out = {**ANCHOR_DEFAULTS, **spec}
    if out["adapter"] not in ("copy", "fresh"):
        raise ValueError(f"stage '{modality}': anchor.adapter must be 'copy' or 'fresh', got {out['adapter']!r}")
    out["steps"] = max(int(round(int(out["steps"]) * float(steps_scale))), 1 if int(out["steps"]) else 0)
    return out


def paired_observations(env_cfg: Mapping[str, Any], modalities: Sequence[str], count: int, seed: int,
                        episode_steps: int = 30) -> dict[str, np.ndarray]:
    """`count` observations of each of `modalities`, taken together from random-policy episodes on the
    anchor seeds → `{name: (count, *shape)}`."""
    from graft.envs.factory import make_env_factory

    env = make_env_factory(dict(env_cfg))()
    rng = np.random.default_rng([seed, 7])
    env.action_space.seed(int(rng.integers(2**31)))
    out: dict[str, list] = {m: [] for m in modalities}
    started, episode = time.perf_counter(), 0
    try:
        while len(out[modalities[0]]) < count:
            obs, _ = env.reset(seed=SEED_BASE + 1_000_000 * seed + episode)
            episode += 1
            missing = [m for m in modalities if m not in obs]
            if missing:
                raise ValueError(f"anchor: the env emits {sorted(obs)}, not {missing}")
            for _ in range(int(rng.integers(1, episode_steps + 1))):
                for m in modalities:
                    out[m].append(np.asarray(obs[m]))
                obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
                if terminated or truncated or len(out[modalities[0]]) >= count:
                    break
    finally:
        env.close()
    print(f"anchor: {count} paired {'+'.join(modalities)} observations from {episode} random-policy episodes "
          f"in {time.perf_counter() - started:.1f} s", flush=True)
    return {m: np.stack(v[:count]) for m, v in out.items()}


def anchor_tokens(mm, modality: str) -> int:
    """How many LLM tokens `modality`'s encoder + projector make from one observation."""
    sample = mm.modalities[modality].sample(np.random.default_rng(0))
    with torch.no_grad():
        return int(mm.projectors[modality](mm.modalities[modality](sample[None])).shape[1])


def anchor_loss(mm, student: str, teacher: str, batch: Mapping[str, np.ndarray],
                temperature: float = 0.05) -> dict[str, torch.Tensor]:
    """`student`'s projected tokens against `teacher`'s on the same observations → {"total", "mse",
    "contrastive"}; only the student's projector gets gradients.

    mse: squared distance position by position over the anchor tokens' mean squared norm. Alone it
    settles between similar words (an average of " red" and " green" is near both and reads as
    neither), so a contrastive term asks each token to be nearer, in cosine, to its own anchor
    token than to every other distinct anchor token of the batch (InfoNCE, as in CLIP)."""
    with torch.no_grad():
        target = mm.projectors[teacher](mm.modalities[teacher](batch[teacher]))  # (B, T, D)
    tokens = mm.projectors[student](mm.modalities[student](batch[student]))  # (B, T', D)
    if tokens.shape != target.shape:
        raise ValueError(f"anchor: '{student}' makes tokens {tuple(tokens.shape)}, its anchor '{teacher}' "
                         f"{tuple(target.shape)}; the projector must emit as many tokens as the anchor "
                         f"(set the stage's projector `num_queries` / the modality's `tokens` to {target.shape[1]})")
    mse = (tokens - target).pow(2).sum(-1).mean() / target.pow(2).sum(-1).mean().clamp_min(1e-8)
    flat = target.reshape(-1, target.shape[-1])  # (B*T, D)
    distinct, which = torch.unique(flat, dim=0, return_inverse=True)  # (U, D), (B*T,)
    logits = F.normalize(tokens.reshape(-1, tokens.shape[-1]), dim=-1) @ F.normalize(distinct, dim=-1).T
    contrastive = F.cross_entropy(logits / temperature, which)
    return {"total": mse + contrastive, "mse": mse, "contrastive": contrastive}
