"""A user's env, sensor, modality, curriculum and stage kind reach `graft onboard` by configuration only:
a folder on `hydra.searchpath` and a module on the Python path, no edit to graft."""
from __future__ import annotations

import json
import textwrap

import pytest
from graft.curricula.onboard import onboard

SENSOR = '''
import gymnasium as gym
import numpy as np
from graft.curricula.stages import TextStage


class Bumper(gym.ObservationWrapper):
    """bump = [1 if the cell ahead is not empty floor, 0, 0]: a sensor BabyAI does not have."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({**env.observation_space.spaces,
                                                  "bump": gym.spaces.Box(0.0, 1.0, (3,), np.float32)})

    def observation(self, obs):
        ahead = obs["grid"][5, 3, 0]  # the cell in front of the agent: object index (1 = empty)
        return {**obs, "bump": np.array([float(ahead != 1), 0.0, 0.0], np.float32)}

    def describe(self, obs, rng):
        hit = obs["bump"][0] > 0
        return {"bump": ("The bumper is " + ("pressed." if hit else "free."),
                         [("Is the bumper pressed?", "yes" if hit else "no")])}


class ShortTextStage(TextStage):
    """A user's stage kind: the text stage on its first 50 instructions only."""

    def load(self, ctx, earlier):
        super().load(ctx, earlier)
        self.it = self.it[:50]
'''


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    (tmp_path / "my_sensors.py").write_text(SENSOR)
    conf = tmp_path / "my_conf"
    for group, name, body in (
        ("env", "babyai_bumper", """
            _target_: graft.envs.babyai.make_babyai_env
            name: babyai_bumper
            level: BabyAI-GoToLocal-v0
            tile_size: 8
            max_steps: null
            wrappers: [my_sensors.Bumper]"""),
        ("modality", "bump", """
            _target_: graft.agent.modalities.proprio.ProprioModality
            dim: 3
            encoder: identity
            angles: []"""),
        ("curriculum", "bumper", """
            defaults:
              - override /env@_global_.env: babyai_bumper
              - _self_
            name: bumper
            skip_text_for_pretrained: true
            data: {episodes: 16, val_fraction: 0.25, test_fraction: 0.25, seed: 0}
            text: {train: 120, test: 24, eval: seen_templates}
            stage_defaults: {pt_steps: 60, it_steps: 300, batch_size: 8, lr: 0.003, replay_size: 64,
                             replay_ratio: 0.25, text_mix: 0.25}
            stages:
              - {name: text, kind: my_sensors.ShortTextStage}
              - {name: bump, modality: bump}
            eval: {max_examples: 16, rollout_episodes: 2, num_envs: 2}"""),
    ):
        (conf / group).mkdir(parents=True, exist_ok=True)
        (conf / group / f"{name}.yaml").write_text(textwrap.dedent(body).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    return conf


def test_a_users_env_with_a_wrapper_sensor_onboards_from_the_search_path(user_folder, tmp_path, compose):
    cfg = compose("onboard", [f"hydra.searchpath=[file://{user_folder}]", "curriculum=bumper", "compare=[graft]",
                              "steps_scale=0.05", "progress=false", "tensorboard=false", f"run_dir={tmp_path / 'run'}"])
    report = onboard(cfg)
    r = report["methods"]["graft"]
    assert r["stages"] == ["text", "bump"] and report["env"] == "BabyAI-GoToLocal-v0"
    assert all(v is not None for v in r["acc_matrix"][-1])
    assert r["success_matrix"][-1][1] is not None  # the wrapper's sensor is rolled out, not a silent "–"
    assert r["unscored_success"] == {"text": "a text-only stage has no observation to act on"}
    data = json.loads((tmp_path / "run" / "data" / "bumper" / "datagen.json").read_text())
    assert "bump" in json.dumps(data)
    md = (tmp_path / "run" / "report.md").read_text()
    assert md.startswith("# graft report: bumper on BabyAI-GoToLocal-v0")


def test_the_user_stage_kind_and_modality_are_the_ones_used(user_folder, compose, tmp_path):
    from graft.curricula.config import modality_config
    from graft.curricula.stages import build_stages

    cfg = compose("onboard", [f"hydra.searchpath=[file://{user_folder}]", "curriculum=bumper"])
    assert modality_config(cfg, "bump")["dim"] == 3
    from omegaconf import OmegaConf

    stages, _ = build_stages(cfg, OmegaConf.to_container(cfg.env, resolve=True), tmp_path)
    assert type(stages[0]).__name__ == "ShortTextStage" and len(stages[0].it) == 50


def test_any_babyai_level_runs_without_a_config_file(compose, tmp_path, small_overrides):
    cfg = compose("onboard", [*small_overrides, "env.level=BabyAI-GoToObj-v0", "compare=[naive]",
                              "steps_scale=0.02", f"run_dir={tmp_path}"])
    report = onboard(cfg)
    assert report["env"] == "BabyAI-GoToObj-v0" and report["config"]["env"]["level"] == "BabyAI-GoToObj-v0"
    from graft.envs.rollout import make_env_factory

    env = make_env_factory(report["config"]["env"])()  # the env the run generated its data from
    assert env.unwrapped.level == "BabyAI-GoToObj-v0" and "GoToObj" in type(env.unwrapped.minigrid).__name__
    env.close()


def test_unknown_config_options_name_what_exists(compose):
    from graft.curricula.config import group_config

    cfg = compose("onboard", [])
    with pytest.raises(ValueError, match=r"no output_projector config 'nope' \(known: \[.*prefix_attention"):
        group_config(cfg, "output_projector", "nope")
    with pytest.raises(ValueError, match=r"unknown kind 'magic'"):
        from graft.curricula.stages import kind_class

        kind_class({"name": "x", "kind": "magic"})
