"""Vision towers: CLIP, SigLIP, ViT and DINOv2 through one code path, tiny configs or saved checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graft.agent.modalities.depth import DepthModality
from graft.agent.modalities.rgb import RGBModality

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


@pytest.mark.parametrize("model_type", ["vit", "clip_vision_model", "siglip_vision_model", "dinov2"])
def test_every_tower_family_yields_patch_tokens(model_type, rng):
    rgb = RGBModality("rgb", tower={"model_type": model_type, **TINY})
    features = rgb(rng.integers(0, 256, (2, 56, 56, 3), dtype=np.uint8))
    assert features.shape == (2, 16, 32)  # (32 / 8)^2 patches, class/register tokens dropped


def test_a_saved_clip_checkpoint_loads_its_vision_half_by_path(tmp_path, rng):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99),
        vision_config=TINY, projection_dim=16,
    )
    clip = CLIPModel(config)
    clip.save_pretrained(tmp_path)
    rgb = RGBModality("rgb", pretrained=str(tmp_path))
    assert type(rgb.encoder).__name__ == "CLIPVisionModel"
    x = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    pixels = rgb.preprocess(x)
    want = clip.vision_model(pixel_values=pixels).last_hidden_state[:, 1:]
    assert torch.allclose(rgb(x), want, atol=1e-5)


def test_depth_reads_one_channel_towers_and_repeats_for_rgb_towers(rng):
    one = DepthModality(tower={"model_type": "vit", "num_channels": 1, **TINY})
    three = DepthModality(tower={"model_type": "vit", **TINY})
    depth = rng.uniform(0, 5, (2, 48, 48)).astype(np.float32)
    assert one(depth).shape == three(depth).shape == (2, 16, 32)


def test_a_tower_needs_a_source():
    with pytest.raises(ValueError, match="pretrained.*or a tiny `tower`"):
        RGBModality("rgb")
