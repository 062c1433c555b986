"""Stages whose loss is the LLM's text loss: an input modality (`input`) and text-only skills (`text`).

    {name: grid, modality: grid}      input: graft a sensor's encoder + projector + LoRA; MM PT on its
                                      captions (projector only), then MM IT on its questions and
                                      demonstrations (projector + LoRA)
    {name: text, modality: null}      text: a LoRA adapter with no encoder, IT on text-only tasks

Both are scored by multiple-choice accuracy on their test records (curricula/evaluate.py); an input
stage also rolls the Agent out in the env reading its modality (success rate).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graft.curricula.stages.base import Stage, StageContext, StepLoss, fresh_agent, to_example
from graft.curricula.stages.data import spread


class TextLossStage(Stage):
    """Shared by the text-loss kinds: trainable parameters, loss and accuracy."""

    adapters: list[str] | None = None  # the grafted names whose parameters train (default: this stage)

    def parameter_groups(self, mm, phase: str, generators: Mapping[str, Any]) -> list[dict]:
        return [{"params": mm.set_trainable(self.adapters or self.name, phase), "lr": float(self.lr)}]

    def loss(self, run, phase: str, batch, step: int) -> StepLoss:
        examples = [to_example(r) for r in batch.rows]
        # padding-free rows and LM-head logits only at labelled positions (agent/packing.py): the same
        # loss, fewer FLOPs; a plugin that distils full-position logits (LwF) turns it off
        fast = run.fast_text_loss
        output = run.mm(examples, pack="auto" if fast else False, logits_at="labels" if fast else "all")
        return StepLoss({"total": output.loss}, examples, output)

    def score(self, mm, action_names: Sequence[str] | None) -> float:
        from graft.curricula.evaluate import accuracy

        return accuracy(mm, self.test, action_names)

    def evaluate(self, run, rollouts: bool = True) -> dict[str, Any]:
        success, why = self.rollout_success(run) if rollouts else (None, "not rolled out before training")
        return {"score": self.score(run.mm, run.action_names), "success": success, "metrics": {},
                "unscored": why if success is None else None}

    def rollout_success(self, run) -> tuple[float | None, str | None]:
        """(success rate, None) of the agent acting on this stage's input, or (None, why not)."""
        return None, "a text-only stage has no observation to act on"

    def baseline(self, cfg, stages: Sequence[Stage]) -> float:
        from graft.curricula.evaluate import accuracy

        mm = fresh_agent(cfg)
        self.graft_seeded(mm, cfg, None)
        return accuracy(mm, self.test)


class InputStage(TextLossStage):
    kind = "input"
    phases = ("pt", "it")

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
        self.test = spread(mine(data["test"], ("qa", "demo")), ctx.cap)
        if not self.it:
            have = sorted({m for r in data["train"] for m in r["modalities"]})
            raise ValueError(f"stage '{self.name}': the env data hold no samples for modality '{self.modality}' "
                             f"(have {have}); does the env emit it in its observation_space?")

    def graft(self, mm, cfg, adapter: str | None):
        from graft.agent.build import graft_modality
        from graft.curricula.config import modality_config

        modality_cfg = modality_config(cfg, self.modality)
        graft_modality(mm, self.modality, modality_cfg, modality_cfg.get("projector") or cfg.projector, adapter=adapter)

    def rollout_success(self, run) -> tuple[float | None, str | None]:
        eval_cfg = run.cfg.curriculum.eval
        if not eval_cfg.get("rollout_episodes"):
            return None, "curriculum.eval.rollout_episodes is 0"
        from graft.curricula.evaluate import success_rate

        rate = success_rate(run.mm, run.env_cfg, self.modality, int(eval_cfg.rollout_episodes),
                            int(eval_cfg.num_envs), seed=10_000 + run.seed)
        return rate, None if rate is not None else f"the env does not emit '{self.modality}'"


class TextStage(TextLossStage):
    kind = "text"
    mixes_text = False  # it is the text data

    def load(self, ctx: StageContext, earlier: Sequence[Stage]) -> None:
        self.it, self.test = ctx.text["train"], ctx.text["test"][: ctx.cap]

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
