"""`grid`: MiniGrid/BabyAI's symbolic egocentric view `(7, 7, 3)` uint8.

Each cell holds (object index, colour index, state index); the frozen encoder embeds the three
indices, sums them with a learned-at-init position embedding, and returns one token per cell.
"""
from __future__ import annotations

import numpy as np
import torch
from graft.agent.modalities.base import Modality
from graft.envs.spec import ModalitySpec, ObservationError
from torch import nn

# minigrid.core.constants: 11 object types, 6 colours, 3 door states.
NUM_OBJECTS, NUM_COLORS, NUM_STATES = 11, 6, 3


def view_spec(name: str, view_size: int) -> ModalitySpec:
    return ModalitySpec(name, (view_size, view_size, 3), "uint8", 0, NUM_OBJECTS - 1,
                        "symbolic view: (object, colour, state) per cell")


def sample_view(rng: np.random.Generator, view_size: int) -> np.ndarray:
    """A random symbolic view `(V, V, 3)` uint8 (every index in range)."""
    cells = [rng.integers(0, n, (view_size, view_size)) for n in (NUM_OBJECTS, NUM_COLORS, NUM_STATES)]
    return np.stack(cells, -1).astype(np.uint8)


def check_indices(spec: ModalitySpec, value: np.ndarray) -> np.ndarray:
    """`value` if its object / colour / state indices are in range, else an error naming the channel."""
    for channel, (label, size) in enumerate(zip(("object", "colour", "state"), (NUM_OBJECTS, NUM_COLORS, NUM_STATES))):
        top = int(value[..., channel].max()) if value.size else 0
        if top >= size:
            raise ObservationError(f"modality {spec.describe()}: {label} index {top} in channel "
                                   f"{channel}, expected < {size}")
    return value


class GridModality(Modality):
    def __init__(self, name: str = "grid", view_size: int = 7, feature_dim: int = 32, seed: int = 0):
        super().__init__(name)
        self.view_size, self._feature_dim = view_size, feature_dim
        torch.manual_seed(seed)
        self.object_embed = nn.Embedding(NUM_OBJECTS, feature_dim)
        self.color_embed = nn.Embedding(NUM_COLORS, feature_dim)
        self.state_embed = nn.Embedding(NUM_STATES, feature_dim)
        self.position_embed = nn.Parameter(torch.randn(view_size * view_size, feature_dim) * 0.02)
        self.freeze()

    @property
    def spec(self) -> ModalitySpec:
        return view_spec(self.name, self.view_size)

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)).long()  # (B, 7, 7, 3)
        return x.to(self.position_embed.device).flatten(1, 2)  # (B, 49, 3)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return sample_view(rng, self.view_size)

    def validate(self, value, batched: bool = True) -> np.ndarray:
        return check_indices(self.spec, super().validate(value, batched))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (self.object_embed(x[..., 0]) + self.color_embed(x[..., 1]) + self.state_embed(x[..., 2])
                + self.position_embed)  # (B, 49, F)
