"""Captions and verifiable questions about one reach observation (`ReachEnv.describe` calls this).

`describe_reach(env, obs)` returns `{modality: (caption, qas)}` for rgb, depth, proprio and, when
the env emits its object list, objects; `qas` are `(question, answer)` pairs with short exact
answers ("red", "top left", "45", "yes", "front"), written from privileged simulator state. Each
modality is asked about what it carries, and no question is asked of two modalities:

    rgb      colours and image-space position: which colour is where in the image, is a <colour>
             sphere in the image, in which quarter of the image a sphere is
    depth    distances from the camera (z-depth, to the nearest 5 cm), which is nearer the camera,
             on which side of the image the nearer / farther sphere or the fingertip is
    proprio  joint state: joint angles (to the nearest 90 degrees), moving or not, how far and in
             which direction from the base the fingertip is
    objects  where each sphere is relative to the base and to the other one (never about the arm,
             which the object list does not show)

Directions from the base are seen from the camera: "front" is towards it (-y), "right" is +x.
Every question group (its first two words, `captions.question_group`) has one answer type, a small
set of answers, and at most one question per observation (`captions.ask`, drawn from a generator
seeded by the proprio reading), so balanced questions survive datagen's balancing with a few hundred
questions. Comparisons closer than a margin are not asked.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
from graft.envs.captions import ask, observation_rng

SECTORS = ("right", "back", "left", "front")  # direction of a point from the base, 90 degrees each
DEPTHS = ("40", "45", "50", "55")  # cm, what the depth questions ask (the spheres lie within)
IMAGE_MARGIN = 0.04  # fraction of the image: positions this close to the centre line are not asked
CAPTION_PROMPTS = {
    "rgb": ("Describe what you see.", "What is in this picture?", "Give a short caption."),
    "depth": ("Describe the distances in this view.", "How far away are things?"),
    "proprio": ("Describe the arm's pose.", "What state is the arm in?"),
    "objects": ("Describe the objects.", "What objects are there?"),
}

QAs = list[tuple[str, str]]
Options = dict[str, list[str]]


def describe_reach(env: Any, obs: Mapping[str, Any]) -> dict[str, tuple[str, QAs]]:
    """Caption and questions per modality of one observation (module docstring)."""
    rng = observation_rng(obs["proprio"])
    out = {"rgb": _rgb(env, rng), "depth": _depth(env, rng), "proprio": _proprio(env, rng)}
    if env.num_objects:
        out["objects"] = _objects(env, rng)
    return out


def _asked(rng: np.random.Generator, *groups: Options) -> QAs:
    return [qa for options in groups if (qa := ask(rng, options))]


def _sector(xy: np.ndarray) -> str:
    return SECTORS[int(np.round(np.arctan2(xy[1], xy[0]) / (np.pi / 2))) % 4]


def _cm(metres: float) -> int:
    return int(np.round(metres * 100))


def _to5(metres: float) -> str:
    """Centimetres to the nearest 5."""
    return str(int(5 * np.round(metres * 20)))


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _image_xy(env: Any, xy: np.ndarray, z: float = 0.03) -> np.ndarray:
    """(across, down) of the world point (x, y, z) in the camera image, in [0, 1]; 0.5 is the centre."""
    cam = env.model.camera("main").id
    local = env.data.cam_xmat[cam].reshape(3, 3).T @ (np.array([xy[0], xy[1], z]) - env.data.cam_xpos[cam])
    scale = 2 * np.tan(np.radians(env.model.cam_fovy[cam]) / 2) * -local[2]  # the camera looks along -z
    return np.array([0.5 + local[0] / scale, 0.5 - local[1] / scale])


def _quarter(uv: np.ndarray) -> str:
    return f"{'top' if uv[1] < 0.5 else 'bottom'} {'left' if uv[0] < 0.5 else 'right'}"


def _rgb(env: Any, rng: np.random.Generator) -> tuple[str, QAs]:
    spheres = [(c, _image_xy(env, p)) for c, p in env.spheres()]
    tip = _image_xy(env, env.fingertip)
    caption = ("A two-link arm on a checkered floor; "
               + " and ".join(f"a {c} sphere at the {_quarter(uv)} of the image" for c, uv in spheres) + ".")
    touching = [c for c, p in env.spheres() if np.linalg.norm(p - env.fingertip) <= env.success_radius]
    caption += f" The fingertip touches the {touching[0]} sphere." if touching else ""
    colour, present, quarter = defaultdict(list), defaultdict(list), defaultdict(list)
    for c, uv in spheres:
        if np.all(np.abs(uv - 0.5) > IMAGE_MARGIN):
            quarter[_quarter(uv)].append(f"Where in the image is the {c} sphere?")
    shown = {c for c, _ in spheres}
    for c in env.colors:
        present[_yes(c in shown)].append(f"Is there a {c} sphere in the image?")
    if len(spheres) == 2:
        (c0, uv0), (c1, uv1) = spheres
        for question, key in (("nearer the top of the image", lambda uv: uv[1]),
                              ("nearer the left of the image", lambda uv: uv[0]),
                              ("nearer the fingertip in the image", lambda uv: np.linalg.norm(uv - tip))):
            if abs(key(uv0) - key(uv1)) > IMAGE_MARGIN:
                colour[c0 if key(uv0) < key(uv1) else c1].append(f"What colour is the sphere {question}?")
    return caption, _asked(rng, colour, present, quarter)


def _labelled_by_depth(env: Any) -> list[tuple[str, float, np.ndarray]]:
    """(name, z-depth, xy) of the spheres as the depth image tells them apart: "sphere" alone,
    "nearer / farther sphere" if their depths differ by over 2 cm, else none."""
    spheres = sorted((env.camera_depth(p), tuple(p)) for _, p in env.spheres())
    if len(spheres) == 1:
        return [("sphere", spheres[0][0], np.array(spheres[0][1]))]
    if spheres[1][0] - spheres[0][0] <= 0.02:
        return []
    return [(name, z, np.array(p)) for name, (z, p) in zip(("nearer sphere", "farther sphere"), spheres)]


def _depth(env: Any, rng: np.random.Generator) -> tuple[str, QAs]:
    tip_z, base_z = env.camera_depth(env.fingertip), env.camera_depth(np.zeros(2))
    depths = sorted(_cm(env.camera_depth(p)) for _, p in env.spheres())
    caption = (f"The {'spheres are' if len(depths) > 1 else 'sphere is'} "
               f"{' and '.join(map(str, depths))} cm deep; the fingertip is {_cm(tip_z)} cm deep.")
    deep, nearer, side = defaultdict(list), defaultdict(list), defaultdict(list)
    things = _labelled_by_depth(env) + [("fingertip", tip_z, env.fingertip)]
    for name, z, p in things:
        if _to5(z) in DEPTHS:
            deep[_to5(z)].append(f"How deep is the {name}, to the nearest 5 cm?")
        across = _image_xy(env, p)[0]
        if abs(across - 0.5) > IMAGE_MARGIN:
            side["left" if across < 0.5 else "right"].append(f"On which side of the image is the {name}?")
    for name, z, _ in [("base", base_z, None)] + things[:-1]:
        if abs(tip_z - z) > 0.01:
            nearer[_yes(tip_z < z)].append(f"Is the fingertip nearer to the camera than the {name}?")
    return caption, _asked(rng, deep, nearer, side)


def _proprio(env: Any, rng: np.random.Generator) -> tuple[str, QAs]:
    shoulder, elbow = np.degrees(np.angle(np.exp(1j * env.joint_angles)))
    moving = float(np.abs(env.data.qvel[:2]).max()) > 0.1
    tip = env.fingertip
    reach = np.linalg.norm(tip)
    caption = (f"Shoulder at {int(np.round(shoulder))} degrees, elbow at {int(np.round(elbow))} degrees; "
               f"the arm is {'moving' if moving else 'still'}. The fingertip is {_cm(reach)} cm "
               f"from the base, at x {_cm(tip[0])} cm, y {_cm(tip[1])} cm.")
    angle, state, direction, far = defaultdict(list), defaultdict(list), defaultdict(list), defaultdict(list)
    for joint, degrees in (("shoulder", shoulder), ("elbow", elbow)):
        rounded = int(90 * np.round(degrees / 90))
        question = f"What is the {joint} angle, to the nearest 90 degrees?"
        angle[str(180 if rounded == -180 else rounded)].append(question)
    state[_yes(moving)].append("Is the arm moving?")
    if abs(abs(elbow) - 90) > 5:
        state[_yes(abs(elbow) > 90)].append("Is the elbow bent more than 90 degrees?")
    if abs(reach - 0.14) > 0.01:
        state[_yes(reach > 0.14)].append("Is the fingertip more than 14 cm from the base?")
    direction[_sector(tip)].append("In which direction from the base is the fingertip?")
    far[_to5(reach)].append("How far is the fingertip from the base, to the nearest 5 cm?")
    return caption, _asked(rng, angle, state, direction, far)


def _objects(env: Any, rng: np.random.Generator) -> tuple[str, QAs]:
    spheres = env.spheres()
    caption = "; ".join(f"a {c} sphere at x {_cm(p[0])} cm, y {_cm(p[1])} cm" for c, p in spheres).capitalize() + "."
    where, check, which = defaultdict(list), defaultdict(list), defaultdict(list)
    for c, p in spheres:
        where[_sector(p)].append(f"Where is the {c} sphere relative to the base?")
        if abs(np.linalg.norm(p) - 0.13) > 0.005:
            check[_yes(np.linalg.norm(p) < 0.13)].append(f"Is the {c} sphere within 13 cm of the base?")
        if abs(p[0]) > 0.005:
            check[_yes(p[0] < 0)].append(f"Is the {c} sphere to the left of the base?")
    if len(spheres) == 2:
        (c0, p0), (c1, p1) = spheres
        for question, key in (("farther from the base", lambda p: -np.linalg.norm(p)),
                              ("nearer the front", lambda p: p[1]), ("further to the left", lambda p: p[0])):
            if abs(key(p0) - key(p1)) > 0.02:
                which[c0 if key(p0) < key(p1) else c1].append(f"Which sphere is {question}?")
    return caption, _asked(rng, where, check, which)
