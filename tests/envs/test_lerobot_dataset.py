"""LeRobotDataset v3 out and in: the layout graft writes, a lossless round trip through real Parquet,
whole episodes held out, clear errors for bad input, and `graft datagen format=lerobot`."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from graft.envs.factory import make_env_factory
from graft.envs.lerobot_export import export_lerobot, write_lerobot
from graft.envs.lerobot_import import lerobot_records
from graft.envs.trajectories import expert_splits

BABYAI = {"_target_": "graft.envs.babyai.make_babyai_env", "name": "babyai_goto", "level": "BabyAI-GoToLocal-v0",
          "tile_size": 8, "max_steps": None}
REACH = {"_target_": "graft.envs.mujoco_reach.make_reach_env", "name": "mujoco_reach", "image_size": 32,
         "max_steps": 100, "distractor": True, "objects": True}


def env_facts(cfg: dict) -> dict:
    env = make_env_factory(cfg)()
    facts = {"observation_space": env.observation_space, "action_space": env.action_space}
    names = getattr(env.unwrapped, "action_names", None)
    env.close()
    return {**facts, "action_names": names}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{env name: (folder, the episodes written, the env's spaces and action names)}: 4 BabyAI episodes
    (the last one info's test split) and 3 reach episodes, from real expert runs."""
    out = {}
    for cfg, fps, n, test in ((BABYAI, 10, 4, 1), (REACH, 20, 3, 0)):
        episodes = expert_splits(cfg, {"train": n}, seed=0)["train"]
        facts = env_facts(cfg)
        folder = tmp_path_factory.mktemp(cfg["name"]) / "lerobot"
        write_lerobot(folder, episodes, facts["observation_space"], facts["action_space"], fps=fps,
                      robot_type=cfg["name"], action_names=facts["action_names"], test_episodes=test)
        out[cfg["name"]] = (folder, episodes, facts)
    return out


def test_the_folder_has_lerobot_v3_layout_and_features(exported):
    folder, episodes, _ = exported["babyai_goto"]
    for path in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                 "data/chunk-000/file-000.parquet"):
        assert (folder / path).is_file(), path
    info = json.loads((folder / "meta/info.json").read_text())
    frames = sum(len(e) for e in episodes)
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["video_path"] is None
    assert (info["total_episodes"], info["total_frames"]) == (4, frames) and info["splits"] == {"train": "0:3", "test": "3:4"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet" and info["chunks_size"] == 1000
    f = info["features"]
    assert f["observation.images.rgb"] == {"dtype": "image", "shape": [56, 56, 3], "names": ["height", "width", "channels"]}
    assert f["observation.grid"]["dtype"] == "uint8" and f["observation.grid"]["shape"] == [7, 7, 3]  # symbols, not pixels
    assert f["action"]["dtype"] == "int64" and f["action"]["shape"] == [1]
    assert {"timestamp", "frame_index", "episode_index", "index", "task_index"} <= set(f)
    assert info["graft"]["action_names"][:3] == ["left", "right", "forward"]

    tasks = pd.read_parquet(folder / "meta/tasks.parquet")  # the task string is the index, as LeRobot keeps it
    assert list(tasks.index) == list(dict.fromkeys(e.mission for e in episodes)) and info["total_tasks"] == len(tasks)
    meta = pq.read_table(folder / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [m["length"] for m in meta] == [len(e) for e in episodes]
    assert [(m["dataset_from_index"], m["dataset_to_index"]) for m in meta][:2] == [(0, len(episodes[0])),
                                                                                    (len(episodes[0]), len(episodes[0]) + len(episodes[1]))]
    assert meta[0]["tasks"] == [episodes[0].mission] and meta[0]["data/file_index"] == 0
    assert np.shape(meta[0]["stats/observation.images.rgb/mean"]) == (3, 1, 1) and meta[0]["stats/action/count"] == [len(episodes[0])]
    data = pq.read_table(folder / "data/chunk-000/file-000.parquet")
    assert data.num_rows == frames and data.column("index").to_pylist() == list(range(frames))
    assert data.column("observation.images.rgb")[0].as_py()["bytes"][:4] == b"\x89PNG"
    stats = json.loads((folder / "meta/stats.json").read_text())
    assert set(stats) == set(f) and set(stats["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    assert stats["action"]["count"] == [frames] and np.shape(stats["observation.images.rgb"]["std"]) == (3, 1, 1)


def test_reach_maps_proprio_to_state_and_stores_float_actions(exported):
    folder, _, _ = exported["mujoco_reach"]
    info = json.loads((folder / "meta/info.json").read_text())
    f = info["features"]
    assert info["fps"] == 20 and f["action"]["dtype"] == "float32" and f["action"]["shape"] == [2]
    assert f["observation.state"]["shape"] == [6] and f["observation.depth"]["shape"] == [32, 32]
    assert f["observation.objects"]["shape"] == [2, 5] and f["observation.images.rgb"]["dtype"] == "image"
    assert info["graft"]["observation_keys"]["observation.state"] == "proprio"


@pytest.mark.parametrize("name", ["babyai_goto", "mujoco_reach"])
def test_round_trip_gives_back_the_observations_actions_and_missions(exported, name):
    folder, episodes, facts = exported[name]
    records = lerobot_records(folder, **facts, test_fraction=0.34, seed=1)
    rows = [r for split in records.values() for r in split]
    mods = ["rgb", "grid"] if name == "babyai_goto" else ["depth", "proprio", "rgb", "objects"]
    assert sum(r["modalities"] == ["rgb"] for r in rows) == sum(len(e) for e in episodes)  # one demo per frame and modality
    assert {m for r in rows for m in r["modalities"]} == set(mods)
    for r in rows:
        episode = episodes[r["episode_seed"]]
        obs, action = episode.observations[r["step"]], episode.actions[r["step"]]
        assert r["kind"] == "demo" and r["mission"] == episode.mission and r["env"] == name
        for m in mods:
            assert r[m].dtype == obs[m].dtype and np.array_equal(r[m], obs[m]), m
        if name == "babyai_goto":
            assert r["action"] == [float(action[0])] and r["response"] == facts["action_names"][int(action[0])]
        else:
            assert np.allclose(r["action"], action) and r["response"] == " ".join(f"{v:.3f}" for v in action)
        assert r["prompt"] == f"Mission: {episode.mission}\nWhat is the next action?\n<{r['modalities'][0]}>"


def test_whole_episodes_are_held_out(exported):
    folder, episodes, facts = exported["babyai_goto"]
    records = lerobot_records(folder, {"observation.images.rgb": "rgb"}, **facts, val_fraction=0.25,
                              test_fraction=0.25, seed=3)
    eps = {split: {r["episode_seed"] for r in rows} for split, rows in records.items()}
    assert set(eps) == {"train", "val", "test"} and [len(eps[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert set().union(*eps.values()) == {0, 1, 2, 3} and not (eps["train"] & eps["test"]) and not (eps["val"] & eps["test"])
    for split, rows in records.items():  # every frame of a held-out episode is in its split
        for e in eps[split]:
            assert sorted(r["step"] for r in rows if r["episode_seed"] == e) == list(range(len(episodes[e])))
    again = lerobot_records(folder, {"observation.images.rgb": "rgb"}, **facts, val_fraction=0.25, test_fraction=0.25, seed=3)
    assert {r["episode_seed"] for r in again["test"]} == eps["test"]  # seeded
    by_info = lerobot_records(folder, {"observation.images.rgb": "rgb"}, **facts, split="info")
    assert {r["episode_seed"] for r in by_info["test"]} == {3} and "val" not in by_info  # info.json: test 3:4


def test_bad_input_is_named(exported, tmp_path):
    folder, _, facts = exported["babyai_goto"]
    with pytest.raises(ValueError, match="does not exist"):
        lerobot_records(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="meta/info.json is missing"):
        lerobot_records(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"'observation.images.wrist' \(mapped to modality 'rgb'\) is not in .*"
                                         r"observation.images.rgb"):
        lerobot_records(folder, {"observation.images.wrist": "rgb"})
    with pytest.raises(ValueError, match=r"shape \(56, 56, 3\), but modality 'grid' of the env is \(7, 7, 3\)"):
        lerobot_records(folder, {"observation.images.rgb": "grid"}, **facts)
    reach = env_facts(REACH)
    with pytest.raises(ValueError, match=r"action feature 'action' is int64 \(1,\).*expected a float feature of shape \(2,\)"):
        lerobot_records(folder, {"observation.images.rgb": "rgb"}, observation_space=None, action_space=reach["action_space"])
    with pytest.raises(ValueError, match="action feature 'act' is not in"):
        lerobot_records(folder, {"observation.images.rgb": "rgb"}, action="act")
    video = tmp_path / "video"
    shutil.copytree(folder, video)
    info = json.loads((video / "meta/info.json").read_text())
    info["features"]["observation.images.rgb"]["dtype"] = "video"
    (video / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="stored as video"):
        lerobot_records(video, {"observation.images.rgb": "rgb"})
    with pytest.raises(ValueError, match="no training or no test episode"):
        lerobot_records(folder, {"observation.images.rgb": "rgb"}, max_episodes=1)


def test_export_runs_the_expert_and_replaces_the_folder_whole(tmp_path):
    folder = tmp_path / "goto"
    first = export_lerobot(BABYAI, folder, episodes=2, seed=0, progress=False)
    assert first["episodes"] == 2 and first["fps"] == 10 and first["splits"] == {"train": "0:2"}
    again = export_lerobot(BABYAI, folder, episodes=3, seed=1, test_fraction=0.34, progress=False)
    assert json.loads((folder / "meta/info.json").read_text())["total_episodes"] == 3 == again["episodes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["goto"]  # no temp or .old folder left behind
    with pytest.raises(ValueError, match="at least one training episode"):
        export_lerobot(BABYAI, tmp_path / "none", episodes=1, test_fraction=1.0, progress=False)


def test_datagen_format_lerobot_through_the_cli(tmp_path, capsys):
    from graft.curricula.cli import main

    assert main(["datagen", "format=lerobot", "episodes=3", "test_fraction=0.34", f"run_dir={tmp_path}"]) == 0
    info = json.loads((tmp_path / "lerobot" / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["splits"]["test"] == "2:3"
    report = json.loads((tmp_path / "datagen.json").read_text())
    assert report["format"] == "lerobot" and report["env_rows"] == info["total_frames"]
    assert "LeRobotDataset v3" in (tmp_path / "datagen.md").read_text()
    assert not (tmp_path / "pt-train.parquet").exists()  # the graft format is not written too
    assert "LeRobotDataset v3: 3 episodes" in capsys.readouterr().out


def test_datagen_names_an_unknown_format(tmp_path):
    from graft.curricula.config import compose_config
    from graft.curricula.datagen import datagen

    with pytest.raises(ValueError, match="format must be 'graft'.*or 'lerobot'"):
        datagen(compose_config("datagen", ["format=hdf5", f"run_dir={tmp_path}"]))
