"""Action generator: conditional diffusion over action chunks `(H, A)`, Diffusion-Policy style.

The denoiser is `ConditionalUnet1D` (agent/generators/unet1d.py), globally conditioned by FiLM on
the output projector's features. Actions are normalised to [-1, 1] per dimension with the same
statistics and code as `graft.agent.action_tokenizer.ActionTokenizer` (`fit` on the training
actions, then `normalize` / `unnormalize`), so the DDPM schedule's clipping range matches the
data. A saved generator is

    unet/  scheduler/  action_stats.json  graft_generator.json

(`unet/` is a diffusers ModelMixin folder; `action_stats.json` is `ActionTokenizer.save`).
There is no conditioning encoder for actions: the conditioning is learned end to end through the
diffusion loss.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from diffusers import DDPMScheduler
from graft.agent.action_tokenizer import ActionTokenizer
from graft.agent.generators.base import META_FILE, Generator, read_meta, sampler_settings
from graft.agent.generators.unet1d import ConditionalUnet1D
from graft.envs.atomic import write_dir_atomic, write_json_atomic

STATS_FILE = "action_stats.json"


class ActionGenerator(Generator):
    kind = "action"

    def __init__(self, unet: ConditionalUnet1D, scheduler: DDPMScheduler, normalizer: ActionTokenizer | None = None,
                 sampler: str = "ddim", sample_steps: int = 10):
        super().__init__(scheduler, sampler, sample_steps)
        self.unet = unet
        self.normalizer = normalizer or ActionTokenizer(dim=self.action_dim)
        if self.normalizer.discrete or self.normalizer.dim != self.action_dim:
            raise ValueError(f"action statistics are for {self.normalizer!r}, the UNet generates {self.action_dim}-dim actions")

    # ---- shapes ----------------------------------------------------------------------------------
    @property
    def horizon(self) -> int:
        return int(self.unet.config.horizon)

    @property
    def action_dim(self) -> int:
        return int(self.unet.config.action_dim)

    @property
    def cond_tokens(self) -> int:
        return int(self.unet.config.cond_tokens)

    @property
    def cond_dim(self) -> int:
        return int(self.unet.config.cond_dim)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.horizon, self.action_dim)

    # ---- targets ---------------------------------------------------------------------------------
    def fit(self, actions: Any) -> "ActionGenerator":
        """Fit the normalisation statistics on training actions `(..., A)`."""
        self.normalizer.fit(np.asarray(actions, dtype=np.float64).reshape(-1, self.action_dim))
        return self

    def validate(self, chunks: Any) -> np.ndarray:
        a = chunks.detach().cpu().numpy() if isinstance(chunks, torch.Tensor) else np.asarray(chunks)
        if a.ndim != 3 or a.shape[1:] != self.sample_shape or a.dtype.kind != "f":
            raise ValueError(f"action generator: expected float action chunks (B, {self.horizon}, {self.action_dim}) "
                             f"(B, horizon, action dim), got {a.dtype} of shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("action generator: action chunks hold NaN or infinite values")
        return a

    def to_model_space(self, chunks: Any) -> torch.Tensor:
        a = self.validate(chunks)
        return torch.from_numpy(self.normalizer.normalize(a)).float().to(self.device)  # (B, H, A) in [-1, 1]

    def from_model_space(self, x: torch.Tensor) -> np.ndarray:
        return self.normalizer.unnormalize(x.detach().cpu().double().numpy()).astype(np.float32)  # (B, H, A)

    @property
    def denoiser(self) -> ConditionalUnet1D:
        return self.unet

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, cond)

    def readout_loss(self, targets: Any, cond: torch.Tensor) -> torch.Tensor | None:
        """MSE of the chunk regressed from the conditioning (UNet `cond_readout`) to the normalised target."""
        if self.unet.readout_head is None:
            return None
        self.check_cond(cond)
        return torch.nn.functional.mse_loss(self.unet.readout(cond), self.to_model_space(targets))

    # ---- building, saving, loading ---------------------------------------------------------------
    @classmethod
    def build(cls, pretrained: str | None = None, horizon: int = 16, action_dim: int = 2, cond_tokens: int = 2,
              cond_dim: int = 64, unet: Mapping | None = None, scheduler: Mapping | None = None,
              sampler: str = "ddim", sample_steps: int = 10, seed: int = 0) -> "ActionGenerator":
        """From a saved folder (`pretrained`), or a fresh random UNet from the configs given."""
        if pretrained:
            return cls.from_pretrained(pretrained, sampler=sampler, sample_steps=sample_steps)
        torch.manual_seed(seed)
        denoiser = ConditionalUnet1D(action_dim=action_dim, horizon=horizon, cond_tokens=cond_tokens, cond_dim=cond_dim,
                                     **dict(unet or {}))
        return cls(denoiser, DDPMScheduler(**dict(scheduler or {})), None, sampler, sample_steps)

    def save_pretrained(self, folder: str | Path) -> Path:
        def write(tmp: Path) -> None:
            self.unet.save_pretrained(tmp / "unet")
            self.scheduler.save_pretrained(tmp / "scheduler")
            self.normalizer.save(tmp / STATS_FILE)
            write_json_atomic(tmp / META_FILE, {**self.meta(), "horizon": self.horizon, "action_dim": self.action_dim})

        return write_dir_atomic(write, folder)

    @classmethod
    def from_pretrained(cls, path: str | Path, sampler: str | None = None, sample_steps: int | None = None) -> "ActionGenerator":
        path = Path(path)
        settings = sampler_settings(read_meta(path), sampler, sample_steps)
        unet = ConditionalUnet1D.from_pretrained(str(path), subfolder="unet")
        scheduler = DDPMScheduler.from_pretrained(str(path), subfolder="scheduler")
        stats = path / STATS_FILE
        normalizer = ActionTokenizer.load(stats) if stats.is_file() else None
        return cls(unet, scheduler, normalizer, **settings)
