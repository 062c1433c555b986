"""Hallucination of a trained agent, measured from simulator ground truth (envs/hallucination.py).

`hallucination(mm, modality, test, train, seed)` is one row of the report for an input stage: on
the scenes of the stage's held-out test observations,

    POPE   yes/no probes (existence with random / popular / adversarial negatives, attribute,
           relation), answered by scoring "yes" against "no" (`MMLLM.score`, as every question);
           F1 with yes as the positive class, and the yes-ratio (0.5 is unbiased: probes are balanced)
    CHAIR  "Describe what you see." answered greedily (`caption_tokens` new tokens at most); every
           object named is checked against the scene: CHAIR_i (hallucinated mentions / mentions)
           and CHAIR_s (descriptions with one / descriptions)

beside what they must beat: POPE of the same model with the observations shuffled across scenes,
the F1 of always saying yes (2p / (1 + p) for a share p of yes probes, 0.667 when balanced), and the
CHAIR of the same descriptions scored against another scene's objects (what describing without
looking gives). A prompt reads one modality only: a row says how much that sensor's graft sees
what is not there.

The mitigation (LRV-Instruction's idea: teach the model to say no): `negative_probe_records(train,
modality, share, seed)` turns the stage's TRAINING views into the same kinds of balanced yes/no
probes, half of them about objects that are not there, as question records mixed into its MM IT pool
at `share` (`curriculum.negative_probes`, off by default). The probes scored above come from held-out
test episodes, so no scene is shared; the question templates are (as LRV's are with POPE's).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from graft.agent.mmllm import Example
from graft.envs.hallucination import chair_scores, pope_probes, pope_scores, scene_of
from graft.envs.prompts import observation_prompt

DESCRIBE = "Describe what you see."
YES_NO = ["yes", "no"]


def _scenes(records: Sequence[Mapping[str, Any]], modality: str, limit: int) -> list[Mapping[str, Any]]:
    """Up to `limit` records with distinct observations of `modality`, evenly spread over `records`."""
    out, seen = [], set()
    for r in records:
        key = np.asarray(r[modality]).tobytes()
        if key not in seen:
            seen.add(key)
            out.append(r)
    if len(out) > limit:
        out = [out[i] for i in np.linspace(0, len(out) - 1, limit).astype(int)]
    return out


@torch.no_grad()
def answers(mm, examples: Sequence[Example], batch_size: int = 16) -> list[str]:
    """"yes" or "no" for each example, whichever scores higher as a complete answer."""
    said = []
    for start in range(0, len(examples), batch_size):
        scores = mm.score(list(examples[start:start + batch_size]), YES_NO)  # (B, 2)
        said += [YES_NO[i] for i in scores.argmax(-1).tolist()]
    return said


@torch.no_grad()
def descriptions(mm, observations: Sequence[Any], modality: str, caption_tokens: int = 32,
                 batch_size: int = 8) -> list[str]:
    prompt = observation_prompt(DESCRIBE, [modality])
    out = []
    for start in range(0, len(observations), batch_size):
        chunk = [Example(prompt, {modality: o}) for o in observations[start:start + batch_size]]
        out += mm.generate(chunk, max_new_tokens=caption_tokens)
    return out


def hallucination(mm, modality: str, test: Sequence[Mapping[str, Any]], train: Sequence[Mapping[str, Any]],
                  seed: int, max_scenes: int = 64, caption_tokens: int = 32) -> dict[str, Any]:
    """One stage's hallucination row (module docstring) on at most `max_scenes` test scenes; the
    popular and adversarial negatives come from the scenes of `train`."""
    mm.eval()
    rows = _scenes(test, modality, max_scenes)
    if not rows:
        raise ValueError(f"no test observations of '{modality}' to probe")
    scenes = [scene_of(r) for r in rows]
    train_scenes = [scene_of(r) for r in _scenes(train, modality, 2000)]
    probes = pope_probes(scenes, train_scenes, seed)
    observations = [r[modality] for r in rows]
    order = np.random.default_rng(seed).permutation(len(rows))
    other = np.empty_like(order)
    other[order] = np.roll(order, -1)  # one random cycle: with two scenes or more, none keeps its own view

    def ask(view_of: Sequence[int]) -> list[str]:
        return answers(mm, [Example(observation_prompt(p["question"], [modality]),
                                    {modality: observations[view_of[p["scene"]]]}) for p in probes])

    pope = pope_scores(ask(range(len(rows))), probes)
    pope_shuffled = pope_scores(ask(other), probes)
    yes_share = float(np.mean([p["answer"] == "yes" for p in probes]))
    texts = descriptions(mm, observations, modality, caption_tokens)
    chair = chair_scores(texts, scenes)
    chair_other = chair_scores(texts, [scenes[j] for j in other])
    return {"pope_f1": pope["f1"], "yes_ratio": pope["yes_ratio"], "chair_i": chair["chair_i"],
            "chair_s": chair["chair_s"], "scenes": len(rows), "pope": pope, "chair": chair,
            "controls": {"pope_f1_shuffled": pope_shuffled["f1"], "yes_ratio_shuffled": pope_shuffled["yes_ratio"],
                         "pope_f1_always_yes": round(2 * yes_share / (1 + yes_share), 4),
                         "chair_i_other_scene": chair_other["chair_i"], "chair_s_other_scene": chair_other["chair_s"]},
            "examples": [{"scene": [s.name for s in scenes[i]], "description": texts[i]} for i in range(min(3, len(rows)))]}


def negative_probe_records(train: Sequence[Mapping[str, Any]], modality: str, share: float,
                           seed: int) -> list[dict]:
    """Balanced yes/no probe records from the views of `train` (its distinct observations), as many as
    make `share` of the IT pool once added (share / (1 - share) * len(train)), each a "qa" record of
    `modality` with the view's arrays."""
    if not 0 < share < 1:
        raise ValueError(f"negative_probes is the share of the MM IT pool in (0, 1), got {share}")
    rows = _scenes(train, modality, len(train))
    scenes = [scene_of(r) for r in rows]
    probes = pope_probes(scenes, scenes, seed)
    want = int(round(share / (1 - share) * len(train)))
    rng = np.random.default_rng(seed)
    yes = [p for p in probes if p["answer"] == "yes"]
    no = [p for p in probes if p["answer"] == "no"]
    half = min(want // 2, len(yes), len(no))
    picked = [yes[i] for i in rng.permutation(len(yes))[:half]] + [no[i] for i in rng.permutation(len(no))[:half]]
    arrays = [k for k, v in rows[0].items() if isinstance(v, np.ndarray)] if rows else []
    return [{**{k: rows[p["scene"]][k] for k in arrays}, "kind": "qa", "modalities": [modality],
             "prompt": observation_prompt(p["question"], [modality]), "response": p["answer"],
             "episode_seed": rows[p["scene"]].get("episode_seed"), "probe": p["type"]} for p in picked]
