"""BabyAI / MiniGrid levels as modality-dict environments.

`BabyAIEnv` wraps one level of the `minigrid` package (e.g. "BabyAI-GoToLocal-v0") and emits

    rgb        uint8 (7*tile, 7*tile, 3)  the agent's egocentric 7x7 view rendered as an image
    grid       uint8 (7, 7, 3)            the same view, symbolic: (object, colour, state) indices
    direction  int in [0, 4)              compass heading (0 east, 1 south, 2 west, 3 north)
    mission    str                        "go to the red ball"

`grid` is indexed [row, col] like the image (minigrid's own `image` is [x, y]; we transpose):
the agent stands at row 6, col 3 and looks towards row 0. Cell codes are minigrid's
OBJECT_TO_IDX / COLOR_TO_IDX / STATE_TO_IDX. Actions are Discrete(7), named in ACTION_NAMES.
`info["is_success"]` is True on the step that completes the mission.

Its language (`describe`, `caption_prompts`: graft.envs.babyai_language) and its expert
(`make_expert`: minigrid's BabyAIBot, graft.envs.experts) are found through the wrapper chain.
"""
from __future__ import annotations

import contextlib
import io
import string
from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI-* and MiniGrid-* ids)
import numpy as np
from graft.envs.babyai_grid import AGENT_COL, AGENT_ROW, VIEW, cell_kind, visible_objects  # noqa: F401
from graft.envs.babyai_language import CAPTION_PROMPTS, describe_babyai
from graft.envs.experts import BabyAIExpert
from graft.envs.spec import ModalitySpec, ObservationSpec

ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
MISSION_CHARSET = string.ascii_letters + string.digits + " ,.'-"


def modality_specs(tile_size: int = 8) -> dict[str, ModalitySpec]:
    """The modalities a `BabyAIEnv` with this tile size emits."""
    side = VIEW * tile_size
    return {
        "rgb": ModalitySpec("rgb", (side, side, 3), "uint8", 0, 255,
                            "egocentric 7x7 view rendered as an image; agent at the bottom centre"),
        "grid": ModalitySpec("grid", (VIEW, VIEW, 3), "uint8", 0, 10,
                             "egocentric 7x7 view, [row, col] -> (object, colour, state) indices"),
    }


class BabyAIEnv(gym.Env):
    """One BabyAI/MiniGrid level emitting rgb + grid + direction + mission (module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        level: str = "BabyAI-GoToLocal-v0",
        tile_size: int = 8,
        max_steps: int | None = None,
        render_mode: str | None = None,
        name: str | None = None,
    ):
        if level not in gym.registry:
            known = sorted(k for k in gym.registry if k.startswith("BabyAI-"))
            raise ValueError(f"unknown BabyAI/MiniGrid level {level!r}; BabyAI levels: {known}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        kwargs = {} if max_steps is None else {"max_steps": int(max_steps)}
        # .unwrapped drops gym.make's checker wrappers; we are the env the outside world sees.
        self.minigrid = gym.make(level, **kwargs).unwrapped
        if self.minigrid.agent_view_size != VIEW:
            raise ValueError(f"{level} has a {self.minigrid.agent_view_size}-cell view; only {VIEW} works")
        self.level = level
        self.name = name or level
        self.tile_size = int(tile_size)
        self.render_mode = render_mode
        self.action_names = ACTION_NAMES
        self.modality_specs = modality_specs(self.tile_size)
        self.observation_spec = ObservationSpec(self.modality_specs, text_keys=("mission",))
        side = VIEW * self.tile_size
        self.observation_space = gym.spaces.Dict({
            "rgb": gym.spaces.Box(0, 255, (side, side, 3), np.uint8),
            "grid": gym.spaces.Box(0, 10, (VIEW, VIEW, 3), np.uint8),
            "direction": gym.spaces.Discrete(4),
            "mission": gym.spaces.Text(max_length=256, charset=MISSION_CHARSET),
        })
        self.action_space = gym.spaces.Discrete(len(ACTION_NAMES))

    @property
    def carrying(self) -> str:
        """What the agent holds, e.g. "red key", or "" for nothing."""
        obj = self.minigrid.carrying
        return f"{obj.color} {obj.type}" if obj is not None else ""

    # -- language and expert (found by graft.envs.captions / graft.envs.experts) ----------------
    caption_prompts = CAPTION_PROMPTS

    def describe(self, obs: dict[str, Any], rng: np.random.Generator | None = None) -> dict[str, tuple]:
        """`{"grid": (caption, [(question, answer), ...]), "rgb": (...)}` for one observation: grid is asked
        about layout and relations, rgb about colour and appearance (envs/babyai_language.py)."""
        return describe_babyai(self, obs)

    def make_expert(self, **kwargs):
        """The expert for this level: `BabyAIExpert(**kwargs)` (BabyAIBot with step/time budgets)."""
        return BabyAIExpert(**kwargs)

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # Level generation prints "Sampling rejected: ..." for every retry; keep stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            obs, _ = self.minigrid.reset(seed=seed, options=options)
        return self._observation(obs), {"is_success": False}

    def step(self, action):
        obs, reward, terminated, truncated, _ = self.minigrid.step(int(action))
        info = {"is_success": bool(terminated and reward > 0)}
        return self._observation(obs), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        if self.render_mode is None:
            return None
        return self.minigrid.get_frame(highlight=True, tile_size=self.tile_size)  # whole level

    def close(self):
        self.minigrid.close()

    def _observation(self, obs: dict[str, Any]) -> dict[str, Any]:
        return {
            "rgb": self.minigrid.get_frame(tile_size=self.tile_size, agent_pov=True),  # (56, 56, 3)
            "grid": np.ascontiguousarray(obs["image"].transpose(1, 0, 2)).astype(np.uint8),  # (7, 7, 3)
            "direction": int(obs["direction"]),
            "mission": obs["mission"],
        }


make_babyai_env = BabyAIEnv  # the configs' `_target_`, with BabyAIEnv's keyword arguments
