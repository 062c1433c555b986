"""Input projectors map (B, N, F) features to (B, N', D) LLM tokens."""
from __future__ import annotations

import pytest
import torch
from graft.agent.projectors import LinearProjector, MLPProjector, ResamplerProjector


@pytest.mark.parametrize("cls", [LinearProjector, MLPProjector])
def test_token_count_is_kept(cls):
    assert cls(16, 32)(torch.randn(2, 49, 16)).shape == (2, 49, 32)


def test_resampler_emits_fixed_number_of_tokens_whatever_the_input_length():
    proj = ResamplerProjector(16, 32, num_queries=6, num_heads=4)
    assert proj(torch.randn(2, 49, 16)).shape == (2, 6, 32)
    assert proj(torch.randn(2, 200, 16)).shape == (2, 6, 32)


def test_resampler_output_depends_on_input():
    torch.manual_seed(0)
    proj = ResamplerProjector(16, 32, num_queries=4, num_heads=4)
    x = torch.randn(1, 10, 16)
    assert not torch.allclose(proj(x), proj(x + 1.0))


def test_resampler_rejects_bad_head_count():
    with pytest.raises(ValueError, match="divisible"):
        ResamplerProjector(16, 30, num_heads=4)
