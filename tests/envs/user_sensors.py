"""User-style code for the "data from any env" tests: what someone onboarding a new sensor writes.

- `ForceSensor`: an ObservationWrapper adding a `force` Box (3,) float32 to BabyAI, with its own
  `describe(obs, rng)` and `caption_prompts`, so datagen writes captions, questions and demos for it.
- `Thermometer`: adds `temperature` (1,) float32 and nothing else: demos only.
- `LineWorld`: a tiny non-BabyAI env (walk right to the end of a line); it has no expert itself.
- `LineExpert` / `WithLineExpert`: a scripted expert and the wrapper that provides it.
Tests refer to these by dotted path built from `__module__`, as an env config would.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from graft.envs.babyai import cell_kind

FORCE_PROMPTS = ("Describe the force reading.", "What does the force sensor feel?")


class ForceSensor(gym.ObservationWrapper):
    """force = [push from the cell ahead, load of what is carried, 0] newtons, times `scale`."""

    caption_prompts = {"force": FORCE_PROMPTS}

    def __init__(self, env: gym.Env, scale: float = 1.0):
        super().__init__(env)
        self.scale = float(scale)
        self.observation_space = gym.spaces.Dict({
            **env.observation_space.spaces,
            "force": gym.spaces.Box(-10.0, 10.0, (3,), np.float32),
        })

    def observation(self, obs: dict) -> dict:
        blocked = cell_kind(obs["grid"], 1, 0) in ("wall", "key", "ball", "box", "door")
        load = bool(self.env.unwrapped.carrying)
        force = np.array([5.0 * blocked, 2.0 * load, 0.0], np.float32) * self.scale
        return {**obs, "force": force}

    def describe(self, obs: dict, rng: np.random.Generator) -> dict:
        push, load, _ = (float(x) for x in obs["force"])
        caption = f"The force sensor reads {push:.1f} N from the front and a load of {load:.1f} N."
        qas = [("Is something pressing on the front of the sensor?", "yes" if push > 0 else "no"),
               ("How much load is held, in newtons?", f"{load:.0f}"),
               ("How hard is the front pushed, in newtons?", f"{push:.0f}")]
        return {"force": (caption, qas)}


class Thermometer(gym.ObservationWrapper):
    """temperature = 20 + heading (degrees C): a sensor with no describer."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({
            **env.observation_space.spaces,
            "temperature": gym.spaces.Box(-50.0, 50.0, (1,), np.float32),
        })

    def observation(self, obs: dict) -> dict:
        return {**obs, "temperature": np.array([20.0 + obs["direction"]], np.float32)}


class LineWorld(gym.Env):
    """Walk from a seeded start to position 1.0 on a line; actions 0 left, 1 right (steps of 0.1)."""

    def __init__(self, max_steps: int = 30):
        self.max_steps = int(max_steps)
        self.action_names = ("left", "right")
        self.observation_space = gym.spaces.Dict({
            "position": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
            "mission": gym.spaces.Text(max_length=32),
        })
        self.action_space = gym.spaces.Discrete(2)
        self.position = 0.0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position, self.steps = round(float(self.np_random.uniform(0.0, 0.5)), 1), 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.position = float(np.clip(self.position + (0.1 if int(action) == 1 else -0.1), 0.0, 1.0))
        self.steps += 1
        done = self.position >= 1.0 - 1e-6
        return self._obs(), float(done), done, self.steps >= self.max_steps and not done, {"is_success": done}

    def _obs(self) -> dict:
        return {"position": np.array([self.position], np.float32), "mission": "walk to the end"}


class LineExpert:
    def reset(self, env: gym.Env) -> None:
        self.env = env

    def act(self, action_taken=None) -> int:
        return 1


class WithLineExpert(gym.Wrapper):
    """Provides the expert for LineWorld: the wrapper chain is searched for `make_expert`."""

    def make_expert(self, **kwargs) -> LineExpert:
        return LineExpert()


def not_a_wrapper(env: gym.Env) -> int:
    """A broken `wrappers:` entry: returns something that is not an env."""
    return 0


def path(obj) -> str:
    """Dotted path of a class or function in this module, as an env config names it."""
    return f"{obj.__module__}.{obj.__qualname__}"
