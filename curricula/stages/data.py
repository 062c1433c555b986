"""Stage data: the curriculum env's generated records and the text-only pool.

Input-modality data come from `graft.envs.datagen` (captions for PT; questions and demonstrations
for IT and test), generated once per run folder and cached as Parquet there, so a resumed run reads
exactly the same samples. Text-only data come from `graft.envs.text_tasks`.

With `curriculum.data.source: lerobot` the demonstrations come from a LeRobotDataset v3 folder
instead (`graft.envs.lerobot_import`; demos only, whole episodes held out, read in place):

    data: {source: lerobot, path: /data/my_robot,
           features: {observation.images.rgb: rgb, observation.state: proprio},   # null: every observation.*
           action: action, action_names: null, split: random,        # random (seeded) | info (info.json's)
           val_fraction: 0.25, test_fraction: 0.25, seed: 0, episodes: null}   # episodes: read at most
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
    """Generate (once, cached in `cache`) and read the env's train/val/test records (disjoint episodes);
    with `source: lerobot`, read them from a LeRobotDataset folder (module docstring)."""
    from graft.envs.datagen import generate_dataset, load_generated

    source = data_cfg.get("source") or "env"
    if source == "lerobot":
        return load_lerobot_data(env_cfg, data_cfg)
    if source != "env":
        raise ValueError(f"curriculum.data.source must be 'env' (generated from the env's expert) or 'lerobot' "
                         f"(a LeRobotDataset folder), got {source!r}")
    if not (cache / "datagen.json").exists():
        val, test = float(data_cfg.get("val_fraction", 0.0)), float(data_cfg["test_fraction"])
        splits = {"train": 1 - val - test, **({"val": val} if val else {}), "test": test}
        generate_dataset(dict(env_cfg), cache, episodes=int(data_cfg["episodes"]), seed=int(data_cfg["seed"]),
                         splits=splits)
    dd = load_generated(cache)
    return {split: dataset_records(dd[split]) for split in dd}


def load_lerobot_data(env_cfg: Mapping, data_cfg: Mapping) -> dict[str, list[dict]]:
    """Demo records per split from the LeRobotDataset at `data_cfg["path"]`, checked against the env's
    observation and action spaces (the agent acts in that env) and named with its action names."""
    from graft.envs.factory import make_env_factory
    from graft.envs.lerobot_import import lerobot_records

    if not data_cfg.get("path"):
        raise ValueError("curriculum.data.source=lerobot needs curriculum.data.path: a LeRobotDataset v3 folder")
    env = make_env_factory(dict(env_cfg))()
    try:
        spaces = {"observation_space": env.observation_space, "action_space": env.action_space}
        names = data_cfg.get("action_names") or getattr(env.unwrapped, "action_names", None)
    finally:
        env.close()
    episodes = data_cfg.get("episodes")
    return lerobot_records(data_cfg["path"], data_cfg.get("features"), data_cfg.get("action") or "action", **spaces,
                           action_names=names, split=data_cfg.get("split") or "random",
                           val_fraction=float(data_cfg.get("val_fraction") or 0.0),
                           test_fraction=float(data_cfg.get("test_fraction", 0.25)), seed=int(data_cfg.get("seed") or 0),
                           demo_modalities=data_cfg.get("demo_modalities") or "each",
                           max_episodes=int(episodes) if episodes else None)


def load_text_data(text_cfg: Mapping, seed: int) -> dict[str, list[dict]]:
    """Text-only train pool, and test and validation sets with every template family equally
    represented. `eval: heldout_templates` tests on phrasings never trained on; `eval:
    seen_templates` on fresh instances (new numbers, words) of the trained phrasings — the skill a
    small model was actually taught, and so the one it can forget. A family with few distinct
    instances (facts, colour mixing) runs out of unseen ones; its items are then trained prompts,
    marked `seen: True`."""
    from graft.envs.text_tasks import FAMILIES, generate_text_tasks

    mode = text_cfg.get("eval", "heldout_templates")
    if mode not in ("heldout_templates", "seen_templates"):
        raise ValueError(f"text.eval must be 'heldout_templates' or 'seen_templates', got {mode!r}")
    n_train, n_test = int(text_cfg["train"]), int(text_cfg["test"])
    tag = lambda rows: [dict(r, kind="text", modalities=[]) for r in rows]
    train = tag(generate_text_tasks(n_train, "train", seed))
    taught = {r["prompt"] for r in train}
    split = "train" if mode == "seen_templates" else "test"
    test = _by_family(tag(generate_text_tasks(8 * n_test, split, seed + 1)), taught, set(), n_test, len(FAMILIES))
    val = _by_family(tag(generate_text_tasks(8 * n_test, split, seed + 2)), taught, {r["prompt"] for r in test},
                     n_test, len(FAMILIES))
    return {"train": train, "val": val, "test": test}


def _by_family(pool: list[dict], taught: set[str], taken: set[str], n: int, families: int) -> list[dict]:
    """`n` distinct prompts from `pool` (none in `taken`), the families in turn, unseen prompts first."""
    per: dict[str, list[dict]] = {}
    for r in pool:
        if r["prompt"] not in taken and all(r["prompt"] != q["prompt"] for q in per.get(r["family"], [])):
            per.setdefault(r["family"], []).append(dict(r, seen=r["prompt"] in taught))
    for rows in per.values():
        rows.sort(key=lambda r: r["seen"])  # stable: unseen first, pool order kept
    out, depth = [], 0
    while len(out) < n and any(depth < len(rows) for rows in per.values()):
        out += [rows[depth] for rows in per.values() if depth < len(rows)][: n - len(out)]
        depth += 1
    return out


def spread(rows: list[dict], cap: int) -> list[dict]:
    """At most `cap` rows, evenly spaced so every kind and episode stays represented."""
    if len(rows) <= cap:
        return rows
    return [rows[i] for i in np.linspace(0, len(rows) - 1, cap).round().astype(int)]
