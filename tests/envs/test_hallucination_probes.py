"""POPE probes from simulator state are balanced and true; the CHAIR parser reads hand-made descriptions."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from graft.envs import hallucination as h
from graft.envs.babyai_grid import Seen


@pytest.fixture(scope="module")
def scenes(babyai_views):
    """The objects in real BabyAI views, read from their grids (views with none left out)."""
    return [s for s in (h.scene_of(v) for v in babyai_views) if s]


def test_probes_are_balanced_and_true_of_the_scene(scenes):
    train, test = scenes[:80], scenes[80:]
    probes = h.pope_probes(test, train, seed=0)
    answers = Counter(p["answer"] for p in probes)
    assert answers["yes"] == answers["no"] > 50
    for kind in ("existence", "attribute", "relation"):
        mine = [p for p in probes if p["type"] == kind]
        assert mine and sum(p["answer"] == "yes" for p in mine) * 2 == len(mine), kind
    sampled = Counter(p["negatives"] for p in probes if p["type"] == "existence" and p["answer"] == "no")
    assert set(sampled) == {"random", "popular", "adversarial"} and max(sampled.values()) - min(sampled.values()) <= 1
    for p in probes:  # every answer is what the simulator says
        names = {s.name for s in test[p["scene"]]}
        if p["type"] == "existence":
            named = p["question"].removeprefix("Is there a ").removesuffix("?")
            assert (named in names) == (p["answer"] == "yes"), p
        elif p["type"] == "attribute":
            kind, colour = p["question"].removeprefix("Is the ").removesuffix("?").split()
            assert (f"{colour} {kind}" in names) == (p["answer"] == "yes"), p
    assert h.pope_probes(test, train, seed=0) == probes  # seeded


def test_popular_and_adversarial_negatives_follow_the_training_scenes():
    red_ball, blue_key, green_box = Seen("ball", "red", 1, 0), Seen("key", "blue", 2, 1), Seen("box", "green", 1, -1)
    train = [[red_ball, blue_key]] * 5 + [[green_box]] * 9  # green box: most popular; blue key: beside the red ball
    probes = h.pope_probes([[red_ball], [red_ball]], train, seed=0, per_scene=1)
    negatives = {p["negatives"]: p["question"] for p in probes if p["type"] == "existence" and p["answer"] == "no"}
    assert negatives["popular"] == "Is there a green box?" and negatives["random"] != "Is there a red ball?"
    probes = h.pope_probes([[red_ball]] * 3, train, seed=0, per_scene=1)
    adversarial = [p for p in probes if p["negatives"] == "adversarial" and p["type"] == "existence"]
    assert adversarial[0]["question"] == "Is there a blue key?"


def test_pope_scores():
    probes = [{"answer": a, "type": "existence", "negatives": None if a == "yes" else "random"}
              for a in ("yes", "no") * 10]
    always_yes = h.pope_scores(["yes"] * 20, probes)
    assert always_yes["f1"] == pytest.approx(2 * 0.5 / 1.5, abs=1e-4) and always_yes["yes_ratio"] == 1.0
    perfect = h.pope_scores([p["answer"] for p in probes], probes)
    assert perfect["f1"] == perfect["accuracy"] == 1.0 and perfect["yes_ratio"] == 0.5
    assert h.pope_scores(["no"] * 20, probes)["f1"] == 0.0
    with pytest.raises(ValueError, match="one answer per probe"):
        h.pope_scores(["yes"], probes)


def test_chair_parses_hand_made_descriptions():
    scene = [Seen("ball", "red", 2, -1), Seen("key", "blue", 1, 1), Seen("box", "grey", 3, 0)]
    assert h.mentions("I see a red ball, two Blue keys and a box.") == [("red", "ball"), ("blue", "key"), (None, "box")]
    assert h.mentions("A gray box. I am carrying a green key.") == [("grey", "box")]  # carried: not in view
    assert h.mentions("I see no objects. There is a wall directly ahead.") == []
    assert h.hallucinated(h.mentions("a red ball, a green ball, a door and boxes"), scene) == [("green", "ball"),
                                                                                               (None, "door")]
    scores = h.chair_scores(["I see a red ball and a blue key.", "I see a purple ball.", "Walls only."],
                            [scene, scene, scene])
    assert scores["chair_i"] == pytest.approx(1 / 3, abs=1e-4) and scores["chair_s"] == pytest.approx(1 / 3, abs=1e-4)
    assert scores["mentions"] == 3 and scores["described_nothing"] == pytest.approx(1 / 3, abs=1e-4)
    assert h.chair_scores(["Nothing."], [scene])["chair_i"] is None  # no mention: no CHAIR_i


def test_a_record_without_a_scene_says_what_it_needs():
    with pytest.raises(ValueError, match="read the scene from the record's 'grid'.*has \\['rgb'\\]"):
        h.scene_of({"rgb": np.zeros((4, 4, 3))})
