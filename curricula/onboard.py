"""`graft onboard`: the main job. Graft a curriculum's modalities one stage at a time with several
methods, evaluate after every stage, and write report.json, report.md, plots and TensorBoard logs.

The env is the `env` config group (`env=babyai_pickup`, `env.level=BabyAI-GoToObj-v0`, a user's
option on `hydra.searchpath`, or an inline `'~env' '+env={_target_: ...}'`); a curriculum picks its
default (`override /env@_global_.env: mujoco_reach`).

Run folder (default runs/onboard/<curriculum>-<env>-<time>):
    config.yaml              the composed config (what `resume=` reads back)
    data/<curriculum>/       generated env data (Parquet), reused on resume
    baseline.json            untrained scores per stage (FWT's reference)
    <method>/checkpoint/     the method's latest training checkpoint; <method>/replay.sqlite its memory
    <method>/agent/          the trained agent (save_mmllm): `graft serve checkpoint=` / `graft rollout policy=`;
                             output stages' generators under agent/generators/<name>/ (load_generators)
    tb/                      TensorBoard event files
    report.json, report.md, plots/*.png
"""
from __future__ import annotations

import importlib.metadata as md
import json
import time
from pathlib import Path

import torch
from graft.agent.runtime import configure_threads
from graft.curricula.config import env_label
from graft.curricula.config import run_dir as make_run_dir
from graft.curricula.engine import distributed
from graft.curricula.stages import build_stages, stream
from graft.curricula.strategy import MethodRun
from graft.envs.atomic import write_json_atomic, write_text_atomic
from graft.envs.rollout import make_env_factory
from omegaconf import OmegaConf


def selected_methods(cfg) -> list[str]:
    compare = cfg.compare
    names = list(cfg.methods) if compare == "all" else [compare] if isinstance(compare, str) else list(compare)
    unknown = [n for n in names if n not in cfg.methods]
    if unknown:
        raise ValueError(f"compare names unknown methods {unknown}; known: {list(cfg.methods)} or 'all'")
    return names


def baseline_scores(cfg, stages, out: Path) -> list[float]:
    """Score of an untrained agent on each stage (only that stage grafted), cached in the run."""
    path = out / "baseline.json"
    if path.exists():
        return json.loads(path.read_text())["scores"]
    print(f"untrained baselines for {len(stages)} stage(s)", flush=True)
    scores = [stage.baseline(cfg, stages) for stage in stages]
    write_json_atomic(path, {"scores": scores, "stages": [s.name for s in stages]})
    return scores


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("graft", "torch", "transformers", "peft", "diffusers", "avalanche-lib", "gymnasium", "minigrid", "mujoco"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def load_resumed(cfg):
    """The config of the run folder `cfg.resume`, with this invocation's progress setting."""
    folder = Path(cfg.resume)
    saved = folder / "config.yaml"
    if not saved.exists():
        raise FileNotFoundError(f"resume={folder}: no config.yaml there; is it a `graft onboard` run folder?")
    resumed = OmegaConf.load(saved)
    resumed.progress = cfg.progress
    resumed.run_dir, resumed.resume = str(folder), None
    return resumed, folder


def onboard(cfg) -> dict:
    configure_threads(cfg.get("threads", "auto"))
    if cfg.get("resume"):
        cfg, out = load_resumed(cfg)
    else:
        env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
        out = make_run_dir(cfg, "onboard", f"{cfg.curriculum.name}-{env_label(env_cfg)}")
        write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    from graft.memory import import_avalanche

    import_avalanche()  # before the process group exists: avalanche builds loggers at import time and
    # refuses to in a non-main rank of an initialised group
    rank, world = distributed()
    if world > 1:  # each rank keeps its own checkpoints and memory; rank 0 writes the report
        out = out / f"rank{rank}"
    started, started_at = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S")
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    print(f"graft onboard: curriculum {cfg.curriculum.name} on {env_label(env_cfg)} -> {out}", flush=True)
    skip_text = cfg.backbone.source != "tiny" and cfg.curriculum.skip_text_for_pretrained
    stages, text = build_stages(cfg, env_cfg, out, skip_text=skip_text)
    benchmark = stream(stages)
    env = make_env_factory(env_cfg)()
    action_names = getattr(env.unwrapped, "action_names", None)
    env.close()
    baseline = baseline_scores(cfg, stages, out)
    writer = None
    if cfg.get("tensorboard") and rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))

    def memory_factory(path: Path):
        from graft.memory.replay import ReplayMemory

        policy = cfg.methods[name].replay.policy
        return ReplayMemory(policy, max_size=int(cfg.curriculum.stage_defaults.replay_size), store_path=path,
                            seed=int(cfg.seed))

    results = {}
    for name in selected_methods(cfg):
        torch.manual_seed(int(cfg.seed))
        run = MethodRun(cfg, name, benchmark, stages, text, baseline, out / name, env_cfg, action_names,
                        memory_factory, writer)
        results[name] = run.run()
        if run.memory is not None:
            run.memory.close()
    if writer is not None:
        writer.close()
    report = {
        "curriculum": cfg.curriculum.name, "env": env_label(env_cfg), "config": OmegaConf.to_container(cfg, resolve=True),
        "seeds": {"seed": int(cfg.seed), "data": int(cfg.curriculum.data.seed)}, "versions": versions(),
        "stages": [s.name for s in stages], "started": started_at,
        "seconds": round(time.perf_counter() - started, 1),
        "methods": results,
    }
    if rank == 0:
        from graft.curricula.report import write_report

        write_report(out, report)
    report["run_dir"] = str(out)
    return report
