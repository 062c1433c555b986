"""Evaluation after every stage: multiple-choice accuracy on test sets and env success rates.

Accuracy is scored, not sampled: each test question is answered by the candidate with the
highest log-probability (`MMLLM.score`, one forward per group). The candidates of a question are
the distinct answers of its group in the test set — text tasks grouped by family, questions by
their opening words ("How many", "What colour", "Where is"), demonstrations by the env's action
names — so chance level is known and tiny models get a graded signal. Success rate is the
`Agent` policy rolled out on vector envs. Each stage kind scores itself with these
(curricula/stages); output stages (goal images, action chunks) score their generations.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from graft.agent.mmllm import MMLLM
from graft.curricula.stages.base import to_example


def group_key(record: Mapping[str, Any]) -> str:
    if record.get("kind") == "text":
        return f"text:{record.get('family', '')}"
    if record.get("kind") == "demo":
        return "demo"
    question = record["prompt"].split("\n")[-1].split()
    return "qa:" + " ".join(question[:2]).lower()


def candidate_sets(records: Sequence[Mapping[str, Any]], action_names: Sequence[str] | None = None) -> dict[str, list[str]]:
    groups: dict[str, set[str]] = defaultdict(set)
    for r in records:
        groups[group_key(r)].add(r["response"])
    if action_names and "demo" in groups:
        groups["demo"] |= set(action_names)
    pooled: dict[str, set[str]] = defaultdict(set)  # groups with one answer borrow their kind's pool
    for key, answers in groups.items():
        pooled[key.split(":")[0]] |= answers
    return {k: sorted(v if len(v) > 1 else pooled[k.split(":")[0]]) for k, v in groups.items()}


@torch.no_grad()
def accuracy(mm: MMLLM, records: Sequence[Mapping[str, Any]], action_names: Sequence[str] | None = None,
             batch_size: int = 16) -> float:
    """Fraction of records whose reference answer scores highest among its group's candidates."""
    if not records:
        raise ValueError("cannot score an empty test set")
    mm.eval()
    candidates = candidate_sets(records, action_names)
    by_group: dict[str, list[Mapping]] = defaultdict(list)
    for r in records:
        by_group[group_key(r)].append(r)
    correct = 0
    for key, rows in by_group.items():
        options = candidates[key]
        if len(options) < 2:  # a one-option question carries no information
            correct += len(rows)
            continue
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            scores = mm.score([to_example(r) for r in chunk], options, normalize=True)  # (B, K)
            picked = scores.argmax(-1).tolist()
            correct += sum(options[p] == r["response"] for p, r in zip(picked, chunk))
    return correct / len(records)


def success_rate(mm: MMLLM, env_cfg: Mapping, modality: str, episodes: int, num_envs: int, seed: int) -> float | None:
    """Env rollouts of the Agent reading `modality` only; None when the env lacks it."""
    from graft.agent.loader import load_policy
    from graft.envs.rollout import make_env_factory, rollout
    from graft.envs.spec import env_modality_specs

    env = make_env_factory(dict(env_cfg))()
    try:
        if modality not in env_modality_specs(env):
            return None
        agent = load_policy(mm, env, output="none", inputs=[modality], invalid="fallback")
    finally:
        env.close()
    summary = rollout(dict(env_cfg), agent, episodes=episodes, num_envs=num_envs, seed=seed, progress=False, frames=0)
    return float(summary["success_rate"])


def mean_or_none(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
