"""Action statistics: per-dimension normalisation of continuous actions to [-1, 1].

Each dimension of a continuous action space is mapped from [low, high] to [-1, 1], with the bounds
fitted on a dataset (`fit`: min/max, or the q01/q99 quantiles that ignore outliers); values outside
the fitted range are clipped to it. `normalize` / `unnormalize` work on numpy arrays or torch
tensors of any leading shape, for a diffusion action generator (agent/generators/action.py).
Statistics are saved as JSON (`save` writes atomically).

The JSON format (version 1) also describes discrete action spaces (`names=`) and a bin count and
token prefix (`n_bins`, `prefix`) from when actions were LLM tokens; they are kept so files load and
save unchanged, and a discrete tokenizer refuses to normalise. Standalone: numpy only, torch is
optional.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from graft.envs.atomic import write_json_atomic

FORMAT_VERSION = 1


class ActionTokenizer:
    """Per-dimension action statistics; see the module docstring."""

    def __init__(self, names: Sequence[str] | None = None, dim: int | None = None, n_bins: int = 256,
                 low: Sequence[float] | None = None, high: Sequence[float] | None = None,
                 stats: str = "minmax", prefix: str = "act"):
        if (names is None) == (dim is None):
            raise ValueError("give exactly one of names= (discrete actions) or dim= (continuous actions)")
        if stats not in ("minmax", "quantile"):
            raise ValueError(f"stats must be 'minmax' or 'quantile' (q01/q99), got {stats!r}")
        self.prefix = prefix
        self.stats = stats
        self.names = tuple(names) if names is not None else None
        if self.names is not None:
            if len(set(self.names)) != len(self.names) or not self.names:
                raise ValueError(f"action names must be unique and non-empty, got {list(self.names)}")
            self.dim, self.n_bins, self.low, self.high = None, None, None, None
            return
        if int(dim) < 1 or int(n_bins) < 2:
            raise ValueError(f"need dim >= 1 and n_bins >= 2, got dim={dim}, n_bins={n_bins}")
        self.dim, self.n_bins = int(dim), int(n_bins)
        self.low = np.full(self.dim, -1.0) if low is None else np.asarray(low, dtype=np.float64)
        self.high = np.full(self.dim, 1.0) if high is None else np.asarray(high, dtype=np.float64)
        self._check_bounds()

    # -- construction -------------------------------------------------------------------------------
    @property
    def discrete(self) -> bool:
        return self.names is not None

    def fit(self, actions: Any) -> ActionTokenizer:
        """Fit per-dimension normalisation bounds on a dataset of actions, shape (N, dim)."""
        if self.discrete:
            return self
        a = np.asarray(actions.detach().cpu() if hasattr(actions, "detach") else actions, dtype=np.float64)
        if a.size == 0 or a.shape[-1] != self.dim or not np.all(np.isfinite(a)):
            raise ValueError(f"fit needs a non-empty, finite (N, {self.dim}) array of actions, "
                             f"got shape {a.shape}")
        a = a.reshape(-1, self.dim)
        if self.stats == "minmax":
            self.low, self.high = a.min(axis=0), a.max(axis=0)
        else:
            self.low, self.high = np.quantile(a, 0.01, axis=0), np.quantile(a, 0.99, axis=0)
        self._check_bounds()
        return self

    def _check_bounds(self) -> None:
        if self.low.shape != (self.dim,) or self.high.shape != (self.dim,):
            raise ValueError(f"low/high must have shape ({self.dim},), got {self.low.shape}, "
                             f"{self.high.shape}")
        if np.any(self.high < self.low) or not np.all(np.isfinite([self.low, self.high])):
            raise ValueError(f"need finite low <= high, got low={self.low.tolist()}, "
                             f"high={self.high.tolist()}")

    # -- continuous normalisation (numpy or torch, any leading shape) -------------------------------
    def normalize(self, actions: Any) -> Any:
        """Map actions (..., dim) from [low, high] to [-1, 1], clipping outside values."""
        actions = actions if hasattr(actions, "detach") else np.asarray(actions, dtype=np.float64)
        low, high = self._bounds_like(actions)
        half = (high - low) / 2
        half = half + (half == 0)  # a constant dimension maps to 0 instead of dividing by zero
        return ((actions - (high + low) / 2) / half).clip(-1.0, 1.0)

    def unnormalize(self, x: Any) -> Any:
        """Inverse of `normalize`: (..., dim) in [-1, 1] back to action units."""
        x = x if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)
        low, high = self._bounds_like(x)
        return x.clip(-1.0, 1.0) * (high - low) / 2 + (high + low) / 2

    def _bounds_like(self, x: Any) -> tuple[Any, Any]:
        if self.discrete:
            raise TypeError("normalize/unnormalize apply to continuous actions only")
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected actions with last dimension {self.dim}, got shape {tuple(x.shape)}")
        if hasattr(x, "detach"):
            import torch

            return (torch.as_tensor(self.low, dtype=x.dtype, device=x.device),
                    torch.as_tensor(self.high, dtype=x.dtype, device=x.device))
        return self.low, self.high

    # -- persistence --------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "version": FORMAT_VERSION, "prefix": self.prefix, "stats": self.stats,
            "names": list(self.names) if self.discrete else None,
            "dim": self.dim, "n_bins": self.n_bins,
            "low": None if self.discrete else self.low.tolist(),
            "high": None if self.discrete else self.high.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict) -> ActionTokenizer:
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported action tokenizer format version {data.get('version')!r}")
        if data.get("names") is not None:
            return cls(names=data["names"], prefix=data["prefix"], stats=data["stats"])
        return cls(dim=data["dim"], n_bins=data["n_bins"], low=data["low"], high=data["high"],
                   stats=data["stats"], prefix=data["prefix"])

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ActionTokenizer:
        return cls.from_json(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        if self.discrete:
            return f"ActionTokenizer(names={list(self.names)})"
        return f"ActionTokenizer(dim={self.dim}, n_bins={self.n_bins}, stats={self.stats!r})"

