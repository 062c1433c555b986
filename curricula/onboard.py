"""`graft onboard`: the main job. Graft a curriculum's modalities one stage at a time with several
methods, evaluate after every stage, and write report.json, report.md, plots and TensorBoard logs.
With `seeds=[0,1,2]` the whole comparison runs once per seed (folders seed<k>/, each a full run)
and the top-level report summarises them (curricula/seeds.py).

The env is the `env` config group (`env=babyai_pickup`, `env.level=BabyAI-GoToObj-v0`, a user's
option on `hydra.searchpath`, or an inline `'~env' '+env={_target_: ...}'`); a curriculum picks its
default (`override /env@_global_.env: mujoco_reach`).

Run folder (default runs/onboard/<curriculum>-<env>-<time>):
    config.yaml              the composed config (what `resume=` reads back)
    data/<curriculum>/       generated env data (Parquet), reused on resume
    baseline.json            per stage: blind untrained score (FWT's reference), chance, group majority
    success_baselines.json   random, expert, random_escape and majority_escape success cells on the held-out rollout seeds
    text_probes.json         the base model's text probes (and, pretrained, the self-distilled text mix)
    <method>/checkpoint/     the method's latest training checkpoint; <method>/replay.sqlite its memory
    <method>/agent/          the trained agent (save_mmllm): `graft serve checkpoint=` / `graft rollout policy=`;
                             output stages' generators under agent/generators/<name>/ (load_generators)
    tb/                      TensorBoard event files
    report.json, report.md, plots/*.png
"""
from __future__ import annotations

import copy
import importlib.metadata as md
import json
import time
from collections import Counter
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


def stage_baselines(cfg, stages, out: Path) -> list[dict]:
    """What each stage's score must beat (blind untrained agent, chance, majority), cached in the run."""
    path = out / "baseline.json"
    if path.exists():
        return json.loads(path.read_text())["stages"]
    print(f"baselines for {len(stages)} stage(s): blind untrained agent, chance, group majority", flush=True)
    found = [{"stage": stage.name, **stage.baselines(cfg, stages)} for stage in stages]
    write_json_atomic(path, {"stages": found})
    return found


def rollout_plan(cfg, stages) -> int:
    """Episodes per success cell: the most any stage rolls out (each takes a prefix of one seed list)."""
    return max([0] + [s.rollout_episodes(cfg) for s in stages])


def demo_action_order(stages) -> list[int]:
    """Action indices, most common first (ties: lower index), among the training demonstrations of
    the stages that act; [] when none has demonstrations or action names."""
    counts: Counter = Counter()
    names: list[str] | None = None
    for stage in stages:
        if getattr(stage, "acts", False) and getattr(stage, "action_names", None):
            names = list(stage.action_names)
            counts.update(r["response"] for r in getattr(stage, "it", []) if r.get("kind") == "demo")
    if not names or not counts:
        return []
    return sorted((names.index(a) for a in counts if a in names), key=lambda i: (-counts[names[i]], i))


def success_baselines(env_cfg: dict, stages, seeds: list[int], cfg, out: Path) -> dict:
    """Random-policy, expert and (discrete actions) random-with-episode-memory success cells, per stage
    that acts, on the stages' rollout seeds."""
    path = out / "success_baselines.json"
    if path.exists():
        return json.loads(path.read_text())
    import gymnasium as gym
    from graft.curricula.evaluate import summary_cell
    from graft.envs.rollout import make_env_factory, make_policy, rollout

    num_envs = int(cfg.curriculum.eval.get("num_envs", 4))
    probe = make_env_factory(env_cfg)()
    discrete = isinstance(probe.action_space, gym.spaces.Discrete)
    probe.close()
    # random_escape: random with the escape agent's episode memory (what that memory alone buys);
    # majority_escape: the demonstrations' most common action with that memory (the best guess without looking)
    order = demo_action_order(stages)
    names = ["random", "expert"] + (["random_escape"] if discrete else []) + (["majority_escape"] if discrete and order else [])
    cells: dict[str, dict[int, dict]] = {n: {} for n in names}
    found: dict[str, list] = {n: [] for n in names}
    for stage in stages:
        episodes = stage.rollout_episodes(cfg)
        for name in found:
            if episodes and episodes not in cells[name]:
                print(f"{name} policy: {episodes} episodes on the held-out rollout seeds", flush=True)
                policy = make_policy(name, env_cfg, seed=int(cfg.seed), **({"order": order} if name == "majority_escape" else {}))
                cells[name][episodes] = summary_cell(rollout(env_cfg, policy, seeds=seeds[:episodes],
                                                             num_envs=num_envs, progress=False, frames=0))
            found[name].append(cells[name].get(episodes))
    write_json_atomic(path, found)
    return found


def text_probes(cfg, stages, text: dict, out: Path):
    """The run's text probes (curricula/retention.py), with the base model measured before any graft;
    for a pretrained backbone also the self-distilled text mix, generated once and cached."""
    from graft.curricula.retention import TextProbes
    from graft.curricula.stages import TextStage, fresh_agent

    pretrained = cfg.backbone.source != "tiny"
    if not pretrained and any(isinstance(s, TextStage) for s in stages):
        return None
    cache = out / "text_probes.json"
    if pretrained:
        size = cfg.get("text_probes") or {}
        probes = TextProbes("language", passages=int(size.get("passages", 32)), max_items=size.get("max_items"))
    else:
        probes = TextProbes("templates", {"val": text["val"], "test": text["test"]})
    if cache.exists():
        saved = json.loads(cache.read_text())
        probes.before, probes.base_vocab = saved["before"], saved.get("base_vocab")
        if pretrained:
            text["train"] = saved["text_mix"]
        return probes
    mm = fresh_agent(cfg)
    print(f"text probes of the model before grafting: {probes.label}", flush=True)
    saved = {}
    if pretrained:
        from graft.curricula.language_probes import base_vocab_size, distill_prompts, self_distilled_records

        probes.base_vocab = base_vocab_size(mm)
        how = str((cfg.get("text_probes") or {}).get("distill", "sample"))
        if how not in ("greedy", "sample"):
            raise ValueError(f"text_probes.distill must be 'greedy' or 'sample', got {how!r}")
        print(f"self-distilled text mix: the base model's own answers ({how}) to a separate prompt set", flush=True)
        prompts = distill_prompts()
        keep = (cfg.get("text_probes") or {}).get("distill_prompts")
        if keep and int(keep) < len(prompts):
            prompts = prompts[:: -(-len(prompts) // int(keep))]
        text["train"] = saved["text_mix"] = self_distilled_records(mm, prompts, sample=how == "sample",
                                                                    seed=int(cfg.seed))
    probes.measure_before(mm)
    write_json_atomic(cache, {**saved, "before": probes.before, "base_vocab": probes.base_vocab, "label": probes.label})
    return probes


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
    """One run per seed of `seeds` (data, init and batches all follow it), then their summary; a
    single run when `seeds` is empty."""
    configure_threads(cfg.get("threads", "auto"))
    if cfg.get("resume"):
        cfg, out = load_resumed(cfg)
    else:
        env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
        out = make_run_dir(cfg, "onboard", f"{cfg.curriculum.name}-{env_label(env_cfg)}")
        write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    seeds = [int(s) for s in (cfg.get("seeds") or [])]
    if not seeds:
        return onboard_seed(cfg, out)
    reports = {}
    for seed in seeds:
        one = copy.deepcopy(cfg)
        one.seed, one.seeds, one.curriculum.data.seed = seed, None, seed
        if one.curriculum.get("expert") is not None:
            one.curriculum.expert.seed = seed
        reports[seed] = onboard_seed(one, out / f"seed{seed}")
    from graft.curricula.seeds import combine

    report = combine(reports, str(cfg.curriculum.name))
    write_report_files(out, report)
    report["run_dir"] = str(out)
    return report


def onboard_seed(cfg, out: Path) -> dict:
    from graft.memory import import_avalanche

    import_avalanche()  # before the process group exists: avalanche builds loggers at import time and
    # refuses to in a non-main rank of an initialised group
    rank, world = distributed()
    if world > 1:  # each rank keeps its own checkpoints and memory; rank 0 writes the report
        out = out / f"rank{rank}"
    started, started_at = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S")
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    print(f"graft onboard: curriculum {cfg.curriculum.name} on {env_label(env_cfg)}, seed {cfg.seed} -> {out}",
          flush=True)
    env = make_env_factory(env_cfg)()
    action_names = getattr(env.unwrapped, "action_names", None)
    env.close()
    skip_text = cfg.backbone.source != "tiny" and cfg.curriculum.skip_text_for_pretrained
    stages, text = build_stages(cfg, env_cfg, out, skip_text=skip_text, action_names=action_names)
    benchmark = stream(stages)
    baselines = stage_baselines(cfg, stages, out)
    from graft.envs.rollout import heldout_seeds

    # held-out rollout seeds: datagen and expert episodes draw theirs below 2**31, these start above it
    seeds = heldout_seeds(rollout_plan(cfg, stages), base=2**31 + 100_000 * int(cfg.seed))
    success = success_baselines(env_cfg, stages, seeds, cfg, out)
    probes = text_probes(cfg, stages, text, out)
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
        run = MethodRun(cfg, name, benchmark, stages, text, baselines, out / name, env_cfg, action_names,
                        memory_factory, writer, rollout_seeds=seeds, probes=probes)
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
        "baselines": {"stages": {b["stage"]: {k: v for k, v in b.items() if k != "stage"} for b in baselines},
                      "success": success, "rollout_seeds": {"first": seeds[0] if seeds else None, "count": len(seeds)}},
        "text": {"probes": probes.label if probes else "the text stage's column of R (template tasks)",
                 "test_seen_in_training": sum(bool(r.get("seen")) for r in text["test"]), "test_items": len(text["test"])},
        "methods": results,
    }
    if probes is not None:
        report["baselines"]["text_probes"] = {**probes.before.get("test", {}), "chance": probes.chance}
    if rank == 0:
        write_report_files(out, report)
    report["run_dir"] = str(out)
    return report


def write_report_files(out: Path, report: dict) -> None:
    from graft.curricula.report import write_report

    write_report(out, report)
