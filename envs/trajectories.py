"""Expert trajectories for output modalities: goal views and action chunks.

`expert_splits(env, {"train": 32, "test": 8}, seed)` runs the env's expert from privileged state and
keeps the episodes it solves, as `Trajectory`s:

    seed          reset seed (train and test draw from one seed stream, so they never share one)
    mission       str
    observations  T + 1 observation dicts: the first one ... the final one (after the last action)
    actions       (T, *action_shape) float32 expert actions (BabyAI: action ids as floats)
    goal_caption  the rgb caption of the final view (graft.envs.captions), what the goal looks like;
                  "" when no describer on the env's wrapper chain talks about rgb

`action_chunks(actions, horizon)` cuts `(T, H, A)` chunks, one starting at every state, padded past
the end by repeating the last action (Diffusion Policy's convention: the arm holds its last command).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import gymnasium as gym
import numpy as np
from graft.envs.captions import describe
from graft.envs.datagen import episode_seeds
from graft.envs.experts import ExpertFailure, make_expert
from graft.envs.factory import make_env_factory


@dataclass
class Trajectory:
    seed: int
    mission: str
    observations: list[dict[str, Any]]
    actions: np.ndarray
    goal_caption: str

    @property
    def first(self) -> dict[str, Any]:
        return self.observations[0]

    @property
    def goal(self) -> np.ndarray:
        """The final rgb view (H, W, 3) uint8."""
        return self.observations[-1]["rgb"]

    def __len__(self) -> int:
        return len(self.actions)


def run_expert(env: gym.Env, seed: int, max_steps: int = 1000) -> Trajectory:
    """One expert episode; raises ExpertFailure unless the expert solves it."""
    expert = make_expert(env)
    obs, info = env.reset(seed=seed)
    expert.reset(env)
    observations, actions = [_copy(obs)], []
    for _ in range(max_steps):
        action = expert.act()
        obs, _, terminated, truncated, info = env.step(action)
        observations.append(_copy(obs))
        actions.append(np.asarray(action, dtype=np.float32).reshape(-1))
        if terminated or truncated:
            break
    if not info.get("is_success", False):
        raise ExpertFailure(f"expert did not solve episode seed {seed} in {len(actions)} steps")
    said = describe(env, obs, np.random.default_rng(seed), questions=0)
    caption = next((u.response for u in said if u.kind == "caption" and u.modality == "rgb"), "")
    return Trajectory(seed, observations[0]["mission"], observations, np.stack(actions), caption)


def expert_splits(env: Any, counts: Mapping[str, int], seed: int = 0, max_failures: int | None = None) -> dict[str, list[Trajectory]]:
    """Solved expert episodes per split, `counts[split]` each, from one stream of distinct seeds;
    `env`: anything `make_env_factory` takes."""
    instance = make_env_factory(env)()
    seeds = episode_seeds(seed)
    budget = sum(counts.values()) if max_failures is None else max_failures
    failures, out = 0, {}
    try:
        for split, n in counts.items():
            out[split] = []
            while len(out[split]) < int(n):
                ep_seed = next(seeds)
                try:
                    out[split].append(run_expert(instance, ep_seed))
                except ExpertFailure as exc:
                    failures += 1
                    if failures > budget:
                        raise ExpertFailure(f"expert failed {failures} episodes; last: {exc}") from exc
    finally:
        instance.close()
    return out


def action_chunks(actions: np.ndarray, horizon: int) -> np.ndarray:
    """`(T, A)` actions → `(T, horizon, A)`: the chunk starting at every step, padded with the last action."""
    actions = np.asarray(actions)
    if actions.ndim != 2 or len(actions) == 0:
        raise ValueError(f"expected a non-empty (T, A) array of actions, got shape {actions.shape}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    padded = np.concatenate([actions, np.repeat(actions[-1:], horizon - 1, axis=0)])  # (T + H - 1, A)
    index = np.arange(len(actions))[:, None] + np.arange(horizon)[None, :]  # (T, H)
    return padded[index]  # (T, H, A)


def _copy(obs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in obs.items()}
