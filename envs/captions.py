"""Captions and verifiable questions about one observation, written from privileged simulator state.

`describe(env, obs, rng)` returns `Utterance`s for every language modality of the env
(BabyAI: grid, rgb; reach: rgb, depth, proprio, and objects when the env emits its object list).
Each prompt holds the placeholder `<name>` of the one modality it is about; answers to questions are short and exact ("2", "red", "yes",
"back left"), so they can be checked by string match. What is said about `grid` and `rgb` comes
from the same egocentric view, so it is visible in either; depth talks about distances from the
camera; proprio about joint angles and the fingertip; objects about where each sphere is.
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from graft.envs.babyai import BabyAIEnv, Seen, cell_kind, visible_objects
from graft.envs.mujoco_reach import ReachEnv

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven")
PLURAL = {"box": "boxes"}
SECTORS = ("right", "back right", "back", "back left", "left", "front left", "front", "front right")
CAPTION_PROMPTS = {
    "grid": ("Describe what you see.", "What is around you?", "Give a short caption."),
    "rgb": ("Describe what you see.", "What is in this picture?", "Give a short caption."),
    "depth": ("Describe the distances in this view.", "How far away are things?"),
    "proprio": ("Describe the arm's pose.", "What state is the arm in?"),
    "objects": ("Describe the objects.", "What objects are there?"),
}


@dataclass(frozen=True)
class Utterance:
    kind: str  # "caption" | "qa"
    modality: str
    prompt: str  # starts with "<modality>\n"
    response: str


def language_modalities(env: gym.Env) -> tuple[str, ...]:
    """The modalities `describe` writes about for this env."""
    if isinstance(env.unwrapped, BabyAIEnv):
        return ("grid", "rgb")
    if isinstance(env.unwrapped, ReachEnv):
        return ("rgb", "depth", "proprio") + (("objects",) if env.unwrapped.num_objects else ())
    raise TypeError(f"no captions for {type(env.unwrapped).__name__}; known: BabyAIEnv, ReachEnv")


def describe(env: gym.Env, obs: dict, rng: np.random.Generator, questions: int = 2) -> list[Utterance]:
    """One caption and up to `questions` questions per language modality of `env`."""
    unwrapped = env.unwrapped
    if isinstance(unwrapped, BabyAIEnv):
        said = _babyai(unwrapped, obs)  # grid and rgb show the same egocentric view
        per_modality = {"grid": said, "rgb": said}
    elif isinstance(unwrapped, ReachEnv):
        per_modality = {"rgb": _reach_rgb(unwrapped), "depth": _reach_depth(unwrapped, obs),
                        "proprio": _reach_proprio(unwrapped)}
        if unwrapped.num_objects:
            per_modality["objects"] = _reach_objects(unwrapped)
    else:
        raise TypeError(f"no captions for {type(unwrapped).__name__}; known: BabyAIEnv, ReachEnv")
    out = []
    for modality, (caption, qas) in per_modality.items():
        tag = f"<{modality}>\n"
        out.append(Utterance("caption", modality, tag + str(rng.choice(CAPTION_PROMPTS[modality])), caption))
        for i in rng.permutation(len(qas))[:questions]:
            out.append(Utterance("qa", modality, tag + qas[i][0], qas[i][1]))
    return out


# -- BabyAI -----------------------------------------------------------------------------------------
def _count(n: int, unit: str) -> str:
    return f"{WORDS[n] if n < len(WORDS) else n} {unit}{'' if n == 1 else 's'}"


def _where_phrase(s: Seen) -> str:
    side = "left" if s.right < 0 else "right"
    if s.ahead == 0:
        return f"{_count(abs(s.right), 'step')} to your {side}"
    if s.right == 0:
        return f"{_count(s.ahead, 'step')} straight ahead"
    return f"{_count(s.ahead, 'step')} ahead and {WORDS[abs(s.right)]} to the {side}"


def _where_word(s: Seen) -> str:
    side = "" if s.right == 0 else ("left" if s.right < 0 else "right")
    return " ".join(w for w in ("ahead" if s.ahead > 0 else "", side) if w)


def _babyai(env: BabyAIEnv, obs: dict) -> tuple[str, list[tuple[str, str]]]:
    grid = obs["grid"]
    seen = visible_objects(grid)
    parts = []
    for s in seen[:4]:
        door = f"{s.state} " if s.kind == "door" else ""
        parts.append(f"a {door}{s.name} {_where_phrase(s)}")
    caption = ("I see " + ", ".join(parts) + "." if parts else "I see no objects.")
    if len(seen) > 4:
        caption += f" {_count(len(seen) - 4, 'more object')} further away."
    walls = [side for side, (a, r) in (("ahead", (1, 0)), ("left", (0, -1)), ("right", (0, 1)))
             if cell_kind(grid, a, r) == "wall"]
    if walls:
        caption += " There is a wall directly " + " and ".join(
            w if w == "ahead" else f"on the {w}" for w in walls) + "."
    holding = env.carrying
    caption += f" I am carrying a {holding}." if holding else ""

    qas: list[tuple[str, str]] = []
    kinds = sorted({s.kind for s in seen} | {"ball", "key", "box"})
    for kind in kinds:
        same = [s for s in seen if s.kind == kind]
        qas.append((f"How many {PLURAL.get(kind, kind + 's')} can you see?", str(len(same))))
        if len(same) == 1:
            qas.append((f"What colour is the {kind}?", same[0].color))
    unique = [s for s in seen if sum(o.name == s.name for o in seen) == 1]
    for s in unique[:3]:
        qas.append((f"Where is the {s.name}?", _where_word(s)))
        qas.append((f"How many steps ahead is the {s.name}?", str(s.ahead)))
    if seen and (len(seen) == 1 or _dist(seen[0]) < _dist(seen[1])):
        qas.append(("Which object is closest to you?", seen[0].name))
    qas.append(("Is there a wall right in front of you?", "yes" if "ahead" in walls else "no"))
    qas.append(("What are you carrying?", f"a {holding}" if holding else "nothing"))
    return caption, qas


def _dist(s: Seen) -> int:
    return abs(s.ahead) + abs(s.right)


# -- MuJoCo reach -----------------------------------------------------------------------------------
def _sector(xy: np.ndarray) -> str:
    """Direction of a point from the arm's base as seen from the camera (front = towards it)."""
    angle = np.arctan2(xy[1], xy[0])  # the camera looks along +y, so +y is "back"
    return SECTORS[int(np.round(angle / (np.pi / 4))) % 8]


def _cm(metres: float) -> int:
    return int(np.round(metres * 100))


def _spheres(env: ReachEnv) -> list[tuple[str, np.ndarray]]:
    out = [(env.target_color, env.target)]
    if env.distractor is not None:
        out.append((env.distractor_color, env.distractor))
    return out


def _reach_rgb(env: ReachEnv) -> tuple[str, list[tuple[str, str]]]:
    spheres = _spheres(env)
    tip = env.fingertip
    where = ", ".join(f"a {c} sphere at the {_sector(p)} of the base" for c, p in spheres)
    caption = f"A two-link arm on a checkered floor; {where}."
    near_color, near_pos = min(spheres, key=lambda cp: np.linalg.norm(cp[1] - tip))
    touching = np.linalg.norm(near_pos - tip) <= env.success_radius
    caption += (f" The fingertip touches the {near_color} sphere." if touching else
                f" The fingertip is nearest to the {near_color} sphere.")
    qas = [("How many spheres are there?", str(len(spheres))),
           ("Where is the fingertip relative to the base?", _sector(tip))]
    for color, pos in spheres:
        qas.append((f"Where is the {color} sphere relative to the base?", _sector(pos)))
        qas.append((f"Is the fingertip touching the {color} sphere?",
                    "yes" if np.linalg.norm(pos - tip) <= env.success_radius else "no"))
    if len(spheres) == 2:
        (c0, p0), (c1, p1) = spheres
        qas.append((f"What colour is the sphere that is not {c0}?", c1))
        d0, d1 = np.linalg.norm(p0 - tip), np.linalg.norm(p1 - tip)
        if abs(d0 - d1) > 0.02:
            qas.append(("Which sphere is closer to the fingertip?", c0 if d0 < d1 else c1))
    return caption, qas


def _reach_depth(env: ReachEnv, obs: dict) -> tuple[str, list[tuple[str, str]]]:
    depth = obs["depth"]  # (H, W) metres
    tip_z = env.camera_depth(env.fingertip)
    target_z = env.camera_depth(env.target)
    caption = (f"The nearest surface is {depth.min():.2f} m away and the farthest {depth.max():.2f} m. "
               f"The fingertip is {tip_z:.2f} m deep, the {env.target_color} target {target_z:.2f} m.")
    closer = "fingertip" if tip_z < target_z else "target"
    qas = [("How far away is the nearest surface, in centimetres?", str(_cm(float(depth.min())))),
           ("How far away is the farthest surface, in centimetres?", str(_cm(float(depth.max()))))]
    if abs(tip_z - target_z) > 0.01:
        qas.append(("Which is closer to the camera, the fingertip or the target?", closer))
    qas.append(("How deep is the target, in centimetres?", str(_cm(target_z))))
    return caption, qas


def _reach_proprio(env: ReachEnv) -> tuple[str, list[tuple[str, str]]]:
    shoulder, elbow = np.degrees(np.angle(np.exp(1j * env.joint_angles)))
    speed = float(np.abs(env.data.qvel[:2]).max())
    moving = speed > 0.1
    tip = env.fingertip
    caption = (f"Shoulder at {int(np.round(shoulder))} degrees, elbow at {int(np.round(elbow))} degrees; "
               f"the arm is "
               f"{'moving' if moving else 'still'}. The fingertip is {_cm(np.linalg.norm(tip))} cm "
               f"from the base, at x {_cm(tip[0])} cm, y {_cm(tip[1])} cm.")
    qas = [("What is the elbow angle in degrees, to the nearest 10?", str(int(np.round(elbow, -1)))),
           ("What is the shoulder angle in degrees, to the nearest 10?", str(int(np.round(shoulder, -1)))),
           ("Is the arm moving?", "yes" if moving else "no"),
           ("How far is the fingertip from the base, in centimetres?", str(_cm(np.linalg.norm(tip)))),
           ("Is the fingertip to the left or to the right of the base?", "left" if tip[0] < 0 else "right")]
    return caption, qas


def _reach_objects(env: ReachEnv) -> tuple[str, list[tuple[str, str]]]:
    spheres = _spheres(env)
    caption = "; ".join(f"a {c} sphere at x {_cm(p[0])} cm, y {_cm(p[1])} cm" for c, p in spheres).capitalize() + "."
    qas = [("How many objects are there?", str(len(spheres)))]
    for color, pos in spheres:
        qas.append((f"Where is the {color} sphere relative to the base?", _sector(pos)))
        qas.append((f"Is the {color} sphere to the left or to the right of the base?", "left" if pos[0] < 0 else "right"))
        qas.append((f"How far is the {color} sphere from the base, in centimetres?", str(_cm(np.linalg.norm(pos)))))
    if len(spheres) == 2:
        (c0, p0), (c1, p1) = spheres
        if abs(np.linalg.norm(p0) - np.linalg.norm(p1)) > 0.02:
            qas.append(("Which sphere is farther from the base?", c0 if np.linalg.norm(p0) > np.linalg.norm(p1) else c1))
    return caption, qas
