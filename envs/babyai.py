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
(`make_expert`: minigrid's BabyAIBot, graft.envs.experts) are found through the wrapper chain, and
so is `state_key()`, the exact level state that `graft.envs.rollout`'s `stop_on_revisit` compares.
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

    # -- exact state (found by graft.envs.rollout's stop_on_revisit) ------------------------------
    def state_key(self) -> tuple | None:
        """A hashable snapshot of everything the level's next observations, rewards and ends depend on,
        the step count aside; None before the first reset. Two equal keys in one episode mean the
        agent is back in an exact state it was in: a memoryless deterministic policy then loops.

        It holds the agent's position and direction, what it carries, every grid cell's (object,
        colour, state) encoding (the grid encoding) with a box's contents, the mission verifier's
        progress (which sub-instruction is done, what it saw carried, where its objects are) and the
        level's random generator state (unchanged by the static levels' steps; a level that draws
        on every step, e.g. moving obstacles, practically never repeats a key)."""
        env = self.minigrid
        if env.agent_pos is None or env.grid is None:
            return None
        return (tuple(int(v) for v in env.agent_pos), int(env.agent_dir), _object_key(env.carrying),
                tuple(_object_key(cell) for cell in env.grid.grid), _instr_key(getattr(env, "instrs", None)),
                _frozen(env.np_random.bit_generator.state))

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


def _object_key(obj: Any) -> tuple | None:
    """A world object's (object, colour, state) encoding and, for a box, what it contains."""
    if obj is None:
        return None
    return obj.encode(), _object_key(getattr(obj, "contains", None))


def _instr_key(instr: Any) -> tuple | None:
    """The progress a BabyAI mission verifier keeps between steps, for its whole instruction tree."""
    if instr is None:
        return None
    done = tuple(getattr(instr, k, None) for k in ("a_done", "b_done", "lastStepMatch"))
    carried = getattr(instr, "preCarrying", None)
    tracked = tuple(tuple(tuple(int(v) for v in pos) for pos in getattr(instr, k).obj_poss)
                    for k in ("desc", "desc_move", "desc_fixed") if hasattr(instr, k))
    children = tuple(_instr_key(getattr(instr, k, None)) for k in ("instr_a", "instr_b"))
    return type(instr).__name__, done, None if carried is None else id(carried), tracked, children


def _frozen(value: Any) -> Any:
    """A random generator's state (nested dicts, ints, arrays) as a hashable."""
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in sorted(value.items()))
    if isinstance(value, np.ndarray):
        return value.tobytes()
    return value


make_babyai_env = BabyAIEnv  # the configs' `_target_`, with BabyAIEnv's keyword arguments
