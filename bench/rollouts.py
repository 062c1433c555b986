"""Vectorised rollouts: env-steps/s of the batched agent on 1, 4 and 8 envs.

    python -m bench.rollouts [tiny_llama|smollm2_135m]                   (from the repo root)

The agent (`Agent(deploy=True)`, grid modality, seeded random adapters; see bench/control_step.py)
acts on a gymnasium SyncVectorEnv of BabyAI GoToLocal with k sub-envs: one batched forward per
vector step scores every sub-env's actions. The baseline is one env at a time (k = 1: one
forward per env step), measured in the same run; each k's ratio is its env-steps/s over the
baseline's. Sub-envs autoreset, so episodes of any length count the same.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import torch

from bench.common import median


def env_steps_per_s(agent, factory, num_envs: int, steps: int, seed: int = 0) -> float:
    """Env steps per second over `steps` vector steps of `num_envs` sub-envs (after one warm-up step)."""
    from graft.envs.rollout import make_vector_env

    venv = make_vector_env(factory, num_envs)
    try:
        obs, infos = venv.reset(seed=[seed + i for i in range(num_envs)])
        obs, *_ = venv.step(agent(obs, infos))
        start = time.perf_counter()
        for _ in range(steps):
            obs, _, _, _, infos = venv.step(agent(obs, infos))
        return num_envs * steps / (time.perf_counter() - start)
    finally:
        venv.close()


def run(backbone: str = "tiny_llama", counts: Sequence[int] = (1, 4, 8), env_steps: int = 64, rounds: int = 3) -> dict:
    """`env_steps` env steps per measurement (split over the sub-envs), `rounds` interleaved rounds."""
    from graft.agent.policy import Agent
    from graft.envs.rollout import load_env_config, make_env_factory

    from bench.control_step import build

    mm, _, names, space = build(backbone, ("grid",))
    agent = Agent(mm, space, names, modalities=["grid"], deploy=True)
    factory = make_env_factory(load_env_config("babyai_goto"))
    rates: dict[int, list[float]] = {k: [] for k in counts}
    with torch.no_grad():
        for r in range(rounds):
            for k in counts:
                rates[k].append(env_steps_per_s(agent, factory, k, max(1, env_steps // k), seed=100 * r))
    base = median(rates[min(counts)])
    rows = {str(k): {"env_steps_per_s": round(median(v), 2), "speedup_vs_one_env": round(median(v) / base, 3)}
            for k, v in rates.items()}
    return {"backbone": backbone, "env": "babyai_goto", "modalities": ["grid"], "env_steps": env_steps,
            "rounds": rounds, "num_envs": rows}


if __name__ == "__main__":
    import json

    torch.set_num_threads(1)
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "tiny_llama"), indent=1))
