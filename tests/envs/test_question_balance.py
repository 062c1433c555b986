"""Questions are balanced: no answer prior, of a question or of its group, beats an even guess, and
modalities get their own questions.

A question's candidates in the multiple-choice evaluation are the distinct answers of its group (the
first two words) in the test set, so a group or a question whose answers are uneven rewards answer
priors rather than perception. `balance_answers` evens each question out; the describers keep every
group to one answer type and never ask two modalities of an env the same question.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest
from graft.envs.babyai_grid import OBJECT_TYPES
from graft.envs.captions import balance_answers, question_group
from graft.envs.datagen import generate_dataset
from graft.envs.mujoco_reach import COLORS
from minigrid.core.constants import COLOR_NAMES

SPLITS = {"train": 0.5, "val": 0.25, "test": 0.25}
COLOUR_WORDS = set(COLOR_NAMES) | set(COLORS)
PLACES = {"ahead", "left", "right", "ahead left", "ahead right", "front", "back",
          "top left", "top right", "bottom left", "bottom right"}


def qa(modality: str, question: str, answer: str) -> dict:
    return {"kind": "qa", "modalities": [modality], "prompt": f"{question}\n<{modality}>", "response": answer}


def answer_type(answer: str) -> str:
    if answer.lstrip("-").isdigit():
        return "number"
    for name, words in (("yes/no", {"yes", "no"}), ("colour", COLOUR_WORDS), ("kind", set(OBJECT_TYPES)),
                        ("place", PLACES)):
        if answer in words:
            return name
    raise AssertionError(f"answer {answer!r} is of no known type")


def test_question_group_is_the_first_two_words_of_the_last_text_line():
    assert question_group("Where is the red ball?\n<grid>") == "where is"
    assert question_group("Mission: go\nWhat is the next action?\n<grid>\n<rgb>") == "what is"
    assert question_group("<grid>\nWhere is the red ball?") == "where is"
    assert question_group("<rgb>\n<grid>\nHow   many keys?") == "how many"
    assert question_group("Yes?") == "yes?"


def test_balance_answers_evens_groups_and_leaves_other_kinds_alone():
    records = ([qa("grid", "How many keys?", a) for a in "0001112223"]            # "3" once: dropped
               + [qa("rgb", "How many red?", a) for a in "0011"]                   # another modality
               + [qa("grid", "Is it? a", "yes")] * 3 + [qa("grid", "Is it? b", "no")]  # one answer left
               + [{"kind": "caption", "modalities": ["grid"], "prompt": "<grid>\nSay.", "response": "x"},
                  {"kind": "demo", "modalities": ["grid"], "prompt": "<grid>\nAct.", "response": "left"}])
    records.insert(3, {"kind": "caption", "modalities": ["rgb"], "prompt": "<rgb>\nSay.", "response": "y"})
    kept, report = balance_answers(records, seed=0)
    assert [r for r in kept if r["kind"] != "qa"] == [r for r in records if r["kind"] != "qa"]
    answers = defaultdict(Counter)
    for r in kept:
        if r["kind"] == "qa":
            answers[(r["modalities"][0], question_group(r["prompt"]))][r["response"]] += 1
    assert answers == {("grid", "how many"): {"0": 3, "1": 3, "2": 3}, ("rgb", "how many"): {"0": 2, "1": 2}}
    assert report["dropped"] == ["grid: is it?"]
    assert report["groups"]["grid: how many"] == {"before": {"0": 3, "1": 3, "2": 3, "3": 1},
                                                  "after": {"0": 3, "1": 3, "2": 3}}
    assert report["groups"]["grid: is it?"] == {"before": {"no": 1, "yes": 3}, "after": {}}
    positions = [next(i for i, r in enumerate(records) if r is k) for k in kept]
    assert positions == sorted(positions)  # survivors keep their order

    many = [qa("grid", "How many?", str(i % 2)) for i in range(41)]  # 21 zeros, 20 ones
    first, again, other = (balance_answers(many, seed)[0] for seed in (1, 1, 2))
    assert first == again and len(first) == 40 and first != other


def test_balance_answers_removes_each_questions_own_prior():
    """A group can be even while each of its questions is not (walls are rare in front of the agent
    and common far ahead); then the question alone answers it. Balancing evens every question."""
    records = ([qa("grid", "Is there a wall in front of you?", a) for a in ["no"] * 8 + ["yes"] * 2]
               + [qa("grid", "Is there a wall five steps ahead?", a) for a in ["yes"] * 8 + ["no"] * 2])
    kept, report = balance_answers(records, seed=0)
    per_question = defaultdict(Counter)
    for r in kept:
        per_question[r["prompt"].split("\n")[0]][r["response"]] += 1
    assert per_question == {"Is there a wall in front of you?": {"no": 2, "yes": 2},
                            "Is there a wall five steps ahead?": {"no": 2, "yes": 2}}
    assert report["groups"]["grid: is there"] == {"before": {"no": 10, "yes": 10}, "after": {"no": 4, "yes": 4}}
    assert report["questions"] == {"before": 2, "kept": 2}


def group_answers(ds) -> dict[tuple[str, str], Counter]:
    out = defaultdict(Counter)
    for r in ds.select_columns(["kind", "modalities", "prompt", "response"]).to_list():
        if r["kind"] == "qa":
            out[(r["modalities"][0], question_group(r["prompt"]))][r["response"]] += 1
    return out


def question_answers(ds) -> dict[tuple[str, str], Counter]:
    out = defaultdict(Counter)
    for r in ds.select_columns(["kind", "modalities", "prompt", "response"]).to_list():
        if r["kind"] == "qa":
            out[(r["modalities"][0], r["prompt"].split("\n")[0])][r["response"]] += 1
    return out


def check_balanced(dd, modalities: set[str], min_groups: int) -> None:
    """Every split's questions are exactly even (so a question's most common answer, on any split,
    scores 1/K of its answers), and every modality keeps `min_groups` groups on test. A group's
    majority can beat 1/K of the group where its questions have different answer sets: the run's
    majority control reports that."""
    for split in dd:
        for key, counts in question_answers(dd[split]).items():
            assert len(counts) >= 2 and len(set(counts.values())) == 1, (split, key, counts)
    kept = Counter(modality for modality, _ in group_answers(dd["test"]))
    assert set(kept) == modalities and min(kept.values()) >= min_groups, kept


def check_questions(dd) -> None:
    """No question string is asked of two modalities; every group has one answer type."""
    asked, types = defaultdict(set), defaultdict(set)
    for split in dd:
        for r in dd[split].select_columns(["kind", "modalities", "prompt", "response"]).to_list():
            if r["kind"] == "qa":
                question = r["prompt"].split("\n")[0]
                asked[question].add(r["modalities"][0])
                types[(r["modalities"][0], question_group(r["prompt"]))].add(answer_type(r["response"]))
    shared = {q: m for q, m in asked.items() if len(m) > 1}
    assert not shared and all(len(t) == 1 for t in types.values()), (shared, types)


@pytest.fixture(scope="module")
def babyai(tmp_path_factory):
    """(balanced DatasetDict, its datagen.json, the same data unbalanced): GoToLocal, 192 episodes."""
    out = tmp_path_factory.mktemp("babyai_balanced")
    dd = generate_dataset("babyai_goto", out, episodes=192, seed=0, splits=SPLITS, progress=False)
    raw = generate_dataset("babyai_goto", None, episodes=192, seed=0, splits=SPLITS, progress=False, balance=False)
    return dd, json.loads((out / "datagen.json").read_text()), raw


def test_babyai_groups_are_balanced_and_grid_and_rgb_are_asked_different_things(babyai):
    dd, _, raw = babyai
    check_balanced(dd, {"grid", "rgb"}, min_groups=3)
    check_questions(raw)


def test_datagen_json_records_the_balance_of_each_split(babyai):
    dd, report, _ = babyai
    for split, ds in dd.items():
        b = report["balance"][split]
        assert b["qa_after"] == sum(k == "qa" for k in ds["kind"]) < b["qa_before"]
        assert b["qa_after"] == sum(sum(g["after"].values()) for g in b["groups"].values())
        assert b["qa_before"] == sum(sum(g["before"].values()) for g in b["groups"].values())
        assert set(b["dropped"]) <= set(b["groups"])
    assert report["rows_by_kind"]["qa"] == sum(b["qa_after"] for b in report["balance"].values())


def test_balance_off_keeps_every_question_and_balancing_only_drops_questions(babyai):
    dd, _, raw = babyai
    cols = ["episode_seed", "step", "kind", "prompt", "response"]
    for split in dd:
        full, kept = raw[split].select_columns(cols).to_list(), dd[split].select_columns(cols).to_list()
        assert [r for r in full if r["kind"] != "qa"] == [r for r in kept if r["kind"] != "qa"]
        it = iter(full)
        assert all(any(r == s for s in it) for r in kept)  # an ordered subset


def test_reach_groups_are_balanced_and_modalities_are_asked_different_things():
    dd = generate_dataset("mujoco_reach", None, episodes=16, seed=0, splits=SPLITS, progress=False)
    check_balanced(dd, {"rgb", "depth", "proprio", "objects"}, min_groups=2)
    check_questions(generate_dataset("mujoco_reach", None, episodes=16, seed=0, splits=SPLITS,
                                     progress=False, balance=False))
