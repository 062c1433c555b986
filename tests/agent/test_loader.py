"""`load_policy`: a saved agent folder (or an in-memory MM-LLM) carries everything acting needs."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

TEMPLATE = "{tags}\nTask: {mission}\nPlan."


@pytest.fixture(scope="module")
def reach():
    from graft.envs.rollout import load_env_config, make_env_factory

    env = make_env_factory(load_env_config("mujoco_reach"))()
    yield env
    env.close()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, chunk_agent):
    """(folder, mm, generator): recorded inputs [proprio], execute 3 and a prompt template of its own."""
    from graft.agent.build import save_mmllm

    mm, generator = chunk_agent(inputs=["proprio"], execute=3, prompt=TEMPLATE)
    folder = save_mmllm(mm, tmp_path_factory.mktemp("loader") / "agent", generators={"action_chunk": generator})
    return folder, mm, generator


def test_inputs_execute_and_prompt_round_trip_through_graft_json(saved, reach):
    import json

    from graft.agent.build import load_mmllm
    from graft.agent.chunk_policy import ChunkPolicy
    from graft.agent.loader import load_policy

    folder, _, _ = saved
    recorded = json.loads((folder / "graft.json").read_text())["grafts"]["action_chunk"]["output"]
    assert (recorded["inputs"], recorded["execute"], recorded["prompt"]) == (["proprio"], 3, TEMPLATE)
    assert load_mmllm(folder).graft_configs["action_chunk"]["output"]["inputs"] == ["proprio"]
    policy = load_policy(folder, reach)
    assert isinstance(policy, ChunkPolicy) and policy.modalities == ["proprio"] and policy.execute == 3
    obs, _ = reach.reset(seed=0)
    assert policy.examples({"proprio": obs["proprio"][None], "mission": ["reach red"]}, [0])[0].prompt == \
        "<proprio>\nTask: reach red\nPlan."
    chunk = policy.infer(obs)["actions"]  # one observation of the env (its extra keys ignored)
    assert chunk.shape == (3, 2) and reach.action_space.contains(chunk[0])
    overridden = load_policy(folder, reach, inputs=["rgb", "proprio"], execute=5)
    assert overridden.modalities == ["rgb", "proprio"] and overridden.execute == 5


def test_an_in_memory_agent_loads_like_its_folder(saved, reach):
    """The training loop's path: the MMLLM and its generators by output name, no folder."""
    from graft.agent.loader import load_policy
    from graft.agent.policy import Agent

    folder, mm, generator = saved
    live = load_policy(mm, reach, generators={"action_chunk": generator}, seed=5)
    disk = load_policy(folder, reach, seed=5)
    obs, _ = reach.reset(seed=1)
    np.testing.assert_allclose(live.infer(obs)["actions"], disk.infer(obs)["actions"], atol=1e-5)
    assert type(load_policy(mm, reach)) is Agent  # no generators given: the text Agent
    text = load_policy(mm, reach, generators={"action_chunk": generator}, output="none", inputs=["rgb"])
    assert type(text) is Agent and text.modalities == ["rgb"] and text.invalid == "fallback"
    assert text.infer(obs)["actions"].shape == (2,)


def test_bad_output_choices_are_clear_errors(saved, reach):
    from types import SimpleNamespace

    from graft.agent.loader import load_policy

    folder, mm, generator = saved
    with pytest.raises(ValueError, match=r"output='goal_image': the checkpoint has no generators/goal_image/ "
                                         r"\(saved generators: \['action_chunk'\]\)"):
        load_policy(folder, reach, output="goal_image")
    with pytest.raises(ValueError, match="output='goal': no generator was given for it"):
        load_policy(mm, reach, generators={"action_chunk": generator}, output="goal")
    image = SimpleNamespace(kind="image")
    with pytest.raises(ValueError, match="is not a grafted output with an action generator.*'image'"):
        load_policy(mm, reach, generators={"action_chunk": image}, output="action_chunk")
    with pytest.raises(ValueError, match="served in float32"):
        load_policy(folder, reach, dtype="bfloat16")
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        load_policy(folder, reach, output="none", dtype="float16")


def test_errors_name_what_the_env_emits(saved, reach, tiny_mm):
    from graft.agent.loader import load_policy
    from graft.envs.rollout import load_env_config, make_env_factory

    grid_only = tiny_mm(modalities=("grid",))
    with pytest.raises(ValueError, match=r"reads none of the env's modalities: it has \['grid'\], the env emits "
                                         r"\[('(rgb|depth|proprio|objects)'(, )?){4}\]"):
        load_policy(grid_only, reach)
    with pytest.raises(ValueError, match=r"missing \['grid'\]"):
        load_policy(tiny_mm(), reach, inputs=["grid", "rgb"])
    _, mm, generator = saved  # its output reads proprio, which babyai does not emit
    babyai = _BoxActions(make_env_factory(load_env_config("babyai_goto"))())
    try:
        with pytest.raises(ValueError, match=r"output 'action_chunk' reads \['proprio'\], but the env emits "
                                             r"\['grid', 'rgb'\] \(missing \['proprio'\]\)"):
            load_policy(mm, babyai, generators={"action_chunk": generator})
    finally:
        babyai.close()


class _BoxActions(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)


class AddProprio(gym.ObservationWrapper):
    """A sensor the env itself does not publish: a wrapper adds it to the observation space."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({**env.observation_space.spaces,
                                                  "proprio": gym.spaces.Box(-1, 1, (6,), np.float32)})

    def observation(self, obs):
        return {**obs, "proprio": np.zeros(6, np.float32)}


def test_a_sensor_added_by_a_wrapper_counts(compose):
    from graft.agent.build import build_mmllm
    from graft.agent.loader import load_policy
    from graft.envs.rollout import load_env_config, make_env_factory

    torch.manual_seed(0)
    mm = build_mmllm(compose("chat", ["+modality@modalities.proprio=proprio"]))  # grid + proprio
    env = AddProprio(make_env_factory(load_env_config("babyai_goto"))())
    try:
        agent = load_policy(mm, env)
        assert agent.modalities == ["grid", "proprio"]
        assert agent.observation_spec().modalities["proprio"].high == 1.0  # the wrapper's exact spec
        obs, _ = env.reset(seed=0)
        assert env.action_space.contains(int(agent.infer(obs)["actions"]))
    finally:
        env.close()


def test_graft_output_refuses_what_it_cannot_record(saved):
    from graft.agent.build import graft_output

    _, mm, _ = saved  # nothing is grafted when graft_output refuses
    cfg = {"signal_tokens": 1, "projector": {"_target_": "unused"}}
    with pytest.raises(ValueError, match=r"reads inputs \['depth'\]; expected grafted input modalities"):
        graft_output(mm, "more", cfg, 1, 1, inputs=["depth"])
    with pytest.raises(ValueError, match="execute must be >= 1"):
        graft_output(mm, "more", cfg, 1, 1, execute=0)
    with pytest.raises(ValueError, match="needs a {mission} slot"):
        graft_output(mm, "more", cfg, 1, 1, prompt="{tags} plan")
    assert list(mm.outputs) == ["action_chunk"]
