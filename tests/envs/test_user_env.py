"""Data from any env: a user's sensor wrapper on BabyAI, built from a config, gets onboarding data.

The env config adds `force` (ForceSensor, with its own describer) and `temperature` (Thermometer,
none) on top of BabyAI through `wrappers:`. The sensors are modalities; datagen writes captions,
questions and demos for force, demos for temperature, and leaves BabyAI's own rows unchanged.
"""
from __future__ import annotations

import re

import datasets
import gymnasium as gym
import numpy as np
import pytest
from graft.envs.datagen import features_for, generate_dataset, record_features
from graft.envs.experts import BabyAIExpert, make_expert
from graft.envs.rollout import make_env_factory, make_policy, rollout
from graft.envs.spec import env_modality_specs
from user_sensors import FORCE_PROMPTS, ForceSensor, LineWorld, Thermometer, WithLineExpert, path

CFG = {"_target_": "graft.envs.babyai.make_babyai_env", "name": "babyai_force",
       "level": "BabyAI-GoToLocal-v0", "wrappers": [{"_target_": path(ForceSensor), "scale": 2.0}, path(Thermometer)]}


@pytest.fixture(scope="module")
def data():
    # 3 episodes: every question kept (balancing would drop groups with too few answers)
    return generate_dataset(CFG, None, episodes=3, seed=0, splits={"train": 1.0}, progress=False, balance=False)["train"]


def test_wrapper_sensors_are_modalities_and_the_expert_is_found_through_them():
    env = make_env_factory(CFG)()
    try:
        specs = env_modality_specs(env)
        assert {"grid", "rgb", "force", "temperature"} == set(specs)
        assert specs["force"].shape == (3,) and specs["force"].dtype == "float32"
        assert isinstance(make_expert(env), BabyAIExpert)
        obs, _ = env.reset(seed=0)
        assert obs["force"].dtype == np.float32 and env.observation_space.contains(obs)
    finally:
        env.close()


def test_force_gets_captions_questions_and_demos_temperature_only_demos(data):
    rows = data.select_columns(["kind", "modalities", "prompt", "step", "episode_seed"]).to_list()
    kinds = {m: {r["kind"] for r in rows if r["modalities"] == [m]} for m in ("grid", "rgb", "force", "temperature")}
    assert kinds == {"grid": {"caption", "qa", "demo"}, "rgb": {"caption", "qa", "demo"},
                     "force": {"caption", "qa", "demo"}, "temperature": {"demo"}}
    # every step has one demo per modality, each prompt names exactly its placeholder
    steps = {(r["episode_seed"], r["step"]) for r in rows}
    for m in ("grid", "rgb", "force", "temperature"):
        demos = [r for r in rows if r["kind"] == "demo" and r["modalities"] == [m]]
        assert len(demos) == len(steps)
        assert all(r["prompt"].startswith("Mission: ") and r["prompt"].endswith(f"\n<{m}>") for r in demos)
    for r in rows:
        assert set(re.findall(r"<(\w+)>", r["prompt"])) == set(r["modalities"])
    captions = [r["prompt"].split("\n")[0] for r in rows if r["kind"] == "caption" and r["modalities"] == ["force"]]
    assert captions and set(captions) <= set(FORCE_PROMPTS)  # the wrapper's own caption prompts


def test_force_answers_agree_with_the_stored_force_column(data):
    ds = data.with_format("numpy")
    assert data.features["force"].length == 3 and data.features["temperature"].length == 1
    checked = 0
    for row in ds:
        if row["kind"] == "qa" and str(row["prompt"]).endswith("<force>"):
            push, load = float(row["force"][0]), float(row["force"][1])
            if "pressing" in str(row["prompt"]):
                assert row["response"] == ("yes" if push > 0 else "no")
            elif "load" in str(row["prompt"]):
                assert row["response"] == f"{load:.0f}"
            else:
                assert row["response"] == f"{push:.0f}"
            checked += 1
        assert float(row["force"][0]) in (0.0, 10.0)  # scale: 2.0 reached the wrapper
    assert checked >= 3


def test_a_sensor_wrapper_leaves_the_envs_own_rows_unchanged(data):
    plain = generate_dataset({k: v for k, v in CFG.items() if k != "wrappers"}, None, episodes=3, seed=0,
                             splits={"train": 1.0}, progress=False, balance=False)["train"]
    cols = ["episode_seed", "step", "kind", "modalities", "prompt", "response", "action"]
    own = [r for r in data.select_columns(cols).to_list() if set(r["modalities"]) <= {"grid", "rgb"}]
    assert own == plain.select_columns(cols).to_list()


def test_progress_lines_say_what_is_done(capsys):
    generate_dataset(CFG, None, episodes=2, seed=1, splits={"train": 1.0})
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("datagen babyai_force:") for line in lines)
    assert "2 expert episodes" in lines[0] and "force" in lines[0] and "ForceSensor" in lines[0]
    assert re.search(r"done, 2 episodes \(0 skipped\), \d+ rows \(\d+ caption, \d+ qa, \d+ demo\) in [\d.]+ s",
                     lines[1])


def test_expert_rollout_through_the_wrappers():
    summary = rollout(CFG, make_policy("expert"), episodes=2, num_envs=2, progress=False)
    assert summary["success_rate"] == 1.0 and summary["env"] == "babyai_force"


def test_any_env_with_an_expert_on_a_wrapper_gets_demo_data():
    cfg = {"_target_": path(LineWorld), "name": "line", "wrappers": [path(WithLineExpert)]}
    ds = generate_dataset(cfg, None, episodes=2, seed=0, splits={"train": 1.0}, progress=False)["train"]
    rows = ds.to_list()
    assert {r["kind"] for r in rows} == {"demo"} and {r["env"] for r in rows} == {"line"}
    assert {r["response"] for r in rows} == {"right"} and rows[0]["prompt"].startswith("Mission: walk") and rows[0]["prompt"].endswith("\n<position>")


def test_an_env_without_an_expert_is_a_clear_error():
    with pytest.raises(TypeError, match=r"no expert for LineWorld: give the env \(or one of its wrappers\) "
                                        r"a method `make_expert\(self, \*\*kwargs\)`"):
        make_expert(LineWorld())
    with pytest.raises(TypeError, match=r"no expert for Wrapper -> LineWorld"):
        make_expert(gym.Wrapper(LineWorld()))
    with pytest.raises(TypeError, match="make_expert"):
        generate_dataset({"_target_": path(LineWorld)}, None, episodes=1, splits={"train": 1.0}, progress=False)


def test_features_cover_what_a_wrapper_may_add():
    space = gym.spaces.Dict({
        "mission": gym.spaces.Text(8), "label": gym.spaces.Text(8),
        "scalar": gym.spaces.Box(0, 1, (), np.float32), "volume": gym.spaces.Box(0, 1, (2, 2, 2, 2), np.float32),
        "bits": gym.spaces.MultiBinary(3), "counts": gym.spaces.MultiDiscrete([3, 4]),
    })
    features = record_features(space)
    sample = {k: v for k, v in space.sample().items() if k != "mission"}
    row = {"episode_seed": 0, "step": 0, "kind": "demo", "modalities": ["scalar"], "prompt": "<scalar>\n",
           "response": "0", "action": [0.0], "mission": "", "env": "x", **sample}
    back = datasets.Dataset.from_list([row], features=features).with_format("numpy")[0]
    assert back["volume"].shape == (2, 2, 2, 2) and back["bits"].shape == (3,) and back["label"] == sample["label"]
    assert np.isclose(back["scalar"], sample["scalar"])
    with pytest.raises(ValueError, match="observation key 'step' collides with the record column"):
        features_for(gym.spaces.Dict({"step": gym.spaces.Discrete(2)}))
    with pytest.raises(TypeError, match="needs an env with a Dict observation space"):
        features_for(gym.spaces.Box(0, 1, (3,)))
    with pytest.raises(TypeError, match="observation 'nested': no dataset column"):
        features_for(gym.spaces.Dict({"nested": gym.spaces.Dict({"a": gym.spaces.Discrete(2)})}))
