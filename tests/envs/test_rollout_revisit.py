"""rollout(stop_on_revisit=...): a deterministic memoryless policy's episode ends at its first repeated exact
state, with the outcome the uninterrupted run has; other policies and envs without a state key run in full."""
from __future__ import annotations

import ast
from pathlib import Path

import graft.envs
import gymnasium as gym
import numpy as np
import pytest
from graft.envs.babyai import BabyAIEnv
from graft.envs.rollout import load_env_config, make_policy, rollout
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from minigrid.core.world_object import Ball, Box, Key
from user_sensors import ForceSensor, LineWorld, path

LEFT, RIGHT, FORWARD = 0, 1, 2
MAX_STEPS = 64  # BabyAI-GoToLocal-v0's own limit (babyai_goto.yaml keeps it)
PASSABLE = {OBJECT_TO_IDX["empty"], OBJECT_TO_IDX["floor"]}


class Constant:
    """The same action every step: "left" turns on the spot (back where it was after 4 steps), "forward"
    walks to the first wall or object and stays there."""

    deterministic = True

    def __init__(self, action: int):
        self.action, self.name = action, f"constant_{action}"

    def act(self, grid: np.ndarray, mission: str) -> int:
        return self.action

    def __call__(self, obs: dict, infos: dict) -> np.ndarray:
        if "grid" not in obs:  # LineWorld
            return np.full(len(obs["mission"]), self.action)
        return np.array([self.act(obs["grid"][i], obs["mission"][i]) for i in range(len(obs["mission"]))])


class Seek(Constant):
    """Memoryless and greedy: heads for the mission's object when it sees it, else walks and turns right at
    obstacles. It reaches the object on most seeds and loops on the others."""

    def __init__(self):
        self.name = "seek"

    def act(self, grid: np.ndarray, mission: str) -> int:
        colour, kind = mission.split()[-2:]
        hits = np.argwhere((grid[..., 0] == OBJECT_TO_IDX[kind]) & (grid[..., 1] == COLOR_TO_IDX[colour]))
        free = grid[5, 3, 0] in PASSABLE  # the cell ahead of the agent (row 6, col 3)
        if len(hits):
            row, col = min(hits.tolist(), key=lambda rc: abs(rc[0] - 6) + abs(rc[1] - 3))
            return FORWARD if col == 3 or (row < 6 and free) else LEFT if col < 3 else RIGHT
        return FORWARD if free else RIGHT


class Undeclared(Constant):
    deterministic = None  # what a policy class without the attribute looks like


def reference(policy: Constant, seed: int) -> tuple[int, bool, bool]:
    """(length, success, stopped) of one episode, stepped by hand on a plain env: it stops after the step
    that reaches a state seen before in the episode (the first such step)."""
    env = BabyAIEnv("BabyAI-GoToLocal-v0")
    obs, _ = env.reset(seed=seed)
    seen, steps = {env.state_key()}, 0
    while True:
        obs, _, terminated, truncated, info = env.step(policy.act(obs["grid"], obs["mission"]))
        steps += 1
        if terminated or truncated:
            return steps, info["is_success"], False
        if env.state_key() in seen:
            return steps, False, True
        seen.add(env.state_key())


@pytest.mark.parametrize("policy", [Constant(LEFT), Constant(FORWARD), Seek()], ids=["left", "forward", "seek"])
def test_stopping_at_a_revisit_keeps_every_episodes_outcome(policy):
    seeds = list(range(10))
    full = rollout("babyai_goto", policy, seeds=seeds, num_envs=3, progress=False, frames=0, stop_on_revisit=False)
    cut = rollout("babyai_goto", policy, seeds=seeds, num_envs=3, progress=False, frames=0)  # auto: on
    assert not full["stop_on_revisit"] and full["stopped_at_revisit"] == 0
    assert not any("stopped_at_revisit" in r for r in full["records"])
    assert cut["stop_on_revisit"] and cut["success_rate"] == full["success_rate"]
    assert cut["stopped_at_revisit"] == sum(r["stopped_at_revisit"] for r in cut["records"]) > 0
    for whole, short in zip(full["records"], cut["records"]):
        assert short["seed"] == whole["seed"] and short["success"] == whole["success"]
        assert (short["length"], short["success"], short["stopped_at_revisit"]) == reference(policy, short["seed"])
        if short["stopped_at_revisit"]:  # the full run loops until the step limit: a failure with no reward
            assert whole["length"] == MAX_STEPS and not whole["success"] and whole["return"] == 0.0
            assert short["return"] == 0.0 and short["length"] < MAX_STEPS
        else:  # episodes that end by themselves are untouched
            assert {k: v for k, v in short.items() if k not in ("stopped_at_revisit", "env_index")} == \
                   {k: v for k, v in whole.items() if k != "env_index"}
    assert cut["env_steps"] < full["env_steps"]
    if policy.name == "constant_0":  # turning on the spot: back at the start after 4 turns
        assert all(r["stopped_at_revisit"] and r["length"] <= 5 for r in cut["records"])
    if policy.name == "seek":  # both kinds of episode are covered
        assert {r["stopped_at_revisit"] for r in cut["records"]} == {True, False}
        assert {r["success"] for r in cut["records"]} == {True, False}


def test_only_policies_that_declare_deterministic_are_stopped_by_default():
    cfg = {**load_env_config("babyai_goto"), "max_steps": 12}
    for policy in (Undeclared(LEFT), make_policy("random", cfg, seed=0)):
        summary = rollout(cfg, policy, seeds=[0, 1, 2], num_envs=2, progress=False, frames=0)
        assert not summary["stop_on_revisit"] and summary["stopped_at_revisit"] == 0
        assert not any("stopped_at_revisit" in r for r in summary["records"])
        if policy.name != "random":
            assert all(r["length"] == 12 for r in summary["records"])
    assert not getattr(make_policy("expert"), "deterministic", False)  # the BabyAI bot keeps a plan
    forced = rollout(cfg, Undeclared(LEFT), seeds=[0, 1, 2], num_envs=2, progress=False, frames=0,
                     stop_on_revisit=True)  # the caller vouches for the policy
    assert forced["stopped_at_revisit"] == 3 and all(r["length"] == 4 for r in forced["records"])
    off = rollout(cfg, Constant(LEFT), seeds=[0, 1], num_envs=2, progress=False, frames=0, stop_on_revisit=False)
    assert off["stopped_at_revisit"] == 0 and all(r["length"] == 12 for r in off["records"])


def test_the_text_agent_declares_deterministic():
    """Read from agent/policy.py's source: importing graft.agent (torch, transformers) costs seconds."""
    source = Path(graft.envs.__file__).parents[1] / "agent" / "policy.py"
    classes = {node.name: node for node in ast.parse(source.read_text()).body if isinstance(node, ast.ClassDef)}

    def declared(name: str) -> list:
        return [ast.literal_eval(stmt.value) for stmt in classes[name].body if isinstance(stmt, ast.Assign)
                and any(getattr(t, "id", None) == "deterministic" for t in stmt.targets)]
    assert declared("Agent") == [True] and declared("Policy") == []


class HidesState(gym.Wrapper):
    """A wrapper whose observations would not follow from the inner state turns the stop off."""

    state_key = None


def test_envs_without_a_state_key_are_never_stopped_and_wrappers_do_not_hide_it():
    line = rollout({"_target_": path(LineWorld), "max_steps": 10}, Constant(0), seeds=[0, 1], num_envs=2,
                   progress=False, frames=0)  # walks left into position 0.0 and stays there
    assert not line["stop_on_revisit"] and [r["length"] for r in line["records"]] == [10, 10]
    goto = {**load_env_config("babyai_goto"), "max_steps": 12}
    hidden = rollout({**goto, "wrappers": [path(HidesState)]}, Constant(LEFT), seeds=[0, 1],
                     progress=False, frames=0)
    assert not hidden["stop_on_revisit"] and [r["length"] for r in hidden["records"]] == [12, 12]
    sensed = rollout({**goto, "wrappers": [path(ForceSensor)]}, Constant(LEFT), seeds=[0, 1], progress=False,
                     frames=0)
    assert sensed["stopped_at_revisit"] == 2 and [r["length"] for r in sensed["records"]] == [4, 4]


def test_async_workers_stop_like_sync_ones():
    kwargs = {"seeds": [3, 14, 15], "num_envs": 2, "progress": False, "frames": 0}
    sync = rollout("babyai_goto", Seek(), **kwargs)
    spawned = rollout("babyai_goto", Seek(), vector="async", **kwargs)
    assert spawned["stop_on_revisit"]
    assert [(r["seed"], r["length"], r["success"], r["stopped_at_revisit"]) for r in spawned["records"]] == \
           [(r["seed"], r["length"], r["success"], r["stopped_at_revisit"]) for r in sync["records"]]


def test_babyai_state_key_is_the_exact_level_state():
    env = BabyAIEnv("BabyAI-GoToLocal-v0")
    assert env.state_key() is None  # before the first reset
    env.reset(seed=5)
    start = env.state_key()
    hash(start)
    for _ in range(3):
        env.step(LEFT)
        assert env.state_key() != start  # another heading
    env.step(LEFT)
    assert env.state_key() == start
    env.minigrid.step_count = 40
    assert env.state_key() == start  # the step count is not part of it
    env.minigrid.agent_pos = (env.minigrid.agent_pos[0] + 1, env.minigrid.agent_pos[1])
    assert env.state_key() != start
    env.reset(seed=5)
    assert env.state_key() == start
    level = env.minigrid
    level.carrying = Ball("red")
    assert env.state_key() != start  # what it carries
    level.carrying = None
    level.instrs.lastStepMatch = True
    assert env.state_key() != start  # the mission verifier's progress
    level.instrs.lastStepMatch = False
    free = next(i for i, cell in enumerate(level.grid.grid) if cell is None)
    level.grid.grid[free] = Box("red")
    boxed = env.state_key()
    assert boxed != start  # the grid
    level.grid.grid[free].contains = Key("blue")
    assert env.state_key() not in (start, boxed)  # and what a box holds
    level.grid.grid[free] = None
    assert env.state_key() == start
    env.reset(seed=6)
    assert env.state_key() != start


def test_random_escape_never_repeats_an_action_at_an_observation_until_all_were_taken():
    import gymnasium as gym
    from graft.envs.rollout import RandomEscapePolicy

    policy = RandomEscapePolicy(gym.spaces.Discrete(3, start=1), seed=0)
    obs = {"grid": np.zeros((2, 7, 7, 3), np.uint8), "mission": ("go to the ball", "go to the key")}
    taken = [policy(obs, {}) for _ in range(3)]
    for i in range(2):  # each sub-env: all three actions once, in some order
        assert sorted(int(t[i]) for t in taken) == [1, 2, 3]
    assert set(np.concatenate([policy(obs, {}) for _ in range(6)]).tolist()) <= {1, 2, 3}  # then any
    policy.reset([0])
    fresh = [int(policy(obs, {})[0]) for _ in range(3)]
    assert sorted(fresh) == [1, 2, 3]  # sub-env 0 forgot its episode
    again = RandomEscapePolicy(gym.spaces.Discrete(3, start=1), seed=0)
    assert [a.tolist() for a in (again(obs, {}) for _ in range(3))] == [a.tolist() for a in taken]  # seeded
    with pytest.raises(ValueError, match="Discrete"):
        RandomEscapePolicy(gym.spaces.Box(-1, 1, (2,)), seed=0)


def test_majority_escape_takes_the_most_common_untaken_action_and_beats_a_constant_policy():
    """At a new observation the first action of `order`; at a repeated one the next not yet taken there
    (then the first again); the rest of the action space follows `order`. In BabyAI the memory lets
    always-forward leave the wall it would walk into for ever, so on the same seeds it succeeds at
    least as often as the memoryless constant policy."""
    from graft.envs.rollout import MajorityEscapePolicy

    policy = MajorityEscapePolicy(gym.spaces.Discrete(4), order=[2, 0])
    assert policy.order == [2, 0, 1, 3] and policy.deterministic
    obs = {"grid": np.zeros((2, 7, 7, 3), np.uint8), "mission": ("go to the ball", "go to the key")}
    assert [policy(obs, {}).tolist() for _ in range(5)] == [[2, 2], [0, 0], [1, 1], [3, 3], [2, 2]]
    policy.reset([1])
    assert policy(obs, {}).tolist() == [2, 2]  # sub-env 1 forgot; sub-env 0 has taken every action
    for bad in ([], [2, 2], [4]):
        with pytest.raises(ValueError, match="order must list distinct actions"):
            MajorityEscapePolicy(gym.spaces.Discrete(4), order=bad)
    with pytest.raises(ValueError, match="Discrete"):
        MajorityEscapePolicy(gym.spaces.Box(-1, 1, (2,)), order=[0])
    with pytest.raises(ValueError, match="needs order="):
        make_policy("majority_escape", "babyai_goto")

    cfg, seeds = load_env_config("babyai_goto"), list(range(400, 440))
    majority = rollout(cfg, make_policy("majority_escape", cfg, order=[FORWARD, LEFT, RIGHT]), seeds=seeds,
                       num_envs=4, progress=False, frames=0)
    constant = rollout(cfg, Constant(FORWARD), seeds=seeds, num_envs=4, progress=False, frames=0)
    assert majority["stop_on_revisit"] and majority["success_rate"] >= constant["success_rate"]
    assert majority["env_steps"] > constant["env_steps"]  # the memory walks on where the constant policy stops
