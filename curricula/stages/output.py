"""An output modality as a stage: goal images or action chunks, grafted, trained and scored in [0, 1].

    {name: goal_image, output: goal_image, generator: image, inputs: [rgb]}

grafts its own LoRA adapter (or the method's shared one), an output head (K signal tokens + output
projector) and a fresh diffusers generator `cfg.generators[<generator>]`. Other keys: `observe`
(inputs the head also reads directly; prefix_attention), `output_projector` (a config group option),
`horizon` and `every` (action chunks), `generator_overrides`, `generator_lr`, `align_weight`, and
`rollout: {episodes, num_envs, execute}` (action chunks).

Data are solved expert episodes (`curriculum.expert: {train, test, seed}`): the final rgb view for
goal images, the expert's next H actions from each state for chunks. A step's loss (NExT-GPT) is the
conditional diffusion loss + `align_weight` x (MSE to the generator's text encoder on the goal
caption | MSE of a chunk regressed from the conditioning) + the text loss of rows mixed in by replay
and text mix, over the head, the output's LoRA adapter and the denoiser. The score is
`1 / (1 + error / error of the test mean)` (0.5: as good as the mean); chunks also add the
receding-horizon rollout success. Output records hold targets, not answers: replay keeps none.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from graft.agent.mmllm import Example
from graft.curricula.stages.base import Batch, Stage, StageContext, StepLoss, fresh_agent, stacked, to_example
from graft.curricula.stages.data import spread
from graft.envs.prompts import GOAL_PROMPT, fill
from omegaconf import OmegaConf

DEFAULT_EXECUTE = 8


@lru_cache(maxsize=4)
def _expert(env_json: str, train: int, test: int, seed: int) -> dict:
    from graft.envs.trajectories import expert_splits

    return expert_splits(json.loads(env_json), {"train": train, "test": test}, seed=seed)


def expert_trajectories(env_cfg: Mapping, expert_cfg: Mapping) -> dict:
    """Solved expert episodes {"train", "test"} of the env, computed once per process."""
    return _expert(json.dumps(dict(env_cfg), sort_keys=True), int(expert_cfg["train"]), int(expert_cfg["test"]),
                   int(expert_cfg.get("seed", 0)))


def goal_records(trajectories, inputs: Sequence[str]) -> list[dict]:
    """One record per episode: first observation + mission → final rgb view (and its caption)."""
    return [{"prompt": fill(GOAL_PROMPT, inputs, t.mission), "obs": {m: t.first[m] for m in inputs},
             "target": t.goal, "caption": t.goal_caption, "first_rgb": t.first.get("rgb"), "seed": t.seed}
            for t in trajectories]


def chunk_records(trajectories, inputs: Sequence[str], horizon: int, every: int = 1) -> list[dict]:
    """One record per `every`-th state: observation + mission → the expert's next `horizon` actions."""
    from graft.agent.chunk_policy import chunk_prompt
    from graft.envs.trajectories import action_chunks

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


def generator_kind(gen_cfg: Mapping) -> str:
    from graft.agent.generators import KINDS

    target = str(gen_cfg.get("_target_", ""))
    for kind, path in KINDS.items():
        if target.startswith(path):
            return kind
    raise ValueError(f"generator _target_ {target!r} is none of {sorted(KINDS.values())}")


class OutputStage(Stage):
    kind = "output"
    mixed_as_extra_loss = True
    evaluates_untrained = True

    def __init__(self, index: int, spec: Mapping[str, Any], settings: Mapping[str, Any]):
        super().__init__(index, spec, {**settings, "pt_steps": 0})  # one phase: head + LoRA + denoiser
        if spec.get("modality") is not None:
            raise ValueError(f"stage '{self.name}' sets both `modality` and `output`: a stage grafts one or the other")
        if spec.get("output") not in (None, self.name):
            raise ValueError(f"stage '{self.name}' grafts '{spec['output']}': an output stage is named after what it grafts")
        self.inputs = list(spec.get("inputs") or [])
        self.rollout_cfg = dict(spec.get("rollout") or {})
        self.align_weight = float(spec.get("align_weight", 1.0))

    @property
    def acts(self) -> bool:
        return self.target_kind == "action"

    # ---- data -----------------------------------------------------------------------------------
    def load(self, ctx: StageContext, earlier: Sequence[Stage]) -> None:
        cfg, spec, name = ctx.cfg, self.spec, self.name
        if spec.get("generator") not in (cfg.get("generators") or {}):
            raise ValueError(f"output stage '{name}': generator {spec.get('generator')!r} is not in `generators` "
                             f"(have {list(cfg.get('generators') or {})})")
        grafted = [s.modality for s in earlier if s.modality is not None]
        if not self.inputs or any(m not in grafted for m in self.inputs):
            raise ValueError(f"output stage '{name}' reads inputs {self.inputs}; each must be grafted by an earlier "
                             f"stage (earlier input stages: {grafted})")
        gen_cfg = OmegaConf.to_container(cfg.generators[spec["generator"]], resolve=True)
        gen_cfg.update(OmegaConf.to_container(OmegaConf.create(dict(spec.get("generator_overrides") or {})), resolve=True))
        observe = list(spec.get("observe") or [])
        if any(m not in self.inputs for m in observe):
            raise ValueError(f"output stage '{name}' observes {observe}; each must be one of its inputs {self.inputs}")
        if spec.get("output_projector"):
            from graft.curricula.config import group_config

            projector = group_config(cfg, "output_projector", spec["output_projector"], f"output stage '{name}'")
            gen_cfg["output"] = {**gen_cfg["output"], "projector": projector}
        if observe:
            gen_cfg["output"] = {**gen_cfg["output"], "observe": observe}
        if spec.get("horizon") is not None:
            gen_cfg["horizon"] = int(spec["horizon"])
        self.generator_cfg, self.target_kind = gen_cfg, generator_kind(gen_cfg)
        if cfg.curriculum.get("expert") is None:
            raise ValueError(f"output stage '{name}' needs `curriculum.expert: {{train, test, seed}}` (expert episodes)")
        data = expert_trajectories(ctx.env_cfg, cfg.curriculum.expert)
        if self.target_kind == "image":
            self.it, self.test = goal_records(data["train"], self.inputs), spread(goal_records(data["test"], self.inputs), ctx.cap)
        else:
            h = int(gen_cfg["horizon"])
            self.it = chunk_records(data["train"], self.inputs, h, every=int(spec.get("every", 1)))
            self.test = spread(chunk_records(data["test"], self.inputs, h), ctx.cap)
        self.fit_actions = np.concatenate([t.actions for t in data["train"]]) if self.target_kind == "action" else None

    def replayable(self) -> list[dict]:
        return []

    def trained_on(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        obs = [r["obs"] for r in self.it]
        return {m: stacked(obs, m) for m in self.inputs}, self.fit_actions

    # ---- graft and train ------------------------------------------------------------------------
    @property
    def execute(self) -> int | None:
        if self.target_kind != "action":
            return None
        return int(self.rollout_cfg.get("execute", min(DEFAULT_EXECUTE, int(self.generator_cfg["horizon"]))))

    def graft(self, mm, cfg, adapter: str | None):
        """Build the stage's generator (denoiser frozen until the stage trains) and graft the output
        head + LoRA adapter; the caller seeds torch first."""
        from graft.agent.build import graft_output
        from graft.agent.generators import build_generator

        generator = build_generator(self.generator_cfg)
        if generator.kind == "action":
            generator.fit(self.fit_actions)
        graft_output(mm, self.name, self.generator_cfg["output"], generator.cond_tokens, generator.cond_dim,
                     adapter=adapter, inputs=self.inputs, execute=self.execute)
        generator.denoiser.requires_grad_(False)
        return generator

    def parameter_groups(self, mm, phase: str, generators: Mapping[str, Any]) -> list[dict]:
        generator = generators[self.name]
        head = mm.outputs[self.name]
        if (head.cond_tokens, head.cond_dim) != (generator.cond_tokens, generator.cond_dim):
            raise ValueError(f"output '{self.name}' projects to ({head.cond_tokens}, {head.cond_dim}) but the "
                             f"{generator.kind} generator reads ({generator.cond_tokens}, {generator.cond_dim})")
        lr = float(self.lr)
        groups = [{"params": mm.set_trainable(self.name, phase), "lr": lr, "weight_decay": 0.0}]
        generator.denoiser.requires_grad_(True)
        if generator.trainable_parameters():
            groups.append({"params": generator.trainable_parameters(), "lr": float(self.spec.get("generator_lr") or lr),
                           "weight_decay": 0.0})
        return groups

    def end_phase(self, mm, generators: Mapping[str, Any]) -> None:
        mm.set_trainable(None)
        generators[self.name].denoiser.requires_grad_(False)

    def draw(self, seed: int, phase: str, step: int) -> tuple[Batch, np.random.Generator]:
        rng = np.random.default_rng([seed * 1000 + self.index, step])
        return self.sample(self.it, rng), rng

    def loss(self, run, phase: str, batch: Batch, step: int) -> StepLoss:
        generator = run.generators[self.name]
        generator.train()
        noise = torch.Generator().manual_seed(int(np.random.SeedSequence([run.seed * 1000 + self.index, step, 1])
                                                  .generate_state(1)[0]))
        parts = self.output_losses(run.mm, generator, batch.rows, noise)
        if batch.mixed:
            examples = [to_example(r) for r in batch.mixed]
            output = run.mm(examples)
            parts["text"] = output.loss
            parts["total"] = parts["total"] + output.loss
            return StepLoss(parts, examples, output)
        return StepLoss(parts)

    def output_losses(self, mm, generator, rows: Sequence[Mapping], noise: torch.Generator | None = None) -> dict:
        cond = mm.output_features(to_examples(rows), self.name)  # (B, N, C)
        targets = np.stack([r["target"] for r in rows])
        parts = {"diffusion": generator.loss(targets, cond, generator=noise)}
        total = parts["diffusion"]
        captions = [r["caption"] for r in rows] if all(r.get("caption") for r in rows) else None
        if captions is not None and self.align_weight:
            reference = generator.encode_condition(captions)
            if reference is not None:
                parts["align"] = F.mse_loss(cond, reference)
                total = total + self.align_weight * parts["align"]
        if self.align_weight:
            readout = generator.readout_loss(targets, cond)
            if readout is not None:
                parts["readout"] = readout
                total = total + self.align_weight * readout
        parts["total"] = total
        return parts

    def fisher_loss(self, run, rows: list[dict]) -> torch.Tensor:
        return self.output_losses(run.mm, run.generators[self.name], rows)["total"]

    # ---- scores ---------------------------------------------------------------------------------
    def evaluate(self, run, rollouts: bool = True) -> dict[str, Any]:
        generator = run.generators[self.name]
        metrics = evaluate_output(run.mm, self.name, generator, self.test, seed=run.seed)
        samples = metrics.pop("generated")
        control = evaluate_output(run.mm, self.name, generator, shuffled_obs(self.test, run.seed * 1000 + self.index),
                                  seed=run.seed)["score"]
        episodes = self.rollout_episodes(run.cfg)
        cell = None
        if generator.kind == "action" and episodes and rollouts:
            num_envs = int(self.rollout_cfg.get("num_envs", run.cfg.curriculum.eval.get("num_envs", 4)))
            rolled = rollout_success(run.mm, self.name, generator, run.env_cfg, run.rollout_seeds[:episodes], num_envs)
            cell = rolled.pop("success")
            metrics.update(rolled, success_rate=cell["rate"])
        metrics = {k: v for k, v in metrics.items() if v is not None}
        why = (None if cell else "a goal-image output does not act" if generator.kind != "action"
               else "not rolled out before training" if not rollouts else "no rollout episodes configured")
        return {"score": metrics["score"], "shuffled": control, "success": cell, "metrics": metrics,
                "samples": samples, "unscored": why, "kind": self.target_kind}

    def plot(self, run, untrained: dict, trained: dict) -> None:
        """Goal images: first view, real goal, untrained and trained generations of the test episodes."""
        if self.target_kind != "image":
            return
        from graft.curricula.plots import write_png

        images = {"first": np.stack([r["first_rgb"] for r in self.test]), "real": np.stack([r["target"] for r in self.test]),
                  "untrained": untrained["samples"], "trained": trained["samples"]}
        write_png(run.out / f"{self.name}.png", goal_grid(images, columns=min(8, len(self.test))))

    def baselines(self, cfg, stages: Sequence[Stage]) -> dict[str, Any]:
        """No blind score or chance (an output cannot be generated before its head exists); the best
        guess without looking is the mean training target, scored like a generation; `untrained` is a
        fresh agent with only this output's inputs and the output grafted."""
        mm = fresh_agent(cfg)
        for earlier in stages[: self.index]:
            if earlier.modality in self.inputs:
                earlier.graft_seeded(mm, cfg, None)
        generator = self.graft_seeded(mm, cfg, None)
        mean = np.mean(np.stack([r["target"] for r in self.it]).astype(np.float64), axis=0)
        constant = np.broadcast_to(mean, (len(self.test), *mean.shape))
        if self.target_kind == "image":
            constant = np.clip(constant.round(), 0, 255).astype(np.uint8)
        return {"blind": None, "chance": None, "majority": output_score(generator, constant, self.test)["score"],
                "untrained": float(evaluate_output(mm, self.name, generator, self.test, seed=int(cfg.seed))["score"]),
                "questions": len(self.test)}


def shuffled_obs(records: Sequence[Mapping[str, Any]], seed: int) -> list[dict]:
    """Output records with their observations permuted across records (the shuffled control)."""
    order = np.random.default_rng(seed).permutation(len(records))
    return [{**r, "obs": records[j]["obs"]} for r, j in zip(records, order)]


def goal_grid(images: Mapping[str, np.ndarray], columns: int, size: int = 64, gap: int = 2) -> np.ndarray:
    """One row per kind (first view, real goal, untrained, trained), `columns` test episodes across,
    each tile scaled to `size` by nearest-neighbour sampling."""
    rows = []
    for kind in ("first", "real", "untrained", "trained"):
        tiles = np.asarray(images[kind][:columns], dtype=np.uint8)
        h, w = tiles.shape[1:3]
        tiles = tiles[:, (np.arange(size) * h // size)[:, None], (np.arange(size) * w // size)[None, :]]
        pad = np.full((len(tiles), size, gap, 3), 255, np.uint8)
        rows.append(np.concatenate([x for t, p in zip(tiles, pad) for x in (t, p)], axis=1)[:, :-gap])
        rows.append(np.full((gap, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def image_errors(generated: np.ndarray, targets: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image MSE (pixels in [0, 1]) of uint8 images against uint8 targets resized to `size`."""
    def resize(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x.permute(0, 2, 3, 1).numpy()  # (B, size, size, 3) in [0, 1]

    truth, gen = resize(targets), resize(generated)
    return ((gen - truth) ** 2).mean(axis=(1, 2, 3)), truth


def chunk_l2(generated: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-sample mean over steps of the Euclidean distance between actions `(B, H, A)` → `(B,)`."""
    return np.linalg.norm(np.asarray(generated) - np.asarray(targets), axis=-1).mean(axis=-1)


def evaluate_output(mm, name: str, generator, records: Sequence[Mapping[str, Any]], sample_steps: int | None = None,
                    seed: int = 0, batch_size: int = 32) -> dict:
    """Generate every record's target through the agent path and score it: images by MSE / PSNR,
    action chunks by L2 to the expert (env units); `score` = 1 / (1 + error / error of the mean)."""
    from graft.agent.outputs import generate_output

    if not records:
        raise ValueError(f"cannot evaluate output '{name}' on an empty test set")
    generated, started = [], time.perf_counter()
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        generated.append(generate_output(mm, name, generator, to_examples(chunk), sample_steps, seed + start))
    seconds = time.perf_counter() - started
    out = output_score(generator, np.concatenate(generated), records)
    out.update(samples=len(records), sample_steps=int(sample_steps or generator.sample_steps),
               seconds_per_sample=round(seconds / len(records), 4), batch_size=batch_size)
    return out


def output_score(generator, generated: np.ndarray, records: Sequence[Mapping[str, Any]]) -> dict:
    """Images by MSE / PSNR, action chunks by L2 to the expert (env units), against the records'
    targets; `score` = 1 / (1 + error / error of the test mean)."""
    targets = np.stack([r["target"] for r in records])
    out = {}
    if generator.kind == "image":
        mse, truth = image_errors(generated, targets, generator.image_size)
        reference, error = float(((truth - truth.mean(0)) ** 2).mean()), float(mse.mean())
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


def rollout_success(mm, name: str, generator, env_cfg: Mapping, seeds: Sequence[int], num_envs: int = 4) -> dict:
    """Receding-horizon action chunks executed in the env, one episode per seed (the inputs and
    execute count the output recorded when it was grafted): the success cell and time per chunk."""
    from graft.agent.loader import load_policy
    from graft.curricula.evaluate import summary_cell
    from graft.envs.rollout import make_env_factory, rollout

    env = make_env_factory(dict(env_cfg))()
    try:
        policy = load_policy(mm, env, generators={name: generator}, output=name, seed=int(seeds[0]))
    finally:
        env.close()
    summary = rollout(dict(env_cfg), policy, seeds=list(seeds), num_envs=num_envs, progress=False, frames=0)
    return {"success": summary_cell(summary), "episodes": int(summary["episodes"]),
            "mean_length": float(summary["mean_length"]), "seconds_per_chunk": policy.seconds_per_chunk,
            "execute": policy.execute}
