"""Captions and verifiable questions about one BabyAI observation (`BabyAIEnv.describe` calls this).

`describe_babyai(env, obs)` returns `{"grid": (caption, qas), "rgb": (caption, qas)}`. Both show the
same egocentric 7x7 view, but each is asked about what it carries, and no question is asked of both:

    grid  layout and relations: where an object is ("ahead left"), how far ahead it is, whether a
          wall is at a cell, which kind of object is closest, how many keys / objects are in view;
          its caption names kinds and steps
    rgb   colour and appearance: what colour the <kind> or the closest object is, whether a
          <colour> object is in view, how many <colour> objects, what kind the <colour> one is;
          its caption names colours and kinds

Every question group (its first two words, `captions.question_group`) has one answer type and gets
at most one question per observation (`captions.ask`: an answer drawn uniformly among those the view
allows, from a generator seeded by the grid), so answers come out roughly balanced before datagen
balances each question exactly. Counts and steps are asked only up to 3 (counts of one colour up to 2).
Answers are short and exact ("2", "red", "ahead left", "yes", "key"), checkable by string match
against the stored `grid`; captions also say what the agent carries.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
from graft.envs.babyai_grid import Seen, cell_kind, visible_objects
from graft.envs.captions import ask, observation_rng
from minigrid.core.constants import COLOR_NAMES

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven")
PLURAL = {"box": "boxes"}
MOST = 3  # counts and steps ahead are asked about up to this ...
MOST_OF_A_COLOUR = 2  # ... and counts of one colour up to this
WALL_SPOTS = {"in front of you": (1, 0), "on your left": (0, -1), "on your right": (0, 1),
              **{f"{WORDS[k]} steps ahead": (k, 0) for k in range(2, 7)}}
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


def _closest(seen: list[Seen]) -> Seen | None:
    """The nearest object if no other is as near."""
    return seen[0] if seen and (len(seen) == 1 or _dist(seen[0]) < _dist(seen[1])) else None


def _a(words: str) -> str:
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def _listing(parts: list[str], more: int) -> str:
    if not parts:
        return "I see no objects."
    text = "I see " + ", ".join(parts) + "."
    return text + (f" {_count(more, 'more object').capitalize()} further away." if more > 0 else "")


def describe_babyai(env: Any, obs: Mapping[str, Any]) -> dict[str, tuple[str, QAs]]:
    """Captions and questions about the egocentric `grid` (7, 7, 3); captions also say what is carried."""
    grid = obs["grid"]
    seen = visible_objects(grid)
    rng = observation_rng(grid)
    holding = env.carrying  # "red key" or ""
    return {"grid": (_grid_caption(grid, seen, holding), _grid_questions(grid, seen, rng)),
            "rgb": (_rgb_caption(seen, holding), _rgb_questions(seen, rng))}


def _grid_caption(grid: Any, seen: list[Seen], holding: str) -> str:
    parts = [f"{_a(f'{s.state} {s.kind}'.strip())} {_where_phrase(s)}" for s in seen[:4]]
    caption = _listing(parts, len(seen) - 4)
    walls = [side for side, (a, r) in (("ahead", (1, 0)), ("left", (0, -1)), ("right", (0, 1)))
             if cell_kind(grid, a, r) == "wall"]
    if walls:
        caption += " There is a wall directly " + " and ".join(
            w if w == "ahead" else f"on the {w}" for w in walls) + "."
    return caption + (f" I am carrying {_a(holding.split()[-1])}." if holding else "")


def _rgb_caption(seen: list[Seen], holding: str) -> str:
    caption = _listing([_a(s.name) for s in seen[:4]], len(seen) - 4)
    return caption + (f" I am carrying {_a(holding)}." if holding else "")


def _grid_questions(grid: Any, seen: list[Seen], rng: np.random.Generator) -> QAs:
    where, far, wall, closest, count = (defaultdict(list) for _ in range(5))
    names = Counter(s.name for s in seen)
    for s in seen:
        if names[s.name] == 1:
            where[_where_word(s)].append(f"Where is the {s.name}?")
            if s.ahead <= MOST:
                far[str(s.ahead)].append(f"How far ahead is the {s.name}?")
    for spot, (ahead, right) in WALL_SPOTS.items():
        kind = cell_kind(grid, ahead, right)
        if kind != "unseen":
            wall["yes" if kind == "wall" else "no"].append(f"Is there a wall {spot}?")
    if (near := _closest(seen)) is not None:
        closest[near.kind].append("Which object is closest to you?")
    kinds = Counter(s.kind for s in seen)
    for kind in ("key", "ball", "box", "object"):
        n = len(seen) if kind == "object" else kinds[kind]
        if n <= MOST:
            count[str(n)].append(f"How many {PLURAL.get(kind, kind + 's')} can you see?")
    return [qa for options in (where, far, wall, closest, count) if (qa := ask(rng, options))]


def _rgb_questions(seen: list[Seen], rng: np.random.Generator) -> QAs:
    colour, present, count, kind_of = (defaultdict(list) for _ in range(4))
    kinds, colours = Counter(s.kind for s in seen), Counter(s.color for s in seen)
    for s in seen:
        if kinds[s.kind] == 1:
            colour[s.color].append(f"What colour is the {s.kind}?")
        if colours[s.color] == 1:
            kind_of[s.kind].append(f"What kind of object is the {s.color} one?")
    if (near := _closest(seen)) is not None:
        colour[near.color].append("What colour is the closest object?")
    for c in COLOR_NAMES:
        present["yes" if colours[c] else "no"].append(f"Is there a {c} object?")
        if colours[c] <= MOST_OF_A_COLOUR:
            count[str(colours[c])].append(f"How many {c} objects can you see?")
    return [qa for options in (colour, present, count, kind_of) if (qa := ask(rng, options))]
