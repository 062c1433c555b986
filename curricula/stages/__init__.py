"""Curriculum stages: one class per stage kind (base.py), built from `curriculum.stages`.

    {name: text, modality: null}                          text    (lm.py)
    {name: grid, modality: grid}                          input   (lm.py)
    {name: goal_image, output: goal_image, generator: image, inputs: [rgb]}   output (output.py)
    {name: mine, kind: my_pkg.stages:MyStage, ...}        a user's Stage subclass

Each stage names its budgets (`STAGE_KEYS`; missing ones come from `curriculum.stage_defaults`,
steps scaled by `steps_scale`). `stream(stages)` turns the stages' training sets into avalanche
experiences (`benchmark_from_datasets`); the strategy walks `train_stream` in order.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from graft.curricula.stages.base import (
    KINDS,
    STAGE_KEYS,
    Batch,
    Stage,
    StageContext,
    StepLoss,
    fresh_agent,
    to_example,
)
from graft.curricula.stages.data import load_env_data, load_text_data
from graft.curricula.stages.lm import InputStage, TextLossStage, TextStage, union_stage
from graft.curricula.stages.output import OutputStage
from omegaconf import OmegaConf

__all__ = ["KINDS", "STAGE_KEYS", "Batch", "InputStage", "OutputStage", "Stage", "StageContext", "StepLoss",
           "TextLossStage", "TextStage", "build_stages", "fresh_agent", "kind_class", "stream", "to_example", "union_stage"]


def kind_class(spec: Mapping[str, Any]) -> type[Stage]:
    """The Stage subclass for a stage spec: `kind:` (registered name or dotted path) or its keys."""
    kind = spec.get("kind") or ("output" if spec.get("output") is not None else
                                "input" if spec.get("modality") is not None else "text")
    if kind in KINDS:
        return KINDS[kind]
    if "." in kind or ":" in kind:
        module, _, attr = kind.replace(":", ".").rpartition(".")
        cls = getattr(importlib.import_module(module), attr, None)
        if isinstance(cls, type) and issubclass(cls, Stage):
            return cls
        raise ValueError(f"stage '{spec.get('name')}': kind {kind!r} is not a graft.curricula.stages.Stage subclass")
    raise ValueError(f"stage '{spec.get('name')}': unknown kind {kind!r}; known: {sorted(KINDS)} or a dotted path "
                     "to a Stage subclass")


def build_stages(cfg, env_cfg: dict, run_dir: Path, skip_text: bool = False,
                 action_names: Sequence[str] | None = None) -> tuple[list[Stage], dict]:
    """The curriculum's stages with their data, and the text-only pool {"train", "val", "test"}."""
    cur = cfg.curriculum
    defaults = OmegaConf.to_container(cur.stage_defaults, resolve=True)
    data_cfg = OmegaConf.to_container(cur.data, resolve=True)
    text = load_text_data(cur.text, int(cfg.seed))
    ctx = StageContext(cfg, env_cfg, lambda: load_env_data(env_cfg, data_cfg, run_dir / "data" / cur.name), text,
                       int(cur.eval.max_examples), list(action_names) if action_names else None)
    stages: list[Stage] = []
    for spec in cur.stages:
        spec = OmegaConf.to_container(spec, resolve=True)
        cls = kind_class(spec)
        if cls is TextStage and skip_text:
            continue
        settings = {k: spec.get(k, defaults[k]) for k in STAGE_KEYS}
        for k in ("pt_steps", "it_steps"):
            settings[k] = max(1, int(round(settings[k] * float(cfg.get("steps_scale", 1.0))))) if settings[k] else 0
        stage = cls(len(stages), spec, settings)
        stage.load(ctx, stages)
        stage.env_stats = ctx.env_stats
        stages.append(stage)
    return stages, text


class RecordDataset:
    """A torch-style map dataset over stage records (what avalanche's datasets wrap)."""

    def __init__(self, records: Sequence[dict]):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]


def stream(stages: Sequence[Stage]):
    """Stages as an avalanche benchmark: one experience per stage over its training records."""
    from graft.memory import import_avalanche

    import_avalanche()
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils import AvalancheDataset

    def wrap(records):
        return AvalancheDataset([RecordDataset(records)], collate_fn=list)

    return benchmark_from_datasets(train=[wrap(s.pt + s.it) for s in stages], test=[wrap(s.test) for s in stages])
