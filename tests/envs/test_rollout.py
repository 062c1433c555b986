"""Vectorised rollouts: expert and random policies, per-episode seeds, reset bookkeeping, rollout.json on disk."""
from __future__ import annotations

import json

import numpy as np
import pytest
from graft.envs.actions import ActionError
from graft.envs.babyai import BabyAIEnv
from graft.envs.experts import BabyAIExpert
from graft.envs.rollout import heldout_seeds, load_env_config, make_env_factory, make_policy, rollout
from omegaconf import OmegaConf
from PIL import Image


def test_expert_rollout_on_two_vector_envs_writes_rollout_json(tmp_path):
    summary = rollout("babyai_goto", make_policy("expert"), episodes=5, num_envs=2, seed=0,
                      out_dir=tmp_path, progress=False)
    written = json.loads((tmp_path / "rollout.json").read_text())
    assert written == summary
    assert written["success_rate"] == 1.0 and written["episodes"] == 5
    assert written["seeds"] == [0, 1, 2, 3, 4]  # no seeds given: episode k uses seed + k
    assert [(r["episode"], r["seed"]) for r in written["records"]] == [(k, k) for k in range(5)]
    assert {r["env_index"] for r in written["records"]} == {0, 1}
    assert written["mean_length"] == np.mean([r["length"] for r in written["records"]])
    assert not any(r["expert_failed"] for r in written["records"])
    strip = np.asarray(Image.open(tmp_path / "episode0.png"))
    assert strip.shape[0] == 56 and strip.shape[1] > 56


def test_episode_bookkeeping_matches_a_plain_single_env_run():
    """Episode k is reset with seed + k on whichever sub-env is free; it must look exactly like a plain run."""
    summary = rollout("babyai_putnext", make_policy("expert"), episodes=4, num_envs=2, seed=10,
                      progress=False)
    assert [r["episode"] for r in summary["records"]] == [0, 1, 2, 3]
    for record in summary["records"]:
        env = BabyAIEnv("BabyAI-PutNextLocal-v0")
        env.reset(seed=10 + record["episode"])
        expert, total, steps = BabyAIExpert(), 0.0, 0
        expert.reset(env)
        while True:
            _, reward, terminated, truncated, _ = env.step(expert.act())
            total, steps = total + reward, steps + 1
            if terminated or truncated:
                break
        assert record["seed"] == 10 + record["episode"]
        assert record["length"] == steps and record["return"] == pytest.approx(total)


class StartRecorder:
    """Wraps a policy and keeps the first observation of every episode, in the order episodes start."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.wrap_env = getattr(inner, "wrap_env", None)
        self.starts, self.fresh = [], []

    def reset(self, env_ids):
        self.fresh = [int(i) for i in env_ids]

    def __call__(self, obs, infos):
        self.starts += [{k: np.array(v[i]) for k, v in obs.items()} for i in self.fresh]
        self.fresh = []
        return self.inner(obs, infos)


def same_obs(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], np.asarray(b[k])) for k in a)


@pytest.mark.parametrize("name", ["babyai_goto", "mujoco_reach"])
def test_the_same_seeds_give_every_policy_the_same_episodes(name):
    cfg = load_env_config(name)
    seeds = heldout_seeds(7 if name == "babyai_goto" else 3, 500, exclude={501})
    runs = {}
    for policy, num_envs in (("random", 3), ("expert", 2)):
        recorder = StartRecorder(make_policy(policy, cfg, seed=1))
        summary = rollout(cfg, recorder, seeds=seeds, num_envs=num_envs, progress=False, frames=0)
        assert summary["seeds"] == seeds and [r["seed"] for r in summary["records"]] == seeds
        runs[policy] = recorder.starts[:len(seeds)]  # later starts are unrecorded filler episodes
    env = make_env_factory(cfg)()
    for k, s in enumerate(seeds):
        plain, _ = env.reset(seed=s)
        assert same_obs(runs["random"][k], plain) and same_obs(runs["expert"][k], plain), f"episode {k}, seed {s}"
    env.close()


def test_episode_outcomes_depend_only_on_their_seed_not_on_the_sub_env_count():
    cfg = {**load_env_config("babyai_goto"), "max_steps": 5}  # the expert runs out of steps on some seeds
    seeds = [9, 3, 27, 3, 14, 8, 30, 1]
    outcomes = [[(r["seed"], r["success"], r["length"]) for r in rollout(
        cfg, make_policy("expert"), seeds=seeds, num_envs=n, progress=False, frames=0)["records"]] for n in (1, 3)]
    assert outcomes[0] == outcomes[1]
    assert len({success for _, success, _ in outcomes[0]}) == 2


def test_seeds_and_episodes_must_agree():
    summary = rollout("babyai_goto", make_policy("expert"), episodes=2, seeds=[4, 5], progress=False, frames=0)
    assert summary["episodes"] == 2 and summary["seeds"] == [4, 5]
    with pytest.raises(ValueError, match="episodes=3 but 2 seeds"):
        rollout("babyai_goto", make_policy("expert"), episodes=3, seeds=[4, 5], progress=False)


def test_heldout_seeds_are_distinct_and_skip_excluded_ones():
    assert heldout_seeds(5, 10, exclude=[11, 13, 99]) == [10, 12, 14, 15, 16]
    assert heldout_seeds(3, 0) == [0, 1, 2] and heldout_seeds(0, 7) == []
    seeds = heldout_seeds(100, 1000, exclude=range(1000, 1050))
    assert len(set(seeds)) == 100 and min(seeds) == 1050


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
    assert summary["episodes"] == 6
    assert policy.resets == [0, 1, 2, 0, 1, 2]  # no autoreset after the last episodes


def test_bad_actions_and_names_are_clear_errors():
    with pytest.raises(ActionError, match="sub-env 0"):
        rollout("babyai_goto", lambda obs, infos: np.array([np.nan, 1.0]), episodes=2, progress=False)
    with pytest.raises(ValueError, match="unknown policy 'checkpoint'"):
        make_policy("checkpoint", "babyai_goto")


def test_async_vector_env_with_expert_in_workers():
    summary = rollout("babyai_goto", make_policy("expert"), episodes=3, num_envs=2, seed=0,
                      vector="async", progress=False)
    sync = rollout("babyai_goto", make_policy("expert"), episodes=3, num_envs=2, seed=0, progress=False)
    assert summary["success_rate"] == 1.0
    assert [(r["seed"], r["length"]) for r in summary["records"]] == [(r["seed"], r["length"]) for r in sync["records"]]
