"""Simulator datasets: deterministic, seed-disjoint splits, placeholders, answers that match the data."""
from __future__ import annotations

import functools
import json
import re

import numpy as np
import pytest
from graft.envs.babyai import ACTION_NAMES, make_babyai_env
from graft.envs.datagen import generate_dataset, load_generated
from graft.envs.experts import ExpertFailure
from test_babyai import expected_answer


@pytest.fixture(scope="module")
def babyai(tmp_path_factory):
    out = tmp_path_factory.mktemp("babyai")  # unbalanced: 5 episodes keep few questions balanced per question
    return generate_dataset("babyai_goto", out, episodes=5, seed=3, balance=False), out


@pytest.fixture(scope="module")
def reach(tmp_path_factory):
    out = tmp_path_factory.mktemp("reach")
    return generate_dataset("mujoco_reach", out, episodes=3, seed=0, splits={"train": 2, "test": 1}, balance=False), out


def test_same_seed_same_dataset_other_seed_other_episodes(babyai, tmp_path):
    first, _ = babyai
    again = generate_dataset("babyai_goto", None, episodes=5, seed=3, balance=False)
    for split in first:
        assert first[split].data.table.equals(again[split].data.table)
    other = generate_dataset("babyai_goto", None, episodes=5, seed=4, balance=False)
    assert set(other["train"]["episode_seed"]) != set(first["train"]["episode_seed"])


def test_splits_never_share_an_episode_seed(babyai):
    dd, out = babyai
    train, test = set(dd["train"]["episode_seed"]), set(dd["test"]["episode_seed"])
    assert len(train) == 4 and len(test) == 1 and not train & test
    report = json.loads((out / "datagen.json").read_text())
    assert set(report["splits"]["train"]["episode_seeds"]) == train
    assert report["rows"] == len(dd["train"]) + len(dd["test"]) and report["samples_per_s"] > 0
    assert report["splits"]["train"]["bytes"] == (out / "train.parquet").stat().st_size


def test_prompts_hold_exactly_their_modality_placeholders(babyai, reach):
    for dd, names in ((babyai[0], {"grid", "rgb"}), (reach[0], {"rgb", "depth", "proprio", "objects"})):
        rows = dd["train"].select_columns(["prompt", "modalities", "kind"]).to_list()
        assert {r["kind"] for r in rows} == {"caption", "qa", "demo"}
        for r in rows:
            used = set(re.findall(r"<(\w+)>", r["prompt"]))
            assert used == set(r["modalities"]) and used <= names, r


def test_babyai_answers_agree_with_the_stored_grid(babyai):
    ds = babyai[0]["train"].with_format("numpy")
    checked = 0
    for row in ds:
        if row["kind"] == "qa":
            question, modality = str(row["prompt"])[:-1].split("\n<")
            assert row["response"] == expected_answer(modality, question, row["grid"]), question
            checked += 1
        if row["kind"] == "demo":
            assert row["response"] == ACTION_NAMES[int(row["action"][0])]
            assert str(row["mission"]) in str(row["prompt"])
    assert checked >= 3


def test_reach_columns_and_continuous_demos(reach):
    ds = reach[0]["train"].with_format("numpy")
    row = ds[0]
    assert row["rgb"].shape == (64, 64, 3) and row["depth"].shape == (64, 64) and row["proprio"].shape == (6,)
    demos = [r for r in ds if r["kind"] == "demo"]
    assert demos
    for r in demos[:20]:
        assert np.allclose([float(x) for x in str(r["response"]).split()], r["action"], atol=5e-4)
        assert np.all(np.abs(r["action"]) <= 1.0)


def test_written_parquet_loads_back_with_dtypes(babyai):
    dd, out = babyai
    loaded = load_generated(out)
    assert set(loaded) == {"train", "test"}
    assert loaded["train"].features == dd["train"].features
    assert loaded["train"].data.table.equals(dd["train"].data.table)


def test_failed_expert_episodes_are_skipped_or_reported(tmp_path):
    # A 5-step limit makes some GoToLocal episodes unsolvable: they are skipped, not written.
    short = functools.partial(make_babyai_env, level="BabyAI-GoToLocal-v0", max_steps=5, name="short")
    dd = generate_dataset(short, tmp_path, episodes=4, seed=0, splits={"train": 1.0}, max_failures=30)
    report = json.loads((tmp_path / "datagen.json").read_text())
    assert report["skipped"] and len(set(dd["train"]["episode_seed"])) == 4
    assert not {s["episode_seed"] for s in report["skipped"]} & set(dd["train"]["episode_seed"])
    assert max(dd["train"]["step"]) < 5
    hopeless = functools.partial(make_babyai_env, level="BabyAI-GoToLocal-v0", max_steps=1)
    with pytest.raises(ExpertFailure, match="expert failed"):
        generate_dataset(hopeless, None, episodes=2, seed=0, max_failures=3)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="at least one episode per split"):
        generate_dataset("babyai_goto", None, episodes=1)
    with pytest.raises(FileNotFoundError, match="no env config 'nope'"):
        generate_dataset("nope", None, episodes=2)
