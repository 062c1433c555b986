"""BabyAI env specifics: grid layout agrees with the rendered view, actions are named, bad levels fail,
and the describer asks grid and rgb exact questions of their own."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from graft.envs.babyai import ACTION_NAMES, AGENT_COL, AGENT_ROW, BabyAIEnv, cell_kind, visible_objects


def test_grid_rows_and_columns_match_the_rgb_view():
    """Empty cells of `grid` render as identical floor tiles, objects do not, and red/green/blue
    objects are drawn in their colour at the same [row, col] (the rgb view is highlighted, so
    colours are compared by dominant channel)."""
    env = BabyAIEnv("BabyAI-GoToLocal-v0", tile_size=8)
    coloured = 0
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        tiles = obs["rgb"].reshape(7, 8, 7, 8, 3).transpose(0, 2, 1, 3, 4)  # (row, col, 8, 8, 3)
        kinds = [[cell_kind(obs["grid"], AGENT_ROW - r, c - AGENT_COL) for c in range(7)] for r in range(7)]
        floor = [tiles[r, c] for r in range(7) for c in range(7) if kinds[r][c] == "empty"
                 and (r, c) != (AGENT_ROW, AGENT_COL)]
        assert len(floor) >= 2 and all(np.array_equal(t, floor[0]) for t in floor)
        for s in visible_objects(obs["grid"]):
            tile = tiles[AGENT_ROW - s.ahead, AGENT_COL + s.right]
            assert not np.array_equal(tile, floor[0]), (seed, s)
            if s.color in ("red", "green", "blue"):
                peak = tile.reshape(-1, 3).max(axis=0)
                assert peak.argmax() == ("red", "green", "blue").index(s.color), (seed, s, peak)
                coloured += 1
    assert coloured >= 4


def test_agent_cell_and_walls_are_where_the_docstring_says():
    env = BabyAIEnv("BabyAI-GoToLocal-v0")
    obs, _ = env.reset(seed=0)
    # turn until a wall is straight ahead, then the next cell ahead reads "wall" in the grid
    for _ in range(40):
        if cell_kind(obs["grid"], 1, 0) == "wall":
            break
        obs, *_ = env.step(ACTION_NAMES.index("forward"))
        if cell_kind(obs["grid"], 1, 0) != "wall":
            obs, *_ = env.step(ACTION_NAMES.index("left"))
    assert cell_kind(obs["grid"], 1, 0) == "wall"
    front = env.minigrid.front_pos
    assert env.minigrid.grid.get(*front).type == "wall"


def test_action_names_follow_minigrid():
    env = BabyAIEnv()
    assert [a.name for a in env.minigrid.actions] == list(ACTION_NAMES)
    assert env.action_space.n == len(ACTION_NAMES)


def test_success_is_reported_on_the_final_step():
    from graft.envs.experts import BabyAIExpert

    env = BabyAIEnv("BabyAI-GoToLocal-v0")
    env.reset(seed=3)
    expert = BabyAIExpert()
    expert.reset(env)
    infos = []
    while True:
        _, reward, terminated, truncated, info = env.step(expert.act())
        infos.append(info["is_success"])
        if terminated or truncated:
            break
    assert infos[-1] and not any(infos[:-1]) and reward > 0


def test_unknown_level_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown BabyAI/MiniGrid level 'BabyAI-Nope-v0'"):
        BabyAIEnv("BabyAI-Nope-v0")


def test_level_generation_does_not_print(capsys):
    env = BabyAIEnv("BabyAI-PickupLoc-v0")
    for seed in range(10):
        env.reset(seed=seed)
    assert capsys.readouterr().out == ""
    assert np.array_equal(env.reset(seed=4)[0]["grid"], env.reset(seed=4)[0]["grid"])


SPOTS = {"in front of you": (1, 0), "on your left": (0, -1), "on your right": (0, 1),
         **{f"{w} steps ahead": (k, 0) for k, w in enumerate(("two", "three", "four", "five", "six"), start=2)}}


def expected_answer(modality: str, question: str, grid: np.ndarray) -> str:
    """The answer to one of the describer's questions, read off the grid by this test's own rules."""
    seen = visible_objects(grid)
    named = {s.name: s for s in seen}
    kinds = [s.kind for s in seen]
    colours = [s.color for s in seen]
    nearest = min(abs(s.ahead) + abs(s.right) for s in seen) if seen else None
    closest = [s for s in seen if abs(s.ahead) + abs(s.right) == nearest]
    forms = {"grid": [
        (r"Where is the (\w+ \w+)\?", lambda n: " ".join(
            w for w in ("ahead" if named[n].ahead > 0 else "",
                        "left" if named[n].right < 0 else "right" if named[n].right > 0 else "") if w)),
        (r"How far ahead is the (\w+ \w+)\?", lambda n: str(named[n].ahead)),
        (r"Is there a wall (.+)\?", lambda spot: "yes" if cell_kind(grid, *SPOTS[spot]) == "wall" else "no"),
        (r"Which object is closest to you\?", lambda: closest[0].kind if len(closest) == 1 else None),
        (r"How many (key|ball|box|object)e?s can you see\?",
         lambda k: str(len(seen) if k == "object" else kinds.count(k))),
    ], "rgb": [
        (r"What colour is the (key|ball|box|door)\?", lambda k: seen[kinds.index(k)].color if kinds.count(k) == 1 else None),
        (r"What colour is the closest object\?", lambda: closest[0].color if len(closest) == 1 else None),
        (r"Is there a (\w+) object\?", lambda c: "yes" if c in colours else "no"),
        (r"How many (\w+) objects can you see\?", lambda c: str(colours.count(c))),
        (r"What kind of object is the (\w+) one\?", lambda c: seen[colours.index(c)].kind if colours.count(c) == 1 else None),
    ]}
    for pattern, answer in forms[modality]:
        if (m := re.fullmatch(pattern, question)):
            return answer(*m.groups())
    raise AssertionError(f"{modality} question {question!r} is none the test knows")


def test_grid_and_rgb_questions_are_exact_and_each_about_its_own_modality():
    """Every question matches its modality's forms and is answered as the grid says; grid is asked
    about layout, rgb about colour, at most one question per group; every group occurs."""
    from graft.envs.experts import BabyAIExpert

    env = BabyAIEnv("BabyAI-GoToLocal-v0")
    used = {"grid": Counter(), "rgb": Counter()}
    for seed in range(12):
        obs, _ = env.reset(seed=seed)
        expert = BabyAIExpert()
        expert.reset(env)
        for _ in range(30):
            said = env.describe(obs)
            assert set(said) == {"grid", "rgb"} and said["grid"][0] != said["rgb"][0]
            for modality, (_, qas) in said.items():
                groups = [" ".join(q.split()[:2]) for q, _ in qas]
                assert len(groups) == len(set(groups)), qas
                for question, answer in qas:
                    assert answer == expected_answer(modality, question, obs["grid"]), (modality, question)
                    used[modality][" ".join(question.split()[:2])] += 1
            obs, _, terminated, truncated, _ = env.step(expert.act())
            if terminated or truncated:
                break
    assert set(used["grid"]) == {"Where is", "How far", "Is there", "Which object", "How many"}, used
    assert set(used["rgb"]) == {"What colour", "Is there", "How many", "What kind"}, used
    env.close()


def test_captions_name_layout_for_grid_and_colours_for_rgb():
    env = BabyAIEnv("BabyAI-GoToLocal-v0")
    obs, _ = env.reset(seed=1)
    seen = visible_objects(obs["grid"])
    grid_caption, rgb_caption = env.describe(obs)["grid"][0], env.describe(obs)["rgb"][0]
    assert seen and all(f"a {s.name}" in rgb_caption for s in seen[:4])
    assert not any(c in grid_caption for c in {s.color for s in seen}) and "step" in grid_caption
    assert "step" not in rgb_caption
    env.close()
