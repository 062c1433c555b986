"""Vectorised rollouts: expert and random policies, autoreset bookkeeping, rollout.json on disk."""
from __future__ import annotations

import json

import numpy as np
import pytest
from graft.envs.actions import ActionError
from graft.envs.babyai import BabyAIEnv
from graft.envs.experts import BabyAIExpert
from graft.envs.rollout import load_env_config, make_policy, rollout
from omegaconf import OmegaConf
from PIL import Image


def test_expert_rollout_on_two_vector_envs_writes_rollout_json(tmp_path):
    summary = rollout("babyai_goto", make_policy("expert"), episodes=5, num_envs=2, seed=0,
                      out_dir=tmp_path, progress=False)
    written = json.loads((tmp_path / "rollout.json").read_text())
    assert written == summary
    assert written["success_rate"] == 1.0 and written["episodes"] == 5
    assert [r["env_index"] for r in written["records"]] == [0, 0, 0, 1, 1]
    assert written["mean_length"] == np.mean([r["length"] for r in written["records"]])
    assert not any(r["expert_failed"] for r in written["records"])
    strip = np.asarray(Image.open(tmp_path / "episode0.png"))
    assert strip.shape[0] == 56 and strip.shape[1] > 56


def test_episode_bookkeeping_matches_a_plain_single_env_run():
    """Sub-env i starts with seed + i; its first episode must look exactly like a plain run."""
    summary = rollout("babyai_putnext", make_policy("expert"), episodes=4, num_envs=2, seed=10,
                      progress=False)
    for index in (0, 1):
        env = BabyAIEnv("BabyAI-PutNextLocal-v0")
        env.reset(seed=10 + index)
        expert, total, steps = BabyAIExpert(), 0.0, 0
        expert.reset(env)
        while True:
            _, reward, terminated, truncated, _ = env.step(expert.act())
            total, steps = total + reward, steps + 1
            if terminated or truncated:
                break
        first = next(r for r in summary["records"] if r["env_index"] == index and r["episode"] == 0)
        assert first["length"] == steps and first["return"] == pytest.approx(total)


def test_reach_expert_beats_random(tmp_path):
    cfg = load_env_config("mujoco_reach")
    expert = rollout(cfg, make_policy("expert"), episodes=4, num_envs=2, progress=False)
    random = rollout(cfg, make_policy("random", cfg, seed=0), episodes=2, num_envs=2, progress=False)
    assert expert["success_rate"] == 1.0
    assert random["mean_length"] > expert["mean_length"] and random["mean_return"] < expert["mean_return"]


def test_policy_reset_hook_sees_every_episode_start():
    class Counting:
        name = "counting"

        def __init__(self):
            self.resets = []

        def reset(self, env_ids):
            self.resets.extend(int(i) for i in env_ids)

        def __call__(self, obs, infos):
            assert obs["grid"].shape == (3, 7, 7, 3) and len(obs["mission"]) == 3
            return np.zeros(3, dtype=int)  # always turn left: never picks anything up

    policy = Counting()
    cfg = OmegaConf.create({"_target_": "graft.envs.babyai.make_babyai_env",
                            "level": "BabyAI-PickupLoc-v0", "max_steps": 6})
    summary = rollout(cfg, policy, episodes=6, num_envs=3, progress=False)
    assert summary["mean_length"] == 6.0 and summary["policy"] == "counting"
    assert policy.resets[:3] == [0, 1, 2] and len(policy.resets) == 3 + 6


def test_bad_actions_and_names_are_clear_errors():
    with pytest.raises(ActionError, match="sub-env 0"):
        rollout("babyai_goto", lambda obs, infos: np.array([np.nan, 1.0]), episodes=2, progress=False)
    with pytest.raises(ValueError, match="unknown policy 'checkpoint'"):
        make_policy("checkpoint", "babyai_goto")


def test_async_vector_env_with_expert_in_workers():
    summary = rollout("babyai_goto", make_policy("expert"), episodes=2, num_envs=2, seed=0,
                      vector="async", progress=False)
    sync = rollout("babyai_goto", make_policy("expert"), episodes=2, num_envs=2, seed=0, progress=False)
    assert summary["success_rate"] == 1.0
    assert [r["length"] for r in summary["records"]] == [r["length"] for r in sync["records"]]
