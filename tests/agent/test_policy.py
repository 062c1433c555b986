"""The Agent policy acts on batched env observations with one forward per step."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from graft.agent.mmllm import Example
from graft.agent.policy import Agent
from graft.agent.training import StageTrainer


def batch_obs(mm, n, rng):
    return {"grid": np.stack([mm.modalities["grid"].sample(rng) for _ in range(n)]),
            "mission": tuple(f"go to the red ball {i}" for i in range(n))}


def test_discrete_agent_learns_to_pick_the_demonstrated_action(tiny_mm, rng):
    mm = tiny_mm(modalities=("grid",))
    names = ["left", "right", "forward"]
    agent = Agent(mm, gym.spaces.Discrete(3), names)
    obs = batch_obs(mm, 4, rng)
    demos = [Example(ex.prompt, ex.obs, "right") for ex in agent.examples(obs)]
    trainer = StageTrainer(mm, "grid", "it", lr=1e-2)
    for _ in range(15):
        trainer.step(demos)
    actions = agent(obs, {})
    assert actions.shape == (4,) and actions.dtype == np.int64
    assert (actions == 1).all()


def test_continuous_agent_parses_numbers_and_reports_garbage(tiny_mm):
    agent = Agent(tiny_mm(modalities=("grid",)), gym.spaces.Box(-1, 1, (2,), np.float32))
    assert agent.parse_continuous("0.25 -0.5").tolist() == [0.25, -0.5]
    with pytest.raises(ValueError, match="expected 2 numbers.*'forward'"):
        agent.continuous_or_fallback("forward")
    with pytest.raises(ValueError, match="outside"):
        agent.continuous_or_fallback("3.0 0.0")
    lenient = Agent(agent.mm, agent.action_space, invalid="fallback")
    assert lenient.continuous_or_fallback("forward").tolist() == [0.0, 0.0]
    assert lenient.continuous_or_fallback("0.5 2.0").tolist() == [0.0, 0.0] and lenient.invalid_count == 2


def test_agent_refuses_modalities_the_model_lacks(tiny_mm):
    with pytest.raises(ValueError, match=r"reads \['depth'\]"):
        Agent(tiny_mm(modalities=("grid",)), gym.spaces.Discrete(3), modalities=["depth"])


def test_infer_answers_one_observation_as_the_batch_does(tiny_mm, rng):
    from graft.envs.spec import ObservationError

    mm = tiny_mm(modalities=("grid",))
    agent = Agent(mm, gym.spaces.Discrete(3), ["left", "right", "forward"])
    obs = batch_obs(mm, 3, rng)
    singles = [agent.infer({"grid": obs["grid"][i], "mission": obs["mission"][i]})["actions"] for i in range(3)]
    assert [int(a) for a in singles] == agent(obs, {}).tolist()
    grid = agent.observation_spec().modalities["grid"]  # one check: the spec and grid's own index rules
    assert grid.shape == (7, 7, 3)
    with pytest.raises(ObservationError, match="colour index 7"):
        grid.validate(np.full((7, 7, 3), 7, np.uint8))
    with pytest.raises(ObservationError, match=r"missing modality \['grid'\]"):
        agent.infer({"mission": "go"})
    with pytest.raises(ObservationError, match="expected 3 missions"):
        agent({"grid": obs["grid"], "mission": ("go",)}, {})


def test_escape_takes_the_next_best_action_at_a_repeated_observation(tiny_mm, rng):
    mm = tiny_mm(modalities=("grid",))
    agent = Agent(mm, gym.spaces.Discrete(3), ["left", "right", "forward"], revisits="escape")
    obs = batch_obs(mm, 2, rng)
    order = agent.scores(agent.check(obs, batched=True)).argsort(-1, descending=True).numpy()  # (2, 3)
    seen = [agent(obs, {}) for _ in range(4)]  # the same observations four times
    assert [a.tolist() for a in seen] == [order[:, 0].tolist(), order[:, 1].tolist(), order[:, 2].tolist(),
                                         order[:, 0].tolist()]  # every action tried: the best again
    assert not agent.memoryless and agent.memory_key(0) != agent.memory_key(5) == frozenset()
    agent.reset([0])
    assert agent(obs, {}).tolist() == [order[0, 0], order[1, 0]]  # sub-env 1 still remembers: all tried, best
    assert agent.infer_batch(obs)["actions"].tolist() == order[:, 0].tolist()  # stateless answers are greedy
    with pytest.raises(ValueError, match="revisits must be"):
        Agent(mm, gym.spaces.Discrete(3), revisits="sample")


def test_escape_rollouts_stop_exactly_where_state_and_memory_repeat(tiny_mm):
    from graft.envs.rollout import make_env_factory, rollout

    mm, env = tiny_mm(modalities=("grid",)), make_env_factory("babyai_goto")()
    runs = {}
    for revisits in ("repeat", "escape"):
        for stop in (True, False):
            agent = Agent.for_env(mm, env, revisits=revisits)
            runs[revisits, stop] = rollout("babyai_goto", agent, seeds=list(range(6)), num_envs=2, progress=False,
                                           frames=0, stop_on_revisit=stop)
    env.close()
    for revisits in ("repeat", "escape"):  # the stop never changes an episode's outcome
        cut, full = runs[revisits, True], runs[revisits, False]
        assert [r["success"] for r in cut["records"]] == [r["success"] for r in full["records"]]
        assert cut["env_steps"] <= full["env_steps"]
    assert runs["escape", True]["stopped_at_revisit"] > 0  # the pair (state, memory) did repeat: the stop was tested
    repeat = [r["length"] for r in runs["repeat", False]["records"]]
    escape = [r["length"] for r in runs["escape", False]["records"]]
    assert repeat != escape  # the memory changes what the agent does
