"""The grid modality read as words (agent/modalities/grid_words.py): what it lists, and that the LLM
gets exactly its own word embeddings through the identity-initialised projector."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from graft.agent.build import load_mmllm, save_mmllm
from graft.agent.mmllm import Example
from graft.agent.modalities.grid_words import GridWordsModality

EMPTY, WALL, DOOR, KEY, BALL = 1, 2, 4, 5, 6
RED, GREEN, BLUE = 0, 1, 2


def view(*objects, front=EMPTY):
    """A 7x7x3 view (agent at row 6, col 3 facing up) holding `objects` = (kind, colour, ahead, right)."""
    grid = np.zeros((7, 7, 3), np.uint8)
    grid[..., 0] = EMPTY
    grid[5, 3] = (front, 0, 0)
    for kind, colour, ahead, right in objects:
        grid[6 - ahead, 3 + right] = (kind, colour, 0)
    return grid


def test_it_lists_the_nearest_objects_and_the_cell_ahead():
    words = GridWordsModality(slots=3).describe(view((BALL, RED, 2, -1), (KEY, BLUE, 4, 0), (BALL, GREEN, 1, 2),
                                                     (DOOR, RED, 6, 3), front=WALL))
    assert len(words) == 16
    assert words[:5] == ["red", "ball", "two", "one", "left"]  # 3 steps away, the nearest
    assert words[5:10] == ["green", "ball", "one", "two", "right"]
    assert words[10:15] == ["blue", "key", "four", "zero", "ahead"]  # the door, 9 away, is left out
    assert words[15] == "wall"
    assert GridWordsModality(slots=3).describe(view()) == ["none"] * 15 + ["nothing"]
    five = GridWordsModality(slots=5).describe(view((BALL, RED, 2, -1), (KEY, BLUE, 4, 0), (BALL, GREEN, 1, 2),
                                             (DOOR, RED, 6, 3), front=WALL))
    assert len(five) == 26  # 5 slots, no surroundings
    assert five[15:20] == ["red", "door", "six", "three", "right"] and five[20:25] == ["none"] * 5
    with pytest.raises(ValueError, match="slots"):
        GridWordsModality(slots=0)


def test_surroundings_name_the_cells_beside_and_the_wall_ahead():
    grid = view((BALL, RED, 0, -1), (KEY, BLUE, 2, 0))
    grid[6, 4] = (WALL, 0, 0)  # on the right
    grid[6 - 4, 3] = (WALL, 0, 0)  # four steps ahead; beyond it unseen
    grid[:6 - 4, 3] = (0, 0, 0)
    words = GridWordsModality(slots=1, surroundings=True).describe(grid)
    assert len(words) == GridWordsModality(slots=1, surroundings=True).num_tokens == 9
    assert words[:5] == ["red", "ball", "zero", "one", "left"]
    assert words[5:] == ["nothing", "ball", "wall", "four"]  # ahead, left, right, steps to the wall ahead
    assert GridWordsModality(slots=1, surroundings=True).describe(view())[5:] == ["nothing", "nothing", "nothing", "none"]
    assert GridWordsModality(slots=1, surroundings=True).describe(view(front=WALL))[-1] == "one"
    edge = view()
    edge[:, 2, 0] = 0  # the column on the left unseen
    assert GridWordsModality(slots=1, surroundings=True).describe(edge)[6] == "none"
    assert len(GridWordsModality(slots=5).describe(view())) == 26  # off by default: saved agents read as before


@pytest.fixture
def mm(tiny_mm):
    return tiny_mm("modality@modalities.grid=grid_words")


def test_the_llm_reads_its_own_word_embeddings_at_the_placeholder(mm):
    grid = view((BALL, RED, 2, -1))
    ex = Example("Where is the red ball?\n<grid>", {"grid": grid})
    (seq,) = mm.embed_prompts([ex])
    ids = mm.prompt_ids(ex.prompt)
    at = ids.index(mm.placeholder_ids["grid"])
    table = mm.backbone.get_input_embeddings().weight
    red = table[mm.tokenizer(" red", add_special_tokens=False)["input_ids"]].mean(0)
    none = table[mm.tokenizer(" none", add_special_tokens=False)["input_ids"]].mean(0)
    assert seq.shape[0] == len(ids) - 1 + mm.modalities["grid"].num_tokens == len(ids) - 1 + 29  # the config: 5 slots + 4 cells
    torch.testing.assert_close(seq[at], red)  # identity projector: the word itself
    torch.testing.assert_close(seq[at + 5], none)
    mm.set_trainable("grid", "it")  # the projector learns; the word table is a frozen buffer
    assert all(p.requires_grad for p in mm.projectors["grid"].parameters())
    assert not any(p.requires_grad for p in mm.modalities["grid"].parameters())


def test_a_saved_agent_binds_again_and_reads_the_same(mm, tmp_path, rng):
    with torch.no_grad():
        for p in mm.projectors["grid"].parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_mmllm(mm, tmp_path / "agent")
    loaded = load_mmllm(tmp_path / "agent")
    ex = [Example("Where is the key?\n<grid>", {"grid": view((KEY, GREEN, 3, 1))}, "ahead right")]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ex).logits, mm(ex).logits, rtol=1e-5, atol=1e-5)


def test_unbound_it_says_what_to_do_and_bad_views_are_refused(mm):
    with pytest.raises(RuntimeError, match="graft it"):
        GridWordsModality()(view()[None])
    bad = view()
    bad[0, 0, 1] = 9  # colour index out of range
    with pytest.raises(Exception, match="colour index 9"):
        mm.modalities["grid"](bad[None])
