"""Experts solve their envs from simulator state, and give up cleanly instead of hanging."""
from __future__ import annotations

import time

import hydra.utils
import numpy as np
import pytest
from graft.envs.babyai import BabyAIEnv
from graft.envs.experts import BabyAIExpert, ExpertFailure, ExpertInfo, ReachExpert, make_expert, time_limit
from graft.envs.mujoco_reach import ReachEnv
from graft.envs.rollout import env_config_dir
from omegaconf import OmegaConf

CONFIGS = sorted(env_config_dir().glob("*.yaml"))


def run_expert(env, seed: int) -> bool:
    obs, info = env.reset(seed=seed)
    expert = make_expert(env)
    expert.reset(env)
    for _ in range(1000):
        obs, _, terminated, truncated, info = env.step(expert.act())
        if terminated or truncated:
            break
    return info["is_success"]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_expert_solves_at_least_9_of_10_seeds(path):
    env = hydra.utils.instantiate(OmegaConf.load(path))
    successes = [run_expert(env, seed) for seed in range(100, 110)]
    env.close()
    assert sum(successes) >= 9, successes


def test_random_actions_do_not_solve_reach():
    """The reach task is not trivially solved, so the expert's success means something."""
    env = ReachEnv()
    env.action_space.seed(0)
    wins = 0
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(100):
            *_, terminated, truncated, info = env.step(env.action_space.sample())
            if terminated or truncated:
                break
        wins += info["is_success"]
    env.close()
    assert wins <= 1


def test_time_limit_interrupts_a_hanging_call():
    started = time.perf_counter()
    with pytest.raises(ExpertFailure, match="no answer within 0.05 s"):
        with time_limit(0.05, "sleeper"):
            time.sleep(2)
    assert time.perf_counter() - started < 1.0


def test_babyai_expert_step_budget():
    env = BabyAIEnv("BabyAI-PutNextLocal-v0")
    env.reset(seed=0)
    expert = BabyAIExpert(max_steps=2)
    expert.reset(env)
    env.step(expert.act())
    env.step(expert.act())
    with pytest.raises(ExpertFailure, match="2-step budget"):
        expert.act()


def test_experts_reject_the_wrong_env():
    with pytest.raises(TypeError, match="needs a ReachEnv"):
        ReachExpert().reset(BabyAIEnv())


def test_expert_info_wrapper_reports_actions_and_failures():
    env = ExpertInfo(BabyAIEnv("BabyAI-GoToLocal-v0"))
    obs, info = env.reset(seed=3)
    assert info["expert_failed"] is False and 0 <= info["expert_action"] < 7
    while True:
        obs, _, terminated, truncated, info = env.step(info["expert_action"])
        if terminated or truncated:
            break
    assert info["is_success"]

    failing = ExpertInfo(BabyAIEnv("BabyAI-GoToObjMaze-v0"), max_steps=1)
    _, info = failing.reset(seed=0)
    _, *_, info = failing.step(info["expert_action"])
    assert info["expert_failed"] is True and 0 <= info["expert_action"] < 7

    reach = ExpertInfo(ReachEnv())
    _, info = reach.reset(seed=0)
    assert info["expert_action"].shape == (2,) and np.all(np.abs(info["expert_action"]) <= 1)
    reach.close()
