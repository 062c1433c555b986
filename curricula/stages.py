"""Curriculum stages and their data, as an avalanche stream of experiences.

A curriculum (configs/curriculum/<name>.yaml) is an ordered list of stages of three kinds:

    {name: grid, modality: grid}                        input: graft a sensor modality (PT + IT)
    {name: text, modality: null}                        text: text-only skills (IT)
    {name: goal_image, output: goal_image, generator: image, inputs: [rgb]}
                                                        output: graft an output modality (one phase)

Each stage names its budgets: PT and IT steps, batch size, learning rate, replay size and ratio,
text-mix ratio. Input and text data come from `graft.envs.datagen` (captions for PT; questions
and demonstrations for IT and test) or from `graft.envs.text_tasks` (text stage and the text-mix
pool). Generated data are cached in the run folder, so a resumed run reads exactly the same
samples. Output stages read solved expert episodes (`graft.envs.trajectories`, deterministic in
the curriculum's `expert` seed): goal views or expert action chunks, built by
curricula/output_run.py; they train for `it_steps` steps and read input modalities grafted by
earlier stages.

`stream(stages)` turns the stages' training sets into avalanche experiences
(`benchmark_from_datasets`); the strategy walks `train_stream` in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from omegaconf import OmegaConf

from graft.agent.mmllm import Example

STAGE_KEYS = ("pt_steps", "it_steps", "batch_size", "lr", "replay_size", "replay_ratio", "text_mix")


@dataclass
class Stage:
    index: int
    name: str
    modality: str | None
    settings: dict[str, Any]
    pt: list[dict] = field(default_factory=list)  # caption records (MM PT)
    it: list[dict] = field(default_factory=list)  # instruction + demonstration records (MM IT)
    test: list[dict] = field(default_factory=list)
    output: dict | None = None  # output stages: {name, generator (config), inputs, fit_actions, rollout}

    @property
    def kind(self) -> str:
        return "output" if self.output is not None else "text" if self.modality is None else "input"

    def __getattr__(self, key: str) -> Any:
        if key in STAGE_KEYS:
            return self.settings[key]
        raise AttributeError(key)


def to_example(record: Mapping[str, Any]) -> Example:
    obs = {m: record[m] for m in record.get("modalities") or []}
    return Example(record["prompt"], obs, record.get("response"))


def _is_observation_array(feature) -> bool:
    """An observation column (written by `features_for`): a fixed-shape array or fixed-length vector."""
    import datasets

    if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
        return True
    return isinstance(feature, datasets.Sequence) and feature.length not in (None, -1)


def dataset_records(ds) -> list[dict]:
    """Rows of a `datasets.Dataset` as dicts of numpy arrays in their declared dtypes."""
    out = []
    arrays = {k: np.dtype(getattr(f, "dtype", None) or f.feature.dtype)
              for k, f in ds.features.items() if _is_observation_array(f)}
    for row in ds.with_format("numpy"):
        rec = {}
        for key, value in row.items():
            if key in arrays:
                rec[key] = np.ascontiguousarray(np.stack(value) if value.dtype == object else value, dtype=arrays[key])
            elif isinstance(value, np.ndarray):
                rec[key] = [v.item() if isinstance(v, np.generic) else v for v in value.tolist()]
            elif isinstance(value, np.generic):
                rec[key] = value.item()
            else:
                rec[key] = value
        out.append(rec)
    return out


def load_env_data(env_cfg: Mapping, data_cfg: Mapping, cache: Path) -> dict[str, list[dict]]:
    """Generate (once, cached in `cache`) and read the env's train/test records."""
    from graft.envs.datagen import generate_dataset, load_generated

    if not (cache / "datagen.json").exists():
        generate_dataset(dict(env_cfg), cache, episodes=int(data_cfg["episodes"]), seed=int(data_cfg["seed"]),
                         splits={"train": 1 - data_cfg["test_fraction"], "test": data_cfg["test_fraction"]})
    dd = load_generated(cache)
    return {split: dataset_records(dd[split]) for split in dd}


def load_text_data(text_cfg: Mapping, seed: int) -> dict[str, list[dict]]:
    """Text-only train pool and test set. `eval: heldout_templates` tests on phrasings never trained
    on; `eval: seen_templates` tests on fresh instances (new numbers, words) of the trained
    phrasings — the skill a small model was actually taught, and so the one it can forget."""
    from graft.envs.text_tasks import generate_text_tasks, text_dataset

    dd = text_dataset(train=int(text_cfg["train"]), test=int(text_cfg["test"]), seed=seed)
    data = {split: [dict(r) for r in dd[split]] for split in dd}
    mode = text_cfg.get("eval", "heldout_templates")
    if mode == "seen_templates":
        taught = {r["prompt"] for r in data["train"]}
        fresh = [r for r in generate_text_tasks(4 * int(text_cfg["test"]), "train", seed + 1) if r["prompt"] not in taught]
        data["test"] = [dict(r, kind="text", modalities=[]) for r in fresh[: int(text_cfg["test"])]]
    elif mode != "heldout_templates":
        raise ValueError(f"text.eval must be 'heldout_templates' or 'seen_templates', got {mode!r}")
    return data


def build_stages(cfg, env_cfg: Mapping, run_dir: Path, skip_text: bool = False):
    """The curriculum's stages with their data, and the text-only pool {"train", "test"}."""
    cur = cfg.curriculum
    defaults = OmegaConf.to_container(cur.stage_defaults, resolve=True)
    env_data = load_env_data(env_cfg,
                             OmegaConf.to_container(cur.data, resolve=True), run_dir / "data" / cur.name)
    text = load_text_data(cur.text, int(cfg.seed))
    cap = int(cur.eval.max_examples)
    stages = []
    for spec in cur.stages:
        spec = OmegaConf.to_container(spec, resolve=True)
        if spec.get("modality") is None and spec.get("output") is None and skip_text:
            continue
        settings = {k: spec.get(k, defaults[k]) for k in STAGE_KEYS}
        if spec.get("output") is not None:
            settings["pt_steps"] = 0  # an output stage trains in one phase (head + LoRA + denoiser)
        for k in ("pt_steps", "it_steps"):
            settings[k] = max(1, int(round(settings[k] * float(cfg.get("steps_scale", 1.0))))) if settings[k] else 0
        grafted = spec.get("modality") or spec.get("output")
        if grafted is not None and spec["name"] != grafted:
            raise ValueError(f"stage '{spec['name']}' grafts '{grafted}': a modality or output stage is "
                             f"named after what it grafts")
        stage = Stage(len(stages), spec["name"], spec.get("modality"), settings)
        if spec.get("output") is not None:
            from graft.curricula.output_run import output_stage_data

            output_stage_data(stage, spec, cfg, env_cfg, stages, cap)
        elif stage.modality is None:
            stage.it, stage.test = text["train"], text["test"][:cap]
        else:
            mine = lambda rows, kinds: [r for r in rows if r["modalities"] == [stage.modality] and r["kind"] in kinds]  # noqa: E731
            stage.pt = mine(env_data["train"], ("caption",))
            stage.it = mine(env_data["train"], ("qa", "demo"))
            stage.test = _spread(mine(env_data["test"], ("qa", "demo")), cap)
            if not stage.it:
                raise ValueError(f"stage '{stage.name}': the env data hold no samples for modality "
                                 f"'{stage.modality}' (has {sorted({m for r in env_data['train'] for m in r['modalities']})})")
        stages.append(stage)
    return stages, text


def _spread(rows: list[dict], cap: int) -> list[dict]:
    """At most `cap` rows, evenly spaced so every kind and episode stays represented."""
    if len(rows) <= cap:
        return rows
    return [rows[i] for i in np.linspace(0, len(rows) - 1, cap).round().astype(int)]


class RecordDataset:
    """A torch-style map dataset over stage records (what avalanche's datasets wrap)."""

    def __init__(self, records: Sequence[dict]):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]


def stream(stages: Sequence[Stage]):
    """Stages as an avalanche benchmark: one experience per stage over its IT records."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils import AvalancheDataset

    def wrap(records):
        return AvalancheDataset([RecordDataset(records)], collate_fn=list)

    return benchmark_from_datasets(train=[wrap(s.pt + s.it) for s in stages], test=[wrap(s.test) for s in stages])
