"""Training and sampling through a grafted output modality and its generator (NExT-GPT's decoding side).

One step runs observation (+ mission) prompts through the MM-LLM, takes the hidden states at the
output's signal tokens, projects them into the generator's conditioning `(B, N, C)` and minimises

    loss = align_weight * MSE(conditioning, generator's own encoder on the target caption)   (a)
         + diffusion_weight * conditional diffusion loss of the generator on the targets     (b)
         + text_weight * the MM-LLM's text loss on extra examples (replay, text mix)         (c)

(a) exists only for generators with a conditioning encoder (the image generator's CLIP text
encoder) and only when captions are given; its action analogue, weighted by `align_weight` too,
is the MSE of a chunk regressed from the conditioning (`readout_loss`, a UNet built with
`cond_readout`), logged as "readout". (c) only when text examples are given (with stacked
routing it keeps the output's LoRA adapter from disturbing earlier skills). What learns: stage "pt" the output head (signal
embeddings + output projector); stage "it" the head and the output modality's LoRA adapter; plus,
with `train_generator`, the generator's denoiser. Frozen parts (base LLM, other grafts, the
generator's encoders) get no gradient and no optimiser state. Noise and timesteps come from a
seeded generator, so a step is reproducible. `generate_output` is the inference path.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from graft.agent.generators.base import Generator
from graft.agent.mmllm import MMLLM, Example


class OutputTrainer:
    """AdamW over one output modality's trainable parts (see the module docstring)."""

    def __init__(self, mm: MMLLM, name: str, generator: Generator, stage: str = "it", lr: float = 1e-3,
                 generator_lr: float | None = None, align_weight: float = 1.0, diffusion_weight: float = 1.0,
                 text_weight: float = 1.0, train_generator: bool = True, max_grad_norm: float | None = 1.0,
                 seed: int = 0):
        if name not in mm.outputs:
            raise KeyError(f"'{name}' is not a grafted output modality (outputs: {list(mm.outputs)})")
        head = mm.outputs[name]
        if (head.cond_tokens, head.cond_dim) != (generator.cond_tokens, generator.cond_dim):
            raise ValueError(f"output '{name}' projects to ({head.cond_tokens}, {head.cond_dim}) but the "
                             f"{generator.kind} generator reads ({generator.cond_tokens}, {generator.cond_dim})")
        self.mm, self.name, self.generator, self.stage = mm, name, generator, stage
        self.align_weight, self.diffusion_weight, self.text_weight = align_weight, diffusion_weight, text_weight
        self.max_grad_norm = max_grad_norm
        self.mm_params = mm.set_trainable(name, stage)
        generator.denoiser.requires_grad_(train_generator)
        self.gen_params = generator.trainable_parameters()
        groups = [{"params": self.mm_params, "lr": lr}]
        if self.gen_params:
            groups.append({"params": self.gen_params, "lr": generator_lr or lr})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        self.noise = torch.Generator().manual_seed(int(seed))

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return self.mm_params + self.gen_params

    def losses(self, examples: Sequence[Example], targets: Any, captions: Sequence[str] | None = None,
               text: Sequence[Example] | None = None) -> dict:
        """The loss terms (tensors) for one batch; `total` is what `step` minimises."""
        if len(examples) != len(targets):
            raise ValueError(f"{len(examples)} examples but {len(targets)} targets")
        cond = self.mm.output_features(examples, self.name)  # (B, N, C)
        out = {"diffusion": self.generator.loss(targets, cond, generator=self.noise)}
        total = self.diffusion_weight * out["diffusion"]
        if captions is not None and self.align_weight:
            reference = self.generator.encode_condition(list(captions))
            if reference is not None:
                out["align"] = F.mse_loss(cond, reference)
                total = total + self.align_weight * out["align"]
        if self.align_weight:
            readout = self.generator.readout_loss(targets, cond)
            if readout is not None:
                out["readout"] = readout
                total = total + self.align_weight * readout
        if text:
            out["text"] = self.mm(list(text)).loss
            total = total + self.text_weight * out["text"]
        out["total"] = total
        return out

    def step(self, examples: Sequence[Example], targets: Any, captions: Sequence[str] | None = None,
             text: Sequence[Example] | None = None) -> dict[str, float]:
        self.mm.train()
        self.generator.train()
        losses = self.losses(examples, targets, captions, text)
        if not torch.isfinite(losses["total"]):
            raise FloatingPointError(f"non-finite loss {losses['total'].item()} training output '{self.name}'")
        losses["total"].backward()
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {k: v.item() for k, v in losses.items()}

    def generate(self, examples: Sequence[Example], steps: int | None = None, seed: int = 0) -> Any:
        return generate_output(self.mm, self.name, self.generator, examples, steps, seed)


@torch.no_grad()
def generate_output(mm: MMLLM, name: str, generator: Generator, examples: Sequence[Example],
                    steps: int | None = None, seed: int = 0) -> Any:
    """The agent path: observation prompts → MM-LLM → signal-token hidden states → output projector →
    generator samples (uint8 images, action chunks in env units)."""
    mm.eval()
    return generator.generate(mm.output_features(examples, name), steps=steps, seed=seed)
