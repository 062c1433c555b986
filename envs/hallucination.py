"""Hallucination probes from simulator ground truth: POPE-style yes/no questions and CHAIR parsing.

POPE (Li et al. 2023) and CHAIR (Rohrbach et al. 2018) need hand-labelled images; a simulator knows
exactly what is in view. Here a scene is the list of objects in one BabyAI view (`scene_of`:
`babyai_grid.visible_objects` of the stored 7x7 grid, so it holds for the rgb camera too, which
shows the same view), and from it come:

    pope_probes(scenes, train_scenes, seed)   balanced yes/no questions per scene:
        existence  "Is there a red ball?"   yes: an object in view; no: an object not in view, drawn
                   three ways (POPE's): random (any absent name), popular (the absent name most
                   frequent in the training scenes), adversarial (the absent name that co-occurs
                   most with what is in view in the training scenes)
        attribute  "Is the ball red?"       of a kind in view once: its colour, or another colour
        relation   "Is the red ball to the left of the blue key?"  of two objects side by side
    pope_scores(said, probes)                 accuracy, precision, recall, F1 (yes = positive),
                                              yes-ratio, and F1 per negative sampling
    mentions(text) / chair_scores(texts, scenes)   CHAIR over free-form descriptions: every
        "<colour> <kind>" or bare "<kind>" mentioned is matched against the scene (a coloured
        mention needs that colour and kind in view, a bare one that kind); CHAIR_i = hallucinated
        mentions / mentions, CHAIR_s = descriptions with a hallucination / descriptions

Pure functions of the scenes (no model, no env); the scoring with a model is
curricula/hallucination.py.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from graft.envs.babyai_grid import OBJECT_TYPES, Seen, visible_objects
from minigrid.core.constants import COLOR_NAMES

KINDS = OBJECT_TYPES  # key, ball, box, door
COLOURS = tuple(COLOR_NAMES)  # red, green, blue, purple, yellow, grey
NAMES = tuple(f"{c} {k}" for c in COLOURS for k in KINDS)
NEGATIVES = ("random", "popular", "adversarial")
PLURALS = {"box": "boxes"}
_KIND = "|".join(sorted({*KINDS, *(PLURALS.get(k, k + "s") for k in KINDS)}, key=len, reverse=True))
MENTION = re.compile(rf"\b(?:({'|'.join(COLOURS)}|gray)\s+)?({_KIND})\b", re.IGNORECASE)


def scene_of(record: Mapping[str, Any]) -> list[Seen]:
    """The objects in view of a stored BabyAI observation (its `grid`, whichever modality it shows)."""
    if "grid" not in record:
        raise ValueError(f"hallucination probes read the scene from the record's 'grid' (BabyAI); this record "
                         f"has {sorted(k for k in record if not k.startswith('_'))}")
    return visible_objects(np.asarray(record["grid"]))


def name_counts(scenes: Sequence[Sequence[Seen]]) -> tuple[Counter, dict[str, Counter]]:
    """(how many scenes show each name, {name: Counter of the names seen beside it}) over `scenes`."""
    seen, beside = Counter(), {n: Counter() for n in NAMES}
    for scene in scenes:
        names = {s.name for s in scene}
        seen.update(names)
        for n in names:
            beside.setdefault(n, Counter()).update(names - {n})
    return seen, beside


def _negative(kind: str, present: set[str], rng: np.random.Generator, seen: Counter,
              beside: Mapping[str, Counter]) -> str | None:
    absent = [n for n in NAMES if n not in present]
    if not absent:
        return None
    if kind == "random":
        return absent[int(rng.integers(len(absent)))]
    if kind == "popular":
        return max(absent, key=lambda n: (seen[n], n))
    together = Counter()
    for n in present:
        together.update(beside.get(n, Counter()))
    return max(absent, key=lambda n: (together[n], seen[n], n))


def pope_probes(scenes: Sequence[Sequence[Seen]], train_scenes: Sequence[Sequence[Seen]], seed: int,
                per_scene: int = 2) -> list[dict]:
    """Balanced yes/no probes (module docstring): per scene up to `per_scene` existence pairs (one
    present name, one absent name; the negatives' sampling rotates random -> popular ->
    adversarial), one attribute pair and one relation pair where the view allows."""
    rng = np.random.default_rng(seed)
    seen, beside = name_counts(train_scenes)
    probes, turn = [], 0
    for i, scene in enumerate(scenes):
        present = {s.name for s in scene}
        counts = Counter(s.name for s in scene)
        for s in [s for s in scene if counts[s.name] == 1][:per_scene]:
            kind = NEGATIVES[turn % len(NEGATIVES)]
            negative = _negative(kind, present, rng, seen, beside)
            if negative is None:
                continue
            turn += 1
            probes += [{"scene": i, "type": "existence", "negatives": None, "question": f"Is there a {s.name}?",
                        "answer": "yes"},
                       {"scene": i, "type": "existence", "negatives": kind, "question": f"Is there a {negative}?",
                        "answer": "no"}]
        kinds = Counter(s.kind for s in scene)
        single = [s for s in scene if kinds[s.kind] == 1]
        if single:
            s = single[int(rng.integers(len(single)))]
            others = [c for c in COLOURS if c != s.color]
            in_view = [o.color for o in scene if o.color != s.color]  # adversarial: a colour that is in view
            wrong = in_view[0] if in_view else others[int(rng.integers(len(others)))]
            probes += [{"scene": i, "type": "attribute", "negatives": None, "question": f"Is the {s.kind} {s.color}?",
                        "answer": "yes"},
                       {"scene": i, "type": "attribute", "negatives": "adversarial" if in_view else "random",
                        "question": f"Is the {s.kind} {wrong}?", "answer": "no"}]
        unique = [s for s in scene if counts[s.name] == 1]
        pairs = [(a, b) for a in unique for b in unique if a.right < b.right]
        if pairs:
            a, b = pairs[int(rng.integers(len(pairs)))]
            probes += [{"scene": i, "type": "relation", "negatives": None,
                        "question": f"Is the {a.name} to the left of the {b.name}?", "answer": "yes"},
                       {"scene": i, "type": "relation", "negatives": "adversarial",
                        "question": f"Is the {b.name} to the left of the {a.name}?", "answer": "no"}]
    return probes


def _prf(yes: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp, fp, fn = int((yes & truth).sum()), int((yes & ~truth).sum()), int((~yes & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def pope_scores(said: Sequence[str], probes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """POPE's numbers for answers `said` ("yes" / "no") to `probes`; yes is the positive class.
    `f1_by_negatives`: existence probes only, every positive with the negatives of one sampling."""
    if len(said) != len(probes) or not probes:
        raise ValueError(f"need one answer per probe and at least one probe, got {len(said)} for {len(probes)}")
    yes = np.array([a == "yes" for a in said])
    truth = np.array([p["answer"] == "yes" for p in probes])
    precision, recall, f1 = _prf(yes, truth)
    by = {}
    for kind in NEGATIVES:
        keep = np.array([p["type"] == "existence" and p["negatives"] in (None, kind) for p in probes])
        if (keep & ~truth).any():
            by[kind] = round(_prf(yes[keep], truth[keep])[2], 4)
    return {"accuracy": round(float((yes == truth).mean()), 4), "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4), "yes_ratio": round(float(yes.mean()), 4),
            "probes": len(probes), "f1_by_negatives": by}


def mentions(text: str) -> list[tuple[str | None, str]]:
    """(colour or None, kind) for every object the text mentions ("two red balls" -> ("red", "ball")),
    leaving out sentences about what the agent carries."""
    out = []
    # what the agent carries is not in view (minigrid draws it nowhere): a sentence about it is no claim about the scene
    text = " ".join(t for t in re.split(r"(?<=[.!?])\s+", text) if "carry" not in t.lower())
    for colour, kind in MENTION.findall(text):
        kind = kind.lower()
        kind = next((k for k, p in PLURALS.items() if p == kind), kind[:-1] if kind.endswith("s") and kind[:-1] in KINDS
                    else kind)
        colour = colour.lower() or None
        out.append(("grey" if colour == "gray" else colour, kind))
    return out


def hallucinated(said: Sequence[tuple[str | None, str]], scene: Sequence[Seen]) -> list[tuple[str | None, str]]:
    """The mentions `said` that the scene does not hold."""
    names, kinds = {(s.color, s.kind) for s in scene}, {s.kind for s in scene}
    return [(c, k) for c, k in said if ((c, k) not in names if c else k not in kinds)]


def chair_scores(texts: Sequence[str], scenes: Sequence[Sequence[Seen]]) -> dict[str, Any]:
    """CHAIR_i and CHAIR_s of descriptions `texts` of `scenes` (None where nothing was mentioned)."""
    if len(texts) != len(scenes) or not texts:
        raise ValueError(f"need one description per scene and at least one, got {len(texts)} for {len(scenes)}")
    said = [mentions(t) for t in texts]
    wrong = [hallucinated(m, s) for m, s in zip(said, scenes)]
    total = sum(len(m) for m in said)
    return {"chair_i": round(sum(len(w) for w in wrong) / total, 4) if total else None,
            "chair_s": round(float(np.mean([bool(w) for w in wrong])), 4),
            "mentions": total, "descriptions": len(texts),
            "described_nothing": round(float(np.mean([not m for m in said])), 4)}
