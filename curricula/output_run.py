"""Output modalities as curriculum stages: data, graft, training, scores and report entries.

A curriculum stage `{name: goal_image, output: goal_image, generator: image, inputs: [rgb]}` grafts
an output modality the way an input stage grafts a sensor: its own LoRA adapter (or the method's
shared one) plus an output head (K signal tokens + output projector), and a fresh diffusers
generator from `cfg.generators[<generator>]` (configs/generator/<name>.yaml). Keys of the stage:

    output            the output modality's name (= the stage name, the adapter, the report column)
    generator         a name in `cfg.generators`: image → goal views, action → expert action chunks
    inputs            input modalities the prompt shows; each must be grafted by an earlier stage
    observe           inputs whose encoder features the output head also reads directly (needs the
                      `prefix_attention` output projector; agent/outputs.py)
    output_projector  a name in configs/output_projector (default: the generator config's)
    horizon           action chunks: H (overrides the generator config's `horizon`)
    generator_overrides   any other generator config keys, e.g. {image_size: 16, sample_steps: 4}
    generator_lr, align_weight   as in `train_output_stage` (defaults: the stage lr, 1.0)
    rollout           action chunks: {episodes, num_envs, execute}; episodes default eval.rollout_episodes

Data are solved expert episodes of the curriculum's env (`curriculum.expert: {train, test, seed}`,
shared by all output stages; deterministic in the seed, so a resumed run reads the same records).
Training is `train_output_stage` for `it_steps` steps: head + LoRA + denoiser, with the method's
replay samples and text-only instructions mixed into every step's loss through the `mix`
callback (`replay_ratio` / `text_mix` of the batch size, as an IT batch would hold). EWC and LwF
regularise text-loss stages only: on an output stage they train like `naive` (no penalty) and
EWC takes no Fisher from it. Replay memory holds text-loss samples only, so an output stage is
not replayed in later stages. Under DDP every rank trains the output stage on the same full batch
(same seeds), so ranks stay identical without gradient averaging.

Scores: `evaluate_output(...)["score"]` in [0, 1] goes into R; action-chunk stages add the
receding-horizon rollout success to the success matrix. `results["outputs"][name]` keeps every
metric (MSE/PSNR, L2, success, seconds per generated sample) untrained (right after grafting,
before training, like FWT's pre-score) and after every later stage.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from graft.agent.build import graft_output
from graft.agent.generators import KINDS, build_generator
from graft.agent.mmllm import Example
from graft.agent.output_trainer import OutputTrainer
from graft.curricula.output_stage import (
    chunk_records,
    evaluate_output,
    goal_records,
    rollout_success,
    train_output_stage,
)
from omegaconf import OmegaConf

METRICS = ("score", "mse", "psnr", "l2", "success_rate", "seconds_per_sample", "seconds_per_chunk")


@lru_cache(maxsize=4)
def _expert(env_json: str, train: int, test: int, seed: int) -> dict:
    from graft.envs.trajectories import expert_splits

    return expert_splits(json.loads(env_json), {"train": train, "test": test}, seed=seed)


def expert_trajectories(env_cfg: Mapping, expert_cfg: Mapping) -> dict:
    """Solved expert episodes {"train", "test"} of the env, computed once per process."""
    return _expert(json.dumps(dict(env_cfg), sort_keys=True), int(expert_cfg["train"]), int(expert_cfg["test"]),
                   int(expert_cfg.get("seed", 0)))


def generator_kind(gen_cfg: Mapping) -> str:
    target = str(gen_cfg.get("_target_", ""))
    for kind, path in KINDS.items():
        if target.startswith(path):
            return kind
    raise ValueError(f"generator _target_ {target!r} is none of {sorted(KINDS.values())}")


def output_stage_data(stage, spec: Mapping, cfg, env_cfg: Mapping, earlier: Sequence, cap: int) -> None:
    """Fill `stage` (an output stage) with its generator config, training and test records."""
    from graft.curricula.stages import _spread

    name = spec["output"]
    if spec.get("modality") is not None:
        raise ValueError(f"stage '{name}' sets both `modality` and `output`: a stage grafts one or the other")
    if spec.get("generator") not in (cfg.get("generators") or {}):
        raise ValueError(f"output stage '{name}': generator {spec.get('generator')!r} is not in `generators` "
                         f"(have {list(cfg.get('generators') or {})})")
    inputs = list(spec.get("inputs") or [])
    grafted = [s.modality for s in earlier if s.kind == "input"]
    if not inputs or any(m not in grafted for m in inputs):
        raise ValueError(f"output stage '{name}' reads inputs {inputs}; each must be grafted by an earlier stage "
                         f"(earlier input stages: {grafted})")
    gen_cfg = OmegaConf.to_container(cfg.generators[spec["generator"]], resolve=True)
    gen_cfg.update(OmegaConf.to_container(OmegaConf.create(dict(spec.get("generator_overrides") or {})), resolve=True))
    observe = list(spec.get("observe") or [])
    if any(m not in inputs for m in observe):
        raise ValueError(f"output stage '{name}' observes {observe}; each must be one of its inputs {inputs}")
    if spec.get("output_projector"):
        from graft.curricula.config import config_dir

        path = config_dir() / "output_projector" / f"{spec['output_projector']}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise ValueError(f"output stage '{name}': no output projector {spec['output_projector']!r} (known: {known})")
        gen_cfg["output"] = {**gen_cfg["output"], "projector": OmegaConf.to_container(OmegaConf.load(path))}
    if observe:
        gen_cfg["output"] = {**gen_cfg["output"], "observe": observe}
    if spec.get("horizon") is not None:
        gen_cfg["horizon"] = int(spec["horizon"])
    kind = generator_kind(gen_cfg)
    if cfg.curriculum.get("expert") is None:
        raise ValueError(f"output stage '{name}' needs `curriculum.expert: {{train, test, seed}}` (expert episodes)")
    data = expert_trajectories(env_cfg, cfg.curriculum.expert)
    if kind == "image":
        stage.it, stage.test = goal_records(data["train"], inputs), _spread(goal_records(data["test"], inputs), cap)
    else:
        h = int(gen_cfg["horizon"])
        stage.it = chunk_records(data["train"], inputs, h, every=int(spec.get("every", 1)))
        stage.test = _spread(chunk_records(data["test"], inputs, h), cap)
    stage.output = {"name": name, "kind": kind, "generator": gen_cfg, "inputs": inputs,
                    "generator_lr": spec.get("generator_lr"), "align_weight": float(spec.get("align_weight", 1.0)),
                    "rollout": dict(spec.get("rollout") or {}),
                    "fit_actions": np.concatenate([t.actions for t in data["train"]]) if kind == "action" else None}


def graft_output_stage(mm, stage, adapter: str | None):
    """Build the stage's generator and graft its output head + LoRA adapter; returns the generator
    (denoiser frozen until the stage trains). The caller seeds torch first."""
    spec = stage.output
    generator = build_generator(spec["generator"])
    if generator.kind == "action":
        generator.fit(spec["fit_actions"])
    graft_output(mm, spec["name"], spec["generator"]["output"], generator.cond_tokens, generator.cond_dim,
                 adapter=adapter)
    generator.denoiser.requires_grad_(False)
    return generator


def stage_seed(seed: int, stage) -> int:
    return int(seed) * 1000 + int(stage.index)


def mix_callback(plugins: Sequence, stage) -> Callable[[np.random.Generator], list[Example]] | None:
    """Replay samples and text-only instructions for every output-training step, as the method's
    plugins would put into an IT batch of `stage.batch_size` (None when the method mixes nothing)."""
    from graft.curricula.plugins import ReplayPlugin, TextMixPlugin
    from graft.curricula.stages import to_example

    replay = next((p for p in plugins if isinstance(p, ReplayPlugin)), None)
    text = next((p for p in plugins if isinstance(p, TextMixPlugin)), None)
    n_replay = round(stage.replay_ratio * stage.batch_size) if replay is not None else 0
    n_text = round(stage.text_mix * stage.batch_size) if text is not None else 0
    if not n_replay and not n_text:
        return None

    def mix(rng: np.random.Generator) -> list[Example]:
        rows: list[dict] = []
        if n_replay and len(replay.memory):
            rows += [dict(s) for s in replay.memory.sample(n_replay, rng, replace=n_replay > len(replay.memory))]
        if n_text:
            rows += [text.pool[i] for i in rng.choice(len(text.pool), n_text)]
        return [to_example(r) for r in rows]

    return mix


def train_stage(run, stage, generator, first_step: int = 0) -> None:
    """Train output stage `stage` inside MethodRun `run`: curve, TensorBoard, in-stage checkpoints."""
    from graft.curricula import checkpoint as ckpt

    spec, seed = stage.output, stage_seed(run.seed, stage)
    trainer = OutputTrainer(run.mm, stage.name, generator, stage="it", lr=float(stage.lr),
                            generator_lr=spec["generator_lr"], align_weight=spec["align_weight"], seed=seed)
    if first_step and getattr(run, "_resume_optimizer", None):
        ckpt.load_optimizer(run.mm, trainer.optimizer, run._resume_optimizer, run.generators)
    run._resume_optimizer = None
    run.optimizer = trainer.optimizer
    curve = run.results["loss_curves"].setdefault(stage.name, {}).setdefault("it", [])
    del curve[first_step:]
    steps, every = int(stage.it_steps), int(run.cfg.checkpoint_every)

    def after_step(step: int, losses: dict) -> None:
        curve.append(round(losses["total"], 5))
        if run.writer is not None:
            for key, value in losses.items():
                run.writer.add_scalar(f"{run.name}/loss/{stage.name}/{key}", value, step)
        if every and (step + 1) % every == 0 and step + 1 < steps:
            run.save(stage.index, "it", step + 1, run._start)

    train_output_stage(run.mm, stage.name, generator, stage.it, steps, batch_size=int(stage.batch_size),
                       seed=seed, progress=bool(run.cfg.progress) and run.rank == 0,
                       mix=mix_callback(run.plugins, stage), trainer=trainer, first_step=first_step,
                       after_step=after_step)


def evaluate_stage(mm, stage, generator, eval_cfg: Mapping, env_cfg: Mapping, seed: int) -> dict[str, Any]:
    """The stage's metrics now: evaluate_output on its test records, plus rollouts for action chunks."""
    spec = stage.output
    result = evaluate_output(mm, stage.name, generator, stage.test, seed=seed)
    result.pop("generated")
    episodes = int(spec["rollout"].get("episodes", eval_cfg.get("rollout_episodes") or 0))
    if generator.kind == "action" and episodes:
        ro = rollout_success(mm, stage.name, generator, env_cfg, spec["inputs"], episodes,
                             int(spec["rollout"].get("num_envs", eval_cfg.get("num_envs", 4))), seed=10_000 + seed,
                             execute=int(spec["rollout"].get("execute", 8)))
        result.update(success_rate=ro["success_rate"], seconds_per_chunk=ro["seconds_per_chunk"],
                      mean_length=ro["mean_length"])
    return {k: v for k, v in result.items() if v is not None}


def baseline_score(cfg, stages: Sequence, stage, graft_stage) -> float:
    """FWT's reference for an output stage: a fresh agent with only the inputs it reads and the
    output grafted, untrained."""
    from graft.curricula.strategy import build_agent

    mm = build_agent(cfg)
    for earlier in stages[: stage.index]:
        if earlier.kind == "input" and earlier.modality in stage.output["inputs"]:
            graft_stage(mm, cfg, earlier, None)
    generator = graft_stage(mm, cfg, stage, None)
    return float(evaluate_output(mm, stage.name, generator, stage.test, seed=int(cfg.seed))["score"])


def summarize(outputs: Mapping[str, dict], stages: Sequence[str]) -> dict[str, dict]:
    """Per output stage: untrained, trained (right after its stage) and final metrics."""
    out = {}
    for name, entry in outputs.items():
        after = entry.get("after") or {}
        own = after.get(name)
        final = after.get(stages[-1]) if stages else None
        out[name] = {**entry, "trained": own, "final": final}
    return out
