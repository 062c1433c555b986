"""Training checkpoints of one method's run: safetensors + JSON, atomically.

A checkpoint folder holds
    state.json          where the run is (stage, phase, step), results so far, optimiser scalars,
                        and how many adds the replay memory had seen (`memory_adds`)
    tensors.safetensors every parameter that ever trains (projectors, LoRA, output heads, the
                        denoisers of output stages' generators as `generators.<name>.*`),
                        AdamW moments, plugin state (EWC Fisher/anchors, LwF teacher), and extra
                        tensors of the run (the stage's starting weights, `start/*`)
and is written under a temporary name and renamed into place, so a SIGKILL at any moment leaves
either the previous checkpoint or the new one. Nothing is pickled. The replay memory is not copied
here: its SQLite store is its only source of truth, and keeps every add's state, so resuming rolls
it back to `memory_adds` (graft.memory.ReplayMemory.rollback).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from graft.envs.atomic import recover_dir, write_dir_atomic
from safetensors.torch import load_file, save_file


def named_parameters(mm, generators: Mapping[str, Any] | None = None) -> dict[str, torch.nn.Parameter]:
    """The MM-LLM's parameters plus each output generator's denoiser as `generators.<name>.<param>`
    (its frozen encoders and VAE are rebuilt from the seed and never change)."""
    named = dict(mm.named_parameters())
    for name, gen in (generators or {}).items():
        named.update({f"generators.{name}.{n}": p for n, p in gen.denoiser.named_parameters()})
    return named


def learnable_state(mm, generators: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous() for n, p in named_parameters(mm, generators).items()
            if "lora_" in n or n.startswith(("projectors.", "outputs.", "generators."))}


def optimizer_tensors(mm, optimizer: torch.optim.Optimizer | None,
                      generators: Mapping[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """AdamW state keyed by parameter name (tensors) plus its scalar hyper-parameters (JSON)."""
    if optimizer is None:
        return {}, {}
    name_of = {id(p): n for n, p in named_parameters(mm, generators).items()}
    tensors, scalars = {}, {"param_names": [], "hyper": {}}
    for group in optimizer.param_groups:
        scalars["hyper"] = {k: v for k, v in group.items() if k != "params" and isinstance(v, (int, float, bool))}
        for p in group["params"]:
            name = name_of[id(p)]
            scalars["param_names"].append(name)
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"optim/{key}/{name}"] = value.detach().contiguous().reshape(value.shape)
    return tensors, scalars


def load_optimizer(mm, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                   generators: Mapping[str, Any] | None = None) -> None:
    params = named_parameters(mm, generators)
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, state_key, name = key.split("/", 2)
            optimizer.state[params[name]][state_key] = value.clone()


def save_checkpoint(folder: Path, mm, optimizer, plugins, state: dict,
                    generators: Mapping[str, Any] | None = None, extra: Mapping[str, torch.Tensor] | None = None) -> None:
    def write(tmp: Path) -> None:
        tensors = {f"param/{n}": t for n, t in learnable_state(mm, generators).items()}
        opt_tensors, opt_scalars = optimizer_tensors(mm, optimizer, generators)
        tensors.update(opt_tensors)
        for i, plugin in enumerate(plugins):
            tensors.update({f"plugin/{i}/{k}": v.contiguous() for k, v in plugin.tensors().items()})
        tensors.update(extra or {})
        save_file({k: v.clone() for k, v in tensors.items()}, tmp / "tensors.safetensors")
        (tmp / "state.json").write_text(json.dumps({**state, "optimizer": opt_scalars}, indent=1))

    write_dir_atomic(write, folder)


def read_checkpoint(folder: Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    if not (recover_dir(folder) / "state.json").exists():
        return None
    return json.loads((folder / "state.json").read_text()), load_file(folder / "tensors.safetensors")


def restore(mm, plugins, tensors: dict[str, torch.Tensor], generators: Mapping[str, Any] | None = None) -> None:
    params = named_parameters(mm, generators)
    with torch.no_grad():
        for key, value in tensors.items():
            if key.startswith("param/"):
                params[key[len("param/"):]].copy_(value)
    for i, plugin in enumerate(plugins):
        prefix = f"plugin/{i}/"
        plugin.load_tensors({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
