"""Frozen Hugging Face vision towers shared by image-like modalities.

Supported families: vision transformers (CLIP, SigLIP, ViT, DINOv2), which yield patch tokens, and
CNNs (ConvNeXt, ResNet), whose last feature map `(B, C, h, w)` becomes `h*w` tokens of width `C`.
`load_vision_tower(pretrained, tower)` builds the tower from a Hub id / local path, or from a tiny
config with random weights: the same classes and forward either way. For composite checkpoints
(CLIP, SigLIP) only the vision half is loaded; any other family fails before weights are read.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from graft.agent.modalities.base import Modality
from transformers import AutoConfig, AutoModel, PretrainedConfig

# model_type of the (vision) config → family; `encode` knows how to read exactly these outputs.
FAMILIES = {
    "clip_vision_model": "CLIP", "siglip_vision_model": "SigLIP", "vit": "ViT", "dinov2": "DINOv2",
    "convnext": "ConvNeXt", "resnet": "ResNet",
}


def vision_config(config: PretrainedConfig, source: str) -> PretrainedConfig:
    """The config of the tower to load (the vision half of CLIP / SigLIP); rejects unsupported families."""
    vision = getattr(config, "vision_config", None) or config
    if vision.model_type not in FAMILIES:
        raise ValueError(f"vision tower {source!r}: unsupported {type(config).__name__} (model_type "
                         f"{config.model_type!r}); supported families: {', '.join(FAMILIES.values())} "
                         f"(model_type {', '.join(map(repr, FAMILIES))})")
    return vision


def load_vision_tower(pretrained: str | None, tower: Mapping[str, Any] | None, seed: int = 0):
    if pretrained:
        config = vision_config(AutoConfig.from_pretrained(pretrained), pretrained)
        return AutoModel._model_mapping[type(config)].from_pretrained(pretrained)
    if not tower:
        raise ValueError("a vision modality needs either `pretrained` (Hub id or path) or a tiny `tower` config")
    tower = dict(tower)
    if "model_type" not in tower:
        raise ValueError(f"a tiny `tower` config needs a `model_type` (one of {', '.join(FAMILIES)}), got {sorted(tower)}")
    model_type = tower.pop("model_type")
    config = vision_config(AutoConfig.for_model(model_type, **tower), f"tower:{model_type}")
    torch.manual_seed(seed)
    return AutoModel.from_config(config)


class VisionModality(Modality):
    """An image-like observation `(H, W, C)` encoded by a frozen vision tower into tokens `(B, N, F)`."""

    channels: int = 3

    def __init__(self, name: str, pretrained: str | None = None, tower: Mapping[str, Any] | None = None,
                 mean: float | list[float] = 0.5, std: float | list[float] = 0.5, drop_cls: bool = True,
                 seed: int = 0, image_size: int | None = None):
        super().__init__(name)
        self.encoder = load_vision_tower(pretrained, tower, seed)
        cfg = self.encoder.config
        # Side the tower reads: ViTs need their config's; CNNs read any (ResNet configs name none: 224).
        self.image_size = int(image_size or getattr(cfg, "image_size", 224))
        self.tower_channels = int(getattr(cfg, "num_channels", 3))
        self.drop_cls = drop_cls
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1), persistent=False)
        self.freeze()

    @property
    def feature_dim(self) -> int:
        cfg = self.encoder.config
        sizes = getattr(cfg, "hidden_sizes", None)  # CNNs: channels per stage; the last one is the output
        return int(sizes[-1] if sizes else cfg.hidden_size)

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
        hidden = self.encoder(pixel_values=x).last_hidden_state  # ViT: (B, [1 +] N, F); CNN: (B, F, h, w)
        if hidden.ndim == 4:  # CNN feature map: one token per cell
            return hidden.flatten(2).transpose(1, 2)  # (B, h*w, F)
        n_patches = (self.image_size // int(self.encoder.config.patch_size)) ** 2
        if self.drop_cls and hidden.shape[1] > n_patches:
            hidden = hidden[:, -n_patches:]
        return hidden
