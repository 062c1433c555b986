"""Does the real LeRobot loader read graft's LeRobotDataset v3 exports as graft meant them?

Runs inside the lerobot-dataset venv that bench/lerobot_compat.sh builds (never in graft's own venv:
it pins datasets<4.2). For every dataset folder given:

    LeRobotDataset(repo_id="graft/local", root=folder)   offline; len, episodes, fps
    ds[i] for the first and last frame of every episode  each feature against the raw Parquet graft
                                                          wrote (read with pyarrow + PIL), the task
                                                          string against meta/tasks.parquet
    <folder>.expected.npz / .json, if present            frames against the episodes graft exported
    LeRobotDataset(..., episodes=[last])                 the episode filter (data/* and index columns)
    delta_timestamps={"action": [0, 1/fps]}              episode bounds (dataset_from/to_index)
    meta/stats.json                                      LeRobot's own shape checks, aggregate_stats over
                                                          the per-episode stats, compute_episode_stats
                                                          on episode 0 against graft's stats/ columns
    dataset_to_policy_features, a DataLoader batch       what a LeRobot policy reads first

Prints one line per check and exits 1 if any failed.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from ledataset.datasets.compute_stats import (
    _assert_type_and_shape,
    aggregate_stats,
    compute_episode_stats,
    get_feature_stats,
)
from ledataset.datasets.lerobot_dataset import LeRobotDataset
from ledataset.datasets.utils import dataset_to_policy_features, load_stats
from PIL import Image

FAILED: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        FAILED.append(what)


def as_hwc(value) -> np.ndarray:
    """A LeRobot item value as numpy; camera tensors (3, H, W) in [0, 1] back to uint8 (H, W, 3)."""
    array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype == np.float32 and array.ndim == 3 and array.shape[0] == 3:
        return np.round(array.transpose(1, 2, 0) * 255).astype(np.uint8)
    return array


def raw_frames(root: Path, info: dict) -> dict[str, list]:
    """The data Parquet as graft wrote it, without `datasets`: images decoded from their PNG bytes."""
    table = pq.read_table(sorted((root / "data").glob("*/*.parquet")))
    out = {}
    for key, spec in info["features"].items():
        column = table.column(key).to_pylist()
        if spec["dtype"] == "image":
            out[key] = [np.asarray(Image.open(io.BytesIO(v["bytes"])).convert("RGB")) for v in column]
        else:
            shape = () if list(spec["shape"]) == [1] else spec["shape"]  # LeRobot keeps (1,) as a scalar
            out[key] = [np.asarray(v, dtype=spec["dtype"]).reshape(shape) for v in column]
    return out


def close(a: np.ndarray, b: np.ndarray, tol: float = 1e-5) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, atol=tol, rtol=tol))


def check_folder(root: Path) -> None:
    print(f"== {root}", flush=True)
    ds = LeRobotDataset(repo_id="graft/local", root=root)
    info = json.loads((root / "meta/info.json").read_text())
    features = info["features"]
    check(len(ds) == info["total_frames"] and ds.num_episodes == info["total_episodes"] and ds.fps == info["fps"],
          f"len {len(ds)}, {ds.num_episodes} episodes, fps {ds.fps} as info.json says")
    raw = raw_frames(root, info)
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    episodes = pq.read_table(sorted((root / "meta/episodes").glob("*/*.parquet"))).to_pandas()
    episode_stats = pq.read_table(sorted((root / "meta/episodes").glob("*/*.parquet"))).to_pylist()  # nested lists
    firsts = episodes["dataset_from_index"].tolist() + [int(e) - 1 for e in episodes["dataset_to_index"]]
    for i in sorted(set(firsts)):
        item = ds[i]
        bad = [k for k in features if not close(as_hwc(item[k]), raw[k][i])]
        check(not bad, f"ds[{i}]: every feature equals the raw Parquet" + (f" (differs: {bad})" if bad else ""))
        want = tasks.index[int(raw["task_index"][i].item())]
        check(item["task"] == want, f"ds[{i}]['task'] = {item['task']!r}")
    item = ds[0]
    for key in ds.meta.camera_keys:
        check(item[key].dtype == torch.float32 and tuple(item[key].shape) == (3, *features[key]["shape"][:2]),
              f"{key}: a float32 {tuple(item[key].shape)} image tensor")
    expected(root, ds)

    last = int(episodes["episode_index"].iloc[-1])
    one = LeRobotDataset(repo_id="graft/local", root=root, episodes=[last])
    length = int(episodes["length"].iloc[-1])
    check(len(one) == length and int(one[0]["episode_index"]) == last and int(one[length - 1]["frame_index"]) == length - 1,
          f"episodes=[{last}]: {len(one)} frames of episode {last}")
    fps = ds.fps
    shifted = LeRobotDataset(repo_id="graft/local", root=root, delta_timestamps={"action": [0.0, 1.0 / fps]})
    end = int(episodes["dataset_to_index"].iloc[0]) - 1
    pair = shifted[end]
    check(pair["action"].shape[0] == 2 and pair["action_is_pad"].tolist() == [False, True]
          and close(pair["action"][0], raw["action"][end]), "delta_timestamps: the episode's last frame pads the next action")

    stats = load_stats(root)
    try:
        _assert_type_and_shape([stats])
        check(set(stats) == set(features), "meta/stats.json passes LeRobot's shape checks and covers every feature")
    except ValueError as exc:
        check(False, f"meta/stats.json shape checks: {exc}")
    per_episode = [{k: {s: np.asarray(row[f"stats/{k}/{s}"], dtype=np.float64) for s in ("min", "max", "mean", "std", "count")}
                    for k in features} for row in episode_stats]
    merged = aggregate_stats(per_episode)
    bad = [f"{k}/{s}" for k in features for s in ("min", "max", "mean", "std", "count")
           if not close(merged[k][s], stats[k][s], 1e-4)]
    check(not bad, "aggregate_stats(episode stats) = meta/stats.json" + (f" (differs: {bad})" if bad else ""))
    check_episode_stats(ds, episodes, episode_stats, features)

    policy = dataset_to_policy_features(features)
    cams = {k: tuple(v.shape) for k, v in policy.items() if k in ds.meta.camera_keys}
    check(all(s[0] == 3 for s in cams.values()) and "action" in policy, f"dataset_to_policy_features: cameras {cams}")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    check(len(batch["task"]) == 4 and batch["action"].shape[0] == 4, "a DataLoader batch of 4 collates")


def check_episode_stats(ds, episodes, rows: list[dict], features) -> None:
    """LeRobot's own stats code on the first episode of >= 2 frames (with one frame LeRobot falls back to
    per-element stats, (H, W) for a depth map, unlike its other episodes) against graft's stats/ columns.
    Images go through get_feature_stats as float64: compute_episode_stats squares their uint8 pixels
    without widening them (x**2 wraps at 256), which makes its image std wrong (often 0)."""
    e = next((i for i, n in enumerate(episodes["length"]) if int(n) >= 2), None)
    if e is None:
        print("skip  no episode of >= 2 frames to recompute stats on")
        return
    start, n = int(episodes["dataset_from_index"].iloc[e]), int(episodes["length"].iloc[e])
    frames = [ds[i] for i in range(start, start + n)]
    numeric = {k: np.stack([f[k].numpy() for f in frames]) for k, v in features.items() if v["dtype"] != "image"}
    theirs = compute_episode_stats(numeric, features)
    for key, spec in features.items():
        if spec["dtype"] == "image":
            pixels = np.stack([f[key].numpy().astype(np.float64) * 255 for f in frames]).round()  # (N, 3, H, W)
            stats = get_feature_stats(pixels, axis=(0, 2, 3), keepdims=True)
            theirs[key] = {k: v if k == "count" else np.squeeze(v / 255.0, axis=0) for k, v in stats.items()}
            wrapped = get_feature_stats(pixels.astype(np.uint8), axis=(0, 2, 3), keepdims=True)["std"].ravel() / 255
            print(f"note  {key}: LeRobot's uint8 path gives std {np.round(wrapped, 4).tolist()}, "
                  f"float64 {np.round(theirs[key]['std'].ravel(), 4).tolist()} (graft writes the latter)")
    bad, loose = [], []
    for key in features:
        for stat, value in theirs[key].items():
            mine = np.asarray(rows[e][f"stats/{key}/{stat}"], dtype=np.float64)
            span = float(np.max(theirs[key]["max"]) - np.min(theirs[key]["min"])) or 1.0
            if mine.size != np.size(value):
                bad.append(f"{key}/{stat} shape {mine.shape} vs {np.shape(value)}")
            elif stat.startswith("q"):  # theirs: histogram estimates; graft's: exact
                if not close(mine.reshape(np.shape(value)), value, 0.02 * span + 1e-6):
                    loose.append(f"{key}/{stat}")
            elif not close(mine.reshape(np.shape(value)), value, 1e-4):
                bad.append(f"{key}/{stat}")
    check(not bad, f"episode {e} stats = LeRobot's get_feature_stats / compute_episode_stats (min max mean std count)"
          + (f" (differs: {bad})" if bad else ""))
    check(not loose, f"episode {e} quantiles within 2% of the range of LeRobot's histogram estimates"
          + (f" (differs: {loose})" if loose else ""))


def expected(root: Path, ds) -> None:
    """Frames against what graft exported (`<folder>.expected.npz` + `.json`, written by the test)."""
    meta_path = root.with_name(root.name + ".expected.json")
    if not meta_path.exists():
        print("skip  no .expected.json beside the folder: frames checked against the Parquet only")
        return
    meta = json.loads(meta_path.read_text())
    arrays = np.load(root.with_name(root.name + ".expected.npz"), allow_pickle=False)
    for frame in meta["frames"]:
        item = ds[frame["index"]]
        bad = [k for k in frame["features"] if not close(as_hwc(item[k]), arrays[f"{frame['index']}/{k}"])]
        same = item["task"] == frame["task"] and int(item["episode_index"]) == frame["episode_index"] \
            and int(item["frame_index"]) == frame["frame_index"]
        check(not bad and same, f"ds[{frame['index']}] is graft's episode {frame['episode_index']} step "
              f"{frame['frame_index']} ({frame['task']!r})" + (f" (differs: {bad})" if bad else ""))


def main(folders: list[str]) -> int:
    for folder in folders:
        try:
            check_folder(Path(folder))
        except Exception as exc:  # noqa: BLE001 (the loader refused the folder: that is the failure to report)
            check(False, f"{folder}: {type(exc).__name__}: {exc}")
    print(f"{len(FAILED)} failed" if FAILED else "all checks passed", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
