"""An output modality as a curriculum stage: its data, its training and its score in [0, 1].

Records (plain dicts) pair a prompt + observations with a target:

    goal_records(trajectories, inputs)          target = the final rgb view, caption = its caption
    chunk_records(trajectories, inputs, H)      target = the expert's next H actions from each state

`train_output_stage(mm, name, generator, records, steps, ...)` trains the output head, the output's
LoRA adapter and the generator's denoiser (agent/output_trainer.py) on batches drawn by a generator
seeded with (seed, step), with diffusion noise and timesteps seeded by (seed, step) too, so a run is
reproducible and a run resumed at step k (`first_step=k`, the trainer's optimiser state restored)
takes exactly the steps the uninterrupted run would have. `evaluate_output(mm, name, generator, records)`
generates every target through the agent path and scores it:

    images   mse (pixels in [0, 1], at the generator's size), psnr (dB)
    actions  l2 (mean per-step Euclidean distance to the expert action, env units)
    score    1 / (1 + error / reference), where reference is the error of always predicting the
             test set's mean target: 1 is perfect, 0.5 is as good as the mean, lower is worse.

`rollout_success` executes action chunks in the env with receding horizon (agent/chunk_policy.py).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from graft.agent.chunk_policy import ChunkPolicy, chunk_prompt
from graft.agent.generators.base import Generator
from graft.agent.mmllm import MMLLM, Example
from graft.agent.output_trainer import OutputTrainer, generate_output
from graft.envs.trajectories import Trajectory, action_chunks
from tqdm.auto import tqdm

GOAL_PROMPT = "{tags}\nMission: {mission}\nImagine the view when the mission is done."


def goal_records(trajectories: Sequence[Trajectory], inputs: Sequence[str]) -> list[dict]:
    """One record per episode: first observation + mission → final rgb view (and its caption)."""
    tags = "\n".join(f"<{m}>" for m in inputs)
    return [{"prompt": GOAL_PROMPT.format(tags=tags, mission=t.mission), "obs": {m: t.first[m] for m in inputs},
             "target": t.goal, "caption": t.goal_caption, "first_rgb": t.first.get("rgb"), "seed": t.seed}
            for t in trajectories]


def chunk_records(trajectories: Sequence[Trajectory], inputs: Sequence[str], horizon: int, every: int = 1) -> list[dict]:
    """One record per `every`-th state: observation + mission → the expert's next `horizon` actions."""
    out = []
    for t in trajectories:
        chunks = action_chunks(t.actions, horizon)  # (T, H, A)
        for step in range(0, len(t), every):
            obs = t.observations[step]
            out.append({"prompt": chunk_prompt(inputs, t.mission), "obs": {m: obs[m] for m in inputs},
                        "target": chunks[step].astype(np.float32), "caption": None, "seed": t.seed, "step": step})
    return out


def to_examples(records: Sequence[Mapping[str, Any]]) -> list[Example]:
    return [Example(r["prompt"], dict(r["obs"])) for r in records]


def targets_of(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.stack([r["target"] for r in records])


def train_output_stage(mm: MMLLM, name: str, generator: Generator, records: Sequence[Mapping[str, Any]], steps: int,
                       batch_size: int = 16, lr: float = 1e-3, generator_lr: float | None = None,
                       align_weight: float = 1.0, stage: str = "it", seed: int = 0, progress: bool = False,
                       mix: Callable[[np.random.Generator], Sequence[Example]] | None = None,
                       text_weight: float = 1.0, trainer: OutputTrainer | None = None, first_step: int = 0,
                       after_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train output `name` (head + LoRA for stage "it") and the generator's denoiser on `records`.

    `mix(rng)`, if given, returns text examples (with responses: replay samples, text-only
    instructions) whose LM loss joins every step's loss, drawn with the step's seeded generator.
    `trainer` (built here when None) lets a caller restore optimiser state before `first_step`;
    `after_step(step, losses)` runs after every step (curves, checkpoints).
    """
    if not records:
        raise ValueError(f"output stage '{name}' has no training records")
    if trainer is None:
        trainer = OutputTrainer(mm, name, generator, stage=stage, lr=lr, generator_lr=generator_lr,
                                align_weight=align_weight, text_weight=text_weight, seed=seed)
    curve: dict[str, list[float]] = {}
    started = time.perf_counter()
    for step in tqdm(range(int(first_step), int(steps)), desc=f"train {name}", leave=False, disable=not progress):
        rng = np.random.default_rng([seed, step])
        trainer.noise.manual_seed(int(np.random.SeedSequence([seed, step, 1]).generate_state(1)[0]))
        batch = [records[i] for i in rng.choice(len(records), batch_size, replace=len(records) < batch_size)]
        captions = [r["caption"] for r in batch] if all(r.get("caption") for r in batch) else None
        text = mix(rng) if mix is not None else None
        losses = trainer.step(to_examples(batch), targets_of(batch), captions, text)
        for key, value in losses.items():
            curve.setdefault(key, []).append(round(value, 5))
        if after_step is not None:
            after_step(step, losses)
    mm.set_trainable(None)
    generator.denoiser.requires_grad_(False)  # everything frozen between stages, as set_trainable(None) does
    return {"steps": int(steps), "batch_size": batch_size, "seconds": round(time.perf_counter() - started, 2),
            "losses": curve}


def image_errors(generated: np.ndarray, targets: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image MSE (pixels in [0, 1]) of uint8 images against uint8 targets resized to `size`."""
    truth = _resize(targets, size)
    gen = _resize(generated, size)
    return ((gen - truth) ** 2).mean(axis=(1, 2, 3)), truth


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.permute(0, 2, 3, 1).numpy()  # (B, size, size, 3) in [0, 1]


def chunk_l2(generated: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-sample mean over steps of the Euclidean distance between actions `(B, H, A)` → `(B,)`."""
    return np.linalg.norm(np.asarray(generated) - np.asarray(targets), axis=-1).mean(axis=-1)


def evaluate_output(mm: MMLLM, name: str, generator: Generator, records: Sequence[Mapping[str, Any]],
                    sample_steps: int | None = None, seed: int = 0, batch_size: int = 32) -> dict:
    """Generate every record's target through the agent path and score it (module docstring)."""
    if not records:
        raise ValueError(f"cannot evaluate output '{name}' on an empty test set")
    generated, started = [], time.perf_counter()
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        generated.append(generate_output(mm, name, generator, to_examples(chunk), sample_steps, seed + start))
    seconds = time.perf_counter() - started
    generated = np.concatenate(generated)
    targets = targets_of(records)
    out = {"samples": len(records), "sample_steps": int(sample_steps or generator.sample_steps),
           "seconds_per_sample": round(seconds / len(records), 4), "batch_size": batch_size}
    if generator.kind == "image":
        mse, truth = image_errors(generated, targets, generator.image_size)
        reference = float(((truth - truth.mean(0)) ** 2).mean())
        error = float(mse.mean())
        out.update(mse=error, psnr=float((10 * np.log10(1.0 / np.maximum(mse, 1e-10))).mean()))
    else:
        l2 = chunk_l2(generated, targets)
        reference = float(chunk_l2(np.broadcast_to(targets.mean(0), targets.shape), targets).mean())
        error = float(l2.mean())
        out.update(l2=error)
    out["reference_error"] = reference
    out["score"] = 1.0 / (1.0 + error / max(reference, 1e-12))
    out["generated"] = generated
    return out


def rollout_success(mm: MMLLM, name: str, generator: Generator, env_cfg: Mapping, inputs: Sequence[str], episodes: int,
                    num_envs: int = 4, seed: int = 10_000, execute: int = 8, sample_steps: int | None = None) -> dict:
    """Success rate of receding-horizon action chunks executed in the env, and time per planned chunk."""
    from graft.envs.rollout import make_env_factory, rollout

    env = make_env_factory(dict(env_cfg))()
    space = env.action_space
    env.close()
    policy = ChunkPolicy(mm, name, generator, space, inputs, execute=execute, sample_steps=sample_steps, seed=seed)
    summary = rollout(dict(env_cfg), policy, episodes=episodes, num_envs=num_envs, seed=seed, progress=False, frames=0)
    return {"success_rate": float(summary["success_rate"]), "episodes": int(summary["episodes"]),
            "mean_length": float(summary["mean_length"]), "seconds_per_chunk": policy.seconds_per_chunk,
            "execute": execute}
