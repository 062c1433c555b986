"""`proprio`: a proprioceptive state vector `(d,)` float32 (joint positions, velocities, ...).

The vector is normalised with per-dimension statistics (mean/std from the dataset, saved in the
config) and encoded by a frozen MLP into `num_tokens` feature tokens.
"""
from __future__ import annotations

import numpy as np
import torch
from graft.agent.modalities.base import Modality
from graft.envs.spec import ModalitySpec
from torch import nn


class ProprioModality(Modality):
    def __init__(
        self,
        name: str = "proprio",
        dim: int = 6,
        hidden_dim: int = 64,
        feature_dim: int = 64,
        num_tokens: int = 1,
        mean: list[float] | float = 0.0,
        std: list[float] | float = 1.0,
        seed: int = 0,
    ):
        super().__init__(name)
        self.dim, self.num_tokens, self._feature_dim = dim, num_tokens, feature_dim
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, feature_dim * num_tokens)
        )
        self.register_buffer("mean", torch.broadcast_to(torch.tensor(mean, dtype=torch.float32), (dim,)).clone())
        self.register_buffer("std", torch.broadcast_to(torch.tensor(std, dtype=torch.float32), (dim,)).clone())
        if (self.std <= 0).any():
            raise ValueError(f"modality '{name}': std must be positive, got {self.std.tolist()}")
        self.freeze()

    @property
    def spec(self) -> ModalitySpec:
        return ModalitySpec(self.name, (self.dim,), "float32", None, None, f"state vector of {self.dim} floats")

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return (rng.standard_normal(self.dim) * self.std.numpy() + self.mean.numpy()).astype(np.float32)

    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.mean.device)  # (B, d)
        return (x - self.mean) / self.std

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).view(x.shape[0], self.num_tokens, self._feature_dim)  # (B, T, F)
