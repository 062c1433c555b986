"""Action validation: every action is checked against the gymnasium action space before an env sees it.

A policy that emits NaN, a wrong shape, a non-integer for a discrete space or a value outside a
Box gets an `ActionError` naming the space and the value, instead of a silently clipped or
wrapped-around action deep inside a simulator.

    validate_action(space, action)          one action for one env → the action as the space's type
    validate_actions(single_space, batch)   a (num_envs, ...) batch for a vector env
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class ActionError(ValueError):
    """An action does not belong to the action space it is meant for."""


def _fail(space: gym.Space, action: Any, why: str) -> ActionError:
    is_array = isinstance(action, np.ndarray)
    shown = np.array2string(action, precision=4, threshold=20) if is_array else repr(action)
    return ActionError(f"invalid action {shown} for action space {space}: {why}")


def _as_array(space: gym.Space, action: Any) -> np.ndarray:
    if hasattr(action, "detach"):  # torch tensor
        action = action.detach().cpu().numpy()
    try:
        return np.asarray(action)
    except Exception as exc:
        raise _fail(space, action, f"not convertible to an array ({exc})") from exc


def validate_action(space: gym.Space, action: Any) -> Any:
    """Return `action` converted to what `space` holds (int, ndarray, ...) or raise ActionError."""
    if isinstance(space, gym.spaces.Discrete):
        arr = _as_array(space, action)
        if arr.shape != ():
            raise _fail(space, arr, f"expected a single integer, got shape {arr.shape}")
        if arr.dtype.kind == "f":
            if not np.isfinite(arr):
                raise _fail(space, arr, "NaN or infinite")
            if arr != np.round(arr):
                raise _fail(space, arr, "expected an integer, got a fractional number")
        elif arr.dtype.kind not in "iu":
            raise _fail(space, action, f"expected an integer, got {arr.dtype}")
        value = int(arr)
        if not space.start <= value < space.start + space.n:
            raise _fail(space, value, f"outside [{space.start}, {space.start + space.n - 1}]")
        return value
    if isinstance(space, gym.spaces.Box):
        arr = _as_array(space, action)
        if arr.dtype.kind not in "iuf":
            raise _fail(space, action, f"expected numbers, got dtype {arr.dtype}")
        if arr.shape != space.shape:
            raise _fail(space, arr, f"expected shape {space.shape}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise _fail(space, arr, "contains NaN or infinite values")
        arr = arr.astype(space.dtype)
        below, above = arr < space.low, arr > space.high
        if np.any(below | above):
            idx = np.flatnonzero(below | above)[:5].tolist()
            raise _fail(space, arr, f"out of bounds at flat index {idx} "
                                    f"(low {space.low.ravel()[idx]}, high {space.high.ravel()[idx]})")
        return arr
    if isinstance(space, gym.spaces.MultiDiscrete):
        arr = _as_array(space, action)
        if arr.shape != space.shape or arr.dtype.kind not in "iu":
            raise _fail(space, arr, f"expected integers of shape {space.shape}, got {arr.dtype} {arr.shape}")
        if not space.contains(arr.astype(space.dtype)):
            raise _fail(space, arr, "outside the space's bounds")
        return arr.astype(space.dtype)
    if not space.contains(action):
        raise _fail(space, action, "not contained in the space")
    return action


def validate_actions(single_space: gym.Space, actions: Any, num_envs: int) -> np.ndarray:
    """Validate a batch for a vector env: `actions` has `num_envs` rows, one per sub-env."""
    arr = _as_array(single_space, actions)
    if arr.ndim == 0 or arr.shape[0] != num_envs:
        raise ActionError(f"expected a batch of {num_envs} actions for {single_space}, got shape {arr.shape}")
    checked = []
    for i in range(num_envs):
        try:
            checked.append(validate_action(single_space, arr[i]))
        except ActionError as exc:
            raise ActionError(f"sub-env {i}: {exc}") from None
    return np.stack([np.asarray(a) for a in checked]).astype(
        single_space.dtype if single_space.dtype is not None else arr.dtype)
