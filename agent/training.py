"""Training steps of the MM-LLM: the one optimiser step, and a small trainer for one grafted name.

`optimizer_step` is where every training loop of graft takes its step (backward, clip, AdamW,
zero grad); curricula/engine.py calls it for every stage kind, `StageTrainer` for single batches of
MM PT or MM IT (what each trains: `MMLLM.set_trainable`). The frozen parts get no gradient and no
optimiser state. `trainable_report` tells how many parameters each grafted name owns.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from graft.agent.mmllm import MMLLM, Example


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: Sequence[torch.nn.Parameter],
                   max_grad_norm: float | None = 1.0, backward: Callable[[torch.Tensor], None] | None = None,
                   what: str = "training") -> float:
    """Backward (through `backward`, e.g. accelerate's), clip the gradient norm of `params`, step, zero
    the gradients; returns the loss. A non-finite loss raises before any weight changes."""
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"non-finite loss {value} in {what}")
    (backward or torch.Tensor.backward)(loss)
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value


class StageTrainer:
    """AdamW over exactly the parameters that stage `stage` of adapter `name` may train."""

    def __init__(self, mm: MMLLM, name: str, stage: str, lr: float = 1e-3, weight_decay: float = 0.0,
                 max_grad_norm: float | None = 1.0):
        self.mm, self.name, self.stage, self.max_grad_norm = mm, name, stage, max_grad_norm
        self.params = mm.set_trainable(name, stage)
        if not self.params:
            raise ValueError(f"stage '{stage}' of '{name}' has nothing to train (a task adapter has no projector for PT)")
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)

    def step(self, examples: Sequence[Example]) -> float:
        self.mm.train()
        return optimizer_step(self.optimizer, self.mm(examples).loss, self.params, self.max_grad_norm,
                              what=f"stage '{self.stage}' of '{self.name}'")


def trainable_report(mm: MMLLM) -> dict[str, dict[str, float]]:
    """Per grafted name: projector and LoRA parameter counts, and their share of all parameters.
    For an output modality "projector" counts its output head (signal embeddings + output projector)."""
    total = sum(p.numel() for p in mm.parameters())
    report = {}
    for name, adapter in mm.adapter_of.items():
        owned = mm.projectors[name] if name in mm.projectors else mm.outputs[name] if name in mm.outputs else None
        projector = sum(p.numel() for p in owned.parameters()) if owned is not None else 0
        lora = sum(p.numel() for p in mm.bank.lora_parameters(adapter))
        report[name] = {"projector": projector, "lora": lora, "adapter": adapter, "share": (projector + lora) / total}
    return report
