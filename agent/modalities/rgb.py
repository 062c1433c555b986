"""`rgb`: a colour camera image `(H, W, 3)` uint8, encoded by a frozen vision tower."""
from __future__ import annotations

import numpy as np
import torch
from graft.agent.modalities.vision import VisionModality
from graft.envs.spec import ModalitySpec


class RGBModality(VisionModality):
    @property
    def spec(self) -> ModalitySpec:
        return ModalitySpec(self.name, (None, None, 3), "uint8", 0, 255, "colour image, HxWx3")

    def sample(self, rng: np.random.Generator, size: int = 56) -> np.ndarray:
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)

    def to_unit_range(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch))  # (B, H, W, 3) uint8
        return x.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
