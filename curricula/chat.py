"""`graft chat`: build an MM-LLM from a config (or load a checkpoint) and answer one prompt.

Observations for the prompt's `<name>` placeholders come from the config (see configs/chat.yaml):
a random valid observation, a `.npy` file, or an environment's first observation.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from graft.agent.build import build_mmllm, load_mmllm
from graft.agent.mmllm import MMLLM, Example
from graft.agent.runtime import configure_threads
from omegaconf import OmegaConf


def observation_from_config(mm: MMLLM, name: str, source: Mapping[str, Any]) -> np.ndarray:
    if name not in mm.modalities:
        raise KeyError(f"observation '{name}' is configured but the agent has no such modality (has {list(mm.modalities)})")
    kind = source.get("source", "random")
    if kind == "random":
        return mm.modalities[name].sample(np.random.default_rng(source.get("seed", 0)))
    if kind == "file":
        return np.load(Path(source["path"]), allow_pickle=False)
    if kind == "env":
        from graft.curricula.config import compose_config
        from graft.envs.rollout import make_env_factory
        from omegaconf import OmegaConf

        env = make_env_factory(OmegaConf.to_container(compose_config("chat", [f"+env={source['env']}"]).env))()
        obs, _ = env.reset(seed=int(source.get("seed", 0)))
        env.close()
        return obs[name]
    raise ValueError(f"observation source must be random | file | env, got '{kind}'")


def chat(cfg) -> dict[str, Any]:
    configure_threads(cfg.get("threads", "auto"))
    mm = load_mmllm(cfg.checkpoint) if cfg.get("checkpoint") else build_mmllm(cfg)
    mm.eval()
    sources = OmegaConf.to_container(cfg.get("observation") or {}, resolve=True)
    obs = {
        name: observation_from_config(mm, name, sources.get(name, {}))
        for name in mm.modalities
        if f"<{name}>" in cfg.prompt
    }
    answer = mm.generate([Example(cfg.prompt, obs)], max_new_tokens=int(cfg.max_new_tokens))[0]
    return {"prompt": cfg.prompt, "observations": sorted(obs), "answer": answer}
