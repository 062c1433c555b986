"""Strategy plugins: what a continual-learning method adds to the training engine.

The engine (curricula/engine.py) calls, for every plugin in order and for every stage kind:

    before_stage(run, stage)                      stage starts (after grafting)
    compose(run, stage, phase, batch, rng)        put rows into the step's Batch (stages/base.py)
    penalty(run, stage, loss) -> tensor|None      extra loss term for one step (loss: StepLoss)
    after_stage(run, stage)                       stage trained and evaluated (and promoted)
    tensors() / load_tensors(d)                   state to checkpoint (safetensors)

- ReplayPlugin: mixes samples from a `graft.memory.ReplayMemory` (avalanche storage policies)
  into instruction-tuning batches, and adds each finished stage's replayable records to it.
- TextMixPlugin: mixes text-only instructions into every modality stage at a fixed ratio (VILA).
- EWCPlugin: elastic weight consolidation (Kirkpatrick et al. 2017) on the shared adapter, with a
  diagonal Fisher from squared gradients of each stage's own loss.
- LwFPlugin: learning without forgetting (Li & Hoiem 2017): distil the adapter's pre-stage
  next-token distributions into the training model on the step's text rows.

A text-loss stage's batch takes mixed rows in place of its own; an output stage adds them as a text
loss beside its generation loss (`Batch.mix`). Output records hold targets, not text answers, so
the replay memory keeps none of them (`stage.replayable()`), and LwF distils only where the step
has a text loss.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class Plugin:
    needs_logits = False  # the plugin reads full-position logits (the engine then skips packing)

    def before_stage(self, run, stage) -> None: ...

    def compose(self, run, stage, phase: str, batch, rng: np.random.Generator) -> None: ...

    def penalty(self, run, stage, loss) -> torch.Tensor | None:
        return None

    def after_stage(self, run, stage) -> None: ...

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...


class ReplayPlugin(Plugin):
    """Puts `stage.replay_ratio` of each IT batch's size of memory samples into the batch."""

    def __init__(self, memory):
        self.memory = memory

    def compose(self, run, stage, phase, batch, rng):
        n = int(round(stage.replay_ratio * stage.batch_size))
        if phase != "it" or not n or not len(self.memory):
            return
        batch.mix([dict(s) for s in self.memory.sample(n, rng, replace=n > len(self.memory))], at="head")

    def after_stage(self, run, stage) -> None:
        rows = stage.replayable()
        if rows:
            self.memory.add(stage.name, rows)


class TextMixPlugin(Plugin):
    """Puts `stage.text_mix` of each IT batch's size of text-only instructions into a modality stage's batch."""

    def __init__(self, pool: list[dict]):
        self.pool = pool

    def compose(self, run, stage, phase, batch, rng):
        n = int(round(stage.text_mix * stage.batch_size))
        if phase != "it" or not stage.mixes_text or not n:
            return
        batch.mix([self.pool[i] for i in rng.choice(len(self.pool), n)], at="tail")


class EWCPlugin(Plugin):
    def __init__(self, strength: float, fisher_batches: int = 8):
        self.strength, self.fisher_batches = strength, fisher_batches
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def after_stage(self, run, stage) -> None:
        params = run.mm.set_trainable(stage.name, "it")
        named = {n: p for n, p in run.mm.named_parameters() if p.requires_grad and "lora_" in n}
        fisher = {n: torch.zeros_like(p) for n, p in named.items()}
        rng = np.random.default_rng([run.seed, stage.index, 7])
        for _ in range(self.fisher_batches):
            rows = [stage.it[i] for i in rng.choice(len(stage.it), min(len(stage.it), stage.batch_size), replace=False)]
            run.mm.zero_grad(set_to_none=True)
            stage.fisher_loss(run, rows).backward()
            for n, p in named.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2 / self.fisher_batches
        run.mm.zero_grad(set_to_none=True)
        for n, p in named.items():  # online EWC: Fisher information adds up over stages
            self.fisher[n] = self.fisher.get(n, torch.zeros_like(p)) + fisher[n]
            self.anchor[n] = p.detach().clone()
        run.mm.set_trainable(None)
        del params

    def penalty(self, run, stage, loss):
        if not self.fisher:
            return None
        named = dict(run.mm.named_parameters())
        total = sum((self.fisher[n] * (named[n] - self.anchor[n]) ** 2).sum() for n in self.fisher)
        return self.strength / 2 * total

    def tensors(self):
        return {**{f"fisher/{n}": t for n, t in self.fisher.items()}, **{f"anchor/{n}": t for n, t in self.anchor.items()}}

    def load_tensors(self, tensors):
        self.fisher = {k[len("fisher/"):]: v for k, v in tensors.items() if k.startswith("fisher/")}
        self.anchor = {k[len("anchor/"):]: v for k, v in tensors.items() if k.startswith("anchor/")}


class LwFPlugin(Plugin):
    needs_logits = True

    def __init__(self, alpha: float, temperature: float = 2.0):
        self.alpha, self.temperature = alpha, temperature
        self.teacher: dict[str, torch.Tensor] = {}

    def before_stage(self, run, stage) -> None:
        if stage.index > 0:  # the model as it was before this stage is the teacher
            self.teacher = {n: p.detach().clone() for n, p in run.mm.named_parameters() if "lora_" in n}

    def penalty(self, run, stage, loss):
        if not self.teacher or loss.output is None:
            return None
        examples, output = loss.examples, loss.output
        named = dict(run.mm.named_parameters())
        with torch.no_grad():
            current = {n: named[n].detach().clone() for n in self.teacher}
            for n, t in self.teacher.items():
                named[n].data.copy_(t)
            teacher_logits = run.mm(examples).logits
            for n, c in current.items():
                named[n].data.copy_(c)
        T = self.temperature
        kl = F.kl_div(F.log_softmax(output.logits / T, -1), F.log_softmax(teacher_logits / T, -1),
                      log_target=True, reduction="batchmean") / output.logits.shape[1]
        return self.alpha * T * T * kl

    def tensors(self):
        return {f"teacher/{n}": t for n, t in self.teacher.items()}

    def load_tensors(self, tensors):
        self.teacher = {k[len("teacher/"):]: v for k, v in tensors.items() if k.startswith("teacher/")}


def build_plugins(method: Any, memory, text_pool: list[dict]) -> list[Plugin]:
    plugins: list[Plugin] = []
    if method.get("replay"):
        plugins.append(ReplayPlugin(memory))
    if method.get("text_mix"):
        plugins.append(TextMixPlugin(text_pool))
    if method.get("ewc"):
        plugins.append(EWCPlugin(float(method.ewc.strength), int(method.ewc.get("fisher_batches", 8))))
    if method.get("lwf"):
        plugins.append(LwFPlugin(float(method.lwf.alpha), float(method.lwf.get("temperature", 2.0))))
    return plugins
