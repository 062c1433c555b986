"""Stages whose loss is the LLM's text loss: an input modality (`input`) and text-only skills (`text`).

    {name: grid, modality: grid}      input: graft a sensor's encoder + projector + LoRA; MM PT on its
                                      captions (projector only), then MM IT on its questions and
                                      demonstrations (projector + LoRA)
    {name: rgb, modality: rgb,        the same, with an `align` phase first that trains the projector
     anchor: {modality: grid},        to make the tokens the anchor makes from the same moment
     projector: {...}}                (curricula/stages/anchor.py); `projector` overrides the modality's
    {name: text, modality: null}      text: a LoRA adapter with no encoder, IT on text-only tasks

Both are scored by multiple-choice accuracy on their test questions (curricula/evaluate.py), beside
chance, the group-majority answer and, for an input stage, the same model with the observations
shuffled across test items; an input stage's next-action items are scored apart (imitation, beside
the majority action), and it rolls the Agent out in the env reading its modality (success cell).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from graft.curricula.stages.anchor import anchor_loss, anchor_settings, anchor_tokens, paired_observations
from graft.curricula.stages.base import PHASES, Batch, Stage, StageContext, StepLoss, fresh_agent, stacked, to_example
from graft.curricula.stages.data import spread


class TextLossStage(Stage):
    """Shared by the text-loss kinds: trainable parameters, loss and accuracy."""

    adapters: list[str] | None = None  # the grafted names whose parameters train (default: this stage)

    def parameter_groups(self, mm, phase: str, generators: Mapping[str, Any]) -> list[dict]:
        return [{"params": mm.set_trainable(self.adapters or self.name, phase), "lr": float(self.lr)}]

    def loss(self, run, phase: str, batch, step: int) -> StepLoss:
        examples = [to_example(r, self.modality) for r in batch.rows]
        # padding-free rows and LM-head logits only at labelled positions (agent/packing.py): the same
        # loss, fewer FLOPs; a plugin that distils full-position logits (LwF) turns it off
        fast = run.fast_text_loss
        output = run.mm(examples, pack="auto" if fast else False, logits_at="labels" if fast else "all", by_route=True)
        return StepLoss({"total": output.loss}, examples, output)

    demos: list[dict] = []  # next-action test items, scored apart from the questions (imitation)
    action_names: list[str] | None = None

    def score(self, mm, records: Sequence[dict], action_names: Sequence[str] | None = None,
              groups: dict | None = None) -> float | None:
        from graft.curricula.evaluate import accuracy

        return accuracy(mm, records, action_names, groups=groups) if records else None

    def evaluate(self, run, rollouts: bool = True) -> dict[str, Any]:
        from graft.curricula.evaluate import shuffled

        success, why = self.rollout_success(run) if rollouts else (None, "not rolled out before training")
        real, other = {}, {}
        control = self.score(run.mm, shuffled(self.test, run.seed * 1000 + self.index), groups=other) if self.modality else None
        score = self.score(run.mm, self.test, groups=real)
        groups = {key: {"items": n, "score": round(c / n, 4),
                        "shuffled": round(other[key][0] / n, 4) if key in other else None}
                  for key, (c, n) in sorted(real.items())}
        return {"score": score, "shuffled": control, "groups": groups,
                "imitation": self.score(run.mm, self.demos, run.action_names), "success": success, "metrics": {},
                "unscored": why if success is None else None, "hallucination": self.hallucination(run)}

    def hallucination(self, run) -> dict | None:
        """POPE and CHAIR of this stage's modality on its test scenes (curricula/hallucination.py), with
        `curriculum.eval.hallucination: {scenes, caption_tokens}`; None when off, for a text stage, or for
        records that hold no scene (`grid`: BabyAI)."""
        settings = run.cfg.curriculum.eval.get("hallucination")
        if not settings or not self.modality or not self.test or "grid" not in self.test[0]:
            return None
        from graft.curricula.hallucination import hallucination

        with run.timed("hallucination"):
            return hallucination(run.mm, self.modality, self.test + self.demos, self.it, run.seed * 1000 + self.index,
                                 max_scenes=int(settings.get("scenes", 32)),
                                 caption_tokens=int(settings.get("caption_tokens", 32)))

    def evaluate_blind(self, run) -> float | None:
        from graft.curricula.evaluate import blind

        return self.score(run.mm, blind(self.test))

    def evaluate_val(self, run) -> float | None:
        return self.score(run.mm, self.val)

    def rollout_success(self, run) -> tuple[dict | None, str | None]:
        """(success cell, None) of the agent acting on this stage's input, or (None, why not)."""
        return None, "a text-only stage has no observation to act on"

    def baselines(self, cfg, stages: Sequence[Stage]) -> dict[str, Any]:
        from graft.curricula.evaluate import blind, chance, majority

        train = [r for r in self.it if r.get("kind") != "demo"] or self.it  # demos only: their majority action
        out = {"blind": self.score(fresh_agent(cfg), blind(self.test)), "chance": chance(self.test),
               "majority": majority(train, self.test), "questions": len(self.test), "val_questions": len(self.val)}
        if self.demos:
            out.update(imitation_chance=chance(self.demos, self.action_names),
                       imitation_majority=majority([r for r in self.it if r.get("kind") == "demo"], self.demos),
                       imitation_items=len(self.demos))
        return out


class InputStage(TextLossStage):
    kind = "input"
    phases = ("align", "pt", "it")
    acts = True
    anchor: dict | None = None
    paired: dict | None = None  # anchor observations {modality: (N, *shape)}, made on first use

    def __init__(self, index: int, spec: Mapping[str, Any], settings: Mapping[str, Any]):
        super().__init__(index, spec, settings)
        self.modality = spec["modality"]
        if self.name != self.modality:
            raise ValueError(f"stage '{self.name}' grafts '{self.modality}': a modality stage is named after "
                             "what it grafts")

    def load(self, ctx: StageContext, earlier: Sequence[Stage]) -> None:
        data = ctx.env_data
        mine = lambda rows, kinds: [r for r in rows if r["modalities"] == [self.modality] and r["kind"] in kinds]
        self.pt = mine(data["train"], ("caption",))
        self.it = mine(data["train"], ("qa", "demo"))
        self.demos = spread(mine(data["test"], ("demo",)), ctx.cap)
        share = ctx.cfg.curriculum.get("negative_probes")
        if share and "grid" in (self.it[0] if self.it else {}):  # the mitigation (curricula/hallucination.py)
            from graft.curricula.hallucination import negative_probe_records

            self.it = self.it + negative_probe_records(self.it, self.modality, float(share),
                                                       int(ctx.cfg.seed) * 1000 + self.index)
        # demonstrations only (a LeRobotDataset has no questions): scored on the held-out next actions
        scored = ("qa",) if mine(data["test"], ("qa",)) or not self.demos else ("demo",)
        self.test = spread(mine(data["test"], scored), ctx.cap)
        self.val = spread(mine(data.get("val", []), scored), ctx.cap)
        self.action_names = ctx.action_names
        self.anchor = anchor_settings(self.spec.get("anchor"), self.modality, float(ctx.cfg.get("steps_scale", 1.0)))
        if self.anchor:
            if not any(s.modality == self.anchor["modality"] for s in earlier):
                raise ValueError(f"stage '{self.name}': anchor '{self.anchor['modality']}' is not grafted by an "
                                 f"earlier stage (earlier: {[s.name for s in earlier]})")
            self.env_cfg, self.seed = ctx.env_cfg, int(ctx.cfg.seed)
        if not self.test:
            raise ValueError(f"stage '{self.name}': no test questions about '{self.modality}' survived answer "
                             "balancing; generate more episodes (curriculum.data.episodes)")
        if not self.it:
            have = sorted({m for r in data["train"] for m in r["modalities"]})
            raise ValueError(f"stage '{self.name}': the env data hold no samples for modality '{self.modality}' "
                             f"(have {have}); does the env emit it in its observation_space?")

    def graft(self, mm, cfg, adapter: str | None):
        from graft.agent.build import graft_modality
        from graft.curricula.config import modality_config
        from omegaconf import OmegaConf

        modality_cfg = modality_config(cfg, self.modality)
        projector = self.spec.get("projector") or modality_cfg.get("projector") or cfg.projector
        if self.anchor and "tokens" not in modality_cfg:  # as many tokens as the anchor makes
            modality_cfg = {**OmegaConf.to_container(modality_cfg, resolve=True),
                            "tokens": anchor_tokens(mm, self.anchor["modality"])}
        graft_modality(mm, self.modality, modality_cfg, projector, adapter=adapter)
        if self.anchor and self.anchor["adapter"] == "copy":
            mine, theirs = mm.adapter_of[self.modality], mm.adapter_of[self.anchor["modality"]]
            if mine != theirs:  # one shared adapter (naive): nothing to copy
                mm.bank.copy_weights(theirs, mine)

    def trained_on(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        demos = [r for r in self.it if r.get("kind") == "demo" and len(r.get("action") or ())]
        return ({self.modality: stacked(self.pt + self.it, self.modality)},
                stacked(demos, "action") if demos else None)

    # ---- the align phase (anchor) -----------------------------------------------------------------
    def steps(self, phase: str) -> int:
        if phase == "align":
            return int(self.anchor["steps"]) if self.anchor else 0
        return super().steps(phase)

    def draw(self, seed: int, phase: str, step: int):
        if phase != "align":
            return super().draw(seed, phase, step)
        a = self.anchor
        if self.paired is None:  # never more observations than the phase draws
            count = min(int(a["observations"]), int(a["steps"]) * int(a["batch_size"]))
            self.paired = paired_observations(self.env_cfg, [self.modality, a["modality"]], count, self.seed,
                                              int(a["episode_steps"]))
        rng = np.random.default_rng([seed, self.index, PHASES.index(phase), step])
        picked = rng.integers(0, len(self.paired[self.modality]), int(a["batch_size"]))
        rows = [{m: v[i] for m, v in self.paired.items()} for i in picked]
        return Batch(rows, replace=True), rng

    def parameter_groups(self, mm, phase: str, generators: Mapping[str, Any]) -> list[dict]:
        if phase == "align":  # the projector only, as in MM PT
            return [{"params": mm.set_trainable(self.name, "pt"), "lr": float(self.anchor["lr"])}]
        return super().parameter_groups(mm, phase, generators)

    def loss(self, run, phase: str, batch, step: int) -> StepLoss:
        if phase != "align":
            return super().loss(run, phase, batch, step)
        stacked = {m: np.stack([r[m] for r in batch.rows]) for m in (self.modality, self.anchor["modality"])}
        return StepLoss(anchor_loss(run.mm, self.modality, self.anchor["modality"], stacked))

    def rollout_success(self, run) -> tuple[dict | None, str | None]:
        episodes = self.rollout_episodes(run.cfg)
        if not episodes:
            return None, "no rollout episodes configured (curriculum.eval.rollout_episodes)"
        from graft.curricula.evaluate import success_rate

        with run.timed("rollouts"):
            cell = success_rate(run.mm, run.env_cfg, self.modality, run.rollout_seeds[:episodes],
                                int(run.cfg.curriculum.eval.num_envs), str(run.cfg.curriculum.eval.get("revisits", "repeat")))
        return cell, None if cell is not None else f"the env does not emit '{self.modality}'"


class TextStage(TextLossStage):
    kind = "text"
    mixes_text = False  # it is the text data

    def load(self, ctx: StageContext, earlier: Sequence[Stage]) -> None:
        self.it, self.test, self.val = ctx.text["train"], ctx.text["test"][: ctx.cap], ctx.text["val"][: ctx.cap]

    def graft(self, mm, cfg, adapter: str | None):
        from graft.agent.build import graft_task

        graft_task(mm, self.name, adapter=adapter)


def union_stage(stages: Sequence[Stage]) -> TextLossStage:
    """All text-loss stages' instructions as one stage training all their adapters (the `joint` bound)."""
    lm = [s for s in stages if isinstance(s, TextLossStage)]
    settings = {**lm[-1].settings, "it_steps": sum(int(s.it_steps) for s in lm), "text_mix": 0.0}
    union = TextStage(0, {"name": "joint"}, settings)
    union.it = [r for s in lm for r in s.it]
    union.adapters = [s.name for s in lm]
    return union
