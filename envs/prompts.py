"""The prompt layout every part of graft shares: static text first, observation placeholders last.

    "Mission: go to the red ball\\nWhat is the next action?\\n<grid>"
    "Where is the red ball?\\n<grid>"

The text before the first placeholder (chat template, mission, question) is the same at every
control step of an episode, so the agent computes its keys and values once and reuses them
(agent/fast_path.py); only the observation tokens and the answer are new at each step. Datagen,
the stages, the policies and the evaluation all build prompts here, so training, evaluation and
acting read the same layout.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

PLACEHOLDER = re.compile(r"^(<[A-Za-z0-9_]+>)+$")
NEXT_ACTION = "What is the next action?"
# the policies' prompts: str.format templates with {mission} and {tags}, the observation last
ACT_PROMPT = "Mission: {mission}\n" + NEXT_ACTION + "\n{tags}"
CHUNK_PROMPT = "Mission: {mission}\nPlan the next actions.\n{tags}"
GOAL_PROMPT = "Mission: {mission}\nImagine the view when the mission is done.\n{tags}"


def tags(modalities: Sequence[str]) -> str:
    """The placeholders of `modalities`, one per line: "<rgb>\\n<grid>"."""
    return "\n".join(f"<{m}>" for m in modalities)


def observation_prompt(text: str, modalities: Sequence[str]) -> str:
    """`text` followed by one placeholder line per modality (none: `text` alone)."""
    return f"{text}\n{tags(modalities)}" if modalities else text


def mission_prompt(mission: str, ask: str, modalities: Sequence[str]) -> str:
    """"Mission: <mission>\\n<ask>" followed by the placeholders."""
    return observation_prompt(f"Mission: {mission}\n{ask}", modalities)


def fill(template: str, modalities: Sequence[str], mission: str) -> str:
    """A policy prompt template with its mission and placeholders filled in."""
    return template.format(tags=tags(modalities), mission=mission)


def text_lines(prompt: str) -> list[str]:
    """The prompt's lines without the placeholder-only lines."""
    return [line for line in prompt.split("\n") if not PLACEHOLDER.match(line.strip())]
