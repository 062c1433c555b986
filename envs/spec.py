"""Observation and action specs: the contract between environments, data and the agent.

A `ModalitySpec` names one entry of an observation dict ("rgb", "depth", "grid", ...) with its
shape, dtype and value range. Environments publish their specs, the agent's modalities declare
theirs, and `validate` turns a bad observation into an error that says what was expected.
This module imports nothing of graft's (envs/ sits at the bottom of the dependency rule).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np


class ObservationError(ValueError):
    """An observation does not match the spec of the modality it claims to be."""


@dataclass(frozen=True)
class ModalitySpec:
    """Shape, dtype and range of one modality's observation (one sample, no batch dimension);
    a `None` entry in `shape` matches any size on that axis (e.g. images of any height)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    low: float | None = None
    high: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        np.dtype(self.dtype)  # raises TypeError on an unknown dtype name

    def describe(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        bounded = self.low is not None or self.high is not None
        rng = f", values in [{self.low}, {self.high}]" if bounded else ""
        return f"'{self.name}': shape ({dims}), dtype {self.dtype}{rng}"

    def validate(self, value: Any, batched: bool = False) -> np.ndarray:
        """Return `value` as a numpy array, or raise ObservationError naming what was expected;
        `batched=True` allows a leading batch axis in front of `shape`."""
        expected = self.describe()
        if hasattr(value, "detach"):  # torch tensor
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray):
            raise ObservationError(f"modality {expected}: got {type(value).__name__}, expected a numpy array")
        shape = value.shape[1:] if batched else value.shape
        mismatch = any(want is not None and got != want for got, want in zip(shape, self.shape))
        if len(shape) != len(self.shape) or mismatch:
            raise ObservationError(f"modality {expected}: got shape {tuple(value.shape)}")
        if value.dtype != np.dtype(self.dtype):
            raise ObservationError(f"modality {expected}: got dtype {value.dtype}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ObservationError(f"modality {expected}: got NaN or infinite values")
        if value.size and self.low is not None and value.min() < self.low:
            raise ObservationError(f"modality {expected}: got minimum {value.min()}")
        if value.size and self.high is not None and value.max() > self.high:
            raise ObservationError(f"modality {expected}: got maximum {value.max()}")
        return value

    def to_json(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}


@dataclass(frozen=True)
class ObservationSpec:
    """The modalities an environment emits, plus free-text keys such as `mission`."""

    modalities: Mapping[str, ModalitySpec]
    text_keys: tuple[str, ...] = ("mission",)

    def validate(self, obs: Mapping[str, Any], batched: bool = False) -> dict[str, np.ndarray]:
        missing = [k for k in self.modalities if k not in obs]
        if missing:
            want = "; ".join(self.modalities[k].describe() for k in missing)
            raise ObservationError(f"observation is missing modality {missing}: expected {want}")
        return {k: spec.validate(obs[k], batched) for k, spec in self.modalities.items()}


def env_modality_specs(env: Any) -> dict[str, ModalitySpec]:
    """The modalities `env` emits: the Box entries of its outermost `observation_space` (so a sensor
    added by a gymnasium ObservationWrapper that updates the space counts), each the spec the env itself
    publishes (`env.unwrapped.modality_specs`) where key, shape and dtype match, else one read off the
    Box (finite uniform low/high). Text (the mission) and Discrete entries (e.g. BabyAI's direction) are
    not modalities. Without a Dict observation space: the env's own specs."""
    import gymnasium as gym

    space = getattr(env, "observation_space", None)
    own = dict(getattr(getattr(env, "unwrapped", env), "modality_specs", {}) or {})
    if not isinstance(space, gym.spaces.Dict):
        return own
    out: dict[str, ModalitySpec] = {}
    for key, sub in space.spaces.items():
        if not isinstance(sub, gym.spaces.Box):
            continue
        if key in own and tuple(own[key].shape) == tuple(sub.shape) and np.dtype(own[key].dtype) == sub.dtype:
            out[key] = own[key]
            continue
        low, high = np.asarray(sub.low), np.asarray(sub.high)
        uniform = lambda a: float(a.flat[0]) if a.size and np.all(a == a.flat[0]) and np.isfinite(a.flat[0]) else None  # noqa: E731
        out[key] = ModalitySpec(key, tuple(sub.shape), str(sub.dtype), uniform(low), uniform(high),
                                f"observation '{key}' of {type(env).__name__}")
    return out
