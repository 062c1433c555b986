"""Multiple-choice evaluation: candidate groups, scoring and its controls (shuffled, blind, chance, majority)."""
from __future__ import annotations

import numpy as np
import torch
from graft.curricula.evaluate import accuracy, blind, candidate_sets, chance, group_key, majority, shuffled


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


def _colour_rows(mm, n: int = 6) -> list[dict]:
    """n questions "what colour?" whose answer is written into the grid observation itself."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        grid = mm.modalities["grid"].sample(rng)
        grid[..., 1] = i % 2  # the observation says which answer is right
        rows.append({"kind": "qa", "prompt": "<grid>\nWhat colour is it?", "response": ("red", "blue")[i % 2],
                     "modalities": ["grid"], "grid": grid})
    return rows


def test_shuffled_control_permutes_observations_and_keeps_questions():
    rows = [{"kind": "qa", "prompt": f"<grid>\nQ{i}?", "response": str(i), "modalities": ["grid"],
             "grid": np.full((2, 2), i)} for i in range(8)]
    rows.append({"kind": "text", "prompt": "2+2?", "response": "4", "modalities": []})
    mixed = shuffled(rows, seed=0)
    assert [r["prompt"] for r in mixed] == [r["prompt"] for r in rows]
    assert [r["response"] for r in mixed] == [r["response"] for r in rows]
    seen = sorted(int(r["grid"][0, 0]) for r in mixed[:8])
    assert seen == list(range(8))  # a permutation: every observation used once
    assert sum(int(r["grid"][0, 0]) != i for i, r in enumerate(mixed[:8])) >= 4
    assert mixed[8] == rows[8] and shuffled(rows, seed=0)[3]["grid"][0, 0] == mixed[3]["grid"][0, 0]


def test_a_model_that_reads_the_observation_loses_it_when_observations_are_shuffled(tiny_mm):
    """Taught answers that only the observation tells apart, the model scores 1.0; with the observations
    permuted across items it falls to about chance, and blind it cannot tell the items apart at all."""
    from graft.agent.training import StageTrainer
    from graft.curricula.stages import to_example

    torch.manual_seed(0)
    mm = tiny_mm(modalities=("grid",))
    rows = _colour_rows(mm, 8)
    trainer = StageTrainer(mm, "grid", "it", lr=1e-2)
    for _ in range(60):
        trainer.step([to_example(r) for r in rows])
    assert accuracy(mm, rows) == 1.0
    mixed = shuffled(rows, seed=3)
    still_right = np.mean([int(r["grid"][0, 0, 1]) == i % 2 for i, r in enumerate(mixed)])
    assert still_right < 1.0 and accuracy(mm, mixed) == still_right  # it follows the observation it is shown
    assert accuracy(mm, blind(rows)) == 0.5  # one prompt, two answers: half the items, whatever it picks
    assert chance(rows) == 0.5 and majority(rows[:2], rows) == 0.5


def test_blind_drops_the_placeholder_and_the_observation():
    row = {"kind": "qa", "prompt": "<grid>\nWhere is the key?", "response": "ahead", "modalities": ["grid"],
           "grid": np.zeros((7, 7, 3))}
    (b,) = blind([row])
    assert b["prompt"] == "Where is the key?" and b["modalities"] == [] and "grid" not in b
    assert group_key(b) == group_key(row)


def test_majority_is_fitted_on_train_and_chance_is_one_over_k():
    def q(answer):
        return {"kind": "qa", "prompt": "<grid>\nWhere is the key?", "response": answer, "modalities": ["grid"]}
    train = [q("left")] * 3 + [q("right")]
    test = [q("left"), q("right"), q("ahead"), q("right")]
    assert majority(train, test) == 0.25  # always "left": right once in four
    assert chance(test) == 1 / 3  # candidates: ahead, left, right
