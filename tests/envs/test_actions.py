"""Action validation: NaN, wrong shape, wrong type and out-of-space actions never reach an env."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from graft.envs.actions import ActionError, validate_action, validate_actions

DISCRETE = gym.spaces.Discrete(7)
BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def test_valid_actions_pass_converted():
    assert validate_action(DISCRETE, np.int64(3)) == 3 and validate_action(DISCRETE, 6.0) == 6
    out = validate_action(BOX, [0.5, -1.0])
    assert out.dtype == np.float32 and out.tolist() == [0.5, -1.0]


@pytest.mark.parametrize("space, action, message", [
    (DISCRETE, float("nan"), r"invalid action nan for action space Discrete\(7\): NaN"),
    (DISCRETE, 7, r"invalid action 7 for action space Discrete\(7\): outside \[0, 6\]"),
    (DISCRETE, -1, r"outside \[0, 6\]"),
    (DISCRETE, 2.5, r"fractional"),
    (DISCRETE, [1, 2], r"expected a single integer, got shape \(2,\)"),
    (DISCRETE, "forward", r"expected an integer"),
    (BOX, [np.nan, 0.0], r"for action space Box\(-1.0, 1.0, \(2,\), float32\): contains NaN"),
    (BOX, [1.5, 0.0], r"\[1.5 0. \].*out of bounds at flat index \[0\]"),
    (BOX, [0.0, 0.0, 0.0], r"expected shape \(2,\), got \(3,\)"),
    (BOX, ["a", "b"], r"expected numbers"),
])
def test_invalid_actions_raise_naming_space_and_value(space, action, message):
    with pytest.raises(ActionError, match=message):
        validate_action(space, action)


def test_batches_name_the_sub_env():
    assert validate_actions(BOX, np.zeros((3, 2)), 3).shape == (3, 2)
    with pytest.raises(ActionError, match="expected a batch of 3 actions"):
        validate_actions(BOX, np.zeros((2, 2)), 3)
    with pytest.raises(ActionError, match="sub-env 1: invalid action"):
        validate_actions(DISCRETE, np.array([1, 9, 2]), 3)

