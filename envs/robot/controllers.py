"""Robot controllers: what the fixed-rate control loop (`control_loop.ControlLoop`) drives, real or
simulated (the `Controller` protocol). Two implementations:

- `GymController` wraps any gymnasium env: observe = the last observation, apply = `env.step`
  (one env step per tick), safe action = zeros (clipped into the bounds) for a Box space, and a
  configured no-op for a Discrete one: BabyAI's "done", a pass in minigrid (the agent neither moves
  nor turns nor touches anything), or with BABYAI_DONE_ACTIONS set the end of the episode as a
  failure: never a movement. It still uses up one of the episode's steps, as time does on a robot.
- `ReachJointController` drives the MuJoCo reach arm's joint-velocity actuators at its own rate
  (default 50 Hz: two 10 ms physics steps per tick), independent of the rate the policy answers
  at. Commands are clipped to [-1, 1] x max_joint_speed and slew-limited to `max_accel` (rad/s^2);
  the safe action is zero velocity (the velocity actuators brake the joints and hold the pose).
  The camera renders only when the loop asks for an observation, not on every tick.
"""
from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np


class Controller(Protocol):
    rate_hz: float  # ticks per second; `apply` is called once per tick
    action_space: gym.Space  # the space of one action (actions are clamped into it)

    def observe(self) -> dict[str, Any]:
        """The current observation (modality arrays + mission), no side effects."""

    def apply(self, action: Any) -> None:
        """Command one action for one tick (blocks for no longer than the tick's work)."""

    def safe_action(self) -> Any:
        """What to command when the policy has nothing valid in time."""

    # episodes, for simulators standing in for a robot
    def reset(self, seed: int | None = None) -> None: ...

    @property
    def done(self) -> bool: ...

    @property
    def success(self) -> bool: ...

    def close(self) -> None: ...


def box_safe_action(space: gym.spaces.Box) -> np.ndarray:
    """Zeros where zero is inside the bounds, else the middle of the bounds."""
    zero = np.zeros(space.shape, space.dtype)
    middle = ((space.low.astype(np.float64) + space.high) / 2).astype(space.dtype)
    return np.where((space.low <= 0) & (0 <= space.high), zero, middle).astype(space.dtype)


class GymController:
    """Any gymnasium env as a robot: one `env.step` per tick (see the module docstring)."""

    def __init__(self, env: gym.Env, rate_hz: float = 10.0, safe_action: Any = None,
                 episode_seconds: float | None = None):
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        self.env, self.rate_hz = env, float(rate_hz)
        self.action_space = env.action_space
        self._safe = self._resolve_safe(safe_action)
        # None: the env's own termination and truncation end an episode
        self.max_ticks = None if episode_seconds is None else max(1, round(episode_seconds * self.rate_hz))
        self._obs: dict[str, Any] | None = None
        self._done, self._success, self._ticks = False, False, 0

    def _resolve_safe(self, safe: Any) -> Any:
        space = self.action_space
        if isinstance(space, gym.spaces.Box):
            action = box_safe_action(space) if safe is None else np.asarray(safe, space.dtype)
            if not space.contains(action):
                raise ValueError(f"safe action {action} is outside {space}")
            return action
        if isinstance(space, gym.spaces.Discrete):
            names = list(getattr(self.env.unwrapped, "action_names", None) or [])
            if safe is None and "done" in names:
                safe = "done"
            if isinstance(safe, str):
                if safe not in names:
                    raise ValueError(f"safe action {safe!r} is not one of the env's action names {names}")
                safe = names.index(safe) + int(space.start)
            if safe is None:
                raise ValueError(f"a Discrete({space.n}) env without a 'done' action needs safe_action= "
                                 "(the index or name of an action that does nothing)")
            if not space.contains(int(safe)):
                raise ValueError(f"safe action {safe} is outside {space}")
            return int(safe)
        raise TypeError(f"GymController supports Box and Discrete action spaces, got {space}")

    def reset(self, seed: int | None = None) -> None:
        self._obs, _ = self.env.reset(seed=seed)
        self._done, self._success, self._ticks = False, False, 0

    def observe(self) -> dict[str, Any]:
        if self._obs is None:
            raise RuntimeError("observe() before reset(): the env has no observation yet")
        return self._obs

    def apply(self, action: Any) -> None:
        if self._done:
            return
        self._obs, _, terminated, truncated, info = self.env.step(action)
        self._ticks += 1
        self._success = self._success or bool(info.get("is_success", False))
        out_of_time = self.max_ticks is not None and self._ticks >= self.max_ticks
        self._done = bool(terminated or truncated) or out_of_time

    def safe_action(self) -> Any:
        return self._safe.copy() if isinstance(self._safe, np.ndarray) else self._safe

    @property
    def done(self) -> bool:
        return self._done

    @property
    def success(self) -> bool:
        return self._success

    def close(self) -> None:
        self.env.close()


class ReachJointController:
    """Joint-velocity control of the MuJoCo reach arm at its own rate (see the module docstring)."""

    def __init__(self, env: gym.Env, rate_hz: float = 50.0, max_accel: float | None = 200.0,
                 episode_seconds: float | None = None):
        from graft.envs.mujoco_reach import ReachEnv

        env = env.unwrapped
        if not isinstance(env, ReachEnv):
            raise TypeError(f"ReachJointController needs a ReachEnv, got {type(env).__name__}")
        timestep = float(env.model.opt.timestep)
        substeps = round(1.0 / (rate_hz * timestep))
        if substeps < 1 or abs(substeps * timestep * rate_hz - 1.0) > 1e-6:
            rates = ", ".join(f"{1 / (n * timestep):g}" for n in (1, 2, 4, 5, 10))
            raise ValueError(f"rate_hz={rate_hz} is not a whole number of {timestep * 1000:g} ms physics "
                             f"steps (try {rates})")
        self.env, self.rate_hz, self.substeps = env, float(rate_hz), substeps
        self.action_space = env.action_space
        self.max_accel = None if max_accel is None else float(max_accel)
        if episode_seconds is None:  # the env's own episode length
            episode_seconds = env.max_steps * env.dt
        self.max_ticks = max(1, round(episode_seconds * self.rate_hz))
        self._command = np.zeros(2)  # rad/s, the last velocity commanded
        self._ticks, self._success = 0, False

    def reset(self, seed: int | None = None) -> None:
        self.env.reset(seed=seed)
        self._command[:] = 0.0
        self._ticks, self._success = 0, False

    def observe(self) -> dict[str, Any]:
        return self.env.observe()

    def apply(self, action: Any) -> None:
        import mujoco

        if self.done:
            return
        action = np.asarray(action, dtype=np.float64).reshape(2)  # (2,) in [-1, 1]
        target = np.clip(np.nan_to_num(action), -1.0, 1.0) * self.env.max_joint_speed  # rad/s
        if self.max_accel is not None:  # slew-rate limit: no step change faster than max_accel
            step = self.max_accel / self.rate_hz
            target = self._command + np.clip(target - self._command, -step, step)
        self._command = target
        self.env.data.ctrl[:] = target
        mujoco.mj_step(self.env.model, self.env.data, nstep=self.substeps)
        self._ticks += 1
        self._success = self._success or self.env.distance() <= self.env.success_radius

    def safe_action(self) -> np.ndarray:
        return np.zeros(2, np.float32)

    @property
    def done(self) -> bool:
        return self._success or self._ticks >= self.max_ticks

    @property
    def success(self) -> bool:
        return self._success

    def close(self) -> None:
        self.env.close()


def make_controller(env_cfg: Any, rate_hz: float | None = None, episode_seconds: float | None = None,
                    **kwargs) -> Controller:
    """The controller for an env config: ReachJointController for mujoco_reach, else GymController.

    `rate_hz` None means 50 Hz for the reach arm and 10 Hz for other envs; `episode_seconds` None
    means the env's own episode length (max_steps x dt for the arm, its own truncation otherwise).
    """
    from graft.envs.mujoco_reach import ReachEnv
    from graft.envs.rollout import make_env_factory

    env = make_env_factory(env_cfg)()
    if isinstance(env.unwrapped, ReachEnv):
        return ReachJointController(env, rate_hz=rate_hz or 50.0, episode_seconds=episode_seconds, **kwargs)
    return GymController(env, rate_hz=rate_hz or 10.0, episode_seconds=episode_seconds, **kwargs)
