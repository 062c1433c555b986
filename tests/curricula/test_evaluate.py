"""Multiple-choice evaluation: candidate groups and scoring."""
from __future__ import annotations

import numpy as np
from graft.curricula.evaluate import accuracy, candidate_sets, group_key


def test_questions_are_grouped_by_their_opening_words_and_demos_by_action_names():
    rows = [
        {"kind": "qa", "prompt": "<grid>\nHow many keys can you see?", "response": "2"},
        {"kind": "qa", "prompt": "<grid>\nHow many balls can you see?", "response": "0"},
        {"kind": "qa", "prompt": "<rgb>\nWhat colour is the ball?", "response": "red"},
        {"kind": "demo", "prompt": "<grid>\nMission: go\nWhat is the next action?", "response": "left"},
        {"kind": "text", "family": "add", "prompt": "2+2?", "response": "4"},
    ]
    assert group_key(rows[0]) == group_key(rows[1]) == "qa:how many"
    sets = candidate_sets(rows, action_names=["left", "right", "forward"])
    assert sets["qa:how many"] == ["0", "2"]
    assert sets["demo"] == ["forward", "left", "right"]
    assert sets["qa:what colour"] == ["0", "2", "red"]  # a one-answer group borrows its kind's pool


def test_accuracy_is_one_when_the_model_was_taught_the_answers(tiny_mm):
    from graft.agent.training import StageTrainer
    from graft.curricula.stages import to_example

    mm = tiny_mm(modalities=("grid",))
    grid = mm.modalities["grid"].sample(np.random.default_rng(0))
    rows = [{"kind": "qa", "prompt": "<grid>\nWhat colour is the key?", "response": c, "modalities": ["grid"],
             "grid": grid} for c in ("red", "blue")]
    rows[1] = dict(rows[1], prompt="<grid>\nWhat colour is the box?")
    before = accuracy(mm, rows)
    trainer = StageTrainer(mm, "grid", "it", lr=1e-2)
    for _ in range(30):
        trainer.step([to_example(r) for r in rows])
    assert accuracy(mm, rows) == 1.0 and before < 1.0
