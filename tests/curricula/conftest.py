"""A curriculum small enough to run end to end in seconds."""
from __future__ import annotations

import pytest

SMALL = [
    "backbone=tiny_llama", "steps_scale=0.05", "curriculum.data.episodes=64", "curriculum.text.train=120", "curriculum.text.test=24",
    "curriculum.eval.max_examples=16", "curriculum.eval.rollout_episodes=2", "curriculum.eval.num_envs=2",
    "++curriculum.eval.hallucination={scenes: 6, caption_tokens: 12}",
    "progress=false", "tensorboard=false", "checkpoint_every=3",
]


@pytest.fixture(scope="session")
def small_overrides():
    return list(SMALL)
