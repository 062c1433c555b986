"""Text-only instruction data with verifiable short answers.

Mixed into every training stage so the LLM keeps its language skills (VILA), and evaluated after
each stage as "text retention". Tasks come from template families (arithmetic, comparison,
instruction following, grid-world and colour knowledge, headings). Each family has TRAIN
templates and disjoint held-out TEST templates, so the test split measures whether a skill
survives rephrasing, not whether a sentence was memorised.

    generate_text_tasks(n, split, seed) -> list[dict]       prompt, response, family, template, match
    text_dataset(train=, test=, seed=) -> datasets.DatasetDict
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

WORDS = ("apple", "river", "garden", "window", "purple", "rocket", "silver", "pencil", "forest",
         "ladder", "cookie", "magnet", "tunnel", "violin", "planet", "basket", "lemon", "castle")
HEADINGS = ("north", "east", "south", "west")
TURNS = {"right": 1, "left": -1, "around": 2}
MIXES = {("red", "yellow"): "orange", ("blue", "yellow"): "green", ("red", "blue"): "purple",
         ("red", "white"): "pink", ("black", "white"): "grey"}
FACTS = (  # (train phrasing, held-out phrasing, answer)
    ("In the grid world, which object opens a locked door?",
     "What must the agent hold to unlock a locked door?", "key"),
    ("Which action picks up an object?", "Name the action that lifts an object off the floor.", "pickup"),
    ("Which action opens a closed door?", "What action makes a closed door open?", "toggle"),
    ("Which action moves the agent one cell ahead?", "What action steps one cell forward?", "forward"),
    ("Can the agent walk through a wall?", "Is a wall passable for the agent?", "no"),
    ("How many objects can the agent carry at once?", "At most how many things can the agent hold?", "1"),
    ("Which action turns the agent counter-clockwise?", "What action rotates the agent to its left?", "left"),
    ("Which action puts down the carried object?", "What action releases the object being held?", "drop"),
    ("What colour is a ripe banana?", "A ripe banana has which colour?", "yellow"),
    ("What colour is grass?", "Grass is usually which colour?", "green"),
)


@dataclass(frozen=True)
class Family:
    name: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    sample: Callable[[np.random.Generator], tuple[dict, str]]  # rng → (template slots, answer)
    match: str = "normalized"  # "exact" when case and punctuation matter


def _two_numbers(rng, ordered=False):
    a, b = (int(x) for x in rng.integers(0, 60, size=2))
    return (max(a, b), min(a, b)) if ordered else (a, b)


def _add(rng):
    a, b = _two_numbers(rng)
    return {"a": a, "b": b}, str(a + b)


def _sub(rng):
    a, b = _two_numbers(rng, ordered=True)
    return {"a": a, "b": b}, str(a - b)


def _larger(rng):
    a, b = _two_numbers(rng)
    b = b + 1 if a == b else b
    return {"a": a, "b": b}, str(max(a, b))


def _smallest(rng):
    a, b, c = (int(x) for x in rng.choice(100, size=3, replace=False))
    return {"a": a, "b": b, "c": c}, str(min(a, b, c))


def _word(rng):
    w = str(rng.choice(WORDS))
    return {"w": w}, w


def _upper(rng):
    w = str(rng.choice(WORDS))
    return {"w": w}, w.upper()


def _letters(rng):
    w = str(rng.choice(WORDS))
    return {"w": w}, str(len(w))


def _count_list(rng):
    items = list(rng.choice(WORDS, size=int(rng.integers(2, 7)), replace=False))
    return {"items": ", ".join(items)}, str(len(items))


def _turn(rng):
    h, t = int(rng.integers(4)), str(rng.choice(list(TURNS)))
    return {"h": HEADINGS[h], "t": t}, HEADINGS[(h + TURNS[t]) % 4]


def _mix(rng):
    (c1, c2), answer = list(MIXES.items())[int(rng.integers(len(MIXES)))]
    return ({"c1": c1, "c2": c2} if rng.random() < 0.5 else {"c1": c2, "c2": c1}), answer


def _fact(rng):
    q, q_test, answer = FACTS[int(rng.integers(len(FACTS)))]
    return {"q": q, "q_test": q_test}, answer


FAMILIES = (
    Family("add", ("What is {a} plus {b}?", "Compute {a} + {b}."),
           ("What do you get if you add {b} to {a}?", "Calculate the sum of {a} and {b}."), _add),
    Family("subtract", ("What is {a} minus {b}?", "Compute {a} - {b}."),
           ("Subtract {b} from {a}.", "What is left if you take {b} away from {a}?"), _sub),
    Family("larger", ("Which is larger, {a} or {b}?", "Which number is bigger: {a} or {b}?"),
           ("Of {a} and {b}, which is greater?",), _larger),
    Family("smallest", ("What is the smallest of {a}, {b} and {c}?",),
           ("Among {a}, {b} and {c}, which is the least?",), _smallest),
    Family("repeat", ("Repeat the word {w}.", "Say {w} and nothing else."),
           ("Echo this word back exactly: {w}", "Write the word {w} once."), _word),
    Family("uppercase", ("Write {w} in capital letters.", "Convert {w} to upper case."),
           ("Spell {w} using only uppercase letters.",), _upper, match="exact"),
    Family("letters", ("How many letters are in the word {w}?",), ("Count the letters of {w}.",), _letters),
    Family("count_list", ("How many items are in this list: {items}?",),
           ("Count the things listed here: {items}.",), _count_list),
    Family("heading", ("You face {h} and turn {t}. Which way do you face now?",),
           ("Facing {h}, you turn {t}. What is your new heading?",), _turn),
    Family("mix_colours", ("What colour do you get by mixing {c1} and {c2}?",),
           ("If you mix {c1} paint with {c2} paint, what colour results?",), _mix),
    Family("facts", ("{q}", "Answer in one word: {q}"), ("{q_test}", "Reply briefly. {q_test}"), _fact),
)
SPLITS = ("train", "test")


def generate_text_tasks(n: int, split: str = "train", seed: int = 0) -> list[dict]:
    """`n` tasks from the `split` templates ("train" or held-out "test"); deterministic per seed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    out = []
    for _ in range(n):
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
        templates = family.train if split == "train" else family.test
        t = int(rng.integers(len(templates)))
        slots, answer = family.sample(rng)
        out.append({"prompt": templates[t].format(**slots), "response": answer, "family": family.name,
                    "template": f"{family.name}/{split}/{t}", "match": family.match})
    return out


def text_dataset(train: int = 1000, test: int = 200, seed: int = 0):
    """A `datasets.DatasetDict` of text-only tasks; columns as in `generate_text_tasks` plus
    kind="text" and modalities=[] so it lines up with the simulator datasets' text columns."""
    import datasets

    features = datasets.Features({
        "kind": datasets.Value("string"), "modalities": datasets.Sequence(datasets.Value("string")),
        "prompt": datasets.Value("string"), "response": datasets.Value("string"),
        "family": datasets.Value("string"), "template": datasets.Value("string"),
        "match": datasets.Value("string"),
    })
    splits = {}
    for split, n in (("train", train), ("test", test)):
        rows = [{"kind": "text", "modalities": [], **r} for r in generate_text_tasks(n, split, seed)]
        splits[split] = datasets.Dataset.from_list(rows, features=features)
    return datasets.DatasetDict(splits)

