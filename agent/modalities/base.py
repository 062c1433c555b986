"""The Modality Encoder contract: one frozen encoder per observation key.

A modality owns its name (observation key, placeholder token `<name>`, adapter name, memory key
and report column all at once), the `ModalitySpec` its observations must meet, the preprocessing
from raw numpy observations to tensors, and a frozen encoder producing features `(B, N, F)`.
Subclasses live one per file in this folder and are built from `configs/modality/<name>.yaml`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from graft.envs.spec import ModalitySpec
from torch import nn


class Modality(nn.Module, ABC):
    """Base class: validate → preprocess → frozen encode. Subclasses build `self.encoder`."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    @property
    @abstractmethod
    def spec(self) -> ModalitySpec:
        """What one observation of this modality must look like (no batch axis)."""

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """F, the width of the encoder's output features."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A valid random observation (one sample): for smoke runs, tests and `graft chat`."""

    @abstractmethod
    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        """Raw, validated observations `(B, *spec.shape)` → encoder input tensor."""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder input → features `(B, N, F)`."""

    def freeze(self) -> "Modality":
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "Modality":
        # Frozen means frozen: dropout and norm statistics stay in eval mode whatever the caller does.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        for tensor in (*self.parameters(), *self.buffers()):  # a parameter-free encoder has buffers, or runs on CPU
            return tensor.device
        return torch.device("cpu")

    def validate(self, value: Any, batched: bool = True) -> np.ndarray:
        return self.spec.validate(value, batched=batched)

    def forward(self, batch: np.ndarray, validate: bool = True) -> torch.Tensor:
        """Batch of raw observations (validated here unless the caller did) → frozen features `(B, N, F)`."""
        x = self.preprocess(self.validate(batch) if validate else batch)
        with torch.no_grad():
            return self.encode(x)
