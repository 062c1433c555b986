"""Vectorised rollouts of a batched policy on listed episode seeds, with success statistics written
to rollout.json.

    rollout(env, policy, episodes, num_envs, seed, out_dir, seeds=...) -> summary dict
    heldout_seeds(n, base, exclude) -> n distinct seeds from `base` up, none of them in `exclude`

`env`: anything `make_env_factory` takes (graft.envs.factory; re-exported here with
`load_env_config`). `policy(obs_batch, infos) -> actions` is called once per step for all sub-envs:
`obs_batch` is the vector env's batched observation dict (arrays with a leading num_envs axis, the
missions a tuple of str), `infos` its batched info dict. A policy may also have

    reset(env_ids)   called with the sub-envs whose episode starts now (all of them first)
    wrap_env(env)    a picklable callable applied to every sub-env when it is built
    deterministic    True: its actions are a function of the current observation (no sampling) and of
                     `memory_key(i)` where it has one, which turns `stop_on_revisit` on by default
    memory_key(i)    a hashable of what sub-env i's policy remembers of its episode (None: nothing)

Every episode is explicitly seeded: episode k is reset with `seeds[k]`, or with `seed + k` when no
`seeds` are given, so policies run on the same seeds see the same starting states, however many
sub-envs there are. Autoreset is off: episodes go to the sub-envs in order as they free up, and a
finished sub-env is reset with its next episode's seed (`reset_mask`). Once no episodes are left, a
sub-env that finishes runs unseeded filler episodes, not recorded, until the others are done. The
episodes are fixed by their seeds, so short ones are not favoured. The summary lists the seeds
under `seeds`; its `records` hold one entry per episode, sorted by episode, with its seed, sub-env
and success. Every action is validated against the action space first (ActionError).

`stop_on_revisit` ends an episode at the first exact state it has already been in, e.g. a greedy policy
turning on the spot or walking into a wall. The state is the env's `state_key()`, a hashable taken
where the policy acts (after reset and after every step that did not end the episode) from the
outermost layer of the wrapper chain that defines it, so wrappers do not hide it; BabyAIEnv's holds
the agent's pose, what it carries, the whole grid, the mission verifier's progress and the RNG. The
stop is exact: the policy's action is a function of the observation, and the observation and the
next state are functions of the state (a static level draws no random numbers while stepping), so a
repeated state repeats the whole future: the episode cycles through states none of which ended it
until it is truncated. Its record is what the full run would give, `success` False and `return` what
it had (BabyAI rewards success only: 0.0), with `length` the steps actually run and
`stopped_at_revisit` True. A policy with memory (`Agent(revisits="escape")`) says what it remembers
(`memory_key`): the visited key is then the pair (state, memory), which again decides the whole
future. The summary says whether the stop was on (`stop_on_revisit`) and counts
these episodes (`stopped_at_revisit`). stop_on_revisit=None turns it on when the policy declares
`deterministic = True`, True whatever the policy (the caller vouches for it); either way only where
every sub-env has a state key. A wrapper whose observations are not a function of the inner state
(noise, a memory of its own) defines its own `state_key`, or `state_key = None` to turn the stop off.
The random and expert policies do not declare `deterministic` (the BabyAI bot keeps a plan).

`make_policy("expert" | "random" | "random_escape" | "majority_escape", env)` builds the reference
policies; the expert runs inside each sub-env (experts.ExpertInfo); random_escape is random with the
escape agent's episode memory (envs/episode_memory.py), majority_escape the demonstrations' most
common action with that memory. `vector="async"` spawns workers without shared memory,
because missions are text and a GL context must not be forked.
"""
from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from graft.envs.actions import validate_actions
from graft.envs.atomic import write_json_atomic
from graft.envs.factory import EnvFactory, env_config_dir, env_layers, load_env_config, make_env_factory
from graft.envs.episode_memory import EpisodeMemory
from tqdm.auto import tqdm

__all__ = ["EnvFactory", "ExpertPolicy", "MajorityEscapePolicy", "RandomEscapePolicy", "RandomPolicy", "env_config_dir", "heldout_seeds", "load_env_config",
           "make_env_factory", "make_policy", "make_vector_env", "rollout"]


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


class RandomEscapePolicy(RandomPolicy):
    """Uniform random actions, but at an observation its episode has already seen it draws among the
    actions not yet taken there (all of them once each was): the episode memory of
    `Agent(revisits="escape")` without a model, i.e. what that memory alone buys. Discrete spaces."""

    name = "random_escape"

    def __init__(self, action_space: gym.Space, seed: int = 0):
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(f"random_escape needs a Discrete action space, got {action_space}")
        super().__init__(action_space, seed)
        self.rng = np.random.default_rng(seed)
        self.memory = EpisodeMemory()

    def __call__(self, obs: dict, infos: dict) -> np.ndarray:
        n, start, k = len(next(iter(obs.values()))), int(self.space.start), int(self.space.n)
        actions = np.empty(n, dtype=np.int64)
        for i in range(n):
            tried = self.memory.taken(obs, i)
            free = [a for a in range(start, start + k) if a not in tried] or list(range(start, start + k))
            actions[i] = free[int(self.rng.integers(len(free)))]
            tried.add(int(actions[i]))
        return actions

    def reset(self, env_ids: Any = None) -> None:
        self.memory.reset(env_ids)


class MajorityEscapePolicy:
    """The best guess without looking, for acting: the demonstrations' most common action at every
    step, and at an observation its episode has already seen the most common one not yet taken there
    (the order of `order`; once all were, the first). The episode memory of `Agent(revisits="escape")`
    with a fixed ranking in place of the model's: what a trained agent must beat to have read its
    input. Deterministic. Discrete spaces."""

    name = "majority_escape"
    deterministic = True  # a function of the observation and the memory: a rollout may stop at a repeat

    def __init__(self, action_space: gym.Space, order: Sequence[int]):
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(f"majority_escape needs a Discrete action space, got {action_space}")
        start, k = int(action_space.start), int(action_space.n)
        order = [int(a) for a in order]
        if not order or len(set(order)) != len(order) or not all(start <= a < start + k for a in order):
            raise ValueError(f"majority_escape: order must list distinct actions of {action_space}, got {order}")
        self.order = order + [a for a in range(start, start + k) if a not in order]
        self.memory = EpisodeMemory()

    def __call__(self, obs: dict, infos: dict) -> np.ndarray:
        n = len(next(iter(obs.values())))
        actions = np.empty(n, dtype=np.int64)
        for i in range(n):
            tried = self.memory.taken(obs, i)
            actions[i] = next((a for a in self.order if a not in tried), self.order[0])
            tried.add(int(actions[i]))
        return actions

    def reset(self, env_ids: Any = None) -> None:
        self.memory.reset(env_ids)

    def memory_key(self, i: int) -> Any:
        return self.memory.key(i)


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
    """The reference policies: "expert" (per-env expert from simulator state), "random",
    "random_escape" (random with an episode memory of the actions taken at each observation) or
    "majority_escape" (`order=`: actions most common first, e.g. in the demonstrations; the same memory)."""
    if name == "expert":
        return ExpertPolicy(**kwargs)
    if name in ("random", "random_escape", "majority_escape"):
        if env is None:
            raise ValueError(f"make_policy({name!r}) needs env= to read the action space")
        instance = make_env_factory(env)()
        space = instance.action_space
        instance.close()
        if name == "majority_escape":
            if "order" not in kwargs:
                raise ValueError("make_policy('majority_escape') needs order=[actions, most common first]")
            return MajorityEscapePolicy(space, kwargs["order"])
        return (RandomPolicy if name == "random" else RandomEscapePolicy)(space, seed=seed)
    raise ValueError(f"unknown policy {name!r}: envs provides 'expert', 'random', 'random_escape' and "
                     "'majority_escape' (a trained 'checkpoint' policy comes from graft.agent)")


def make_vector_env(factory: EnvFactory, num_envs: int, vector: str = "sync",
                    autoreset: gym.vector.AutoresetMode = gym.vector.AutoresetMode.SAME_STEP) -> gym.vector.VectorEnv:
    fns = [factory] * num_envs
    if vector == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=autoreset)
    if vector == "async":
        return gym.vector.AsyncVectorEnv(fns, shared_memory=False, context="spawn", autoreset_mode=autoreset)
    raise ValueError(f"vector must be 'sync' or 'async', got {vector!r}")


def heldout_seeds(n: int, base: int, exclude: Collection[int] = ()) -> list[int]:
    """`n` distinct seeds counting up from `base`, skipping those in `exclude` (e.g. the episode seeds a
    dataset was generated from: datagen.json's splits[*].episode_seeds and skipped)."""
    if n < 0:
        raise ValueError(f"need n >= 0 seeds, got {n}")
    excluded = {int(s) for s in exclude}
    return list(itertools.islice((s for s in itertools.count(base) if s not in excluded), n))


def _seed_list(episodes: int | None, seed: int, seeds: Sequence[int] | None) -> list[int]:
    """The reset seed of every episode: `seeds` as given, else seed, seed + 1, ... (`episodes`, default 10)."""
    if seeds is None:
        return [seed + k for k in range(10 if episodes is None else episodes)]
    seeds = [int(s) for s in seeds]
    if episodes is not None and episodes != len(seeds):
        raise ValueError(f"episodes={episodes} but {len(seeds)} seeds were given: one episode runs per seed, "
                         "so pass seeds alone or a matching episodes")
    return seeds


def rollout(
    env: Any,
    policy: Callable[[dict, dict], Any],
    episodes: int | None = None,
    num_envs: int = 2,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    vector: str = "sync",
    frames: int = 16,
    seeds: Sequence[int] | None = None,
    stop_on_revisit: bool | None = None,
) -> dict:
    """One episode per seed in `seeds`, else `episodes` (default 10) episodes seeded seed, seed + 1, ...,
    on `num_envs` sub-envs; return (and write) the summary. `stop_on_revisit`: end an episode at its
    first repeated exact state (module docstring); None: when the policy declares `deterministic`."""
    seeds = _seed_list(episodes, seed, seeds)
    episodes = len(seeds)
    if episodes < 1 or num_envs < 1:
        raise ValueError(f"need episodes >= 1 and num_envs >= 1, got {episodes}, {num_envs}")
    num_envs = min(num_envs, episodes)
    factory = make_env_factory(env)
    if getattr(policy, "wrap_env", None) is not None:
        factory = functools.partial(_wrapped, factory, policy.wrap_env)
    venv = make_vector_env(factory, num_envs, vector, autoreset=gym.vector.AutoresetMode.DISABLED)
    if stop_on_revisit is None:
        stop_on_revisit = bool(getattr(policy, "deterministic", False))
    running = np.arange(num_envs)  # episode index on each sub-env; -1: a filler episode
    returns, lengths = np.zeros(num_envs), np.zeros(num_envs, dtype=int)
    records, frames_seen = [], []  # frames_seen: rgb (H, W, 3) of episode 0, on sub-env 0
    started, steps, stopped = time.perf_counter(), 0, 0
    state_keys = None  # sub-env ids -> their state keys, where episodes stop at a revisit
    visited: list[set] = [set() for _ in range(num_envs)]  # state keys of each sub-env's episode so far
    bar = tqdm(total=episodes, disable=not progress, desc="rollout", unit="ep")
    try:
        obs, infos = venv.reset(seed=seeds[:num_envs])
        collecting = frames > 0 and "rgb" in obs
        if collecting:
            frames_seen.append(np.array(obs["rgb"][0]))
        state_keys = _state_key_reader(venv) if stop_on_revisit else None
        memory = getattr(policy, "memory_key", None)
        if state_keys is not None and memory is not None:  # a repeat of (state, what the policy remembers)
            state_keys = functools.partial(_with_memory, state_keys, memory)
        if hasattr(policy, "reset"):  # first: the visited keys hold the policy's fresh memory
            policy.reset(np.arange(num_envs))
        if state_keys is not None:
            _restart_visits(visited, state_keys, np.arange(num_envs))
        upcoming = num_envs
        while len(records) < episodes:
            actions = validate_actions(venv.single_action_space, policy(obs, infos), num_envs)
            obs, reward, terminated, truncated, infos = venv.step(actions)
            steps += num_envs
            returns += reward
            lengths += 1
            ended = terminated | truncated
            revisited = np.zeros(num_envs, dtype=bool)
            if state_keys is not None:
                live = np.flatnonzero(~ended)
                for i, key in zip(live, state_keys(live)):
                    if key is not None and key in visited[i]:
                        revisited[i] = True
                    elif key is not None:
                        visited[i].add(key)
                ended = ended | revisited
            if collecting:
                frames_seen.append(np.array(obs["rgb"][0]))
                collecting = not ended[0]
            for i in np.flatnonzero(ended):
                if running[i] >= 0:
                    records.append(_record(int(running[i]), seeds[running[i]], int(i), returns[i], lengths[i], infos,
                                           None if state_keys is None else bool(revisited[i])))
                    stopped += bool(revisited[i])
                    bar.update(1)
                returns[i], lengths[i] = 0.0, 0
            if not ended.any() or len(records) == episodes:
                continue
            reset_seeds: list[int | None] = [None] * num_envs
            for i in np.flatnonzero(ended):
                running[i] = upcoming if upcoming < episodes else -1
                if running[i] >= 0:
                    reset_seeds[i] = seeds[upcoming]
                    upcoming += 1
            obs, reset_infos = venv.reset(seed=reset_seeds, options={"reset_mask": ended})
            infos = _merge_infos(infos, reset_infos, ended)
            if hasattr(policy, "reset"):
                policy.reset(np.flatnonzero(ended))
            if state_keys is not None:
                _restart_visits(visited, state_keys, np.flatnonzero(ended))
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
        "stop_on_revisit": state_keys is not None, "stopped_at_revisit": stopped,
        "seeds": seeds, "records": sorted(records, key=lambda r: r["episode"]),
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


def _record(episode: int, seed: int, env_index: int, total: float, length: int, infos: dict,
            stopped_at_revisit: bool | None = None) -> dict:
    """One finished episode, from the batched infos of the step that ended it on sub-env `env_index`;
    `stopped_at_revisit` (None: the stop was off) marks one ended at a repeated state: it fails."""
    record = {"episode": episode, "seed": seed, "env_index": env_index, "return": float(total),
              "length": int(length), "success": bool(_info(infos, "is_success", env_index))}
    if stopped_at_revisit is not None:
        record["stopped_at_revisit"] = stopped_at_revisit
        record["success"] = record["success"] and not stopped_at_revisit
    if _info(infos, "expert_failed", env_index) is not None:
        record["expert_failed"] = bool(_info(infos, "expert_failed", env_index))
    return record


def _state_key_reader(venv: gym.vector.VectorEnv) -> Callable[[Sequence[int]], list] | None:
    """`keys(env_ids)` -> the current state key of each of these sub-envs (None where its `state_key`
    returns None), or None when some sub-env has no `state_key` method. SyncVectorEnv: each sub-env's
    outermost layer that defines `state_key`; AsyncVectorEnv: the same, asked in the workers (`call`)."""
    if isinstance(venv, gym.vector.SyncVectorEnv):
        methods = [_state_key_method(env) for env in venv.envs]
        if any(m is None for m in methods):
            return None
        return lambda ids: [methods[i]() for i in ids]
    if not all(venv.call("has_wrapper_attr", "state_key")):  # a worker that raised would be lost: ask first
        return None

    def keys(ids: Sequence[int]) -> list:
        every = venv.call("state_key") if len(ids) else ()
        return [every[i] for i in ids]
    return keys


def _state_key_method(env: gym.Env) -> Callable[[], Any] | None:
    """`state_key` of the outermost layer that defines it (a wrapper may set it to None: no key)."""
    for layer in env_layers(env):
        if hasattr(layer, "state_key"):
            method = layer.state_key
            return method if callable(method) else None
    return None


def _with_memory(state_keys: Callable[[Sequence[int]], list], memory: Callable[[int], Any], env_ids) -> list:
    """The visited keys of a policy with memory: (env state, the policy's memory_key) per sub-env."""
    return [None if k is None else (k, memory(int(i))) for i, k in zip(env_ids, state_keys(env_ids))]


def _restart_visits(visited: list[set], state_keys: Callable[[Sequence[int]], list], env_ids: np.ndarray) -> None:
    """These sub-envs start an episode: their visited states are just the starting one."""
    for i, key in zip(env_ids, state_keys(env_ids)):
        visited[i] = set() if key is None else {key}


def _info(infos: dict, key: str, i: int) -> Any:
    """Sub-env i's `key` in batched infos; None where it has none."""
    return infos[key][i] if key in infos and infos[f"_{key}"][i] else None


def _merge_infos(stepped: dict, reset: dict, mask: np.ndarray) -> dict:
    """Batched infos after a masked reset: `reset`'s for the sub-envs in `mask`, `stepped`'s for the rest.
    Each key `k` comes with its mask `_k` (which sub-envs have it), nested dicts too."""
    merged = {}
    for key in dict.fromkeys(k for infos in (stepped, reset) for k in infos if f"_{k}" in infos):
        if isinstance(stepped.get(key, reset.get(key)), dict):
            value = _merge_infos(stepped.get(key, {}), reset.get(key, {}), mask)
        elif key not in reset:
            value = stepped[key]
        elif key not in stepped:
            value = reset[key]
        else:
            value = stepped[key].copy()
            value[mask] = reset[key][mask]
        has = np.zeros_like(mask)
        merged[key] = value
        merged[f"_{key}"] = stepped.get(f"_{key}", has) & ~mask | reset.get(f"_{key}", has)
    return merged


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
