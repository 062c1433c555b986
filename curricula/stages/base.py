"""The stage-kind contract: one class per kind owns its data, graft, loss, evaluation and baseline.

A curriculum stage (one entry of `curriculum.stages`) names its kind with `kind:` — a registered
name (`input`, `text`, `output`, ...) or the dotted path of a user's class (`my_pkg.stages:MyStage`)
— or leaves it to the keys it has (`modality:` → input, `output:` → output, neither → text). A kind
is a `Stage` subclass with a class attribute `kind`; defining the class registers it, so a new kind
is one file and nothing else is edited.

The training engine (curricula/engine.py) drives every kind through the same calls:

    stage.graft(mm, cfg, adapter)                     -> the stage's generator or None
    stage.steps(phase)                                 steps of each phase in `stage.phases`
    stage.parameter_groups(mm, phase, generators)      what the optimiser trains (AdamW groups)
    stage.draw(seed, phase, step)                      -> (Batch, rng): the step's rows, seeded
    stage.loss(run, phase, batch, step)                -> StepLoss: {"total": tensor, ...parts}
    stage.end_phase(mm, generators)                    freeze what the phase trained
    stage.evaluate(run, rollouts)                      -> {"score", "shuffled", "success", "metrics", ...}
    stage.evaluate_blind(run)                          score before the stage is grafted (its input dropped)
    stage.evaluate_val(run)                            score on the validation split (what the gate reads)
    stage.plot(run, untrained, trained)                PNGs from the two evaluations around training
    stage.baselines(cfg, stages)                       {"blind", "chance", "majority", ...}: what to beat
    stage.replayable()                                 records the replay memory may keep

Plugins (curricula/plugins.py) put replay samples and text-only instructions into a `Batch`; the
stage decides how: text-loss stages replace rows of their own batch, other stages add the mixed
rows as an extra text loss.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from graft.agent.mmllm import Example

STAGE_KEYS = ("pt_steps", "it_steps", "batch_size", "lr", "replay_size", "replay_ratio", "text_mix")
PHASES = ("pt", "it", "align")  # index seeds a phase's batches; align (an anchored input stage) came later
KINDS: dict[str, type[Stage]] = {}
STATS_ROWS = 2000  # rows a graft's normalisation stats are computed on (evenly spread over its data)


def to_example(record: Mapping[str, Any], training: str | None = None) -> Example:
    """The record as an Example; a row a plugin `mixed` in is read with `training`'s adapter too."""
    obs = {m: record[m] for m in record.get("modalities") or []}
    routes = (training,) if training and record.get("mixed") else ()
    return Example(record["prompt"], obs, record.get("response"), routes=routes)


@dataclass
class Batch:
    """One step's records: the stage's own `rows` and the text rows `mixed` in by plugins.

    With `replace` (text-loss stages) a plugin's rows take the place of the stage's own, replay at
    the head and text mix at the tail, so with both on neither overwrites the other; otherwise they
    join `mixed`, whose text loss is added to the stage's loss."""

    rows: list[dict]
    replace: bool
    mixed: list[dict] = field(default_factory=list)

    def mix(self, extra: list[dict], at: str) -> None:
        if not extra:
            return
        extra = [dict(r, mixed=True) for r in extra]  # to_example reads these with the trained adapter on
        if not self.replace:
            self.mixed += extra
        elif at == "head":
            self.rows = extra + self.rows[len(extra):]
        else:
            self.rows = self.rows[: len(self.rows) - len(extra)] + extra

    def shard(self, rank: int, world: int) -> Batch:
        """This rank's slice of the batch (data parallelism: gradients are averaged over ranks)."""
        return Batch(self.rows[rank::world], self.replace, self.mixed[rank::world])


@dataclass
class StepLoss:
    """The loss terms of one step (`parts["total"]` is minimised) and, for a text loss, the
    examples and model output it came from (LwF distils from them)."""

    parts: dict[str, torch.Tensor]
    examples: list[Example] | None = None
    output: Any = None


class Stage:
    """Base class of every stage kind (see the module docstring)."""

    kind: ClassVar[str] = ""
    phases: ClassVar[tuple[str, ...]] = ("it",)
    mixes_text: ClassVar[bool] = True  # the text-mix plugin adds text-only instructions to this stage
    mixed_as_extra_loss: ClassVar[bool] = False  # plugins' rows join as a text loss, not in place of own rows
    evaluates_untrained: ClassVar[bool] = False  # evaluated (and rolled out) right after grafting, too
    acts: ClassVar[bool] = False  # rolled out in the env (success cells beside a random policy and the expert)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            KINDS[cls.kind] = cls

    def __init__(self, index: int, spec: Mapping[str, Any], settings: Mapping[str, Any]):
        self.index, self.spec, self.settings = index, dict(spec), dict(settings)
        self.name: str = spec["name"]
        self.pt: list[dict] = []
        self.it: list[dict] = []
        self.test: list[dict] = []
        self.val: list[dict] = []  # the validation split: selection (the gate) reads it, never `test`

    def __getattr__(self, key: str) -> Any:
        if key in STAGE_KEYS:
            return self.__dict__["settings"][key]
        raise AttributeError(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.index}, {self.name!r})"

    # ---- what every kind provides -------------------------------------------------------------
    modality: str | None = None  # the input modality this stage grafts, if any

    def load(self, ctx: StageContext, earlier: Sequence[Stage]) -> None:
        """Fill `pt`, `it` and `test` from the curriculum's data."""
        raise NotImplementedError

    def graft(self, mm, cfg, adapter: str | None):
        raise NotImplementedError

    def parameter_groups(self, mm, phase: str, generators: Mapping[str, Any]) -> list[dict]:
        raise NotImplementedError

    def loss(self, run, phase: str, batch: Batch, step: int) -> StepLoss:
        raise NotImplementedError

    def evaluate(self, run, rollouts: bool = True) -> dict[str, Any]:
        """{"score", "shuffled" (observations permuted across test items, or None), "success" (a
        success cell or None), "metrics", "unscored" (why success is None)}."""
        raise NotImplementedError

    def baselines(self, cfg, stages: Sequence[Stage]) -> dict[str, Any]:
        """What the stage's score must beat: {"blind" (an untrained agent, nothing grafted), "chance",
        "majority" (the best guess without looking), ...}; None where a reference does not apply."""
        raise NotImplementedError

    # ---- shared defaults ----------------------------------------------------------------------
    def evaluate_blind(self, run) -> float | None:
        """The score before the stage is grafted (an R cell above the diagonal); None if it has none."""
        return None

    def evaluate_val(self, run) -> float | None:
        """The score on `val`; None without a validation split."""
        return None

    def rollout_episodes(self, cfg) -> int:
        """Episodes per success cell: the stage's `rollout: {episodes}`, else `curriculum.eval.rollout_episodes`
        (0 for a stage that does not act)."""
        default = int(cfg.curriculum.eval.get("rollout_episodes") or 0)
        return int((self.spec.get("rollout") or {}).get("episodes", default)) if self.acts else 0

    def steps(self, phase: str) -> int:
        return int(self.pt_steps) if phase == "pt" and self.pt else int(self.it_steps) if phase == "it" else 0

    def pool(self, phase: str) -> list[dict]:
        return self.pt if phase == "pt" else self.it

    def draw(self, seed: int, phase: str, step: int) -> tuple[Batch, np.random.Generator]:
        rng = np.random.default_rng([seed, self.index, PHASES.index(phase), step])
        return self.sample(self.pool(phase), rng), rng

    def sample(self, pool: list[dict], rng: np.random.Generator) -> Batch:
        rows = [pool[i] for i in rng.choice(len(pool), self.batch_size, replace=len(pool) < self.batch_size)]
        return Batch(rows, replace=not self.mixed_as_extra_loss)

    def end_phase(self, mm, generators: Mapping[str, Any]) -> None:
        mm.set_trainable(None)

    def replayable(self) -> list[dict]:
        return self.it

    def plot(self, run, untrained: dict, trained: dict) -> None:
        """Draw what a person would rather look at, from the evaluations right after grafting and
        right after training (`evaluate` results); nothing by default."""

    def fisher_loss(self, run, rows: list[dict]) -> torch.Tensor:
        """The loss whose squared gradients estimate EWC's Fisher information on `rows`."""
        return run.mm([to_example(r) for r in rows]).loss

    def graft_seeded(self, mm, cfg, adapter: str | None):
        """`graft` with torch seeded by (seed, stage index): the same init whether resumed or not;
        then the graft's normalisation stats are recorded on `mm` (`record_stats`)."""
        torch.manual_seed(int(cfg.seed) * 1000 + self.index)
        generator = self.graft(mm, cfg, adapter)
        self.record_stats(mm, generator)
        return generator

    # ---- normalisation stats (agent/norm_stats.py) ----------------------------------------------
    env_stats: Any = None  # StageContext.env_stats, set by build_stages: () -> (env description, env name)

    def trained_on(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """({modality: (N, *shape)}, (N, ...) actions or None): the env data the stage trains its
        graft on, for its stats; ({}, None) for a stage with none (text)."""
        return {}, None

    def record_stats(self, mm, generator) -> None:
        from graft.agent.norm_stats import graft_stats

        observations, actions = self.trained_on()
        if observations and self.env_stats is not None:
            env, env_name = self.env_stats()
            normalizer = generator.normalizer if getattr(generator, "kind", None) == "action" else None
            mm.norm_stats[self.name] = graft_stats(env, env_name, observations, actions, normalizer)


def fresh_agent(cfg, routing: str | None = None):
    """An MM-LLM with nothing grafted, built from the run config's backbone, LoRA and routing."""
    from graft.agent.build import build_mmllm

    torch.manual_seed(int(cfg.seed))
    return build_mmllm({"backbone": cfg.backbone, "lora": cfg.lora, "routing": routing or cfg.routing})


@dataclass
class StageContext:
    """What a stage reads its data from: the composed config, the env config, the curriculum's
    generated env records (loaded on first use), the text-only pool, the test-set cap and the env's
    action names (the candidates of next-action items)."""

    cfg: Any
    env_cfg: dict
    env_data_loader: Any
    text: dict
    cap: int
    action_names: list[str] | None = None
    _env_data: dict | None = None
    _env_stats: tuple | None = None

    @property
    def env_data(self) -> dict:
        if self._env_data is None:
            self._env_data = self.env_data_loader()
        return self._env_data

    def env_stats(self) -> tuple[dict, str]:
        """(norm_stats.env_description of the curriculum env, its name), from one env made on first use."""
        if self._env_stats is None:
            from graft.agent.norm_stats import env_description
            from graft.envs.factory import make_env_factory

            env = make_env_factory(self.env_cfg)()
            try:
                self._env_stats = (env_description(env), str(self.env_cfg.get("name", "env")))
            finally:
                env.close()
        return self._env_stats


def stacked(rows: Sequence[Mapping[str, Any]], key: str, limit: int = STATS_ROWS) -> np.ndarray:
    """`rows[i][key]` stacked (N, *shape), at most `limit` rows evenly spread (enough for stats)."""
    picked = rows if len(rows) <= limit else [rows[i] for i in np.linspace(0, len(rows) - 1, limit).astype(int)]
    return np.stack([np.asarray(r[key]) for r in picked])
