"""Expert episodes as a LeRobotDataset v3 folder (the LeRobot community's format), written offline.

`export_lerobot(env, folder, episodes, seed)` runs the env's expert (`trajectories.expert_splits`)
and `write_lerobot` lays the solved episodes out as LeRobot v3.0 does:

    meta/info.json                          codebase_version "v3.0", fps, features {dtype, shape,
                                            names}, totals, chunks_size, data_path, video_path (null),
                                            splits {"train": "0:N"} (+ "test" for held-out episodes)
    meta/tasks.parquet                      one row per mission: task_index, the task string as index
    meta/episodes/chunk-000/file-000.parquet  per episode: episode_index, tasks, length,
                                            data/chunk_index, data/file_index, dataset_from_index,
                                            dataset_to_index, stats/<feature>/<stat>, meta/episodes/*
    meta/stats.json                         min, max, mean, std, count, q01 q10 q50 q90 q99 per feature
    data/chunk-000/file-000.parquet         one row per frame: each feature, timestamp, frame_index,
                                            episode_index, index, task_index

Observation keys become LeRobot names: a 0..255 uint8 (H, W, 3) camera `rgb` -> `observation.images.rgb`
(dtype "image": PNG bytes inside the Parquet, no video and so no ffmpeg), `proprio` (the robot's own
joint state) -> `observation.state`, every other entry `k` -> `observation.k` with its shape kept
(BabyAI's grid (7, 7, 3) uint8, reach's objects (N, 5) and depth (64, 64) float32); a (1,) feature
is a scalar column, as LeRobot stores it. The expert action is `action`: int64 (1,) for a Discrete
space, float32 (A,) for a Box; the mission is the frame's task. A frame is the observation an action
was taken from, so an episode of T actions has T frames (the final observation is not written).
Stats follow ledataset.datasets.compute_stats: images per channel in [0, 1] with shape (3, 1, 1),
other features per entry of their last axis; quantiles are exact (LeRobot estimates them from
histograms) and image std is computed in floats (ledataset 0.4.4 squares uint8 pixels, which wraps
at 256 and leaves its own image std wrong, often 0). All frames go into one data file (LeRobot
starts a new one past data_files_size_in_mb; its loader reads any number). `info["graft"]` adds what LeRobot has no field for: the env, the key map, the
discrete action names and the episodes' reset seeds. The folder appears complete or not at all.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import datasets
import gymnasium as gym
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from graft.envs.atomic import write_dir_atomic
from graft.envs.factory import make_env_factory
from graft.envs.trajectories import Trajectory, expert_splits

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200  # LeRobot's defaults
INFO_PATH, STATS_PATH, TASKS_PATH = "meta/info.json", "meta/stats.json", "meta/tasks.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
INDEX_FEATURES = {  # the columns LeRobot adds to every frame
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STATE_KEY = "proprio"  # graft's joint-state sensor is LeRobot's observation.state
DEFAULT_FPS = 10  # for an env without `dt` (BabyAI: one decision per step)
_ARRAYS = {2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D, 5: datasets.Array5D}


def is_camera(space: gym.spaces.Space) -> bool:
    """A camera: uint8 (H, W, 3) over the full 0..255 range (BabyAI's grid, 0..10, is symbols, not pixels)."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 \
        and space.shape[-1] == 3 and bool(np.all(space.high == 255))


def lerobot_key(key: str, space: gym.spaces.Space) -> str:
    if is_camera(space):
        return f"observation.images.{key}"
    return "observation.state" if key == STATE_KEY else f"observation.{key}"


def _spec(dtype: str, shape: Sequence[int], names: list[str] | None = None) -> dict:
    return {"dtype": dtype, "shape": list(shape) or [1], "names": names}


def lerobot_features(observation_space: gym.spaces.Dict, action_space: gym.spaces.Space) -> tuple[dict, dict]:
    """(LeRobot features, {graft observation key: LeRobot feature}) for an env's spaces."""
    features, keys = {}, {}
    for key, sub in observation_space.spaces.items():
        if isinstance(sub, gym.spaces.Text):
            continue  # the mission is the task
        name = lerobot_key(key, sub)
        if is_camera(sub):
            features[name] = _spec("image", sub.shape, ["height", "width", "channels"])
        elif isinstance(sub, gym.spaces.Discrete):
            features[name] = _spec("int64", (1,))
        elif isinstance(sub, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
            features[name] = _spec("int64", sub.shape)
        elif isinstance(sub, gym.spaces.Box):
            features[name] = _spec(str(sub.dtype), sub.shape)
        else:
            raise TypeError(f"observation {key!r}: no LeRobot feature for {sub}; expected Box, Discrete, "
                            "MultiDiscrete, MultiBinary or Text")
        keys[key] = name
    if isinstance(action_space, gym.spaces.Discrete):
        features["action"] = _spec("int64", (1,), ["action"])
    elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        features["action"] = _spec("float32", action_space.shape, [f"action_{i}" for i in range(action_space.shape[0])])
    else:
        raise TypeError(f"no LeRobot action feature for {action_space}; expected Discrete or a 1-D Box")
    return {**features, **INDEX_FEATURES}, keys


def hf_feature(spec: Mapping[str, Any]) -> Any:
    """The `datasets` feature LeRobot reads a LeRobot feature spec with (a (1,) shape is a scalar)."""
    shape = tuple(spec["shape"])
    if spec["dtype"] == "image":
        return datasets.Image()
    if shape == (1,):
        return datasets.Value(spec["dtype"])
    if len(shape) == 1:
        return datasets.Sequence(datasets.Value(spec["dtype"]), length=shape[0])
    if len(shape) in _ARRAYS:
        return _ARRAYS[len(shape)](shape=shape, dtype=spec["dtype"])
    raise ValueError(f"a LeRobot feature has at most 5 dimensions, got {spec}")


def feature_stats(values: np.ndarray, spec: Mapping[str, Any]) -> dict[str, list]:
    """LeRobot's stats of one feature over `values` (T, *shape): images per channel as (3, 1, 1) in
    [0, 1], anything else per entry of its last axis; count is [T]."""
    image = spec["dtype"] == "image"
    flat = values.reshape(-1, values.shape[-1] if values.ndim > 1 else 1).astype(np.float64)  # (N, C)
    if image:
        flat /= 255.0
    stats = {"min": flat.min(0), "max": flat.max(0), "mean": flat.mean(0), "std": flat.std(0),
             **{k: np.quantile(flat, q, axis=0, method="inverted_cdf") for k, q in QUANTILES.items()}}
    shape = (-1, 1, 1) if image else (-1,)
    return {**{k: v.reshape(shape).tolist() for k, v in stats.items()}, "count": [len(values)]}


def frame_columns(episodes: Sequence[Trajectory], keys: Mapping[str, str], tasks: Mapping[str, int],
                  fps: int, discrete: bool) -> dict[str, list]:
    """One entry per frame for every feature; frame t of an episode is (observation t, action t)."""
    cols: dict[str, list] = {name: [] for name in [*keys.values(), "action", *INDEX_FEATURES]}
    start = 0
    for ep_index, episode in enumerate(episodes):
        for t, action in enumerate(episode.actions):
            obs = episode.observations[t]
            for key, name in keys.items():
                cols[name].append(obs[key])
            cols["action"].append(int(action[0]) if discrete else np.asarray(action, np.float32))
            cols["timestamp"].append(t / fps)
            cols["frame_index"].append(t)
            cols["episode_index"].append(ep_index)
            cols["index"].append(start + t)
            cols["task_index"].append(tasks[episode.mission])
        start += len(episode)
    return cols


def write_lerobot(folder: str | os.PathLike, episodes: Sequence[Trajectory], observation_space: gym.spaces.Dict,
                  action_space: gym.spaces.Space, fps: int, robot_type: str | None = None,
                  action_names: Sequence[str] | None = None, test_episodes: int = 0) -> dict:
    """Write `episodes` as a LeRobotDataset v3 folder (module docstring); returns its info.json. The
    last `test_episodes` episodes are info's "test" split."""
    if not 0 <= test_episodes < len(episodes):
        raise ValueError(f"need at least one training episode: {len(episodes)} episodes, {test_episodes} for test")
    features, keys = lerobot_features(observation_space, action_space)
    tasks = {m: i for i, m in enumerate(dict.fromkeys(e.mission for e in episodes))}
    cols = frame_columns(episodes, keys, tasks, fps, isinstance(action_space, gym.spaces.Discrete))
    total, n = len(cols["index"]), len(episodes)
    splits = {"train": f"0:{n - test_episodes}", **({"test": f"{n - test_episodes}:{n}"} if test_episodes else {})}
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": n, "total_frames": total,
        "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB,
        "video_files_size_in_mb": VIDEO_FILE_MB, "fps": int(fps), "splits": splits, "data_path": DATA_PATH,
        "video_path": None, "features": features,
        "graft": {"env": robot_type, "observation_keys": {v: k for k, v in keys.items()},
                  "action_names": list(action_names) if action_names else None,
                  "episode_seeds": [int(e.seed) for e in episodes]},
    }
    arrays = {name: np.stack([np.asarray(v) for v in values]) for name, values in cols.items()}  # (frames, *shape)
    bounds = np.cumsum([0] + [len(e) for e in episodes])

    def write(tmp: Path) -> None:
        data = datasets.Dataset.from_dict(cols, features=datasets.Features(
            {name: hf_feature(features[name]) for name in cols}))
        (tmp / "data/chunk-000").mkdir(parents=True)
        pq.write_table(data.with_format("arrow")[:], tmp / DATA_PATH.format(chunk_index=0, file_index=0))
        (tmp / "meta/episodes/chunk-000").mkdir(parents=True)
        pd.DataFrame({"task_index": list(tasks.values())}, index=list(tasks)).to_parquet(tmp / TASKS_PATH)
        rows: dict[str, list] = {"episode_index": list(range(n)), "tasks": [[e.mission] for e in episodes],
                                 "length": [len(e) for e in episodes], "data/chunk_index": [0] * n,
                                 "data/file_index": [0] * n, "dataset_from_index": bounds[:-1].tolist(),
                                 "dataset_to_index": bounds[1:].tolist()}
        for name, values in arrays.items():
            per_episode = [feature_stats(values[a:b], features[name]) for a, b in pairwise(bounds)]
            for stat in per_episode[0]:
                rows[f"stats/{name}/{stat}"] = [s[stat] for s in per_episode]
        rows.update({"meta/episodes/chunk_index": [0] * n, "meta/episodes/file_index": [0] * n})
        pq.write_table(pa.Table.from_pydict(rows), tmp / EPISODES_PATH.format(chunk_index=0, file_index=0))
        stats = {name: feature_stats(values, features[name]) for name, values in arrays.items()}
        (tmp / STATS_PATH).write_text(json.dumps(stats, indent=4))
        (tmp / INFO_PATH).write_text(json.dumps(info, indent=4))

    write_dir_atomic(write, folder)
    return info


def env_fps(env: gym.Env, default: int = DEFAULT_FPS) -> int:
    """Frames per second: 1 / the env's control period `dt` (MuJoCo), else `default`."""
    dt = getattr(env.unwrapped, "dt", None)
    return round(1.0 / float(dt)) if dt else int(default)


def export_lerobot(env: Any, folder: str | os.PathLike, episodes: int = 20, seed: int = 0, test_fraction: float = 0.0,
                   fps: int = DEFAULT_FPS, progress: bool = True) -> dict:
    """Run the env's expert for `episodes` solved episodes (distinct reset seeds from `seed`) and write
    them to `folder` as a LeRobotDataset v3; `fps` is used only if the env has no `dt`. The last
    round(test_fraction * episodes) episodes are info's "test" split. Returns a short report."""
    started = time.perf_counter()
    probe = make_env_factory(env)()
    try:
        spaces, label = (probe.observation_space, probe.action_space), getattr(probe.unwrapped, "name", None)
        rate, names = env_fps(probe, fps), getattr(probe.unwrapped, "action_names", None)
    finally:
        probe.close()
    label = label or type(probe.unwrapped).__name__
    test = round(float(test_fraction) * episodes) if test_fraction else 0
    if episodes < 1 or test >= episodes:
        raise ValueError(f"need at least one training episode, got episodes={episodes}, test_fraction={test_fraction}")
    if progress:
        print(f"datagen {label}: {episodes} expert episodes -> LeRobotDataset v3 at {folder} ...", file=sys.stderr, flush=True)
    found = expert_splits(env, {"train": episodes - test, **({"test": test} if test else {})}, seed=seed)
    info = write_lerobot(folder, found["train"] + found.get("test", []), *spaces, fps=rate, robot_type=label,
                         action_names=names, test_episodes=test)
    seconds = round(time.perf_counter() - started, 2)
    return {"format": "lerobot", "path": str(folder), "episodes": info["total_episodes"], "frames": info["total_frames"],
            "tasks": info["total_tasks"], "fps": info["fps"], "splits": info["splits"], "seconds": seconds,
            "features": {k: v["dtype"] for k, v in info["features"].items()}}
