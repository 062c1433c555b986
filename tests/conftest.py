"""Shared test setup: one thread, offline hub, offscreen MuJoCo, tiny seeded agents."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def compose():
    from graft.curricula.config import compose_config

    return compose_config


@pytest.fixture
def tiny_mm(compose):
    """A tiny Llama MM-LLM with grid and rgb grafted (random weights, seeded)."""
    from graft.agent.build import build_mmllm

    def make(*overrides, modalities=("grid", "rgb")):
        extra = [f"+modality@modalities.{m}={m}" for m in modalities if m != "grid"]
        torch.manual_seed(0)
        return build_mmllm(compose("chat", [*extra, *overrides]))

    return make


@pytest.fixture
def rng():
    return np.random.default_rng(0)
