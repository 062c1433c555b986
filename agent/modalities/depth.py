"""`depth`: a metric depth image `(H, W)` float32 in metres, encoded by a frozen vision tower.

Depth is clipped to `[0, max_depth]` and scaled to [0, 1]; a one-channel tower reads it directly,
an RGB tower (e.g. a pretrained CLIP) gets the channel repeated three times.
"""
from __future__ import annotations

import numpy as np
import torch
from graft.agent.modalities.vision import VisionModality
from graft.envs.spec import ModalitySpec


class DepthModality(VisionModality):
    def __init__(self, name: str = "depth", max_depth: float = 5.0, **kwargs):
        super().__init__(name, **kwargs)
        self.max_depth = float(max_depth)

    @property
    def spec(self) -> ModalitySpec:
        return ModalitySpec(self.name, (None, None), "float32", 0.0, None, "metric depth in metres, HxW")

    def sample(self, rng: np.random.Generator, size: int = 64) -> np.ndarray:
        return rng.uniform(0.0, self.max_depth, (size, size)).astype(np.float32)

    def to_unit_range(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)).unsqueeze(1)  # (B, 1, H, W)
        return x.clamp(0.0, self.max_depth) / self.max_depth
