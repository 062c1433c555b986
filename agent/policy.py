"""The `Agent` policy: batched observations from vector envs → actions, one forward per step.

Each sub-env's observation becomes one prompt in the demonstrations' format (see
`graft.envs.datagen`): the modality placeholders the agent can read, the mission, and the question
"What is the next action?". Discrete action spaces are answered by scoring every action name in
one forward pass (no sampling, no parsing); continuous ones by greedy generation of the action's
numbers, parsed and checked against the action space.

`deploy=True` scores on a merged copy of the adapters (agent/fast_path.py: cached template head,
candidates as a token tree, no LoRA branches), rebuilt whenever the live adapters change; use it
where the agent only acts (serving, benchmarks). The default scores on the live peft model.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from graft.agent.mmllm import MMLLM, Example

PROMPT = "{tags}\nMission: {mission}\nWhat is the next action?"
NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")


class Agent:
    """A batched policy over an MM-LLM: `agent(obs_batch, infos) -> actions (num_envs, ...)`."""

    name = "checkpoint"

    def __init__(self, mm: MMLLM, action_space: gym.Space, action_names: Sequence[str] | None = None,
                 modalities: Sequence[str] | None = None, prompt: str = PROMPT, max_new_tokens: int = 32,
                 invalid: str = "raise", deploy: bool = False, dtype: torch.dtype | None = None):
        if invalid not in ("raise", "fallback"):
            raise ValueError(f"invalid must be 'raise' or 'fallback', got {invalid!r}")
        self.mm, self.action_space, self.prompt, self.invalid = mm, action_space, prompt, invalid
        self.invalid_count = 0
        self.modalities = list(modalities if modalities is not None else mm.modalities)
        unknown = [m for m in self.modalities if m not in mm.modalities]
        if unknown:
            raise ValueError(f"agent reads {unknown} but the MM-LLM has only {list(mm.modalities)}")
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.discrete:
            self.action_names = list(action_names or [str(i) for i in range(action_space.n)])
            if len(self.action_names) != action_space.n:
                raise ValueError(f"{len(self.action_names)} action names for Discrete({action_space.n})")
        elif not isinstance(action_space, gym.spaces.Box):
            raise TypeError(f"Agent supports Discrete and Box action spaces, got {action_space}")
        self.max_new_tokens = max_new_tokens
        self.deploy, self.dtype = deploy, dtype

    @classmethod
    def for_env(cls, mm: MMLLM, env: gym.Env, **kwargs) -> Agent:
        """Read the action space and names from an environment and the modalities both sides share."""
        unwrapped = env.unwrapped
        shared = [m for m in mm.modalities if m in getattr(unwrapped, "modality_specs", {})]
        return cls(mm, env.action_space, getattr(unwrapped, "action_names", None), modalities=shared, **kwargs)

    def reset(self, env_ids: Any = None) -> None:
        """Stateless between steps: nothing to clear (the rollout loop calls this on episode ends)."""

    def examples(self, obs: Mapping[str, Any]) -> list[Example]:
        n = len(obs["mission"])
        tags = "\n".join(f"<{m}>" for m in self.modalities)
        return [
            Example(self.prompt.format(tags=tags, mission=obs["mission"][i]),
                    {m: np.asarray(obs[m][i]) for m in self.modalities})
            for i in range(n)
        ]

    @torch.no_grad()
    def __call__(self, obs: Mapping[str, Any], infos: Mapping[str, Any] | None = None) -> np.ndarray:
        if self.mm.training:  # eval() walks every module: only when needed
            self.mm.eval()
        examples = self.examples(obs)
        if self.discrete:
            scorer = self.mm.scorer(merge=True, dtype=self.dtype) if self.deploy else self.mm
            scores = scorer.score(examples, self.action_names)  # (B, K)
            return scores.argmax(-1).cpu().numpy().astype(np.int64)
        texts = self.mm.generate(examples, max_new_tokens=self.max_new_tokens)
        return np.stack([self.continuous_or_fallback(t) for t in texts])

    def continuous_or_fallback(self, text: str) -> np.ndarray:
        """Parse an answer; with `invalid="fallback"` an unusable one becomes the space's centre."""
        try:
            action = self.parse_continuous(text)
            if self.action_space.contains(action):
                return action
            if self.invalid == "raise":
                raise ValueError(f"action {action.tolist()} is outside {self.action_space}")
        except ValueError:
            if self.invalid == "raise":
                raise
        self.invalid_count += 1
        low, high = self.action_space.low, self.action_space.high
        return ((low + high) / 2).astype(self.action_space.dtype)

    def parse_continuous(self, text: str) -> np.ndarray:
        dim = int(np.prod(self.action_space.shape))
        values = [float(v) for v in NUMBER.findall(text)[:dim]]
        if len(values) < dim:
            raise ValueError(f"expected {dim} numbers for action space {self.action_space}, the model said {text!r}")
        return np.asarray(values, dtype=self.action_space.dtype).reshape(self.action_space.shape)
