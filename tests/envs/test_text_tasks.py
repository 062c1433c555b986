"""Text-only tasks: held-out templates, correct answers, determinism."""
from __future__ import annotations

import re

import pytest
from graft.envs.text_tasks import FAMILIES, generate_text_tasks, text_dataset


def template_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)) + "$")


def test_test_prompts_come_only_from_held_out_templates():
    for family in FAMILIES:
        assert set(family.train).isdisjoint(family.test), family.name
    train_res = [template_regex(t) for f in FAMILIES for t in f.train if t not in ("{q}",)]
    test = generate_text_tasks(300, "test", seed=0)
    for record in test:
        assert not any(r.match(record["prompt"]) for r in train_res), record
        assert "/test/" in record["template"]
    train_prompts = {r["prompt"] for r in generate_text_tasks(300, "train", seed=0)}
    assert train_prompts.isdisjoint(r["prompt"] for r in test)
    assert {r["family"] for r in test} == {f.name for f in FAMILIES}


def test_answers_are_correct():
    for record in generate_text_tasks(400, "train", seed=1) + generate_text_tasks(200, "test", seed=1):
        numbers = [int(x) for x in re.findall(r"\d+", record["prompt"])]
        family, answer = record["family"], record["response"]
        if family == "add":
            assert int(answer) == sum(numbers)
        elif family == "subtract":
            assert int(answer) == max(numbers) - min(numbers)
        elif family in ("larger", "smallest"):
            assert int(answer) == (max if family == "larger" else min)(numbers)
        elif family in ("repeat", "uppercase"):
            assert answer.lower() in record["prompt"]
        elif family == "count_list":
            assert int(answer) == len(record["prompt"].split(":")[1].split(","))


def test_same_seed_same_tasks():
    assert generate_text_tasks(50, "train", 5) == generate_text_tasks(50, "train", 5)
    assert generate_text_tasks(50, "train", 5) != generate_text_tasks(50, "train", 6)
    with pytest.raises(ValueError, match="split must be one of"):
        generate_text_tasks(1, "validation")


def test_text_dataset_columns():
    dd = text_dataset(train=20, test=10, seed=0)
    assert len(dd["train"]) == 20 and len(dd["test"]) == 10
    row = dd["train"][0]
    assert row["kind"] == "text" and row["modalities"] == [] and row["prompt"] and row["response"]

