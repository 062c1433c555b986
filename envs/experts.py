"""Expert policies computed from simulator state, for demonstrations and expert rollouts.

- `BabyAIExpert`: minigrid's `BabyAIBot`, bounded by a step count and by wall time (it loops for
  ever on a few seeds of some levels); running out of either raises `ExpertFailure`.
- `ReachExpert`: damped-least-squares inverse kinematics on the fingertip Jacobian of `ReachEnv`.
- `ExpertInfo`: a wrapper that runs the env's expert next to it and puts the action it would take
  now into `info["expert_action"]` (after reset and after every non-final step). Because the expert
  lives inside the wrapped env, it works unchanged in `SyncVectorEnv` and in `AsyncVectorEnv`
  workers; `info["expert_failed"]` is True once the expert gave up in the current episode (the
  action is then a seeded random one).

Every expert has `reset(env)` (call after `env.reset`) and `act(action_taken=None)`.
`make_expert(env)` asks the env's layers for one: any Wrapper or env with a `make_expert(**kwargs)`
method (BabyAIEnv and ReachEnv return the two above), so a user's env brings its own expert.
"""
from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from graft.envs.factory import env_layers, find_on_layers
from minigrid.utils.baby_ai_bot import BabyAIBot


class ExpertFailure(RuntimeError):
    """The expert could not produce an action (bot error, step limit or wall-time limit)."""


class Expert(Protocol):
    def reset(self, env: gym.Env) -> None: ...

    def act(self, action_taken: Any = None) -> Any: ...


@contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Raise ExpertFailure if the body runs longer than `seconds` (SIGALRM, so on the main thread only;
    elsewhere the body runs unbounded and callers check the elapsed time afterwards)."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    if seconds <= 0:
        raise ExpertFailure(f"{what}: wall-time budget already spent")

    def _alarm(signum, frame):
        raise ExpertFailure(f"{what}: no answer within {seconds:.2f} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class BabyAIExpert:
    """BabyAI bot with a per-episode step budget and wall-time budget."""

    def __init__(self, max_steps: int = 512, max_seconds: float = 5.0):
        self.max_steps = int(max_steps)
        self.max_seconds = float(max_seconds)
        self.bot: BabyAIBot | None = None

    def reset(self, env: gym.Env) -> None:
        unwrapped = env.unwrapped
        if not hasattr(unwrapped, "minigrid"):  # graft.envs.babyai.BabyAIEnv
            raise TypeError(f"BabyAIExpert needs a BabyAIEnv, got {type(unwrapped).__name__}")
        self.env = unwrapped
        self.steps = 0
        self.started = time.perf_counter()
        try:
            self.bot = BabyAIBot(unwrapped.minigrid)
        except Exception as exc:  # the bot's instruction parser rejects some levels
            raise ExpertFailure(f"BabyAIBot cannot plan for {unwrapped.level}: {exc!r}") from exc

    def act(self, action_taken: Any = None) -> int:
        if self.bot is None:
            raise ExpertFailure("BabyAIExpert.act called before reset(env)")
        if self.steps >= self.max_steps:
            raise ExpertFailure(f"BabyAIBot used its {self.max_steps}-step budget on {self.env.level}")
        left = self.max_seconds - (time.perf_counter() - self.started)
        try:
            with time_limit(left, f"BabyAIBot on {self.env.level}"):
                action = self.bot.replan(None if action_taken is None else int(action_taken))
        except ExpertFailure:
            raise
        except Exception as exc:
            raise ExpertFailure(f"BabyAIBot failed on {self.env.level}: {exc!r}") from exc
        if time.perf_counter() - self.started > self.max_seconds:
            raise ExpertFailure(f"BabyAIBot exceeded {self.max_seconds} s on {self.env.level}")
        self.steps += 1
        return int(action)


class ReachExpert:
    """Task-space proportional control through the damped pseudo-inverse of the tip Jacobian."""

    def __init__(self, gain: float = 6.0, damping: float = 0.03):
        self.gain = float(gain)  # 1/s: fraction of the tip error to close per second
        self.damping = float(damping)  # metres: keeps joint speeds finite near a straight arm

    def reset(self, env: gym.Env) -> None:
        unwrapped = env.unwrapped
        if not hasattr(unwrapped, "tip_jacobian"):  # graft.envs.mujoco_reach.ReachEnv
            raise TypeError(f"ReachExpert needs a ReachEnv, got {type(unwrapped).__name__}")
        self.env = unwrapped

    def act(self, action_taken: Any = None) -> np.ndarray:
        env = self.env
        error = env.target - env.fingertip  # (2,) metres
        jac = env.tip_jacobian()  # (2, 2)
        lam2 = self.damping**2 * np.eye(2)
        dq = jac.T @ np.linalg.solve(jac @ jac.T + lam2, error)  # (2,) radians
        action = self.gain * dq / env.max_joint_speed
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def make_expert(env: gym.Env, **kwargs) -> Expert:
    """The expert for `env`, not yet reset, from the outermost layer of its wrapper chain (a Wrapper
    or the unwrapped env) that has a `make_expert(**kwargs)` method."""
    for layer in find_on_layers(env, "make_expert"):
        if callable(layer.make_expert):
            return layer.make_expert(**kwargs)
    chain = " -> ".join(type(layer).__name__ for layer in env_layers(env))
    raise TypeError(
        f"no expert for {chain}: give the env (or one of its wrappers) a method "
        "`make_expert(self, **kwargs)` that returns an object with `reset(env)` and "
        "`act(action_taken=None) -> action` (see graft.envs.experts.Expert); "
        "BabyAIEnv and ReachEnv have one")


class ExpertInfo(gym.Wrapper):
    """Put the expert's next action in `info["expert_action"]` (see the module docstring)."""

    def __init__(self, env: gym.Env, **expert_kwargs):
        super().__init__(env)
        self.expert = make_expert(env, **expert_kwargs)
        self._fallback = np.random.default_rng(0)
        self._failed = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._fallback = np.random.default_rng(seed)
        self._failed = False
        try:
            self.expert.reset(self.env)
        except ExpertFailure:
            self._failed = True
        return obs, self._with_action(info, done=False)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._with_action(info, terminated or truncated)

    def _with_action(self, info: dict, done: bool) -> dict:
        space = self.env.action_space
        if done:  # no next action in this episode; keep the key so vector infos stay aligned
            action = np.zeros(space.shape, space.dtype) if isinstance(space, gym.spaces.Box) else 0
        elif not self._failed:
            try:
                action = self.expert.act()
            except ExpertFailure:
                self._failed = True
        if not done and self._failed:
            action = self._random_action(space)
        return {**info, "expert_action": action, "expert_failed": self._failed}

    def _random_action(self, space: gym.Space):
        if isinstance(space, gym.spaces.Discrete):
            return int(space.start + self._fallback.integers(space.n))
        return self._fallback.uniform(space.low, space.high).astype(space.dtype)
