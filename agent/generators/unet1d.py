"""A conditional 1D UNet over action chunks (Diffusion Policy's ConditionalUnet1D, built from diffusers parts).

diffusers' own `UNet1DModel` has no conditioning input, so this one is written here from diffusers
blocks: `Conv1dBlock` (Conv1d → GroupNorm → Mish), `Downsample1D` / `Upsample1D`, and the
sinusoidal `Timesteps` + `TimestepEmbedding` of the diffusion step. Conditioning is global: the
step embedding and the flattened conditioning tokens `(B, N*C)` form one vector that modulates
every residual block by FiLM (a per-channel scale and shift after its first convolution).

    sample (B, H, A) ─► [FiLM res ×2 → down] per level ─► FiLM res ×2 (mid)
                     ─► [concat skip → FiLM res ×2 → up] per level but the first ─► (B, H, A)

It is a diffusers `ModelMixin` + `ConfigMixin`, so `save_pretrained` / `from_pretrained` work as for
any diffusers model. The horizon H must be divisible by 2**(levels - 1).

With `cond_readout`, a linear map from the flattened conditioning to a whole chunk `(H, A)` rides
along (`readout`); it is not used for denoising. Training regresses the expert chunk from the
conditioning through it (ActionGenerator.readout_loss), the action analogue of NExT-GPT's
alignment loss: the output head learns *what* the conditioning must say (which object, where)
from a direct regression signal instead of only through the denoiser's noisy gradient.
"""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.downsampling import Downsample1D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Conv1dBlock
from diffusers.models.upsampling import Upsample1D
from torch import nn


class FiLMResidualBlock1D(nn.Module):
    """Two Conv1dBlocks with a FiLM scale/shift from the global conditioning between them."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int = 5, n_groups: int = 8):
        super().__init__()
        self.conv_in = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.conv_out = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_channels))
        self.residual = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, C_out, H)
        scale, shift = self.film(cond).unsqueeze(-1).chunk(2, dim=1)  # (B, C_out, 1) each
        h = self.conv_out(h * (1 + scale) + shift)
        return h + self.residual(x)


class ConditionalUnet1D(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, action_dim: int = 2, horizon: int = 16, cond_tokens: int = 2, cond_dim: int = 64,
                 channels: tuple[int, ...] = (32, 64, 128), time_embed_dim: int = 64, kernel_size: int = 5,
                 n_groups: int = 8, cond_readout: bool = False):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if horizon % 2 ** (len(channels) - 1):
            raise ValueError(f"horizon {horizon} must be divisible by 2**(levels-1) = {2 ** (len(channels) - 1)} "
                             f"for channels {channels}")
        self.time_proj = Timesteps(time_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(time_embed_dim, 4 * time_embed_dim, act_fn="mish", out_dim=time_embed_dim)
        global_dim = time_embed_dim + cond_tokens * cond_dim

        def block(i: int, o: int) -> FiLMResidualBlock1D:
            return FiLMResidualBlock1D(i, o, global_dim, kernel_size, n_groups)

        self.down = nn.ModuleList()
        ins = (action_dim,) + channels[:-1]
        for level, (i, o) in enumerate(zip(ins, channels)):
            last = level == len(channels) - 1
            self.down.append(nn.ModuleList([block(i, o), block(o, o),
                                            nn.Identity() if last else Downsample1D(o, use_conv=True)]))
        self.mid = nn.ModuleList([block(channels[-1], channels[-1]), block(channels[-1], channels[-1])])
        self.up = nn.ModuleList()
        for level in reversed(range(1, len(channels))):  # each joins the skip of `level`, ends one level up
            c_skip, c_out = channels[level], channels[level - 1]
            self.up.append(nn.ModuleList([block(2 * c_skip, c_out), block(c_out, c_out),
                                          Upsample1D(c_out, use_conv_transpose=True)]))
        self.out = nn.Sequential(Conv1dBlock(channels[0], channels[0], kernel_size, n_groups),
                                 nn.Conv1d(channels[0], action_dim, 1))
        self.readout_head = nn.Linear(cond_tokens * cond_dim, horizon * action_dim) if cond_readout else None

    def readout(self, cond: torch.Tensor) -> torch.Tensor:
        """Conditioning `(B, N, C)` → a chunk `(B, H, A)` regressed directly (needs `cond_readout`)."""
        if self.readout_head is None:
            raise ValueError("this UNet was built without cond_readout")
        h, a = self.config.horizon, self.config.action_dim
        return self.readout_head(cond.reshape(cond.shape[0], -1)).view(-1, h, a)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, cond: torch.Tensor) -> torch.Tensor:
        """Noisy chunks `(B, H, A)`, diffusion steps `(B,)` (or one for all), conditioning `(B, N, C)` → `(B, H, A)`."""
        b = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.expand(b) if t.ndim == 0 else t
        t_emb = self.time_embed(self.time_proj(t).to(sample.dtype))  # (B, T)
        g = torch.cat([t_emb, cond.reshape(b, -1).to(sample.dtype)], dim=-1)  # (B, T + N*C)
        x = sample.transpose(1, 2)  # (B, A, H)
        skips = []
        for res1, res2, down in self.down:
            x = res2(res1(x, g), g)
            skips.append(x)
            x = down(x)
        for res in self.mid:
            x = res(x, g)
        for res1, res2, up in self.up:  # the finest skip (level 0) is not re-used, as in Diffusion Policy
            x = res2(res1(torch.cat([x, skips.pop()], dim=1), g), g)  # (B, C_level-1, H')
            x = up(x)  # (B, C_level-1, 2H')
        return self.out(x).transpose(1, 2)  # (B, H, A)
