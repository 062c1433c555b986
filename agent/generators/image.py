"""Image generator: a diffusers `UNet2DConditionModel` cross-attending to the conditioning tokens.

The layout is Stable Diffusion's, so a saved generator is a folder of diffusers subfolders

    unet/  scheduler/  text_encoder/  tokenizer/  [vae/]  graft_generator.json

and `ImageGenerator.from_pretrained` reads any folder or Hub id with that layout (an SD checkpoint
included). With a `vae/` the UNet denoises `AutoencoderKL` latents (latent diffusion); without one
it works in pixel space, which is enough at 32x32. The text encoder (`CLIPTextModel`) is the
generator's own conditioning encoder: it stays frozen, and in training the output projector's
features are pulled towards its features of the target caption (NExT-GPT's alignment), so the
conditioning width C is the text encoder's hidden size and N its maximum length.

Offline, `build()` makes every part from a tiny config with random weights (the tokenizer is
graft's own BPE one): same classes, same code path as a downloaded checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from graft.agent.generators.base import META_FILE, Generator, read_meta, sampler_settings
from graft.agent.tokenizer import build_tiny_tokenizer
from graft.envs.atomic import write_dir_atomic, write_json_atomic
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel


class ImageGenerator(Generator):
    kind = "image"

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer, scheduler: DDPMScheduler,
                 vae: AutoencoderKL | None = None, sampler: str = "ddim", sample_steps: int = 10):
        super().__init__(scheduler, sampler, sample_steps)
        if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
            raise ValueError(f"the UNet cross-attends to {unet.config.cross_attention_dim}-wide tokens but the text "
                             f"encoder is {text_encoder.config.hidden_size}-wide")
        self.unet, self.text_encoder, self.tokenizer, self.vae = unet, text_encoder, tokenizer, vae
        self.max_length = min(int(tokenizer.model_max_length), int(text_encoder.config.max_position_embeddings))
        self.text_encoder.requires_grad_(False)
        if self.vae is not None:
            self.vae.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "ImageGenerator":
        super().train(mode)
        self.text_encoder.eval()  # frozen encoders stay in eval mode whatever the caller does
        if self.vae is not None:
            self.vae.eval()
        return self

    # ---- shapes ----------------------------------------------------------------------------------
    @property
    def cond_tokens(self) -> int:
        return self.max_length

    @property
    def cond_dim(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    @property
    def latent_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def image_size(self) -> int:
        """Side of the generated (square) images in pixels."""
        return int(self.unet.config.sample_size) * self.latent_scale

    @property
    def sample_shape(self) -> tuple[int, ...]:
        s = int(self.unet.config.sample_size)
        return (int(self.unet.config.in_channels), s, s)

    # ---- conditioning encoder (frozen) -----------------------------------------------------------
    @torch.no_grad()
    def encode_condition(self, texts: list[str]) -> torch.Tensor:
        """Captions → the frozen text encoder's last hidden states `(B, N, C)`, padded to N tokens."""
        ids = self.tokenizer(list(texts), padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt")["input_ids"].to(self.device)
        return self.text_encoder(input_ids=ids).last_hidden_state  # (B, N, C)

    # ---- targets ---------------------------------------------------------------------------------
    def preprocess(self, images: Any) -> torch.Tensor:
        """uint8 images `(B, H, W, 3)` → float `(B, 3, S, S)` in [-1, 1] at the generator's size."""
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise ValueError(f"image generator: expected uint8 images (B, H, W, 3), got {str(x.dtype).replace('torch.', '')} "
                             f"of shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float().to(self.device) / 127.5 - 1.0  # (B, 3, H, W)
        s = self.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x.clamp(-1.0, 1.0)

    def to_model_space(self, images: Any) -> torch.Tensor:
        x = self.preprocess(images)  # (B, 3, S, S)
        if self.vae is None:
            return x
        with torch.no_grad():
            return self.vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor  # (B, c, s, s)

    def from_model_space(self, x: torch.Tensor) -> np.ndarray:
        if self.vae is not None:
            with torch.no_grad():
                x = self.vae.decode(x / self.vae.config.scaling_factor).sample
        x = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()  # (B, S, S, 3) uint8

    @property
    def denoiser(self) -> UNet2DConditionModel:
        return self.unet

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=cond).sample

    # ---- building, saving, loading ---------------------------------------------------------------
    @classmethod
    def build(cls, pretrained: str | None = None, image_size: int = 32, unet: Mapping | None = None,
              text_encoder: Mapping | None = None, scheduler: Mapping | None = None, vae: Mapping | None = None,
              vocab_size: int = 512, sampler: str = "ddim", sample_steps: int = 10, seed: int = 0) -> "ImageGenerator":
        """From a folder / Hub id (`pretrained`), or tiny random parts from the configs given."""
        if pretrained:
            return cls.from_pretrained(pretrained, sampler=sampler, sample_steps=sample_steps)
        torch.manual_seed(seed)
        tokenizer = build_tiny_tokenizer(vocab_size)
        text_cfg = CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                  **dict(text_encoder or {}))
        tokenizer.model_max_length = text_cfg.max_position_embeddings
        encoder = CLIPTextModel(text_cfg)
        autoencoder = AutoencoderKL(**dict(vae)) if vae else None
        scale = 2 ** (len(autoencoder.config.block_out_channels) - 1) if autoencoder is not None else 1
        if image_size % scale:
            raise ValueError(f"image_size {image_size} must be divisible by the VAE's downscale factor {scale}")
        channels = autoencoder.config.latent_channels if autoencoder is not None else 3
        denoiser = UNet2DConditionModel(sample_size=image_size // scale, in_channels=channels, out_channels=channels,
                                        cross_attention_dim=text_cfg.hidden_size, **dict(unet or {}))
        sched = dict(scheduler or {})
        if autoencoder is not None:
            sched.setdefault("clip_sample", False)  # latents are not confined to [-1, 1]
        return cls(denoiser, encoder, tokenizer, DDPMScheduler(**sched), autoencoder, sampler, sample_steps)

    def save_pretrained(self, folder: str | Path) -> Path:
        def write(tmp: Path) -> None:
            self.unet.save_pretrained(tmp / "unet")
            self.text_encoder.save_pretrained(tmp / "text_encoder")
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            self.scheduler.save_pretrained(tmp / "scheduler")
            if self.vae is not None:
                self.vae.save_pretrained(tmp / "vae")
            write_json_atomic(tmp / META_FILE, {**self.meta(), "image_size": self.image_size})

        return write_dir_atomic(write, folder)

    @classmethod
    def from_pretrained(cls, path: str | Path, sampler: str | None = None, sample_steps: int | None = None) -> "ImageGenerator":
        """Load a folder or Hub id with SD's subfolder layout; `vae/` is used when present."""
        path = str(path)
        settings = sampler_settings(read_meta(path), sampler, sample_steps)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet")
        encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder")
        tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer")
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        vae = None
        if (Path(path) / "vae").is_dir() or not Path(path).exists():
            try:
                vae = AutoencoderKL.from_pretrained(path, subfolder="vae")
            except (OSError, ValueError):  # a Hub repo without a vae/ subfolder: pixel space
                vae = None
        return cls(unet, encoder, tokenizer, scheduler, vae, **settings)
