"""Anchoring a new modality's projector to an onboarded one (curricula/stages/anchor.py): rgb anchored
to grid_words through the transformer_resampler config, with the anchor's adapter copied; what it
trains, what stays frozen, and what it refuses."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from graft.curricula.stages import fresh_agent
from graft.curricula.stages.anchor import anchor_settings, paired_observations
from graft.curricula.stages.lm import InputStage
from graft.envs.rollout import load_env_config
from omegaconf import OmegaConf

SETTINGS = {"pt_steps": 1, "it_steps": 1, "batch_size": 8, "lr": 1e-3, "replay_size": 0, "replay_ratio": 0.0,
            "text_mix": 0.0}


@pytest.fixture
def grafted(compose, seed_lora):
    """A tiny gated MM-LLM with grid_words grafted (non-zero LoRA), then the curriculum's anchored rgb stage."""
    cfg = compose("onboard", ["backbone=tiny_llama"])
    mm = fresh_agent(cfg, "gated")
    InputStage(0, {"name": "grid", "modality": "grid"}, SETTINGS).graft(mm, cfg, None)
    seed_lora(mm)
    spec = {"name": "rgb", "modality": "rgb", "anchor": {"modality": "grid", "adapter": "copy"},
            "projector": OmegaConf.to_container(compose("onboard", ["projector=transformer_resampler"]).projector)}
    rgb = InputStage(1, spec, SETTINGS)
    rgb.anchor = {**anchor_settings(spec["anchor"], "rgb"), "steps": 60, "observations": 1024, "batch_size": 32,
                  "lr": 3e-3}
    rgb.env_cfg, rgb.seed = load_env_config("babyai_goto"), 0
    rgb.graft(mm, cfg, None)
    return mm, rgb


class Run:  # what a stage's loss reads of a MethodRun
    def __init__(self, mm):
        self.mm = mm


def lora(mm, adapter):
    return {n.replace(f".{adapter}.", "."): p.detach().clone() for n, p in mm.bank.model.named_parameters()
            if "lora_" in n and f".{adapter}." in n}


def test_the_stage_makes_as_many_tokens_as_its_anchor_and_starts_from_its_adapter(grafted):
    mm, rgb = grafted
    frame = mm.modalities["rgb"].sample(np.random.default_rng(0))
    tokens = mm.projectors["rgb"](mm.modalities["rgb"](frame[None]))
    assert tokens.shape == (1, 29, mm.embed_dim)  # grid_words: 5 objects x 5 words + 4 cells
    grid, camera = lora(mm, "grid"), lora(mm, "rgb")
    assert grid.keys() == camera.keys() and all(torch.equal(grid[k], camera[k]) for k in grid)
    assert any(torch.count_nonzero(v) for v in camera.values())  # the copy, not peft's zero init


def test_align_trains_the_projector_only_and_brings_its_tokens_to_the_anchors(grafted):
    mm, rgb = grafted
    params = [p for g in rgb.parameter_groups(mm, "align", {}) for p in g["params"]]
    trainable = {n for n, p in mm.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projectors.rgb.") for n in trainable)
    frozen = {n: p.detach().clone() for n, p in mm.named_parameters() if not n.startswith("projectors.rgb.")}
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    curve = []
    for step in range(rgb.steps("align")):
        batch, _ = rgb.draw(0, "align", step)
        loss = rgb.loss(Run(mm), "align", batch, step).parts["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(loss.item())
    assert np.mean(curve[-5:]) < 0.5 * np.mean(curve[:5])
    assert all(torch.equal(p, frozen[n]) for n, p in mm.named_parameters() if n in frozen)
    assert len(rgb.paired["rgb"]) == 1024 and rgb.paired["grid"].shape == (1024, 7, 7, 3)


def test_paired_observations_are_seeded_and_come_from_their_own_episodes():
    env = load_env_config("babyai_goto")
    a = paired_observations(env, ["rgb", "grid"], 64, seed=3)
    b = paired_observations(env, ["rgb", "grid"], 64, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a) and a["rgb"].shape == (64, 56, 56, 3)
    assert not np.array_equal(paired_observations(env, ["rgb", "grid"], 64, seed=4)["grid"], a["grid"])
    with pytest.raises(ValueError, match="the env emits"):
        paired_observations(env, ["rgb", "depth"], 4, seed=0)


def test_anchor_settings_say_what_is_wrong():
    assert anchor_settings(None, "rgb") is None
    assert anchor_settings({"modality": "grid"}, "rgb")["adapter"] == "fresh"
    assert anchor_settings({"modality": "grid", "steps": 1000}, "rgb", steps_scale=0.01)["steps"] == 10
    with pytest.raises(ValueError, match="unknown anchor setting"):
        anchor_settings({"modality": "grid", "stpes": 3}, "rgb")
    with pytest.raises(ValueError, match="needs `modality:`"):
        anchor_settings({"steps": 3}, "rgb")
    with pytest.raises(ValueError, match="to itself"):
        anchor_settings({"modality": "rgb"}, "rgb")
    with pytest.raises(ValueError, match="'copy' or 'fresh'"):
        anchor_settings({"modality": "grid", "adapter": "share"}, "rgb")


def test_an_anchored_stage_runs_its_align_phase_in_a_curriculum_and_reloads(tmp_path, compose, small_overrides):
    from graft.agent.build import load_mmllm
    from graft.curricula.onboard import onboard

    cfg = compose("onboard", [*small_overrides, "compare=[graft]", f"run_dir={tmp_path}",
                              "+curriculum.stages.2.anchor={modality:grid,steps:600}",
                              "+curriculum.stages.2.projector={_target_:graft.agent.projectors.TransformerResamplerProjector,depth:1}"])
    result = onboard(cfg)["methods"]["graft"]
    curve = result["loss_curves"]["rgb"]["align"]
    assert len(curve) == 30  # 600 steps x steps_scale 0.05
    assert np.mean(curve[-5:]) < np.mean(curve[:5])
    agent = load_mmllm(tmp_path / "graft" / "agent")
    frame = agent.modalities["rgb"].sample(np.random.default_rng(0))
    assert agent.projectors["rgb"](agent.modalities["rgb"](frame[None])).shape[1] == 29  # the anchor's count, saved
