"""Shared test setup: one thread, offline hub, offscreen MuJoCo, tiny seeded agents.

The shipped configs default to SmolLM2-135M; tests compose them on the tiny random Llama unless a
test names a backbone (`tiny_backbone_by_default`; subprocess tests pass `backbone=tiny_llama`)."""
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


TINY = "backbone=tiny_llama"
WITH_BACKBONE = ("onboard", "serve", "ros2", "chat")  # the configs with a backbone group (not bench)


def with_tiny_backbone(overrides) -> list[str]:
    """`overrides` with `backbone=tiny_llama` in front unless they choose a backbone themselves."""
    overrides = list(overrides)
    named = any(o.lstrip("+~").split("=")[0].split("@")[0] == "backbone" for o in overrides)
    return overrides if named else [TINY, *overrides]


@pytest.fixture(autouse=True, scope="session")
def tiny_backbone_by_default():
    from graft.curricula import config

    real = config.compose_config

    def compose(name, overrides=()):
        return real(name, with_tiny_backbone(overrides) if name in WITH_BACKBONE else list(overrides))

    config.compose_config = compose
    yield
    config.compose_config = real


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
def seed_lora():
    """`seed(mm, seed=0)`: random non-zero LoRA B matrices, so every adapter changes the logits."""

    def seed(mm, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in mm.bank.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)

    return seed


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def chunk_agent():
    """A tiny MM-LLM (rgb + proprio) with an action_chunk output grafted with `recorded` (inputs=,
    execute=, prompt=), and its ActionGenerator fitted to actions uniform in [-spread, spread]."""
    from graft.agent.build import build_mmllm, graft_output
    from graft.agent.generators import build_generator
    from graft.curricula.config import compose_config as compose
    from graft.curricula.config import group_config

    def make(spread: float = 1.0, **recorded):
        torch.manual_seed(0)
        mm = build_mmllm(compose("chat", ["~modality@modalities.grid", "+modality@modalities.rgb=rgb",
                                          "+modality@modalities.proprio=proprio"]))
        gen_cfg = group_config(None, "generator", "action")
        gen_cfg["unet"]["channels"], gen_cfg["sample_steps"] = [8, 16], 2
        generator = build_generator(gen_cfg).fit(np.random.default_rng(0).uniform(-spread, spread, (64, 2)))
        graft_output(mm, "action_chunk", gen_cfg["output"], generator.cond_tokens, generator.cond_dim, **recorded)
        return mm, generator

    return make


@pytest.fixture(scope="session")
def babyai_views():
    """BabyAI GoToLocal observations (grid, rgb, mission, seed, step): 4 random-policy steps of 40 episodes."""
    from graft.envs.rollout import load_env_config, make_env_factory

    env = make_env_factory(load_env_config("babyai_goto"))()
    rng, out = np.random.default_rng(0), []
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        for step in range(4):
            out.append({"grid": obs["grid"], "rgb": obs["rgb"], "mission": obs["mission"], "seed": seed, "step": step})
            obs, *_ = env.step(int(rng.integers(3)))
    env.close()
    return out
