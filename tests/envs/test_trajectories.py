"""Expert trajectories: goal views, captions, action chunks, disjoint train/test seeds."""
from __future__ import annotations

import numpy as np
import pytest
from graft.envs.trajectories import action_chunks, expert_splits


def test_action_chunks_start_at_every_step_and_repeat_the_last_action():
    actions = np.arange(8, dtype=np.float32).reshape(4, 2)  # (T=4, A=2)
    chunks = action_chunks(actions, 3)
    assert chunks.shape == (4, 3, 2)
    np.testing.assert_array_equal(chunks[0], actions[:3])
    np.testing.assert_array_equal(chunks[3], np.stack([actions[3]] * 3))
    np.testing.assert_array_equal(chunks[2], [actions[2], actions[3], actions[3]])


def test_bad_actions_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"non-empty \(T, A\) array of actions, got shape \(4,\)"):
        action_chunks(np.zeros(4), 3)
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        action_chunks(np.zeros((4, 2)), 0)


def test_babyai_episodes_end_at_the_goal_view_with_its_caption():
    data = expert_splits("babyai_goto", {"train": 3, "test": 2}, seed=0)
    train, test = data["train"], data["test"]
    assert len(train) == 3 and len(test) == 2
    assert not {t.seed for t in train} & {t.seed for t in test}
    t = train[0]
    assert len(t.observations) == len(t) + 1 and t.actions.shape == (len(t), 1)
    assert t.goal.shape == (56, 56, 3) and t.goal.dtype == np.uint8
    assert t.goal is t.observations[-1]["rgb"] and t.first is t.observations[0]
    assert t.goal_caption.startswith("I see") and t.mission.startswith("go to")
    target = t.mission.removeprefix("go to the ").removeprefix("go to a ")
    assert target in t.goal_caption  # the goal view shows the object the mission names


def test_reach_episodes_hold_continuous_expert_actions():
    (t,) = expert_splits("mujoco_reach", {"train": 1}, seed=3)["train"]
    assert t.actions.shape == (len(t), 2) and t.actions.dtype == np.float32
    assert np.abs(t.actions).max() <= 1.0
    assert "touches the" in t.goal_caption  # the final view: the fingertip on the target
    chunks = action_chunks(t.actions, 16)
    assert chunks.shape == (len(t), 16, 2)
