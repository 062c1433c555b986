"""A receding-horizon policy over an action-chunk output modality (Diffusion Policy's execution).

For every sub-env whose queue of planned actions is empty, the observation (+ mission) becomes a
prompt, the MM-LLM's signal-token features condition the action generator, and the sampled chunk
`(H, A)` is queued; the policy then executes `execute` actions of it (`execute <= H`) and re-plans.
Plans for several sub-envs are made in one batch. Actions are clipped to the action space.

The `Policy` contract of agent/policy.py: `__call__(obs, infos)` and `reset(env_ids)` are the
stateful stepping `graft.envs.rollout.rollout` drives; `infer(obs)` / `infer_batch(obs)` are the
stateless form for `graft serve` and ROS 2: every row gets a fresh chunk `(execute, A)`.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from graft.agent.generators.action import ActionGenerator
from graft.agent.mmllm import MMLLM
from graft.agent.outputs import generate_output
from graft.agent.policy import Policy
from graft.envs.prompts import CHUNK_PROMPT, fill
from graft.envs.spec import ModalitySpec

PROMPT = CHUNK_PROMPT  # "Mission: {mission}\nPlan the next actions.\n{tags}" (envs/prompts.py)


def chunk_prompt(modalities: Sequence[str], mission: str, prompt: str = PROMPT) -> str:
    return fill(prompt, modalities, mission)


class ChunkPolicy(Policy):
    name = "action_chunks"

    def __init__(self, mm: MMLLM, output: str, generator: ActionGenerator, action_space: gym.spaces.Box,
                 modalities: Sequence[str], execute: int = 8, sample_steps: int | None = None, seed: int = 0,
                 prompt: str = PROMPT, specs: Mapping[str, ModalitySpec] | None = None):
        if not isinstance(action_space, gym.spaces.Box) or action_space.shape != (generator.action_dim,):
            raise ValueError(f"the generator makes {generator.action_dim}-dim actions; action space is {action_space}")
        if not 1 <= execute <= generator.horizon:
            raise ValueError(f"execute must be in [1, horizon={generator.horizon}], got {execute}")
        if output not in mm.outputs:
            raise ValueError(f"'{output}' is not a grafted output modality (outputs: {list(mm.outputs)})")
        self.mm, self.output, self.generator, self.action_space = mm, output, generator, action_space
        self.env_specs = dict(specs or {})
        self.modalities = modalities
        self.execute, self.sample_steps = int(execute), sample_steps
        self.seed, self.prompt = int(seed), prompt
        self.queues: list[list[np.ndarray]] = []
        self.plans, self.plan_seconds, self.planned_chunks = 0, 0.0, 0

    def reset(self, env_ids: Any = None) -> None:
        """Drop the plans of sub-envs `env_ids` (all when None) — their episodes start afresh."""
        if env_ids is None:
            self.queues = []
            return
        for i in np.atleast_1d(env_ids):
            if i < len(self.queues):
                self.queues[int(i)] = []

    def __call__(self, obs: Mapping[str, Any], infos: Mapping[str, Any] | None = None) -> np.ndarray:
        """One vector-env step: each sub-env's next queued action `(B, A)`, re-planning empty queues."""
        obs = self.check(obs, batched=True)
        n = len(obs["mission"])
        while len(self.queues) < n:
            self.queues.append([])
        empty = [i for i in range(n) if not self.queues[i]]
        if empty:
            started = time.perf_counter()
            chunks = generate_output(self.mm, self.output, self.generator, self.examples(obs, empty),
                                     steps=self.sample_steps, seed=self.seed + self.plans)  # (B', H, A)
            self._planned(started, len(empty))
            for i, chunk in zip(empty, chunks):
                self.queues[i] = list(chunk[: self.execute])
        return self._clip(np.stack([self.queues[i].pop(0) for i in range(n)]))  # (n, A)

    def _clip(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(actions, self.action_space.low, self.action_space.high).astype(self.action_space.dtype)

    def _planned(self, started: float, chunks: int) -> None:
        self.plan_seconds += time.perf_counter() - started
        self.plans += 1
        self.planned_chunks += chunks

    def _infer_batch(self, obs: Mapping[str, Any]) -> np.ndarray:
        """One chunk per row of `obs`, its first `execute` actions clipped to the action space →
        `(B, execute, A)`. The MM-LLM runs once for the batch; each row's chunk is sampled from noise
        seeded by `seed` alone, so an answer depends on its observation and the seed, not on the rows
        batched with it (row i is `generate_output` on that row alone, up to float rounding of the
        batched forward); one batched denoising loop for DDIM / DPM-Solver, row by row for DDPM."""
        rows = range(len(obs["mission"]))
        started = time.perf_counter()
        cond = self.mm.output_features(self.examples(obs, rows), self.output)  # (B, N, C)
        if self.generator.sampler == "ddpm":  # fresh noise every step: one row at a time
            chunks = np.concatenate([self.generator.generate(cond[i:i + 1], steps=self.sample_steps, seed=self.seed)
                                     for i in rows])  # (B, H, A)
        else:  # one batched denoising loop, every row from the same seeded noise
            chunks = self.generator.generate(cond, steps=self.sample_steps, seed=self.seed, shared_noise=True)
        self._planned(started, len(rows))
        return self._clip(chunks[:, : self.execute])

    @property
    def seconds_per_chunk(self) -> float | None:
        return self.plan_seconds / self.planned_chunks if self.planned_chunks else None

    def stats(self) -> dict:
        return {"plans": self.plans, "planned_chunks": self.planned_chunks, "execute": self.execute,
                "seconds_per_chunk": self.seconds_per_chunk}

