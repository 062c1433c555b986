"""Every env config under configs/env instantiates, passes gymnasium's checker and keeps its spec.

Parametrised over the YAML files, so a new env config is tested with no new code.
"""
from __future__ import annotations

import gymnasium as gym
import hydra.utils
import numpy as np
import pytest
from graft.envs.rollout import env_config_dir
from graft.envs.spec import ModalitySpec, ObservationError, ObservationSpec
from gymnasium.utils.env_checker import check_env
from omegaconf import OmegaConf

CONFIGS = sorted(env_config_dir().glob("*.yaml"))
IDS = [p.stem for p in CONFIGS]


def test_default_configs_exist():
    assert {"babyai_goto", "babyai_pickup", "mujoco_reach"} <= set(IDS)
    assert len([n for n in IDS if n.startswith("babyai_")]) >= 3


@pytest.fixture(params=CONFIGS, ids=IDS)
def cfg(request):
    return OmegaConf.load(request.param)


@pytest.fixture
def env(cfg):
    env = hydra.utils.instantiate(cfg)
    yield env
    env.close()


def test_config_names_its_file(cfg, request):
    assert cfg.name == request.node.callspec.id


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_check_env(env):
    check_env(env, skip_render_check=True)


def test_observations_match_modality_specs(env):
    spec = env.unwrapped.observation_spec
    assert isinstance(spec, ObservationSpec) and "rgb" in spec.modalities
    assert all(isinstance(m, ModalitySpec) for m in env.unwrapped.modality_specs.values())
    obs, info = env.reset(seed=1)
    env.action_space.seed(1)
    for _ in range(5):
        checked = spec.validate(obs)
        assert set(checked) == set(spec.modalities)
        assert env.observation_space.contains(obs)
        assert isinstance(obs["mission"], str) and obs["mission"]
        assert isinstance(info["is_success"], bool)
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert np.isfinite(reward)
        if terminated or truncated:
            obs, info = env.reset()
    rgb = obs["rgb"]
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.std() > 0
    bad = dict(obs, rgb=rgb.astype(np.float32))
    with pytest.raises(ObservationError, match="rgb"):
        spec.validate(bad)


def test_same_seed_same_observation(env):
    first, _ = env.reset(seed=7)
    env.step(env.action_space.sample())
    again, _ = env.reset(seed=7)
    for key, value in first.items():
        assert np.array_equal(value, again[key]) if isinstance(value, np.ndarray) else value == again[key]


def test_partial_factory_builds_a_vector_env(cfg):
    factory = hydra.utils.instantiate(cfg, _partial_=True)
    venv = gym.vector.SyncVectorEnv([factory, factory])
    try:
        obs, _ = venv.reset(seed=[0, 1])
        assert obs["rgb"].shape[0] == 2 and len(obs["mission"]) == 2
        obs, *_ = venv.step(venv.action_space.sample())
        assert venv.single_observation_space["rgb"].contains(obs["rgb"][1])
    finally:
        venv.close()


def test_every_env_takes_a_max_steps_override(cfg):
    """`env.max_steps=N` on the command line must work for every env config."""
    env = hydra.utils.instantiate(cfg, max_steps=3)
    env.reset(seed=0)
    action = np.zeros(env.action_space.shape, env.action_space.dtype) if env.action_space.shape else 0
    ends = [any(env.step(action)[2:4]) for _ in range(3)]
    env.close()
    assert ends[-1] and not any(ends[:1])
