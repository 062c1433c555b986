"""Frozen Hugging Face vision towers (CLIP, SigLIP, ViT, DINOv2) shared by image-like modalities.

`load_vision_tower(pretrained, tower)` builds the tower from a Hub id / local path, or from a tiny
config with random weights: the same classes and forward either way. For composite checkpoints
(CLIP, SigLIP) only the vision half is loaded.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from graft.agent.modalities.base import Modality
from transformers import AutoConfig, AutoModel


def load_vision_tower(pretrained: str | None, tower: Mapping[str, Any] | None, seed: int = 0):
    if pretrained:
        config = AutoConfig.from_pretrained(pretrained)
        if hasattr(config, "vision_config"):  # CLIP / SigLIP: keep the vision model only
            vision_cls = AutoModel._model_mapping[type(config.vision_config)]
            return vision_cls.from_pretrained(pretrained)
        return AutoModel.from_pretrained(pretrained)
    if not tower:
        raise ValueError("a vision modality needs either `pretrained` (Hub id or path) or a tiny `tower` config")
    tower = dict(tower)
    config = AutoConfig.for_model(tower.pop("model_type"), **tower)
    torch.manual_seed(seed)
    return AutoModel.from_config(config)


class VisionModality(Modality):
    """An image-like observation `(H, W, C)` encoded by a frozen vision transformer into patch tokens."""

    channels: int = 3

    def __init__(
        self,
        name: str,
        pretrained: str | None = None,
        tower: Mapping[str, Any] | None = None,
        mean: float | list[float] = 0.5,
        std: float | list[float] = 0.5,
        drop_cls: bool = True,
        seed: int = 0,
    ):
        super().__init__(name)
        self.encoder = load_vision_tower(pretrained, tower, seed)
        cfg = self.encoder.config
        self.image_size = int(cfg.image_size)
        self.tower_channels = int(getattr(cfg, "num_channels", 3))
        self.drop_cls = drop_cls
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1), persistent=False)
        self.freeze()

    @property
    def feature_dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    def to_unit_range(self, batch: np.ndarray) -> torch.Tensor:
        """Raw observations → float `(B, C, H, W)` in [0, 1]."""
        raise NotImplementedError

    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        x = self.to_unit_range(batch).to(self.device)  # (B, C, H, W)
        if x.shape[1] != self.tower_channels:  # e.g. one-channel depth into an RGB tower
            x = x.expand(-1, self.tower_channels, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(pixel_values=x).last_hidden_state  # (B, 1 + N, F) or (B, N, F)
        n_patches = (self.image_size // int(self.encoder.config.patch_size)) ** 2
        if self.drop_cls and hidden.shape[1] > n_patches:
            hidden = hidden[:, -n_patches:]
        return hidden
