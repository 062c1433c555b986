"""BabyAI env specifics: grid layout agrees with the rendered view, actions are named, bad levels fail."""
from __future__ import annotations

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
