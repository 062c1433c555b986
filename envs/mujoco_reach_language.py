"""Captions and verifiable questions about one reach observation (`ReachEnv.describe` calls this).

`describe_reach(env, obs)` returns `{modality: (caption, qas)}` for rgb, depth, proprio and, when
the env emits its object list, objects; `qas` are `(question, answer)` pairs with short exact
answers ("2", "back left", "yes", "14"), written from privileged simulator state:
rgb talks about where the spheres and the fingertip are as seen from the camera, depth about
distances from the camera, proprio about joint angles and the fingertip, objects about where each
sphere is (never about the arm, which the object list does not show).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

SECTORS = ("right", "back right", "back", "back left", "left", "front left", "front", "front right")
CAPTION_PROMPTS = {
    "rgb": ("Describe what you see.", "What is in this picture?", "Give a short caption."),
    "depth": ("Describe the distances in this view.", "How far away are things?"),
    "proprio": ("Describe the arm's pose.", "What state is the arm in?"),
    "objects": ("Describe the objects.", "What objects are there?"),
}

QAs = list[tuple[str, str]]


def describe_reach(env: Any, obs: Mapping[str, Any]) -> dict[str, tuple[str, QAs]]:
    """Caption and questions per modality of one observation (module docstring)."""
    out = {"rgb": _rgb(env), "depth": _depth(env, obs), "proprio": _proprio(env)}
    if env.num_objects:
        out["objects"] = _objects(env)
    return out


def _sector(xy: np.ndarray) -> str:
    """Direction of a point from the arm's base as seen from the camera (front = towards it)."""
    angle = np.arctan2(xy[1], xy[0])  # the camera looks along +y, so +y is "back"
    return SECTORS[int(np.round(angle / (np.pi / 4))) % 8]


def _cm(metres: float) -> int:
    return int(np.round(metres * 100))


def _rgb(env: Any) -> tuple[str, QAs]:
    spheres = env.spheres()
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


def _depth(env: Any, obs: Mapping[str, Any]) -> tuple[str, QAs]:
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


def _proprio(env: Any) -> tuple[str, QAs]:
    shoulder, elbow = np.degrees(np.angle(np.exp(1j * env.joint_angles)))
    moving = float(np.abs(env.data.qvel[:2]).max()) > 0.1
    tip = env.fingertip
    tip_cm = _cm(np.linalg.norm(tip))
    caption = (f"Shoulder at {int(np.round(shoulder))} degrees, elbow at {int(np.round(elbow))} degrees; "
               f"the arm is {'moving' if moving else 'still'}. The fingertip is {tip_cm} cm "
               f"from the base, at x {_cm(tip[0])} cm, y {_cm(tip[1])} cm.")
    qas = [("What is the elbow angle in degrees, to the nearest 10?", str(int(np.round(elbow, -1)))),
           ("What is the shoulder angle in degrees, to the nearest 10?", str(int(np.round(shoulder, -1)))),
           ("Is the arm moving?", "yes" if moving else "no"),
           ("How far is the fingertip from the base, in centimetres?", str(tip_cm)),
           ("Is the fingertip to the left or to the right of the base?", "left" if tip[0] < 0 else "right")]
    return caption, qas


def _objects(env: Any) -> tuple[str, QAs]:
    spheres = env.spheres()
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
