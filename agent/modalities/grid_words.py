"""`grid` read as words: BabyAI's symbolic view `(7, 7, 3)` uint8 written in the LLM's own vocabulary.

The frozen encoder lists the `slots` nearest objects in view (config default 5), nearest first, each as
five tokens — colour, kind, steps ahead, steps to the side, side ("left" | "right" | "ahead") —
then one token for the cell straight ahead ("wall", "door", "key", "ball", "box" or "nothing"):
5 * slots + 1 tokens. With `surroundings` (the config's default) three more follow: the cells on the
left and on the right (same words; "none" outside the view) and the steps to the first wall straight
ahead ("none" if no wall is in view there): 5 * slots + 4 tokens (29). Without them the encoder
cannot answer the ruler's wall questions ("Is there a wall on your left / three steps ahead?",
42% of the grid test items), which capped the grid stage's perception gain. On GoToLocal expert steps where the mission's object is in view, it is
among the nearest 3 / 4 / 5 / 6 objects 77 / 88 / 95 / 98% of the time (200 episodes), so 3 slots
hide the goal on about one step in five. Each
token is the LLM's input embedding of that word (" red", " ball", " two", ...), copied from the
backbone when the modality is grafted (`bind`), so the input projector (linear, identity at
init: configs/modality/grid_words.yaml) starts from tokens the LLM already reads, and LoRA only
has to learn what to do with them. A missing object is five " none" tokens.

It is the grid modality's second encoder, beside the learned-feature one (grid.py): the symbolic
view already is words (object, colour, state indices), so a text-native encoder is its natural
frozen tower, the way a CLIP tower is an image's. Same observation, same placeholder `<grid>`.
"""
from __future__ import annotations

import numpy as np
import torch
from graft.agent.modalities.base import Modality
from graft.agent.modalities.grid import check_indices, sample_view, view_spec
from graft.envs.spec import ModalitySpec

# minigrid.core.constants, in index order
OBJECTS = ("unseen", "empty", "wall", "floor", "door", "key", "ball", "box", "goal", "lava", "agent")
COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
LISTED = ("door", "key", "ball", "box")  # the objects listed; walls only in the front-cell token
PER_SLOT = 5
VOCAB = (*COLORS, *LISTED, *NUMBERS, "left", "right", "ahead", "wall", "nothing", "none")


class GridWordsModality(Modality):
    # slots defaults to 3 here, as before it was a setting, so an agent saved then reloads as it was;
    # configs/modality/grid_words.yaml sets 5
    # likewise surroundings defaults to False; the config turns it on
    def __init__(self, name: str = "grid", view_size: int = 7, slots: int = 3, embed_dim: int | None = None,
                 surroundings: bool = False):
        super().__init__(name)
        if slots < 1:
            raise ValueError(f"grid_words lists at least one object, got slots={slots}")
        self.view_size, self.slots, self.surroundings = view_size, slots, bool(surroundings)
        self.index = {w: i for i, w in enumerate(VOCAB)}
        # (W, D), filled by bind() from the backbone (not saved: a reload binds again)
        self.register_buffer("words", torch.zeros(len(VOCAB), embed_dim or 1), persistent=False)
        self.bound = False
        self.freeze()

    def bind(self, mm) -> None:
        """Copy the LLM's input embeddings of the vocabulary words (mean over a word's tokens)."""
        table = mm.backbone.get_input_embeddings().weight.detach()
        rows = [table[mm.tokenizer(" " + w, add_special_tokens=False)["input_ids"]].mean(0) for w in VOCAB]
        self.words = torch.stack(rows).to(table.dtype)
        self.bound = True

    @property
    def spec(self) -> ModalitySpec:
        return view_spec(self.name, self.view_size)

    @property
    def feature_dim(self) -> int:
        return self.words.shape[1]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return sample_view(rng, self.view_size)

    def validate(self, value, batched: bool = True) -> np.ndarray:
        return check_indices(self.spec, super().validate(value, batched))

    @property
    def num_tokens(self) -> int:
        return PER_SLOT * self.slots + (4 if self.surroundings else 1)

    def describe(self, grid: np.ndarray) -> list[str]:
        """The `num_tokens` words of one view `(7, 7, 3)` (what `encode` embeds)."""
        agent_row, agent_col = self.view_size - 1, self.view_size // 2
        seen = []
        for row in range(self.view_size):
            for col in range(self.view_size):
                kind = OBJECTS[int(grid[row, col, 0])]
                if kind in LISTED and (row, col) != (agent_row, agent_col):
                    ahead, right = agent_row - row, col - agent_col
                    seen.append((abs(ahead) + abs(right), right, ahead, COLORS[int(grid[row, col, 1])], kind))
        words = []
        for _, right, ahead, colour, kind in sorted(seen)[:self.slots]:
            side = "left" if right < 0 else "right" if right > 0 else "ahead"
            words += [colour, kind, NUMBERS[min(ahead, 6)], NUMBERS[min(abs(right), 6)], side]
        words += ["none"] * (self.slots * PER_SLOT - len(words))
        words.append(self._cell(grid, agent_row - 1, agent_col))
        if self.surroundings:
            words += [self._cell(grid, agent_row, agent_col - 1), self._cell(grid, agent_row, agent_col + 1)]
            walls = [d for d in range(1, agent_row + 1) if OBJECTS[int(grid[agent_row - d, agent_col, 0])] == "wall"]
            words.append(NUMBERS[min(walls[0], 6)] if walls else "none")
        return words

    def _cell(self, grid: np.ndarray, row: int, col: int) -> str:
        if not (0 <= row < self.view_size and 0 <= col < self.view_size):
            return "none"
        kind = OBJECTS[int(grid[row, col, 0])]
        return "none" if kind == "unseen" else kind if kind in (*LISTED, "wall") else "nothing"

    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        if not self.bound:
            raise RuntimeError(f"modality '{self.name}' (grid_words) reads the LLM's word embeddings: graft it "
                               "onto an MM-LLM first (MMLLM.graft binds it)")
        ids = [[self.index[w] for w in self.describe(g)] for g in np.asarray(batch)]
        return torch.tensor(ids, dtype=torch.long, device=self.words.device)  # (B, num_tokens)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.words[x]  # (B, num_tokens, D)
