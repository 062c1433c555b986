"""Reading BabyAI's egocentric 7x7 grid observation: which objects are where, relative to the agent.

Shared by the env (envs/babyai.py) and its describer (envs/babyai_language.py); imports neither.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT, STATE_TO_IDX

VIEW = 7  # minigrid's default agent_view_size
AGENT_ROW, AGENT_COL = VIEW - 1, VIEW // 2
IDX_TO_STATE = {v: k for k, v in STATE_TO_IDX.items()}
OBJECT_TYPES = ("key", "ball", "box", "door")  # what captions and questions talk about


@dataclass(frozen=True)
class Seen:
    """One object in the agent's view, in agent-relative steps (ahead > 0, right > 0)."""

    kind: str  # "key" | "ball" | "box" | "door"
    color: str
    ahead: int
    right: int
    state: str = ""  # doors: "open" | "closed" | "locked"

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"


def visible_objects(grid: np.ndarray) -> list[Seen]:
    """Objects in a (7, 7, 3) `grid` observation, nearest first (ties: left to right)."""
    found = []
    for row in range(VIEW):
        for col in range(VIEW):
            kind = IDX_TO_OBJECT[int(grid[row, col, 0])]
            if kind not in OBJECT_TYPES or (row, col) == (AGENT_ROW, AGENT_COL):
                continue
            state = IDX_TO_STATE[int(grid[row, col, 2])] if kind == "door" else ""
            found.append(Seen(kind, IDX_TO_COLOR[int(grid[row, col, 1])],
                              AGENT_ROW - row, col - AGENT_COL, state))
    return sorted(found, key=lambda s: (abs(s.ahead) + abs(s.right), s.right, s.ahead))


def cell_kind(grid: np.ndarray, ahead: int, right: int) -> str:
    """Object type at an agent-relative cell ("unseen" outside the view)."""
    row, col = AGENT_ROW - ahead, AGENT_COL + right
    if not (0 <= row < VIEW and 0 <= col < VIEW):
        return "unseen"
    return IDX_TO_OBJECT[int(grid[row, col, 0])]
