"""Captions and verifiable questions about one observation, from the describers on the env's layers.

A describer is any layer of the wrapper chain (a gymnasium Wrapper or the unwrapped env) with

    describe(obs, rng) -> {modality: (caption, [(question, answer), ...])}

written from privileged simulator state; answers are short and exact ("2", "red", "yes", "ahead
left") so they can be checked by string match. BabyAIEnv and ReachEnv have one; a wrapper that adds
a sensor adds its captions and questions the same way. `describe(env, obs, rng)` walks the chain
from `env.unwrapped` outwards, so the env's own modalities come first and an outer layer may
re-describe a modality an inner one describes (it then replaces that entry, in place).

A layer may also have `caption_prompts: {modality: (prompt, ...)}`, the instructions that ask for
a caption; the outermost layer that names the modality wins, else `GENERIC_PROMPTS`. Each
`Utterance` prompt ends with the placeholder `<name>` of the one modality it is about (envs/prompts.py:
static text first, the observation last).
Describers may draw from `rng`; it is the same generator that picks the prompts, so the result is
a deterministic function of (env state, obs, rng seed). The built-in ones draw from
`observation_rng(<obs arrays>)` instead and ask at most one question per question group (`ask`).

A question group is the first two words of the question, lowercased (`question_group`: "where
is", "how many"); the multiple-choice evaluation offers a question the distinct answers of its group
as candidates. `balance_answers` evens out the answers of each question (modalities, question text)
of a split, so always giving a question's most common answer scores no better than an even guess.
"""
from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from graft.envs.factory import find_on_layers
from graft.envs.prompts import observation_prompt, text_lines

GENERIC_PROMPTS = ("Describe this observation.", "What does this reading show?", "Give a short caption.")

QAs = list[tuple[str, str]]


@dataclass(frozen=True)
class Utterance:
    kind: str  # "caption" | "qa"
    modality: str
    prompt: str  # "<instruction>\n<modality>" (envs/prompts.py)
    response: str


def describers(env: Any) -> list[Any]:
    """The layers of `env` with a callable `describe(obs, rng)`, outermost first."""
    return [layer for layer in find_on_layers(env, "describe") if callable(layer.describe)]


def describe_modalities(env: Any, obs: Mapping[str, Any], rng: np.random.Generator) -> dict[str, tuple[str, QAs]]:
    """`{modality: (caption, qas)}` merged over all describers, innermost first (module docstring)."""
    merged: dict[str, tuple[str, QAs]] = {}
    for layer in reversed(describers(env)):
        merged.update(_checked(layer, layer.describe(obs, rng)))
    return merged


def caption_prompts(env: Any, modality: str) -> Sequence[str]:
    """The caption instructions for `modality`: from the outermost layer that names it."""
    for layer in find_on_layers(env, "caption_prompts"):
        if modality in layer.caption_prompts:
            return tuple(layer.caption_prompts[modality])
    return GENERIC_PROMPTS


def describe(env: Any, obs: Mapping[str, Any], rng: np.random.Generator, questions: int = 2) -> list[Utterance]:
    """One caption and up to `questions` questions per described modality of `env` ([] if none)."""
    out = []
    for modality, (caption, qas) in describe_modalities(env, obs, rng).items():
        prompt = str(rng.choice(caption_prompts(env, modality)))
        out.append(Utterance("caption", modality, observation_prompt(prompt, [modality]), caption))
        for i in rng.permutation(len(qas))[:questions]:
            out.append(Utterance("qa", modality, observation_prompt(qas[i][0], [modality]), qas[i][1]))
    return out


def _checked(layer: Any, said: Any) -> dict[str, tuple[str, QAs]]:
    """`said` as {modality: (caption, [(q, a), ...])}, or a TypeError naming the layer and the shape."""
    where = f"{type(layer).__name__}.describe(obs, rng)"
    expected = "expected {modality: (caption, [(question, answer), ...])} with str entries"
    if not isinstance(said, Mapping):
        raise TypeError(f"{where} returned {type(said).__name__}; {expected}")
    out = {}
    for modality, entry in said.items():
        ok = (isinstance(modality, str) and isinstance(entry, (tuple, list)) and len(entry) == 2
              and isinstance(entry[0], str) and isinstance(entry[1], (list, tuple))
              and all(isinstance(qa, (tuple, list)) and len(qa) == 2
                      and isinstance(qa[0], str) and isinstance(qa[1], str) for qa in entry[1]))
        if not ok:
            raise TypeError(f"{where} returned {modality!r}: {entry!r}; {expected}")
        out[modality] = (entry[0], [tuple(qa) for qa in entry[1]])
    return out


def observation_rng(*arrays: Any) -> np.random.Generator:
    """A generator seeded by the bytes of `arrays`: choices that are a function of the observation."""
    return np.random.default_rng([zlib.crc32(np.ascontiguousarray(a).tobytes()) for a in arrays])


def ask(rng: np.random.Generator, options: Mapping[str, Sequence[str]]) -> tuple[str, str] | None:
    """One question of a group: `options` maps each answer this observation allows to the questions
    that have it; an answer is drawn uniformly, then one of its questions. None if there is none."""
    answers = sorted(a for a, questions in options.items() if questions)
    if not answers:
        return None
    answer = answers[int(rng.integers(len(answers)))]
    return options[answer][int(rng.integers(len(options[answer])))], answer


def question_group(prompt: str) -> str:
    """The first two words of the prompt's last text line (placeholder lines skipped), lowercased
    ("Where is the key?\n<grid>" → "where is")."""
    lines = text_lines(prompt)
    return " ".join((lines[-1] if lines else "").split()[:2]).lower()


def balance_answers(records: list[dict], seed: int) -> tuple[list[dict], dict]:
    """Even out the answers of every question; records of other kinds pass through in order.

    Questions (`kind == "qa"`) are stratified by (modalities, question text): each stratum is one
    question asked of one modality ("Is there a wall on your left?"). In a stratum, answers seen
    fewer than 2 times are dropped, the stratum is dropped if fewer than 2 answers remain, and every
    remaining answer is downsampled (seeded per stratum, deterministic) to the count of the rarest.
    So neither the group's nor the question's most common answer beats an even guess: balancing
    whole groups only left per-question priors ("in front of you" is rarely a wall, "five steps
    ahead" usually is), which a model answered from without looking. Survivors keep their order.
    Returns (records, report): report["groups"] maps "<modalities>: <group>" to {"before": {answer:
    n}, "after": {answer: n}} summed over the group's questions; report["dropped"] lists the groups
    left with no questions, report["questions"] counts strata {"before", "kept"}.
    """
    strata: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(records):
        if r["kind"] == "qa":
            lines = text_lines(r["prompt"])
            group = f"{'+'.join(r['modalities'])}: {question_group(r['prompt'])}"
            strata[(group, lines[-1] if lines else "")][r["response"]].append(i)
    keep = [r["kind"] != "qa" for r in records]
    before: dict[str, Counter] = defaultdict(Counter)
    after: dict[str, Counter] = defaultdict(Counter)
    kept = 0
    for group, question in sorted(strata):
        answers = strata[(group, question)]
        by_answer = {a: rows for a, rows in sorted(answers.items()) if len(rows) >= 2}
        if len(by_answer) < 2:
            by_answer = {}
        n = min((len(rows) for rows in by_answer.values()), default=0)
        kept += n > 0
        rng = np.random.default_rng([seed, zlib.crc32(f"{group}|{question}".encode())])
        for answer, rows in by_answer.items():
            for j in rng.choice(len(rows), n, replace=False):
                keep[rows[j]] = True
            after[group][answer] += n
        before[group].update({a: len(rows) for a, rows in answers.items()})
    report: dict[str, Any] = {
        "groups": {g: {"before": dict(sorted(before[g].items())), "after": dict(sorted(after[g].items()))}
                   for g in sorted(before)},
        "dropped": [g for g in sorted(before) if not after[g]],
        "questions": {"before": len(strata), "kept": kept},
    }
    return [r for r, k in zip(records, keep) if k], report
