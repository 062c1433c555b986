"""Multiple-choice scores of test sets, their controls, and env success rates.

Accuracy is scored, not sampled: each question is answered by the candidate with the highest
log-probability as a complete answer (followed by the end token the model was trained to emit, so
"1" and "12" compete fairly; `MMLLM.score`): the probability of saying that whole answer, which is
what the `Agent` acts on. Not length-normalised: a per-token mean favours long answers whose later
tokens follow from the first (an unsure SmolLM2 picked the 3-token "toggle" over "forward"). A
question's candidates are the distinct answers of its group in the set scored — text tasks grouped
by family, questions by their opening words (`graft.envs.captions.question_group`: "how many", "what colour", "where is"),
next-action items by the env's action names — so chance is known: the mean of 1/K.

Every score stands beside what it must beat:

    chance(records)                  uniform guess among the candidates
    majority(train, test)            the group's most common TRAIN answer, always (no looking)
    accuracy(mm, shuffled(test))     the same model with observations permuted across the test items
    accuracy(mm, blind(test))        the questions with the observation dropped (placeholder removed)

Success rate is the `Agent` policy rolled out on vector envs, on a given list of episode seeds,
as a cell {rate, ci95, episodes} (curricula/metrics.py).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from graft.agent.mmllm import MMLLM
from graft.curricula.metrics import success_cell
from graft.curricula.stages.base import to_example
from graft.envs.captions import question_group


def group_key(record: Mapping[str, Any]) -> str:
    if record.get("kind") == "text":
        return f"text:{record.get('family', '')}"
    if record.get("kind") == "demo":
        return "demo"
    return "qa:" + question_group(record["prompt"])


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


def chance(records: Sequence[Mapping[str, Any]], action_names: Sequence[str] | None = None) -> float:
    """Expected accuracy of a uniform guess among each record's candidates."""
    candidates = candidate_sets(records, action_names)
    return float(np.mean([1.0 / len(candidates[group_key(r)]) for r in records]))


def majority(train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]]) -> float:
    """Accuracy on `test` of always answering the most common train answer of the question's group
    (ties: the alphabetically first); a group train never asks gets its first test candidate."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in train:
        counts[group_key(r)][r["response"]] += 1
    fallback = candidate_sets(test)
    guess = {k: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for k, c in counts.items()}
    return float(np.mean([r["response"] == guess.get(group_key(r), fallback[group_key(r)][0]) for r in test]))


def shuffled(records: Sequence[Mapping[str, Any]], seed: int) -> list[dict]:
    """The records with their observations permuted across records that read the same modalities
    (question and answer stay; what the model sees is another item's observation)."""
    out = [dict(r) for r in records]
    by_modalities: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.get("modalities"):
            by_modalities[tuple(r["modalities"])].append(i)
    rng = np.random.default_rng(seed)
    for mods, idx in by_modalities.items():
        for i, j in zip(idx, rng.permutation(idx)):
            out[i].update({m: records[j][m] for m in mods})
    return out


def blind(records: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The records without their observations: placeholders removed from the prompt, no modality."""
    out = []
    for r in records:
        prompt = r["prompt"]
        for m in r.get("modalities") or []:
            prompt = prompt.replace(f"<{m}>\n", "").replace(f"<{m}>", "")
        out.append({**{k: v for k, v in r.items() if k not in (r.get("modalities") or [])},
                    "prompt": prompt.strip(), "modalities": []})
    return out


@torch.no_grad()
def accuracy(mm: MMLLM, records: Sequence[Mapping[str, Any]], action_names: Sequence[str] | None = None,
             batch_size: int = 16, groups: dict[str, list[int]] | None = None) -> float:
    """Fraction of records whose reference answer scores highest among its group's candidates;
    `groups`, if given, is filled with `{group key: [correct, items]}`."""
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
            if groups is not None:
                groups[key] = [len(rows), len(rows)]
            continue
        before = correct
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            scores = mm.score([to_example(r) for r in chunk], options)  # (B, K) summed log-probs
            picked = scores.argmax(-1).tolist()
            correct += sum(options[p] == r["response"] for p, r in zip(picked, chunk))
        if groups is not None:
            groups[key] = [correct - before, len(rows)]
    return correct / len(records)


def success_rate(mm: MMLLM, env_cfg: Mapping, modality: str, seeds: Sequence[int], num_envs: int,
                 revisits: str = "repeat") -> dict | None:
    """Rollouts of the Agent reading `modality` only, one episode per seed → a success cell; None
    when the env lacks the modality. `revisits`: the Agent's (repeat | escape)."""
    from graft.agent.loader import load_policy
    from graft.envs.rollout import make_env_factory, rollout
    from graft.envs.spec import env_modality_specs

    env = make_env_factory(dict(env_cfg))()
    try:
        if modality not in env_modality_specs(env):
            return None
        agent = load_policy(mm, env, output="none", inputs=[modality], invalid="fallback", revisits=revisits)
    finally:
        env.close()
    summary = rollout(dict(env_cfg), agent, seeds=list(seeds), num_envs=num_envs, progress=False, frames=0)
    return summary_cell(summary)


def summary_cell(summary: Mapping[str, Any]) -> dict:
    """A rollout summary (envs/rollout.py) as a success cell {rate, ci95, episodes}."""
    records = summary["records"]
    return success_cell(sum(bool(r["success"]) for r in records), len(records))
