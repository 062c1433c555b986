"""`graft generate`: graft output modalities (goal images, action chunks) onto the MM-LLM, train them
on expert data, and compare them with the untrained generator in the same run.

For every task named in `cfg.run` (configs/generate.yaml `tasks`):

    data     solved expert episodes (graft.envs.trajectories); train and test seeds are disjoint
    agent    a fresh MM-LLM with the task's input modalities grafted (frozen) and the output modality
             grafted on top: K signal tokens, an output projector, a LoRA adapter
    before   the untrained output scored on the test set (random head and denoiser, zero LoRA)
    train    output head + LoRA + the generator's denoiser (curricula/output_stage.py)
    after    scored again; action tasks also execute their chunks in the env (receding horizon)
    refs     scores of things that learn nothing, for scale: the mean training target, the first
             view as the goal (images), the expert itself (actions)

Run folder: config.yaml, report.json, report.md, <task>.png (first view | real goal | untrained |
trained), and with `save: true` <task>/mmllm (save_mmllm) and <task>/generator (save_pretrained).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from graft.agent.backbone import load_backbone
from graft.agent.build import graft_modality, graft_output, save_mmllm
from graft.agent.generators import build_generator
from graft.agent.mmllm import MMLLM
from graft.agent.runtime import configure_threads
from graft.curricula.config import run_dir as make_run_dir
from graft.curricula.output_stage import (
    chunk_l2,
    chunk_records,
    evaluate_output,
    goal_records,
    image_errors,
    rollout_success,
    train_output_stage,
)
from graft.envs.atomic import write_json_atomic, write_text_atomic
from graft.envs.rollout import load_env_config, make_policy, rollout
from graft.envs.trajectories import Trajectory, expert_splits
from omegaconf import OmegaConf

TARGETS = ("goal", "chunk")


def build_task_agent(cfg, task, train: list[Trajectory]) -> MMLLM:
    """A fresh MM-LLM with the task's input modalities grafted; `fit` statistics come from `train`."""
    torch.manual_seed(int(cfg.seed))
    llm, tokenizer = load_backbone(OmegaConf.to_container(cfg.backbone, resolve=True))
    mm = MMLLM(llm, tokenizer, OmegaConf.to_container(cfg.lora, resolve=True), routing=cfg.routing)
    mm.build_config = {"backbone": OmegaConf.to_container(cfg.backbone, resolve=True),
                       "lora": OmegaConf.to_container(cfg.lora, resolve=True), "routing": mm.routing}
    for name in task.inputs:
        if name not in cfg.modalities:
            raise ValueError(f"task input '{name}' has no config in `modalities` (have {list(cfg.modalities)})")
        modality_cfg = OmegaConf.to_container(OmegaConf.merge(cfg.modalities[name], (task.get("modalities") or {}).get(name, {})),
                                              resolve=True)
        for key in ("mean", "std"):  # "fit": per-dimension statistics of the training observations
            if modality_cfg.get(key) == "fit":
                values = np.stack([o[name] for t in train for o in t.observations]).astype(np.float64)
                modality_cfg[key] = (values.mean(0) if key == "mean" else values.std(0) + 1e-6).tolist()
        graft_modality(mm, name, modality_cfg, modality_cfg.get("projector") or cfg.projector)
    return mm


def references(task, records_train: list[dict], records_test: list[dict], size: int | None) -> dict[str, Any]:
    """Errors of predictors that learn nothing: the mean training target, and (goals) the first view."""
    train = np.stack([r["target"] for r in records_train])
    test = np.stack([r["target"] for r in records_test])
    if task.target == "goal":
        mean_image = np.broadcast_to(train.astype(np.float64).mean(0).round().astype(np.uint8), test.shape)
        first = np.stack([r["first_rgb"] for r in records_test])
        out = {}
        for label, guess in (("mean_training_goal", mean_image), ("first_view", first)):
            mse, _ = image_errors(guess, test, size)
            out[label] = {"mse": float(mse.mean()), "psnr": float((10 * np.log10(1 / np.maximum(mse, 1e-10))).mean())}
        return out
    return {"mean_training_chunk": {"l2": float(chunk_l2(np.broadcast_to(train.mean(0), test.shape), test).mean())}}


def run_task(cfg, name: str, out: Path) -> dict[str, Any]:
    task = cfg.tasks[name]
    if task.target not in TARGETS:
        raise ValueError(f"task '{name}': target must be one of {TARGETS}, got {task.target!r}")
    started = time.perf_counter()
    env_cfg = OmegaConf.to_container(load_env_config(task.env), resolve=True)
    if task.get("env_overrides"):  # e.g. {distractor: false}
        env_cfg.update(OmegaConf.to_container(task.env_overrides, resolve=True))
    data = expert_splits(env_cfg, {"train": int(task.episodes.train), "test": int(task.episodes.test)},
                         seed=int(cfg.data_seed))
    data_seconds = time.perf_counter() - started
    mm = build_task_agent(cfg, task, data["train"])
    gen_cfg = cfg.generators[task.output]
    generator = build_generator(gen_cfg)
    if generator.kind == "action":
        generator.fit(np.concatenate([t.actions for t in data["train"]]))
    torch.manual_seed(int(cfg.seed))
    graft_output(mm, task.output, gen_cfg.output, generator.cond_tokens, generator.cond_dim)
    inputs = list(task.inputs)
    if task.target == "goal":
        train, test = goal_records(data["train"], inputs), goal_records(data["test"], inputs)
    else:
        train = chunk_records(data["train"], inputs, generator.horizon)
        test = chunk_records(data["test"], inputs, generator.horizon)
    ev = cfg.eval
    steps = int(ev.sample_steps) if ev.get("sample_steps") else None

    def evaluate() -> dict:
        result = evaluate_output(mm, task.output, generator, test, steps, seed=int(cfg.seed), batch_size=int(ev.batch_size))
        if task.get("rollout"):
            ro = task.rollout
            result["rollout"] = rollout_success(mm, task.output, generator, env_cfg, inputs, int(ro.episodes),
                                                int(ro.num_envs), seed=int(ro.seed), execute=int(ro.execute),
                                                sample_steps=steps)
            result["success_rate"] = result["rollout"]["success_rate"]
        return result

    before = evaluate()
    training = train_output_stage(mm, task.output, generator, train, int(task.steps), batch_size=int(task.batch_size),
                                  lr=float(task.lr), generator_lr=task.get("generator_lr"),
                                  align_weight=float(task.get("align_weight", 1.0)), seed=int(cfg.seed),
                                  progress=bool(cfg.progress))
    after = evaluate()
    refs = references(task, train, test, getattr(generator, "image_size", None))
    if task.get("rollout"):
        expert = rollout(env_cfg, make_policy("expert"), episodes=int(task.rollout.episodes),
                         num_envs=int(task.rollout.num_envs), seed=int(task.rollout.seed), progress=False, frames=0)
        refs["expert"] = {"success_rate": float(expert["success_rate"])}
    if cfg.get("save"):
        save_mmllm(mm, out / name / "mmllm")
        generator.save_pretrained(out / name / "generator")
    images = None
    if task.target == "goal":
        images = {"first": np.stack([r["first_rgb"] for r in test]), "real": np.stack([r["target"] for r in test]),
                  "untrained": before["generated"], "trained": after["generated"]}
    for r in (before, after):
        r.pop("generated")
    return {
        "env": env_cfg.get("name", task.env), "output": task.output, "generator": generator.kind, "target": task.target,
        "inputs": inputs, "episodes": {"train": len(data["train"]), "test": len(data["test"])},
        "samples": {"train": len(train), "test": len(test)}, "data_seconds": round(data_seconds, 2),
        "untrained": before, "trained": after, "references": refs,
        "training": {k: training[k] for k in ("steps", "batch_size", "seconds")},
        "loss": {k: {"first": float(np.mean(v[:10])), "last": float(np.mean(v[-10:]))} for k, v in training["losses"].items()},
        "loss_curves": training["losses"], "seconds": round(time.perf_counter() - started, 1), "_images": images,
    }


def generate(cfg) -> dict:
    from graft.curricula.generate_report import write_goal_png, write_report

    configure_threads(cfg.get("threads", "auto"))
    unknown = [n for n in cfg.run if n not in cfg.tasks]
    if unknown:
        raise ValueError(f"run names unknown tasks {unknown}; known: {list(cfg.tasks)}")
    out = make_run_dir(cfg, "generate", "-".join(cfg.run))
    write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    started, started_at = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S")
    tasks = {}
    for name in cfg.run:
        result = run_task(cfg, name, out)
        images = result.pop("_images")
        if images is not None:
            result["png"] = write_goal_png(out / f"{name}.png", images, int(cfg.png_columns)).name
        tasks[name] = result
        write_json_atomic(out / "report.json", {"tasks": tasks, "partial": True})  # progress survives a kill
    report = {"started": started_at, "seconds": round(time.perf_counter() - started, 1), "seed": int(cfg.seed),
              "backbone": cfg.backbone.name, "config": OmegaConf.to_container(cfg, resolve=True), "tasks": tasks}
    write_report(out, report)
    report["run_dir"] = str(out)
    return report


def summary_lines(report: dict) -> list[str]:
    """One line per task and metric: untrained → trained (what the CLI prints)."""
    lines = []
    for name, t in report["tasks"].items():
        before, after = t["untrained"], t["trained"]
        cells = [f"{k} {before[k]:.4g} -> {after[k]:.4g}" for k in ("mse", "psnr", "l2", "success_rate") if k in after]
        lines.append(f"{name}: {', '.join(cells)}; {after['seconds_per_sample'] * 1000:.1f} ms/sample")
    return lines
