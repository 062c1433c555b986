"""Demonstrations from a LeRobotDataset v3 folder, as the records graft's stages train on.

`lerobot_records(folder, features, action, ...)` reads a LeRobot v3.0 folder (meta/info.json,
meta/tasks.parquet, data/*/*.parquet; image features decoded from their PNG bytes; video features
are refused: decoding them needs ffmpeg) and returns {"train", "test"[, "val"]} lists of records in
the schema of `graft.envs.datagen` (kind "demo" only: a LeRobotDataset has no captions or questions):

    episode_seed   the episode_index          step      the frame_index
    kind           "demo"                      modalities [m] per mapped modality (demo_modalities)
    prompt         mission_prompt(task, NEXT_ACTION, modalities)
    response       the action's name (discrete: action_names[id], else the id) or its numbers "%.3f"
    action         [id] or the continuous action as floats
    mission        the frame's task string     env       info's robot_type (or "lerobot")
    <modality>     each mapped feature, as numpy in its declared dtype and shape

`features` maps dataset features to graft modalities, e.g. {"observation.images.rgb": "rgb",
"observation.state": "proprio"}; by default every observation.* feature, named as a graft export
names it (info["graft"]) or with its prefix stripped (given the env, only the env's modalities). Whole episodes are held out: `split="random"`
draws val_fraction and test_fraction of them with `seed`; `split="info"` takes info.json's own
"test" (and "val") episode ranges. Given the env's spaces, every mapped feature must have the shape
the env's observation has, and the action the env's action space. Bad input is a ValueError that
names what was wrong and what was expected.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import gymnasium as gym
import numpy as np
import pandas as pd
from graft.envs.datagen import _quiet_datasets
from graft.envs.lerobot_export import INFO_PATH, TASKS_PATH, hf_feature
from graft.envs.prompts import NEXT_ACTION, mission_prompt

INDEX_COLUMNS = ("episode_index", "frame_index", "task_index")


def read_info(folder: str | os.PathLike) -> dict:
    """meta/info.json of a LeRobotDataset v3 folder, or a ValueError saying what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"LeRobotDataset folder {folder} does not exist; expected a folder with meta/info.json, "
                         "meta/tasks.parquet and data/chunk-*/file-*.parquet (`graft datagen format=lerobot` writes one)")
    path = folder / INFO_PATH
    if not path.exists():
        raise ValueError(f"{folder} is not a LeRobotDataset: {INFO_PATH} is missing")
    info = json.loads(path.read_text())
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise ValueError(f"{folder}: codebase_version {version!r}; graft reads LeRobotDataset v3.x (convert older "
                         "datasets with lerobot's convert_dataset_v21_to_v30)")
    return info


def default_features(info: Mapping[str, Any], observation_space: gym.spaces.Dict | None = None) -> dict[str, str]:
    """Every observation.* feature -> a graft modality: the export's own names, else the prefix stripped;
    given the env's space, only those that are modalities of the env (its Box entries)."""
    own = (info.get("graft") or {}).get("observation_keys") or {}
    out = {}
    for key in info["features"]:
        if key.startswith("observation."):
            out[key] = own.get(key) or key.removeprefix("observation.images.").removeprefix("observation.")
    if observation_space is not None:
        out = {k: m for k, m in out.items() if isinstance(observation_space.spaces.get(m), gym.spaces.Box)}
    return out


def _check_feature(key: str, modality: str, spec: Mapping, space: gym.spaces.Space | None) -> None:
    if spec["dtype"] == "video":
        raise ValueError(f"feature {key!r} is stored as video (mp4); graft reads camera frames stored as dtype "
                         "'image' (PNG in the Parquet): re-record or convert with use_videos=False")
    if space is None or not isinstance(space, gym.spaces.Box):
        return
    stored = np.dtype("uint8" if spec["dtype"] == "image" else spec["dtype"])
    if stored.kind != space.dtype.kind and not (stored.kind in "iu" and space.dtype.kind in "iu"):
        raise ValueError(f"feature {key!r} is {spec['dtype']}, but modality {modality!r} of the env is "
                         f"{space.dtype}; expected a feature of that kind (float, integer or image)")
    if tuple(spec["shape"]) != tuple(space.shape) and not (tuple(spec["shape"]) == (1,) and space.shape == ()):
        raise ValueError(f"feature {key!r} has shape {tuple(spec['shape'])}, but modality {modality!r} of the env "
                         f"is {tuple(space.shape)} {space.dtype}; map a feature of that shape or change the env")


def _check_action(key: str, spec: Mapping, space: gym.spaces.Space | None) -> bool:
    """True for a discrete action (an integer (1,) feature); checked against the env's action space."""
    discrete = np.issubdtype(np.dtype(spec["dtype"]), np.integer) and tuple(spec["shape"]) == (1,)
    if isinstance(space, gym.spaces.Discrete) and not discrete:
        raise ValueError(f"action feature {key!r} is {spec['dtype']} {tuple(spec['shape'])}, but the env's action "
                         f"space is {space}: expected an integer feature of shape (1,)")
    if isinstance(space, gym.spaces.Box) and (discrete or tuple(spec["shape"]) != tuple(space.shape)):
        raise ValueError(f"action feature {key!r} is {spec['dtype']} {tuple(spec['shape'])}, but the env's action "
                         f"space is {space}: expected a float feature of shape {tuple(space.shape)}")
    return discrete


def held_out(episodes: Sequence[int], info: Mapping, split: str, val_fraction: float, test_fraction: float,
             seed: int) -> dict[str, set[int]]:
    """Whole episodes per split: {"train", "test"[, "val"]} (module docstring)."""
    if split == "info":
        ranges = {name: range(*map(int, str(r).split(":"))) for name, r in (info.get("splits") or {}).items()}
        if "test" not in ranges:
            raise ValueError(f"split: info needs a 'test' range in meta/info.json's splits, got {info.get('splits')}")
        out = {name: {e for e in episodes if e in ranges[name]} for name in ("val", "test") if name in ranges}
        out["train"] = set(episodes) - set().union(*out.values())
    elif split == "random":
        order = np.random.default_rng(seed).permutation(list(episodes)).tolist()
        n_test = max(1, round(test_fraction * len(order))) if test_fraction > 0 else 0
        n_val = max(1, round(val_fraction * len(order))) if val_fraction > 0 else 0
        out = {"test": set(order[:n_test]), "val": set(order[n_test:n_test + n_val]), "train": set(order[n_test + n_val:])}
        if not n_val:
            del out["val"]
    else:
        raise ValueError(f"split must be 'random' or 'info', got {split!r}")
    if not out["train"] or not out.get("test"):
        raise ValueError(f"{len(episodes)} episodes leave no training or no test episode with split={split!r}, "
                         f"val_fraction={val_fraction}, test_fraction={test_fraction}; need more episodes")
    return out


def lerobot_records(folder: str | os.PathLike, features: Mapping[str, str] | None = None, action: str = "action", *,
                    observation_space: gym.spaces.Dict | None = None, action_space: gym.spaces.Space | None = None,
                    action_names: Sequence[str] | None = None, split: str = "random", val_fraction: float = 0.0,
                    test_fraction: float = 0.25, seed: int = 0, demo_modalities: str = "each",
                    max_episodes: int | None = None) -> dict[str, list[dict]]:
    """The dataset's frames as demo records per split (module docstring)."""
    folder = Path(folder)
    info = read_info(folder)
    have = info["features"]
    features = dict(features) if features else default_features(info, observation_space)
    for key, modality in features.items():
        if key not in have:
            raise ValueError(f"feature {key!r} (mapped to modality {modality!r}) is not in {folder}; its features: "
                             f"{sorted(k for k in have if k not in ('timestamp', 'index', *INDEX_COLUMNS))}")
        _check_feature(key, modality, have[key], observation_space.spaces.get(modality) if observation_space else None)
    if not features:
        raise ValueError(f"{folder}: no observation.* feature to read; map some with features: {{feature: modality}}")
    if action not in have:
        raise ValueError(f"action feature {action!r} is not in {folder}; its features: {sorted(have)}")
    discrete = _check_action(action, have[action], action_space)
    names = list(action_names or (info.get("graft") or {}).get("action_names") or [])
    sets = {"each": [[m] for m in features.values()], "all": [list(features.values())],
            "each+all": [[m] for m in features.values()] + [list(features.values())]}.get(demo_modalities)
    if sets is None:
        raise ValueError(f"demo_modalities must be 'each', 'all' or 'each+all', got {demo_modalities!r}")
    files = sorted((folder / "data").glob("*/*.parquet"))
    if not files or not (folder / TASKS_PATH).exists():
        raise ValueError(f"{folder}: expected data/chunk-*/file-*.parquet and {TASKS_PATH}, found "
                         f"{len(files)} data files" + ("" if (folder / TASKS_PATH).exists() else f" and no {TASKS_PATH}"))
    tasks = _tasks(folder / TASKS_PATH)
    columns = [*features, action, *INDEX_COLUMNS]
    with _quiet_datasets():
        ds = datasets.Dataset.from_parquet([str(f) for f in files], columns=columns,
                                           features=datasets.Features({k: hf_feature(have[k]) for k in columns}))
    episodes = sorted(set(ds["episode_index"]))[:max_episodes]
    parts = held_out(episodes, info, split, float(val_fraction), float(test_fraction), int(seed))
    where = {e: name for name, eps in parts.items() for e in eps}
    out: dict[str, list[dict]] = {name: [] for name in ("train", "val", "test") if name in parts}
    env = str(info.get("robot_type") or "lerobot")
    for row in ds.with_format("numpy"):
        part = where.get(int(row["episode_index"]))
        if part is None:
            continue
        obs = {m: _value(row[k], have[k], k, observation_space.spaces.get(m) if observation_space else None)
               for k, m in features.items()}
        mission = tasks[int(row["task_index"])]
        response, values = _action(row[action], discrete, names, action_space)
        base = {"episode_seed": int(row["episode_index"]), "step": int(row["frame_index"]), "mission": mission,
                "env": env, **obs, "kind": "demo", "response": response, "action": values}
        out[part] += [{**base, "modalities": mods, "prompt": mission_prompt(mission, NEXT_ACTION, mods)} for mods in sets]
    return out


def _tasks(path: Path) -> list[str]:
    """Task strings by task_index (LeRobot keeps the string as the DataFrame index)."""
    df = pd.read_parquet(path)
    text = df["task"] if "task" in df.columns else pd.Series(df.index, index=df.index)
    return [str(t) for _, t in sorted(zip(df["task_index"].astype(int), text))]


def _value(value: Any, spec: Mapping, key: str, space: gym.spaces.Space | None) -> np.ndarray:
    """A frame's feature as numpy (H, W, 3) uint8 for images, else its declared shape and dtype."""
    array = np.asarray(value)
    if spec["dtype"] != "image":
        array = array.astype(spec["dtype"]).reshape(spec["shape"])
    elif tuple(array.shape) != tuple(spec["shape"]):
        raise ValueError(f"feature {key!r}: a stored image is {array.shape}, info.json declares {tuple(spec['shape'])}")
    if isinstance(space, gym.spaces.Box):
        array = array.reshape(space.shape).astype(space.dtype, copy=False)
    return np.ascontiguousarray(array)


def _action(value: Any, discrete: bool, names: Sequence[str], space: gym.spaces.Space | None) -> tuple[str, list[float]]:
    """(response, action column): the action's name or id, or its numbers (as datagen writes them)."""
    if discrete:
        a = int(np.asarray(value).reshape(-1)[0])
        if isinstance(space, gym.spaces.Discrete) and not 0 <= a < space.n:
            raise ValueError(f"action id {a} is outside the env's action space {space}")
        return (names[a] if a < len(names) else str(a)), [float(a)]
    values = np.asarray(value, dtype=np.float32).ravel()
    return " ".join(f"{v:.3f}" for v in values), values.tolist()
