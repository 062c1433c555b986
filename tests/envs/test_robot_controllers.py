"""Controllers (any gymnasium env, the MuJoCo arm at its own rate) and chunk clamping, in-process."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from graft.envs.robot.control_loop import clamp_chunk
from graft.envs.robot.controllers import GymController, ReachJointController, box_safe_action, make_controller


def test_babyai_controller_holds_done_and_steps_the_env():
    ctl = make_controller("babyai_goto", episode_seconds=0.5)
    assert isinstance(ctl, GymController) and ctl.rate_hz == 10.0 and ctl.max_ticks == 5
    assert ctl.safe_action() == 6  # "done": a pass in minigrid, never a movement
    ctl.reset(seed=0)
    before = ctl.observe()["grid"].copy()
    pose = (ctl.env.unwrapped.minigrid.agent_pos, ctl.env.unwrapped.minigrid.agent_dir)
    for _ in range(3):
        ctl.apply(ctl.safe_action())
    assert (ctl.env.unwrapped.minigrid.agent_pos, ctl.env.unwrapped.minigrid.agent_dir) == pose
    assert (ctl.observe()["grid"] == before).all() and not ctl.done
    ctl.apply(0)
    ctl.apply(0)
    assert ctl.done and not ctl.success  # the 0.5 s budget at 10 Hz
    ctl.close()


def test_box_safe_action_is_zero_inside_the_bounds_else_the_middle():
    low, high = np.array([-1.0, 0.5], np.float32), np.array([1.0, 2.0], np.float32)
    space = gym.spaces.Box(low, high, dtype=np.float32)
    assert box_safe_action(space).tolist() == [0.0, 1.25]
    ctl = GymController(gym.make("Pendulum-v1"))
    assert ctl.safe_action().tolist() == [0.0]


def test_a_discrete_env_without_a_no_op_needs_one_named():
    with pytest.raises(ValueError, match="needs safe_action="):
        GymController(gym.make("CartPole-v1"))
    assert GymController(gym.make("CartPole-v1"), safe_action=1).safe_action() == 1


def test_reach_controller_runs_physics_at_its_own_rate_and_the_expert_succeeds():
    from graft.envs.experts import ReachExpert

    ctl = make_controller("mujoco_reach")
    assert isinstance(ctl, ReachJointController) and ctl.rate_hz == 50.0 and ctl.substeps == 2
    assert ctl.max_ticks == 250  # max_steps 100 x 50 ms = 5 s
    expert = ReachExpert()
    wins = 0
    for seed in range(3):
        ctl.reset(seed)
        expert.reset(ctl.env)
        while not ctl.done:
            ctl.apply(expert.act())
        wins += ctl.success
        assert ctl.success, seed
    assert wins == 3
    ctl.close()


def test_reach_safe_action_brakes_and_holds_the_pose():
    ctl = make_controller("mujoco_reach")
    ctl.reset(0)
    for _ in range(10):
        ctl.apply(np.array([1.0, -1.0]))
    assert np.abs(ctl.env.data.qvel[:2]).min() > 1.0
    for _ in range(25):
        ctl.apply(ctl.safe_action())
    held = ctl.env.joint_angles
    for _ in range(25):
        ctl.apply(ctl.safe_action())
    assert np.abs(ctl.env.data.qvel[:2]).max() < 0.05 and np.allclose(ctl.env.joint_angles, held, atol=0.01)
    obs = ctl.observe()
    assert obs["rgb"].shape == (64, 64, 3) and obs["mission"].startswith("reach the")
    ctl.close()


def test_reach_controller_rate_must_be_whole_physics_steps():
    with pytest.raises(ValueError, match="not a whole number of 10 ms physics steps"):
        make_controller("mujoco_reach", rate_hz=30)


def test_clamping_box_chunks():
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    actions = np.array([[0.5, 3.0], [np.nan, 0.0], [-0.2, 0.1]])  # (H=3, 2)
    chunk, clamped, invalid = clamp_chunk(actions, space, 3, np.zeros(2))
    assert np.allclose(chunk, [[0.5, 1.0], [0.0, 0.0], [-0.2, 0.1]]) and chunk.dtype == np.float32
    assert (clamped, invalid) == (1, 1)
    chunk, _, invalid = clamp_chunk(np.zeros((2, 3)), space, 2, np.zeros(2))
    assert chunk.shape == (2, 2) and invalid == 2  # wrong shape: all safe


def test_clamping_discrete_chunks():
    space = gym.spaces.Discrete(7)
    chunk, _, invalid = clamp_chunk(np.array([2, 9, -1, 6]), space, 4, 6)
    assert chunk.tolist() == [2, 6, 6, 6] and invalid == 2
    chunk, _, invalid = clamp_chunk(np.array([1.0, 2.5, np.nan]), space, 3, 6)
    assert chunk.tolist() == [1, 6, 6] and invalid == 2
