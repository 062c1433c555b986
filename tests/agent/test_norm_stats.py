"""Normalisation stats travel with each adapter (norm_stats.json) and an env that does not match is refused."""
from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from graft.agent import norm_stats
from graft.agent.norm_stats import NormStatsMismatch


def make_env(name):
    from graft.envs.rollout import load_env_config, make_env_factory

    return make_env_factory(load_env_config(name))()


class FewerActions(gym.ActionWrapper):
    """BabyAI with only left / right / forward: a different action space under the same observations."""

    def __init__(self, env):
        super().__init__(env)
        self.action_space = gym.spaces.Discrete(3)

    def action(self, action):
        return action


class BiggerCamera(gym.ObservationWrapper):
    """BabyAI whose rgb camera is 64x64 instead of 56x56."""

    def __init__(self, env):
        super().__init__(env)
        spaces = dict(env.observation_space.spaces)
        spaces["rgb"] = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, obs):
        return {**obs, "rgb": np.zeros((64, 64, 3), np.uint8)}


def test_feature_stats_reduce_vectors_per_dimension_and_images_per_channel():
    rng = np.random.default_rng(0)
    vectors = rng.normal([1.0, -2.0, 5.0], [0.5, 1.0, 2.0], (4000, 3))
    s = norm_stats.feature_stats(vectors)
    assert s["count"] == 4000 and np.allclose(s["mean"], [1, -2, 5], atol=0.1) and np.allclose(s["std"], [0.5, 1, 2], atol=0.1)
    assert np.all(np.array(s["q01"]) < s["mean"]) and np.all(np.array(s["q99"]) > s["mean"])
    images = np.zeros((10, 8, 8, 3), np.uint8)
    images[..., 1] = 255
    s = norm_stats.feature_stats(images)
    assert s["mean"] == [0.0, 255.0, 0.0] and s["max"] == [0.0, 255.0, 0.0]
    depth = np.full((5, 16, 16), 2.0, np.float32)
    assert norm_stats.feature_stats(depth)["mean"] == 2.0


@pytest.fixture(scope="module")
def babyai_stats():
    """Stats as a babyai_goto stage records them (grid and rgb observations, its demos' actions)."""
    env = make_env("babyai_goto")
    described = norm_stats.env_description(env)
    obs = [env.reset(seed=s)[0] for s in range(8)]
    env.close()
    return {m: norm_stats.graft_stats(described, "babyai_goto", {m: np.stack([o[m] for o in obs])},
                                      np.arange(8)[:, None] % 3) for m in ("grid", "rgb")}


def test_the_stats_are_saved_with_the_agent_and_checked_where_it_acts(tmp_path, tiny_mm, babyai_stats):
    from graft.agent.build import load_mmllm, save_mmllm
    from graft.agent.loader import load_policy

    mm = tiny_mm()
    mm.norm_stats = babyai_stats
    folder = save_mmllm(mm, tmp_path / "agent")
    doc = json.loads((folder / "norm_stats.json").read_text())
    assert doc["format"] == "graft.norm_stats" and doc["version"] == 1
    grid = doc["grafts"]["grid"]
    assert grid["env"] == "babyai_goto" and grid["samples"] == 8
    assert grid["observation"]["grid"]["spec"]["shape"] == [7, 7, 3] and grid["observation"]["grid"]["spec"]["dtype"] == "uint8"
    assert grid["action"]["space"]["n"] == 7 and grid["action"]["space"]["names"][:3] == ["left", "right", "forward"]
    assert load_mmllm(folder).norm_stats == doc["grafts"]

    env = make_env("babyai_goto")
    policy = load_policy(folder, env)  # the env it was trained in: accepted
    assert policy.norm_stats["recorded"] and policy.norm_stats["grafts"]["rgb"]["observation"] == ["rgb"]
    with pytest.raises(NormStatsMismatch, match=r"adapter 'grid' was trained in env 'babyai_goto' to act in "
                                                r"Discrete\(7, start=0\) named \['left'.*takes Discrete\(3, start=0\)"):
        load_policy(folder, FewerActions(env))
    with pytest.raises(NormStatsMismatch, match=r"adapter 'rgb' was trained in env 'babyai_goto' on 'rgb': shape "
                                                r"\(56x56x3\).*emits 'rgb': shape \(64x64x3\)"):
        load_policy(folder, BiggerCamera(env))
    assert load_policy(folder, BiggerCamera(env), inputs=["grid"]).modalities == ["grid"]  # rgb is not read
    env.close()


def test_an_agent_saved_without_stats_loads_unchecked_and_says_so(tmp_path, tiny_mm):
    from graft.agent.build import save_mmllm
    from graft.agent.loader import load_policy

    folder = save_mmllm(tiny_mm(), tmp_path / "agent")
    assert not (folder / "norm_stats.json").exists()
    env = make_env("babyai_goto")
    policy = load_policy(folder, env)  # nothing to check against: acts as before
    env.close()
    assert policy.norm_stats == {"recorded": False,
                                 "note": "saved without norm_stats.json: env and stats are not checked"}


def test_a_file_of_another_format_or_version_is_refused(tmp_path):
    (tmp_path / "norm_stats.json").write_text(json.dumps({"format": "graft.norm_stats", "version": 2, "grafts": {}}))
    with pytest.raises(ValueError, match="norm_stats version 2; this graft reads version 1"):
        norm_stats.read(tmp_path)
    (tmp_path / "norm_stats.json").write_text(json.dumps({"mean": [0.0]}))
    with pytest.raises(ValueError, match="is not a graft norm_stats file"):
        norm_stats.read(tmp_path)


def test_a_generator_from_another_run_is_refused(tmp_path, chunk_agent):
    import shutil

    from graft.agent.build import save_mmllm
    from graft.agent.loader import load_policy

    env = make_env("mujoco_reach")
    described = norm_stats.env_description(env)
    obs = [env.reset(seed=s)[0] for s in range(4)]
    mm, generator = chunk_agent(spread=1.0, inputs=["rgb", "proprio"], execute=4)
    observed = {m: np.stack([o[m] for o in obs]) for m in ("rgb", "proprio")}
    mm.norm_stats = {"action_chunk": norm_stats.graft_stats(described, "mujoco_reach", observed,
                                                            np.zeros((4, 2)), generator.normalizer)}
    folder = save_mmllm(mm, tmp_path / "agent", generators={"action_chunk": generator})
    assert load_policy(folder, env).norm_stats["grafts"]["action_chunk"]["normalizer"]
    _, other = chunk_agent(spread=2.0, inputs=["rgb", "proprio"], execute=4)  # fitted to [-2, 2]
    other_folder = save_mmllm(mm, tmp_path / "other", generators={"action_chunk": other})
    shutil.rmtree(folder / "generators" / "action_chunk")
    shutil.copytree(other_folder / "generators" / "action_chunk", folder / "generators" / "action_chunk")
    with pytest.raises(NormStatsMismatch, match=r"output 'action_chunk' was trained with actions scaled from "
                                                r"low=\[-0\.9.*its generator scales from low=\[-1\.9"):
        load_policy(folder, env)
    env.close()


def test_graft_serve_refuses_to_start_on_an_env_its_adapters_were_not_trained_in(tmp_path, tiny_mm, babyai_stats,
                                                                                 compose):
    from graft.agent.build import save_mmllm
    from graft.curricula.serve import run_serve

    mm = tiny_mm()
    mm.norm_stats = babyai_stats
    folder = save_mmllm(mm, tmp_path / "agent")
    # the reach arm's camera is rgb too, 64x64: without the stats this agent would read it and guess numbers
    cfg = compose("serve", [f"checkpoint={folder}", "env=mujoco_reach", "port=0"])
    with pytest.raises(NormStatsMismatch, match=r"adapter 'rgb' was trained in env 'babyai_goto' on 'rgb': shape "
                                                r"\(56x56x3\).*env '.*' emits 'rgb': shape \(64x64x3\)"):
        run_serve(cfg, ready=lambda host, port: pytest.fail("the server must not start"))
