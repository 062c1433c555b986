"""Every file under configs/ composes and instantiates; a new config file is tested with no new code."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from graft.curricula.config import config_dir, group_options
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

TOP_LEVEL = sorted(p.stem for p in config_dir().glob("*.yaml"))


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_config_composes(compose, name):
    cfg = compose(name)
    raw = OmegaConf.load(config_dir() / f"{name}.yaml")
    assert set(raw) - {"defaults"} <= set(OmegaConf.to_container(cfg, resolve=True))  # every key survives


@pytest.mark.parametrize("name", [n for n in group_options("backbone")])
def test_backbone_config_instantiates(compose, name):
    from graft.agent.backbone import load_backbone

    cfg = compose("chat", [f"backbone={name}"]).backbone
    if cfg.source == "gguf":
        from graft.agent.backbone import find_package_file

        try:
            find_package_file(cfg.package, cfg.gguf_file)
        except FileNotFoundError as err:
            pytest.skip(str(err))
    if OmegaConf.is_missing(cfg, "pretrained"):
        with pytest.raises(MissingMandatoryValue):
            OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        return
    model, tokenizer = load_backbone(OmegaConf.to_container(cfg, resolve=True))
    assert not any(p.requires_grad for p in model.parameters())
    ids = torch.tensor([tokenizer("the red ball")["input_ids"]])
    assert model(input_ids=ids).logits.shape[:2] == ids.shape


@pytest.mark.parametrize("name", group_options("modality"))
def test_modality_config_instantiates_and_encodes(compose, rng, name, tiny_mm):
    from graft.agent.build import bound, build_modality

    cfg = compose("chat", [f"+modality@modalities.extra={name}"]).modalities.extra
    modality = bound(build_modality(name, cfg), tiny_mm())  # grid_words reads the LLM's vocabulary
    batch = np.stack([modality.sample(rng), modality.sample(rng)])
    features = modality(batch)
    assert features.ndim == 3 and features.shape[0] == 2 and features.shape[2] == modality.feature_dim
    assert not any(p.requires_grad for p in modality.parameters())


@pytest.mark.parametrize("name", group_options("projector"))
def test_projector_config_instantiates(compose, name):
    from graft.agent.build import build_projector

    projector = build_projector(compose("chat", [f"projector={name}"]).projector, in_dim=24, out_dim=64)
    out = projector(torch.randn(3, 10, 24))
    assert out.shape[0] == 3 and out.shape[2] == 64


@pytest.mark.parametrize("name", group_options("lora"))
def test_lora_config_instantiates(compose, name):
    from graft.agent.adapters import lora_config

    cfg = lora_config(OmegaConf.to_container(compose("chat", [f"lora={name}"]).lora))
    assert cfg.r > 0


def test_the_quick_preset_shrinks_every_budget_of_the_default_run(compose):
    default, quick = compose("onboard"), compose("onboard", ["+preset=quick"])
    assert quick.backbone.name == default.backbone.name  # the same brain, a sliver of the work
    assert quick.steps_scale < default.steps_scale
    assert quick.curriculum.eval.rollout_episodes < default.curriculum.eval.rollout_episodes
    assert quick.curriculum.data.episodes < default.curriculum.data.episodes
    assert quick.text_probes.max_items and quick.text_probes.passages < default.text_probes.passages
