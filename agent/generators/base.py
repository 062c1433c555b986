"""The Modality Generator contract: a conditional diffusers denoiser for one output modality.

A generator reads conditioning `(B, N, C)` — the output projector's features of the LLM's signal
tokens — and produces targets of a fixed shape (goal images, action chunks). It trains with the
conditional diffusion loss under a DDPM schedule (`loss`) and samples in a few steps with DDIM or
DPM-Solver built from the same schedule (`generate`); the sampling noise comes from a seeded
`torch.Generator`, so a seed gives the same sample every time.

Subclasses own the denoiser, the mapping between targets and its space (normalisation, resizing,
a VAE's latents) and a saved folder: diffusers-format subfolders + `graft_generator.json`.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

SAMPLERS = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler}
META_FILE = "graft_generator.json"


class Generator(nn.Module, ABC):
    """Base class: DDPM training loss, few-step sampling, frozen conditioning encoders stay frozen."""

    kind: str = "generator"

    def __init__(self, scheduler: DDPMScheduler, sampler: str = "ddim", sample_steps: int = 10):
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if int(sample_steps) < 1:
            raise ValueError(f"sample_steps must be >= 1, got {sample_steps}")
        self.scheduler = DDPMScheduler.from_config(scheduler.config)  # training schedule
        self.sampler, self.sample_steps = sampler, int(sample_steps)

    # ---- what a subclass provides ----------------------------------------------------------------
    @property
    @abstractmethod
    def cond_tokens(self) -> int:
        """N, the number of conditioning tokens the denoiser reads."""

    @property
    @abstractmethod
    def cond_dim(self) -> int:
        """C, the width of each conditioning token."""

    @property
    @abstractmethod
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample in the denoiser's space, without the batch axis."""

    @abstractmethod
    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The denoiser's prediction (noise, sample or velocity) for noisy `x` at timesteps `t` `(B,)`."""

    @abstractmethod
    def to_model_space(self, targets: Any) -> torch.Tensor:
        """Raw targets (validated) → clean samples `(B, *sample_shape)` for the diffusion loss."""

    @abstractmethod
    def from_model_space(self, x: torch.Tensor) -> Any:
        """Denoised samples → raw targets (uint8 images, actions in env units)."""

    @abstractmethod
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the generator as diffusers-format subfolders + graft_generator.json."""

    @property
    @abstractmethod
    def denoiser(self) -> nn.Module:
        """The part that learns (the UNet); encoders and VAEs stay frozen."""

    def encode_condition(self, texts: list[str]) -> torch.Tensor | None:
        """The generator's own conditioning encoder on captions `(B, N, C)`, or None if it has none."""
        return None

    def readout_loss(self, targets: Any, cond: torch.Tensor) -> torch.Tensor | None:
        """An auxiliary loss that shapes the conditioning directly from the targets (None: none)."""
        return None

    # ---- shared machinery ------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def check_cond(self, cond: torch.Tensor) -> None:
        if cond.ndim != 3 or tuple(cond.shape[1:]) != (self.cond_tokens, self.cond_dim):
            raise ValueError(f"{self.kind} generator: expected conditioning (B, {self.cond_tokens}, {self.cond_dim}), "
                             f"got shape {tuple(cond.shape)}")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def loss(self, targets: Any, cond: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The conditional diffusion loss on raw targets (images, action chunks): MSE of the denoiser's
        prediction at a random timestep of the DDPM schedule."""
        x0 = self.to_model_space(targets)
        self.check_cond(cond)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        steps = self.scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, x0.shape[:1], generator=generator).to(x0.device)
        x_t = self.scheduler.add_noise(x0, noise, t)
        pred = self.denoise(x_t, t, cond.to(x0.dtype))
        target = {"epsilon": noise, "sample": x0}.get(self.scheduler.config.prediction_type)
        if target is None:
            target = self.scheduler.get_velocity(x0, noise, t)
        return F.mse_loss(pred, target)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int | None = None, seed: int = 0,
               shared_noise: bool = False) -> torch.Tensor:
        """Denoise from seeded Gaussian noise in `steps` sampler steps → `(B, *sample_shape)`.
        `shared_noise`: every row starts from the noise row 0 would get alone, so a row's sample does
        not depend on the rows batched with it (DDIM / DPM-Solver only: DDPM steps draw fresh noise)."""
        self.check_cond(cond)
        if shared_noise and self.sampler == "ddpm":
            raise ValueError("shared_noise needs a sampler that adds no noise per step (ddim or dpm), not ddpm")
        was_training = self.training
        self.eval()
        sched = SAMPLERS[self.sampler].from_config(self.scheduler.config)
        sched.set_timesteps(int(steps or self.sample_steps), device=self.device)
        noise = torch.Generator().manual_seed(int(seed))
        rows = 1 if shared_noise else cond.shape[0]
        x = torch.randn((rows, *self.sample_shape), generator=noise).expand(cond.shape[0], *self.sample_shape)
        x = x.to(self.device, cond.dtype) * sched.init_noise_sigma
        for t in sched.timesteps:
            model_in = sched.scale_model_input(x, t)
            out = self.denoise(model_in, t.expand(x.shape[0]), cond)
            x = sched.step(out, t, x, generator=noise).prev_sample  # DDIM (eta 0) and DPM-Solver++ add no noise
        self.train(was_training)
        return x

    def generate(self, cond: torch.Tensor, steps: int | None = None, seed: int = 0, shared_noise: bool = False) -> Any:
        """Conditioning `(B, N, C)` → raw targets (see `from_model_space`)."""
        return self.from_model_space(self.sample(cond, steps, seed, shared_noise))

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "sampler": self.sampler, "sample_steps": self.sample_steps}


def read_meta(folder: str | Path) -> dict[str, Any]:
    """graft_generator.json of a saved generator, or {} for a folder (or Hub id) without one."""
    path = Path(folder) / META_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def sampler_settings(meta: Mapping[str, Any], sampler: str | None, sample_steps: int | None) -> dict[str, Any]:
    return {"sampler": sampler or meta.get("sampler", "ddim"), "sample_steps": int(sample_steps or meta.get("sample_steps", 10))}
