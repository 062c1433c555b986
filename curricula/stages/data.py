"""Stage data: the curriculum env's generated records and the text-only pool.

Input-modality data come from `graft.envs.datagen` (captions for PT; questions and demonstrations
for IT and test), generated once per run folder and cached as Parquet there, so a resumed run reads
exactly the same samples. Text-only data come from `graft.envs.text_tasks`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def _is_observation_array(feature) -> bool:
    """An observation column (written by `features_for`): a fixed-shape array or fixed-length vector."""
    import datasets

    if isinstance(feature, (datasets.Array2D, datasets.Array3D, datasets.Array4D, datasets.Array5D)):
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


def spread(rows: list[dict], cap: int) -> list[dict]:
    """At most `cap` rows, evenly spaced so every kind and episode stays represented."""
    if len(rows) <= cap:
        return rows
    return [rows[i] for i in np.linspace(0, len(rows) - 1, cap).round().astype(int)]
