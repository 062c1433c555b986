"""Training steps of the MM-LLM: the one optimiser step, and a small trainer for one grafted name.

`optimizer_step` is where every training loop of graft takes its step (backward, clip, AdamW,
zero grad); curricula/engine.py calls it for every stage kind, `StageTrainer` for single batches of
MM PT or MM IT (what each trains: `MMLLM.set_trainable`). `training_precision` picks the forward's
precision by measuring the host: hosts of one machine kind differ (on an AVX2-only CPU bf16
matmuls run ~8× slower than fp32, on an AVX-512-BF16 one several times faster), so `auto` times
both at the model's width and autocasts to bf16 only where bf16 is clearly faster; the trained
weights (LoRA, projectors) and the optimiser stay fp32 either way. The frozen parts get no gradient and no
optimiser state. `trainable_report` tells how many parameters each grafted name owns.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
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


@functools.lru_cache(maxsize=8)
def matmul_speed(width: int, dtype: torch.dtype, rows: int = 256, repeats: int = 5) -> float:
    """GFLOP/s of a `(rows, width) @ (width, 4*width)` matmul in `dtype` on this host (best of `repeats`)."""
    a, b = torch.randn(rows, width, dtype=dtype), torch.randn(width, 4 * width, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * rows * width * 4 * width / max(best, 1e-9) / 1e9


def training_precision(choice: str, width: int, faster_by: float = 1.5) -> dict:
    """{"dtype": "float32" | "bfloat16", "gflops": {...}, "reason"} for training at hidden size `width`.

    `choice` float32 or bfloat16 is taken as given; `auto` measures both (`matmul_speed`) and picks
    bf16 when it is at least `faster_by` times faster (CUDA: bf16 where the device supports it)."""
    if choice not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"training precision must be auto, float32 or bfloat16, got {choice!r}")
    if choice != "auto":
        return {"dtype": choice, "reason": "set by the config"}
    if width < 256:  # a tiny model's step is overhead-bound: autocast adds casts and saves no matmul time
        return {"dtype": "float32", "reason": f"hidden size {width} < 256: too small for bf16 to pay"}
    if torch.cuda.is_available():
        ok = torch.cuda.is_bf16_supported()
        return {"dtype": "bfloat16" if ok else "float32", "reason": "CUDA device " + ("with" if ok else "without") + " bf16"}
    fp32, bf16 = matmul_speed(width, torch.float32), matmul_speed(width, torch.bfloat16)
    pick = "bfloat16" if bf16 >= faster_by * fp32 else "float32"
    return {"dtype": pick, "gflops": {"float32": round(fp32, 1), "bfloat16": round(bf16, 1)},
            "reason": f"bf16 matmuls {bf16 / fp32:.2f}x fp32 on this host (bf16 needs >= {faster_by}x)"}


def autocast(dtype: str):
    """The forward's autocast context for a `training_precision` dtype (fp32: none)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=getattr(torch, dtype))


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
