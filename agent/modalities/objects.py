"""`objects`: an object list `(N, 5)` float32, one row [x, y (m), r, g, b (0-1)] per object.

What a perception stack (a tracker, fiducial markers, a segmentation model) hands a robot policy:
where each object is and what it looks like, in no particular order. The frozen encoder turns
every row into one feature token, so the LLM can attend to objects one by one (e.g. pick the one
whose colour the mission names):

    [x / scale, y / scale, sin/cos(2^f pi x / scale), sin/cos(2^f pi y / scale) for f < fourier, 2 rgb - 1]

Nothing learns: the encoder is a fixed feature map (Fourier features let a linear input
projector express positions sharply).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from graft.agent.modalities.base import Modality
from graft.envs.spec import ModalitySpec
from torch import nn

ROW = 5  # x, y, r, g, b


class FourierObjectEncoder(nn.Module):
    """Rows `(B, N, 5)` → tokens `(B, N, 5 + 4 * fourier)` (no parameters)."""

    def __init__(self, scale: float, fourier: int):
        super().__init__()
        self.scale, self.fourier = float(scale), int(fourier)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        xy = rows[..., :2] / self.scale  # (B, N, 2)
        feats = [xy, rows[..., 2:] * 2 - 1]
        for f in range(self.fourier):
            angle = (2.0 ** f) * math.pi * xy
            feats += [torch.sin(angle), torch.cos(angle)]
        return torch.cat(feats, -1)  # (B, N, F)


class ObjectsModality(Modality):
    def __init__(self, name: str = "objects", num_objects: int | None = None, scale: float = 0.25,
                 fourier: int = 4):
        super().__init__(name)
        if num_objects is not None and num_objects < 1:
            raise ValueError(f"modality '{name}': num_objects must be >= 1 or null (any), got {num_objects}")
        if scale <= 0 or fourier < 0:
            raise ValueError(f"modality '{name}': need scale > 0 and fourier >= 0, got {scale}, {fourier}")
        self.num_objects = num_objects
        self.encoder = FourierObjectEncoder(scale, fourier)
        self.register_buffer("_device", torch.zeros(0), persistent=False)  # follows .to(): Modality.device reads it
        self.freeze()

    @property
    def spec(self) -> ModalitySpec:
        return ModalitySpec(self.name, (self.num_objects, ROW), "float32", -1.0, 1.0,
                            "object list, one row [x, y (m), r, g, b (0-1)] per object")

    @property
    def feature_dim(self) -> int:
        return ROW + 4 * self.encoder.fourier

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        n = self.num_objects or 2
        xy = rng.uniform(-0.2, 0.2, (n, 2))
        return np.concatenate([xy, rng.uniform(0, 1, (n, 3))], 1).astype(np.float32)

    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        if not np.all(np.isfinite(batch)):
            raise ValueError(f"modality '{self.name}': object rows hold NaN or infinite values")
        colour = batch[..., 2:]
        if colour.size and (colour.min() < 0 or colour.max() > 1):
            raise ValueError(f"modality '{self.name}': colours (columns 2-4) must lie in [0, 1], got "
                             f"[{colour.min():.3g}, {colour.max():.3g}]")
        return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)  # (B, N, 5)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != ROW:
            raise ValueError(f"modality '{self.name}': expected object rows (B, N, {ROW}), got {tuple(x.shape)}")
        return self.encoder(x)  # (B, N, F)
