"""Captions and verifiable questions about one BabyAI observation (`BabyAIEnv.describe` calls this).

`describe_babyai(env, obs)` returns `{"grid": (caption, qas), "rgb": (caption, qas)}`: both
modalities show the same egocentric 7x7 view, so what is said is the same for both and is visible
in either. `qas` are `(question, answer)` pairs whose answers are short and exact ("2", "red",
"ahead left", "yes"), checkable by string match against the stored `grid`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graft.envs.babyai_grid import Seen, cell_kind, visible_objects

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven")
PLURAL = {"box": "boxes"}
CAPTION_PROMPTS = {
    "grid": ("Describe what you see.", "What is around you?", "Give a short caption."),
    "rgb": ("Describe what you see.", "What is in this picture?", "Give a short caption."),
}

QAs = list[tuple[str, str]]


def _count(n: int, unit: str) -> str:
    return f"{WORDS[n] if n < len(WORDS) else n} {unit}{'' if n == 1 else 's'}"


def _where_phrase(s: Seen) -> str:
    side = "left" if s.right < 0 else "right"
    if s.ahead == 0:
        return f"{_count(abs(s.right), 'step')} to your {side}"
    if s.right == 0:
        return f"{_count(s.ahead, 'step')} straight ahead"
    return f"{_count(s.ahead, 'step')} ahead and {WORDS[abs(s.right)]} to the {side}"


def _where_word(s: Seen) -> str:
    side = "" if s.right == 0 else ("left" if s.right < 0 else "right")
    return " ".join(w for w in ("ahead" if s.ahead > 0 else "", side) if w)


def _dist(s: Seen) -> int:
    return abs(s.ahead) + abs(s.right)


def describe_babyai(env: Any, obs: Mapping[str, Any]) -> dict[str, tuple[str, QAs]]:
    """Caption and questions about the egocentric `grid` (7, 7, 3) and what the agent carries."""
    grid = obs["grid"]
    seen = visible_objects(grid)
    parts = []
    for s in seen[:4]:
        door = f"{s.state} " if s.kind == "door" else ""
        parts.append(f"a {door}{s.name} {_where_phrase(s)}")
    caption = ("I see " + ", ".join(parts) + "." if parts else "I see no objects.")
    if len(seen) > 4:
        caption += f" {_count(len(seen) - 4, 'more object')} further away."
    walls = [side for side, (a, r) in (("ahead", (1, 0)), ("left", (0, -1)), ("right", (0, 1)))
             if cell_kind(grid, a, r) == "wall"]
    if walls:
        caption += " There is a wall directly " + " and ".join(
            w if w == "ahead" else f"on the {w}" for w in walls) + "."
    holding = env.carrying
    caption += f" I am carrying a {holding}." if holding else ""

    qas: QAs = []
    kinds = sorted({s.kind for s in seen} | {"ball", "key", "box"})
    for kind in kinds:
        same = [s for s in seen if s.kind == kind]
        qas.append((f"How many {PLURAL.get(kind, kind + 's')} can you see?", str(len(same))))
        if len(same) == 1:
            qas.append((f"What colour is the {kind}?", same[0].color))
    unique = [s for s in seen if sum(o.name == s.name for o in seen) == 1]
    for s in unique[:3]:
        qas.append((f"Where is the {s.name}?", _where_word(s)))
        qas.append((f"How many steps ahead is the {s.name}?", str(s.ahead)))
    if seen and (len(seen) == 1 or _dist(seen[0]) < _dist(seen[1])):
        qas.append(("Which object is closest to you?", seen[0].name))
    qas.append(("Is there a wall right in front of you?", "yes" if "ahead" in walls else "no"))
    qas.append(("What are you carrying?", f"a {holding}" if holding else "nothing"))
    return {"grid": (caption, qas), "rgb": (caption, qas)}
