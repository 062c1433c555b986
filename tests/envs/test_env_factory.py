"""make_env_factory: `_target_` (factory or env class), `wrappers` applied in order, `id`, names, pickling."""
from __future__ import annotations

import pickle

import gymnasium as gym
import pytest
from graft.envs.babyai import BabyAIEnv
from graft.envs.factory import env_layers, find_on_layers
from graft.envs.rollout import load_env_config, make_env_factory
from omegaconf import OmegaConf
from user_sensors import ForceSensor, LineWorld, Thermometer, WithLineExpert, not_a_wrapper, path

BABYAI = {"_target_": "graft.envs.babyai.make_babyai_env", "name": "b", "level": "BabyAI-GoToObj-v0"}


def test_wrappers_apply_in_order_with_their_kwargs_and_the_factory_pickles():
    cfg = OmegaConf.create({**BABYAI, "wrappers": [{"_target_": path(ForceSensor), "scale": 3.0}, path(Thermometer)]})
    factory = pickle.loads(pickle.dumps(make_env_factory(cfg)))  # AsyncVectorEnv workers get it pickled
    env = factory()
    try:
        assert [type(layer) for layer in env_layers(env)] == [Thermometer, ForceSensor, BabyAIEnv]
        assert env.env.scale == 3.0 and env.unwrapped.level == "BabyAI-GoToObj-v0" and env.unwrapped.name == "b"
        assert find_on_layers(env, "describe") == [env.env, env.unwrapped]
    finally:
        env.close()
    venv = gym.vector.SyncVectorEnv([factory, factory])
    try:
        obs, _ = venv.reset(seed=[0, 1])
        assert obs["force"].shape == (2, 3) and obs["temperature"].shape == (2, 1)
    finally:
        venv.close()


def test_a_plain_dict_of_an_omegaconf_config_works():
    """Callers pass dict(cfg.env): the wrappers list is then still a ListConfig."""
    cfg = OmegaConf.create({**BABYAI, "wrappers": [{"_target_": path(ForceSensor), "scale": 2.0}]})
    env = make_env_factory(dict(cfg))()
    assert isinstance(env, ForceSensor) and env.scale == 2.0
    env.close()


def test_default_configs_keep_their_plain_factory():
    factory = make_env_factory(load_env_config("babyai_goto"))
    env = factory()
    assert type(env) is BabyAIEnv and env.name == "babyai_goto"
    env.close()


def test_an_env_class_target_gets_its_name_set_not_passed():
    """LineWorld takes no `name`; the config's label still reaches datasets as env.unwrapped.name."""
    env = make_env_factory({"_target_": path(LineWorld), "name": "line", "max_steps": 4,
                            "wrappers": [path(WithLineExpert)]})()
    assert isinstance(env, WithLineExpert) and env.unwrapped.name == "line" and env.unwrapped.max_steps == 4


def test_gymnasium_id_style_config():
    factory = make_env_factory({"id": "CartPole-v1", "name": "cartpole", "max_episode_steps": 7})
    env = pickle.loads(pickle.dumps(factory))()
    assert env.unwrapped.name == "cartpole" and env.spec.max_episode_steps == 7
    env.close()


def test_bad_configs_are_clear_errors():
    with pytest.raises(TypeError, match="config with _target_"):
        make_env_factory({"level": "BabyAI-GoToObj-v0"})
    with pytest.raises(TypeError, match="'wrappers' must be a list"):
        make_env_factory({**BABYAI, "wrappers": path(Thermometer)})
    with pytest.raises(ImportError, match=r"wrappers\[1\]: cannot import 'no_such_pkg.Wrapper'"):
        make_env_factory({**BABYAI, "wrappers": [path(Thermometer), "no_such_pkg.Wrapper"]})
    with pytest.raises(TypeError, match=r"wrappers\[0\] must be a dotted path"):
        make_env_factory({**BABYAI, "wrappers": [{"scale": 2.0}]})
    with pytest.raises(TypeError, match=r"wrappers\[0\] .*returned int, expected a gymnasium env"):
        make_env_factory({**BABYAI, "wrappers": [path(not_a_wrapper)]})()
