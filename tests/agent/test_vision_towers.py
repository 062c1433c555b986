"""Vision towers: CLIP, SigLIP, ViT, DINOv2, ConvNeXt and ResNet through one code path, tiny configs or saved
checkpoints; any other family fails at build time."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graft.agent.modalities.depth import DepthModality
from graft.agent.modalities.rgb import RGBModality

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
# Two-stage CNNs with total stride 8: a 32x32 image → a 4x4 map of 16 channels → 16 tokens of width 16.
TINY_CNN = {
    "convnext": dict(image_size=32, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1]),
    "resnet": dict(image_size=32, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
}


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


@pytest.mark.parametrize("model_type", sorted(TINY_CNN))
def test_cnn_towers_flatten_their_last_feature_map_into_frozen_tokens(model_type, rng):
    rgb = RGBModality("rgb", tower={"model_type": model_type, **TINY_CNN[model_type]})
    features = rgb(rng.integers(0, 256, (2, 56, 56, 3), dtype=np.uint8))
    assert rgb.feature_dim == 16
    assert features.shape == (2, 16, 16)  # (32 / 8)^2 cells, last of hidden_sizes channels
    assert not features.requires_grad and not rgb.encoder.training
    assert not any(p.requires_grad for p in rgb.parameters())
    rgb.train()  # frozen stays frozen: BatchNorm statistics must not move
    assert not rgb.encoder.training


@pytest.mark.parametrize("model_type", sorted(TINY_CNN))
def test_depth_reads_cnn_towers_with_one_or_three_channels(model_type, rng):
    one = DepthModality(tower={"model_type": model_type, "num_channels": 1, **TINY_CNN[model_type]})
    three = DepthModality(tower={"model_type": model_type, **TINY_CNN[model_type]})
    depth = rng.uniform(0, 5, (2, 48, 48)).astype(np.float32)
    assert one(depth).shape == three(depth).shape == (2, 16, 16)
    assert one.feature_dim == three.feature_dim == 16


@pytest.mark.parametrize("model_type", sorted(TINY_CNN))
def test_a_saved_cnn_classifier_checkpoint_loads_its_backbone_by_path(model_type, tmp_path, rng):
    from transformers import AutoConfig, AutoModelForImageClassification

    torch.manual_seed(0)  # Hub CNN checkpoints (facebook/convnext-*, microsoft/resnet-*) are classifiers
    classifier = AutoModelForImageClassification.from_config(AutoConfig.for_model(model_type, **TINY_CNN[model_type]))
    classifier.eval().save_pretrained(tmp_path)
    rgb = RGBModality("rgb", pretrained=str(tmp_path))
    assert type(rgb.encoder).__name__ == type(classifier.base_model).__name__
    x = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        fmap = classifier.base_model(pixel_values=rgb.preprocess(x)).last_hidden_state  # (1, 16, 4, 4)
    assert torch.allclose(rgb(x), fmap.flatten(2).transpose(1, 2), atol=1e-5)


def test_an_unsupported_family_fails_at_build_time_naming_config_and_families(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16).save_pretrained(tmp_path)
    for kwargs in ({"pretrained": str(tmp_path)}, {"tower": {"model_type": "bert", "hidden_size": 8}}):
        with pytest.raises(ValueError, match=r"unsupported BertConfig .*'bert'.*CLIP, SigLIP, ViT, DINOv2, ConvNeXt, ResNet"):
            RGBModality("rgb", **kwargs)
    with pytest.raises(ValueError, match="unsupported BertConfig"):
        DepthModality(pretrained=str(tmp_path))


def test_a_tiny_tower_needs_a_model_type():
    with pytest.raises(ValueError, match="needs a `model_type`"):
        RGBModality("rgb", tower={"hidden_sizes": [8, 16]})
