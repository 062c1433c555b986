"""The training engine: one loop and one optimiser step for every stage kind.

    for step in range(first_step, steps):
        batch, rng = stage.draw(seed, phase, step)          # seeded by (seed, stage, phase, step)
        plugin.compose(run, stage, phase, batch, rng)       # replay, text mix (curricula/plugins.py)
        loss = stage.loss(run, phase, batch.shard(rank), step)  # through accelerate's DDP wrapper
             + sum(plugin.penalty(run, stage, loss))            # EWC, LwF
        optimizer_step(...)                                  # agent/training.py: the only step site

Every batch is drawn from a generator seeded by the step, so a run resumed from a checkpoint draws
exactly the batches the uninterrupted run would have. Data parallelism is accelerate's: under
`torchrun` / `accelerate launch` each rank takes its slice of every batch, the step's loss runs
through the model `Accelerator.prepare_model` wraps in DistributedDataParallel (rebuilt per phase,
since each phase trains other parameters), and DDP averages the gradients.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from graft.agent.training import autocast, optimizer_step
from graft.curricula import checkpoint as ckpt
from torch import nn
from tqdm.auto import tqdm


@lru_cache(maxsize=1)
def accelerator():
    """The process's `accelerate.Accelerator` (gloo on CPUs under torchrun, NCCL on GPUs)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    ddp = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])


def distributed() -> tuple[int, int]:
    acc = accelerator()
    return acc.process_index, acc.num_processes


class StepModule(nn.Module):
    """One stage's loss as a module holding every parameter it trains (what DDP wraps)."""

    def __init__(self, run, stage, phase: str):
        super().__init__()
        self.mm, self.generators = run.mm, nn.ModuleDict(run.generators)
        self.run, self.stage, self.phase = run, stage, phase
        self.last = None

    def forward(self, batch, step: int) -> dict[str, torch.Tensor]:
        self.last = self.stage.loss(self.run, self.phase, batch, step)
        return self.last.parts


def train(run, stage, phase: str, steps: int, first_step: int = 0) -> None:
    """Train `phase` of `stage` inside MethodRun `run` from `first_step` to `steps`: the loss curve,
    TensorBoard scalars, in-stage checkpoints every `checkpoint_every` steps."""
    acc = accelerator()
    groups = stage.parameter_groups(run.mm, phase, run.generators)
    params = [p for g in groups for p in g["params"]]
    run.optimizer = torch.optim.AdamW(groups)
    if first_step and run.resume_optimizer:
        ckpt.load_optimizer(run.mm, run.optimizer, run.resume_optimizer, run.generators)
    run.resume_optimizer = None
    module = StepModule(run, stage, phase)
    model = acc.prepare_model(module, device_placement=False) if acc.num_processes > 1 else module
    curve = run.results["loss_curves"].setdefault(stage.name, {}).setdefault(phase, [])
    del curve[first_step:]
    every = int(run.cfg.checkpoint_every)
    bar = tqdm(range(first_step, steps), desc=f"{run.name}:{stage.name}:{phase}", leave=False,
               disable=not run.cfg.progress or run.rank > 0)
    run.mm.train()  # walks every module: once per phase, then only if something switched it off
    for step in bar:
        if not run.mm.training:
            run.mm.train()
        batch, rng = stage.draw(run.seed, phase, step)
        for plugin in run.plugins:
            plugin.compose(run, stage, phase, batch, rng)
        with autocast(run.results["precision"]["dtype"]):  # bf16 forward where the host runs it faster
            parts = model(batch.shard(run.rank, run.world), step)
        loss = parts["total"].float()
        for plugin in run.plugins:
            extra = plugin.penalty(run, stage, module.last)
            if extra is not None:
                loss = loss + extra
        value = optimizer_step(run.optimizer, loss, params, 1.0, acc.backward, f"{run.name}:{stage.name}:{phase}")
        curve.append(round(value, 5))
        bar.set_postfix(loss=f"{value:.3f}")
        if run.writer is not None:
            for key, part in parts.items():
                run.writer.add_scalar(f"{run.name}/loss/{stage.name}/{phase}/{key}", part.item(), step)
        if every and (step + 1) % every == 0 and step + 1 < steps:
            run.save(stage.index, phase, step + 1)
    stage.end_phase(run.mm, run.generators)
    run.log(f"{stage.name} {phase}: {steps - first_step} steps, loss {curve[0] if curve else float('nan'):.3f} → "
            f"{curve[-1] if curve else float('nan'):.3f}")
