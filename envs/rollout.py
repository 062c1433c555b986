"""Vectorised rollouts of a batched policy, with success statistics written to rollout.json.

    rollout(env, policy, episodes, num_envs, seed, out_dir) -> summary dict

`env`: anything `make_env_factory` takes (graft.envs.factory; re-exported here with
`load_env_config`). `policy(obs_batch, infos) -> actions` is called once per step for all sub-envs:
`obs_batch` is the vector env's batched observation dict (arrays with a leading num_envs axis, the
missions a tuple of str), `infos` its batched info dict. A policy may also have

    reset(env_ids)   called with the sub-envs whose episode starts now (all of them first)
    wrap_env(env)    a picklable callable applied to every sub-env when it is built

Sub-envs autoreset in SAME_STEP mode: the step that ends an episode already returns the next
episode's first observation (the last one is in infos["final_obs"], its info in
infos["final_info"]). Every action is validated against the action space first (ActionError).
Episodes are split evenly over the sub-envs, so short episodes are not favoured.

`make_policy("expert" | "random", env)` builds the two reference policies; the expert runs inside
each sub-env (experts.ExpertInfo). `vector="async"` spawns workers without shared memory, because
missions are text and a GL context must not be forked.
"""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from graft.envs.actions import validate_actions
from graft.envs.atomic import write_json_atomic
from graft.envs.factory import EnvFactory, env_config_dir, load_env_config, make_env_factory
from tqdm.auto import tqdm

__all__ = ["EnvFactory", "env_config_dir", "load_env_config", "make_env_factory", "make_policy",
           "make_vector_env", "rollout", "ExpertPolicy", "RandomPolicy"]


def _wrapped(factory: EnvFactory, wrapper: Callable[[gym.Env], gym.Env]) -> gym.Env:
    return wrapper(factory())


class RandomPolicy:
    """Uniform random actions from the single-env action space, seeded."""

    name = "random"

    def __init__(self, action_space: gym.Space, seed: int = 0):
        self.space = action_space
        self.space.seed(seed)

    def __call__(self, obs: dict, infos: dict) -> np.ndarray:
        n = len(next(iter(obs.values())))
        return np.stack([np.asarray(self.space.sample()) for _ in range(n)])


class ExpertPolicy:
    """Returns the per-sub-env expert actions that `ExpertInfo` computed inside each sub-env."""

    name = "expert"

    def __init__(self, **expert_kwargs):
        from graft.envs.experts import ExpertInfo

        self.wrap_env = functools.partial(ExpertInfo, **expert_kwargs)

    def __call__(self, obs: dict, infos: dict) -> np.ndarray:
        if "expert_action" not in infos:
            raise RuntimeError("no info['expert_action']: build the sub-envs with policy.wrap_env "
                               "(rollout() does this) so each one runs its expert")
        return np.asarray(infos["expert_action"])


def make_policy(name: str, env: Any = None, seed: int = 0, **kwargs):
    """The reference policies: "expert" (per-env expert from simulator state) or "random"."""
    if name == "expert":
        return ExpertPolicy(**kwargs)
    if name == "random":
        if env is None:
            raise ValueError("make_policy('random') needs env= to read the action space")
        instance = make_env_factory(env)()
        space = instance.action_space
        instance.close()
        return RandomPolicy(space, seed=seed)
    raise ValueError(f"unknown policy {name!r}: envs provides 'expert' and 'random' "
                     "(a trained 'checkpoint' policy comes from graft.agent)")


def make_vector_env(factory: EnvFactory, num_envs: int, vector: str = "sync") -> gym.vector.VectorEnv:
    fns = [factory] * num_envs
    mode = gym.vector.AutoresetMode.SAME_STEP
    if vector == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    if vector == "async":
        return gym.vector.AsyncVectorEnv(fns, shared_memory=False, context="spawn", autoreset_mode=mode)
    raise ValueError(f"vector must be 'sync' or 'async', got {vector!r}")


def rollout(
    env: Any,
    policy: Callable[[dict, dict], Any],
    episodes: int = 10,
    num_envs: int = 2,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    vector: str = "sync",
    frames: int = 16,
) -> dict:
    """Run `episodes` episodes on `num_envs` sub-envs; return (and write) the summary."""
    if episodes < 1 or num_envs < 1:
        raise ValueError(f"need episodes >= 1 and num_envs >= 1, got {episodes}, {num_envs}")
    num_envs = min(num_envs, episodes)
    factory = make_env_factory(env)
    if getattr(policy, "wrap_env", None) is not None:
        factory = functools.partial(_wrapped, factory, policy.wrap_env)
    venv = make_vector_env(factory, num_envs, vector)
    quota = [episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)]
    finished = np.zeros(num_envs, dtype=int)
    returns, lengths = np.zeros(num_envs), np.zeros(num_envs, dtype=int)
    records, frames_seen = [], []  # frames_seen: rgb (H, W, 3) of sub-env 0's first episode
    started, steps = time.perf_counter(), 0
    bar = tqdm(total=episodes, disable=not progress, desc="rollout", unit="ep")
    try:
        obs, infos = venv.reset(seed=[seed + i for i in range(num_envs)])
        collecting = frames > 0 and "rgb" in obs
        if collecting:
            frames_seen.append(np.array(obs["rgb"][0]))
        if hasattr(policy, "reset"):
            policy.reset(np.arange(num_envs))
        while np.any(finished < quota):
            actions = validate_actions(venv.single_action_space, policy(obs, infos), num_envs)
            obs, reward, terminated, truncated, infos = venv.step(actions)
            steps += num_envs
            returns += reward
            lengths += 1
            ended = np.flatnonzero(terminated | truncated)
            if collecting:
                # copy: SyncVectorEnv writes every step into the same batch buffer
                frames_seen.append(np.array(infos["final_obs"][0]["rgb"] if 0 in ended else obs["rgb"][0]))
                collecting = 0 not in ended
            for i in ended:
                final = {k: v[i] for k, v in infos.get("final_info", {}).items() if not k.startswith("_")}
                if finished[i] < quota[i]:
                    record = {
                        "env_index": int(i), "episode": int(finished[i]),
                        "seed": seed + int(i) if finished[i] == 0 else None,
                        "return": float(returns[i]), "length": int(lengths[i]),
                        "success": bool(final.get("is_success", False)),
                    }
                    if "expert_failed" in final:
                        record["expert_failed"] = bool(final["expert_failed"])
                    records.append(record)
                    bar.update(1)
                finished[i] += 1
                returns[i], lengths[i] = 0.0, 0
            if len(ended) and hasattr(policy, "reset"):
                policy.reset(ended)
    finally:
        bar.close()
        venv.close()
    seconds = time.perf_counter() - started
    summary = {
        "env": _env_name(env), "policy": getattr(policy, "name", type(policy).__name__),
        "episodes": len(records), "num_envs": num_envs, "seed": seed, "vector": vector,
        "success_rate": float(np.mean([r["success"] for r in records])),
        "mean_return": float(np.mean([r["return"] for r in records])),
        "mean_length": float(np.mean([r["length"] for r in records])),
        "env_steps": steps, "seconds": round(seconds, 3), "steps_per_s": round(steps / seconds, 1),
        "records": sorted(records, key=lambda r: (r["env_index"], r["episode"])),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if frames_seen:
            from PIL import Image

            Image.fromarray(_strip(frames_seen, frames)).save(out_dir / "episode0.png")
            summary["frames_png"] = "episode0.png"
        write_json_atomic(out_dir / "rollout.json", summary)
    return summary


def _strip(frames: list[np.ndarray], limit: int) -> np.ndarray:
    """Up to `limit` evenly spaced frames (first and last kept) side by side: (H, n*W + gaps, 3)."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(limit, len(frames))).round().astype(int))
    gap = np.full((frames[0].shape[0], 2, 3), 255, np.uint8)
    return np.concatenate([x for i in picks for x in (frames[i], gap)][:-1], axis=1)


def _env_name(env: Any) -> str:
    if isinstance(env, str):
        return env
    if hasattr(env, "get"):
        return str(env.get("name") or env.get("_target_"))
    return getattr(env, "__name__", type(env).__name__)
