"""An episode memory of the actions taken at each observation, per sub-env of a vector env.

What `Agent(revisits="escape")` and the `random_escape` reference policy remember: at an observation
the episode has already seen, they pick among the actions not yet taken there (a greedy policy
without memory repeats a revisited state's action and never leaves the loop). Observations are told
apart by an exact digest of their arrays and text (`observation_digest`). `key(i)` is sub-env i's
memory as a hashable value: with the env's state it decides every later action, so a rollout can
stop exactly where the pair repeats (envs/rollout.py).
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def observation_digest(obs: Mapping[str, Any], i: int, keys: Sequence[str] | None = None) -> bytes:
    """A hash of sub-env `i`'s observation in a batched obs dict (the `keys` given, default all; str
    entries such as the mission by their text, arrays by their bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for key in keys if keys is not None else sorted(obs):
        value = obs[key][i]
        h.update(value.encode() if isinstance(value, str) else np.ascontiguousarray(value).tobytes())
    return h.digest()


class EpisodeMemory:
    def __init__(self):
        self.tried: dict[int, dict[bytes, set[int]]] = {}  # sub-env -> observation digest -> actions taken

    def taken(self, obs: Mapping[str, Any], i: int, keys: Sequence[str] | None = None) -> set[int]:
        """The actions sub-env `i`'s episode has taken at this observation (a live set: add to it)."""
        return self.tried.setdefault(i, {}).setdefault(observation_digest(obs, i, keys), set())

    def reset(self, env_ids: Any = None) -> None:
        """Episodes of these sub-envs (default: all) start afresh."""
        if env_ids is None:
            self.tried.clear()
            return
        for i in np.atleast_1d(env_ids):
            self.tried.pop(int(i), None)

    def key(self, i: int) -> frozenset:
        return frozenset((k, frozenset(v)) for k, v in self.tried.get(i, {}).items())
