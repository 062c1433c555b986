"""`keypoints`: where things are in a colour image, as K expected image coordinates (spatial soft-argmax).

A frozen random vision tower mixes positions into patch features that a small head cannot read back;
a control policy needs *where* the target is. Following Levine et al. (2016, end-to-end visuomotor
policies) and Diffusion Policy's image encoder, this modality reads the same `(H, W, 3)` uint8
camera image as `rgb` (`source`, the observation key it reads) and encodes it with

    colour-opponent input   x - mean_c(x): grey floor and white/grey arm → ~0, coloured spheres stand out
    colour filters          `bank: hue`: K fixed hue directions evenly around the colour-opponent plane
                            (channel k ∝ chroma · cos(hue - 360k/K°), then ReLU), so a colour word maps to
                            the same channel in every image; `bank: random`: seeded random 1x1 convs
                            (3 → C → ReLU → K)
    blur                    a fixed k x k Gaussian per channel (a blob filter: a channel peaks at a
                            sphere's centre rather than on its rim)
    spatial soft-argmax     softmax over the H x W map of each channel (temperature `temperature`)
                            → expected (x, y) in [-1, 1] (x right, y down)

One feature token per keypoint: `[x, y, r, g, b, peak, sin/cos(2^f pi x), sin/cos(2^f pi y) ...]`,
where (r, g, b) is the image colour averaged under the channel's attention (which sphere it found)
and peak the largest softmax weight (how sure it is). Nothing learns: every parameter is frozen.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from graft.agent.modalities.base import Modality
from graft.envs.spec import ModalitySpec
from torch import nn


class KeypointsModality(Modality):
    def __init__(self, name: str = "keypoints", source: str = "rgb", num_keypoints: int = 8,
                 hidden_channels: int = 16, kernel_size: int = 5, blur_sigma: float = 1.5,
                 image_size: int = 64, temperature: float = 0.05, fourier: int = 3, bank: str = "random",
                 seed: int = 0):
        super().__init__(name)
        if num_keypoints < 1 or hidden_channels < 1 or image_size < 2 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"modality '{name}': need num_keypoints, hidden_channels >= 1, image_size >= 2 and an odd "
                             f"kernel_size, got {num_keypoints}, {hidden_channels}, {image_size}, {kernel_size}")
        if temperature <= 0:
            raise ValueError(f"modality '{name}': temperature must be positive, got {temperature}")
        self.source, self.num_keypoints, self.image_size = source, int(num_keypoints), int(image_size)
        self.temperature, self.fourier = float(temperature), int(fourier)
        if blur_sigma <= 0:
            raise ValueError(f"modality '{name}': blur_sigma must be positive, got {blur_sigma}")
        if bank not in ("random", "hue"):
            raise ValueError(f"modality '{name}': bank must be 'random' or 'hue', got {bank!r}")
        self.bank = bank
        generator = torch.Generator().manual_seed(int(seed))
        colour = nn.Conv2d(3, hidden_channels, 1)
        mix = nn.Conv2d(hidden_channels, num_keypoints, 1)
        for conv in (colour, mix):  # seeded without touching the global RNG
            fan_in = conv.weight[0].numel()
            conv.weight.data = torch.randn(conv.weight.shape, generator=generator) / math.sqrt(fan_in)
            conv.bias.data = torch.zeros_like(conv.bias)
        if bank == "hue":  # K hue directions evenly around the colour-opponent plane: channel k ∝ chroma · cos(hue - θk)
            theta = torch.arange(num_keypoints, dtype=torch.float32) * (2 * math.pi / num_keypoints)
            a = torch.tensor([1.0, -0.5, -0.5])  # red - (green + blue) / 2
            b = torch.tensor([0.0, 1.0, -1.0]) * (3**0.5 / 2)  # (green - blue) * sqrt(3) / 2
            colour = nn.Conv2d(3, num_keypoints, 1)
            colour.weight.data = (torch.cos(theta)[:, None] * a + torch.sin(theta)[:, None] * b)[:, :, None, None] * 2
            colour.bias.data = torch.zeros(num_keypoints)
            mix = nn.Identity()
        blur = nn.Conv2d(num_keypoints, num_keypoints, kernel_size, padding=kernel_size // 2, groups=num_keypoints,
                         bias=False, padding_mode="replicate")
        r = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
        g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * blur_sigma**2))
        blur.weight.data = (g / g.sum()).expand(num_keypoints, 1, kernel_size, kernel_size).clone()
        self.encoder = nn.Sequential(colour, nn.ReLU(), mix, blur)
        axis = torch.linspace(-1.0, 1.0, self.image_size)
        gy, gx = torch.meshgrid(axis, axis, indexing="ij")
        self.register_buffer("grid", torch.stack([gx.flatten(), gy.flatten()], -1), persistent=False)  # (HW, 2)
        self.freeze()

    @property
    def spec(self) -> ModalitySpec:
        return ModalitySpec(self.name, (None, None, 3), "uint8", 0, 255,
                            f"colour image HxWx3 (the '{self.source}' observation), encoded as keypoints")

    @property
    def feature_dim(self) -> int:
        return 6 + 4 * self.fourier

    def sample(self, rng: np.random.Generator, size: int = 64) -> np.ndarray:
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)

    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.grid.device)  # (B, H, W, 3) uint8
        x = x.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"modality '{self.name}': expected images (B, 3, {self.image_size}, {self.image_size}) "
                             f"in [0, 1], got shape {tuple(x.shape)}")
        b = x.shape[0]
        opponent = x - x.mean(dim=1, keepdim=True)  # (B, 3, H, W): zero on greys
        logits = self.encoder(opponent * 4.0).flatten(2)  # (B, K, HW)
        attention = torch.softmax(logits / self.temperature, dim=-1)  # (B, K, HW)
        xy = attention @ self.grid  # (B, K, 2) expected coordinates in [-1, 1]
        colour = attention @ x.flatten(2).transpose(1, 2)  # (B, K, 3) colour under the attention
        peak = attention.amax(-1, keepdim=True) * attention.shape[-1] ** 0.5  # (B, K, 1)
        feats = [xy, colour * 2 - 1, peak.clamp(max=4.0) - 1]
        for f in range(self.fourier):
            angle = (2.0 ** f) * math.pi * xy
            feats += [torch.sin(angle), torch.cos(angle)]
        return torch.cat(feats, -1).reshape(b, self.num_keypoints, self.feature_dim)  # (B, K, F)
