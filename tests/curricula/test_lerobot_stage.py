"""A curriculum whose stages take their demonstrations from a LeRobotDataset v3 folder
(`curriculum.data.source: lerobot`, configs/curriculum/lerobot_demos.yaml)."""
from __future__ import annotations

import pytest
from graft.curricula.onboard import onboard
from graft.curricula.stages.data import load_env_data
from graft.envs.datagen import generate_dataset
from graft.envs.lerobot_export import export_lerobot
from omegaconf import OmegaConf

ENV = {"_target_": "graft.envs.babyai.make_babyai_env", "name": "babyai_goto", "level": "BabyAI-GoToLocal-v0",
       "tile_size": 8, "max_steps": None}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("lerobot") / "goto"
    export_lerobot(ENV, out, episodes=24, seed=0, progress=False)
    return out


def data_config(compose, folder, *overrides) -> tuple[dict, dict]:
    cfg = compose("onboard", ["curriculum=lerobot_demos", f"curriculum.data.path={folder}", *overrides])
    return OmegaConf.to_container(cfg.env, resolve=True), OmegaConf.to_container(cfg.curriculum.data, resolve=True)


def test_stage_data_are_demo_records_like_generated_ones(compose, folder, tmp_path):
    env_cfg, data_cfg = data_config(compose, folder)
    data = load_env_data(env_cfg, data_cfg, tmp_path / "unused")
    assert set(data) == {"train", "val", "test"} and len(data["test"]) > 0
    episodes = {s: {r["episode_seed"] for r in rows} for s, rows in data.items()}
    assert [len(episodes[s]) for s in ("train", "val", "test")] == [12, 6, 6]  # 24 episodes, whole ones held out
    generated = generate_dataset(ENV, None, episodes=1, seed=0, splits={"train": 1.0}, progress=False)["train"]
    demo = next(r for r in generated if r["kind"] == "demo" and r["modalities"] == ["grid"])
    mine = next(r for r in data["train"] if r["modalities"] == ["grid"])
    assert set(mine) == set(demo) - {"direction"}  # the record schema the stages consume (direction: not mapped)
    assert {m for r in data["train"] for m in r["modalities"]} == {"grid", "rgb"}  # the env's modalities only
    assert {r["response"] for r in data["train"]} <= {"left", "right", "forward", "pickup", "drop", "toggle", "done"}
    assert mine["grid"].shape == (7, 7, 3) and mine["prompt"].endswith("What is the next action?\n<grid>")


def test_bad_data_config_is_named(compose, folder, tmp_path):
    env_cfg, data_cfg = data_config(compose, folder)
    with pytest.raises(ValueError, match="source must be 'env'.*or 'lerobot'"):
        load_env_data(env_cfg, {**data_cfg, "source": "rosbag"}, tmp_path)
    with pytest.raises(ValueError, match="needs curriculum.data.path"):
        load_env_data(env_cfg, {**data_cfg, "path": None}, tmp_path)
    with pytest.raises(ValueError, match=r"'observation.state' \(mapped to modality 'proprio'\) is not in"):
        load_env_data(env_cfg, {**data_cfg, "features": {"observation.state": "proprio"}}, tmp_path)


def test_a_stage_trains_and_evaluates_on_lerobot_demos_only(compose, folder, tmp_path, small_overrides):
    cfg = compose("onboard", [*small_overrides, "curriculum=lerobot_demos", f"curriculum.data.path={folder}",
                              "compare=[graft]", f"run_dir={tmp_path}", "curriculum.stages=[{name: grid, modality: grid}]",
                              "curriculum.stage_defaults.it_steps=300"])
    r = onboard(cfg)["methods"]["graft"]
    curve = r["loss_curves"]["grid"]["it"]
    assert "pt" not in r["loss_curves"]["grid"]  # no captions: no MM PT phase
    assert len(curve) == 15 and sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 1.0  # it learned the demonstrations
    assert r["acc_matrix"][0][0] is not None and r["imitation_matrix"][0][0] is not None
    assert r["val_matrix"][0][0] is not None  # the gate read the held-out val episodes
