"""MuJoCo reach specifics: metric depth agrees with the camera model, missions follow the seed, and
each modality is asked exact questions of its own."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest
from graft.envs.experts import ReachExpert
from graft.envs.mujoco_reach import COLORS, ReachEnv


def project(env: ReachEnv, point: np.ndarray) -> tuple[int, int]:
    """Pixel (row, col) of a world point in the env's camera (pinhole, fovy from the model)."""
    cam = env.model.camera("main").id
    rot = env.data.cam_xmat[cam].reshape(3, 3)
    local = rot.T @ (point - env.data.cam_xpos[cam])  # camera frame: x right, y up, looks along -z
    size = env.image_size
    focal = size / 2 / np.tan(np.radians(env.model.cam_fovy[cam]) / 2)
    col = size / 2 + focal * local[0] / -local[2]
    row = size / 2 - focal * local[1] / -local[2]
    return int(row), int(col)


@pytest.fixture(scope="module")
def env():
    env = ReachEnv(colors=["red", "blue"], distractor=False)
    yield env
    env.close()


def test_depth_is_metric_and_rgb_shows_the_target_where_projected(env):
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        target = np.array([*env.target, 0.03])
        row, col = project(env, target)
        expected = env.camera_depth(env.target)  # z-depth of the sphere's centre, metres
        radius = env.model.geom_size[env.model.geom("target").id][0]
        assert abs(obs["depth"][row, col] - expected) < radius + 0.005
        floor_far = obs["depth"][0, col]  # the top row of the image sees the floor farther away
        assert floor_far > expected + 0.05
        colour = np.asarray(COLORS[env.target_color])
        pixel = obs["rgb"][row, col].astype(float) / 255
        assert np.argmax(pixel) == np.argmax(colour), (env.target_color, pixel)


def test_mission_and_colours_come_from_the_seed():
    env = ReachEnv()
    missions = set()
    for seed in range(12):
        obs, _ = env.reset(seed=seed)
        assert obs["mission"] == f"reach the {env.target_color} target"
        assert env.distractor_color not in (None, env.target_color)
        assert np.linalg.norm(env.target - env.distractor) > 0.08
        missions.add(obs["mission"])
    assert len(missions) >= 3
    env.close()


def test_success_terminates_and_rewards(env):
    obs, _ = env.reset(seed=0)
    # Put the arm on the target by inverse kinematics in closed form, then take a zero action.
    x, y = env.target
    l1, l2 = 0.10, 0.11
    elbow = np.arccos(np.clip((x * x + y * y - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1, 1))
    shoulder = np.arctan2(y, x) - np.arctan2(l2 * np.sin(elbow), l1 + l2 * np.cos(elbow))
    env.data.qpos[:2] = [shoulder, elbow]
    env.data.qvel[:] = 0
    obs, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert info["is_success"] and terminated and not truncated and reward > 0.9
    assert np.allclose(obs["proprio"][4:], env.fingertip, atol=1e-6)


def test_time_limit_truncates():
    env = ReachEnv(max_steps=3)
    env.reset(seed=0)
    ends = [env.step(np.zeros(2, np.float32))[3] for _ in range(3)]
    assert ends == [False, False, True]
    env.close()


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="colors must be a non-empty subset"):
        ReachEnv(colors=["pink"])
    with pytest.raises(ValueError, match="distractor needs at least two colors"):
        ReachEnv(colors=["red"], distractor=True)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_importing_triton_after_rendering_does_not_crash():
    """Mesa's LLVM loaded first made a later `import triton` segfault (see _load_triton_before_mesa)."""
    code = ("from graft.envs.mujoco_reach import ReachEnv\n"
            "env = ReachEnv(); env.reset(seed=0)\n"
            "import triton\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_object_list_names_both_spheres_in_a_drawn_order():
    with_objects, without = ReachEnv(objects=True), ReachEnv()
    try:
        firsts = set()
        for seed in range(12):
            obs, _ = with_objects.reset(seed=seed)
            plain, _ = without.reset(seed=seed)
            assert "objects" not in plain and with_objects.observation_space.contains(obs)
            np.testing.assert_array_equal(obs["rgb"], plain["rgb"])  # the same scene for a seed
            rows = obs["objects"]
            assert rows.shape == (2, 5) and rows.dtype == np.float32
            def row_of(colour, rows=rows):
                return rows[np.argmin(np.abs(rows[:, 2:] - np.asarray(COLORS[colour])).sum(1))]

            np.testing.assert_allclose(row_of(with_objects.target_color)[:2], with_objects.target, atol=1e-6)
            np.testing.assert_allclose(row_of(with_objects.distractor_color)[:2], with_objects.distractor, atol=1e-6)
            firsts.add(bool(np.allclose(rows[0, :2], with_objects.target)))
            step_obs, *_ = with_objects.step(np.zeros(2, np.float32))
            np.testing.assert_array_equal(step_obs["objects"], rows)  # order holds for the episode
        assert firsts == {True, False}  # row 0 is sometimes the target, sometimes not
        assert with_objects.modality_specs["objects"].shape == (2, 5)
        single = ReachEnv(objects=True, distractor=False)
        assert single.reset(seed=0)[0]["objects"].shape == (1, 5)
        single.close()
    finally:
        with_objects.close()
        without.close()


def sector(xy) -> str:
    """Direction from the base as the camera sees it: front is towards the camera (-y)."""
    a = np.degrees(np.arctan2(xy[1], xy[0]))
    return "right" if -45 <= a < 45 else "back" if 45 <= a < 135 else "front" if -135 <= a < -45 else "left"


def to5(metres: float) -> str:
    return str(int(5 * np.round(metres * 20)))


def yes(flag) -> str:
    return "yes" if flag else "no"


def nearest90(degrees: float) -> str:
    rounded = int(90 * np.round(degrees / 90))
    return "180" if rounded == -180 else str(rounded)


def reach_answer(env: ReachEnv, obs: dict, modality: str, question: str) -> str:
    """The answer to one of the describer's questions by this test's own reading: pixels from
    `project`, joints from the proprio reading, spheres from the object list."""
    spheres = dict(env.spheres())
    size = env.image_size
    pixel = {c: np.array(project(env, np.array([*p, 0.03]))) for c, p in spheres.items()}  # (row, col)
    tip_pixel = np.array(project(env, np.array([*env.fingertip, 0.03])))
    by_depth = sorted(spheres, key=lambda c: env.camera_depth(spheres[c]))
    named = dict(zip(("nearer sphere", "farther sphere"), by_depth)) if len(spheres) == 2 else {"sphere": by_depth[0]}
    place = {**{n: spheres[c] for n, c in named.items()}, "fingertip": env.fingertip, "base": np.zeros(2)}
    shoulder, elbow = np.degrees(obs["proprio"][:2])
    moving, tip = np.abs(obs["proprio"][2:4]).max() > 0.1, obs["proprio"][4:6]
    rows = obs.get("objects")
    xy = {c: rows[np.abs(rows[:, 2:] - COLORS[c]).sum(1).argmin(), :2] for c in spheres} if rows is not None else {}
    least = lambda key: min(spheres, key=key)
    forms = {"rgb": [
        (r"Where in the image is the (\w+) sphere\?", lambda c: ("top " if pixel[c][0] < size / 2 else "bottom ")
         + ("left" if pixel[c][1] < size / 2 else "right")),
        (r"Is there a (\w+) sphere in the image\?", lambda c: yes(c in spheres)),
        (r"What colour is the sphere nearer the top of the image\?", lambda: least(lambda c: pixel[c][0])),
        (r"What colour is the sphere nearer the left of the image\?", lambda: least(lambda c: pixel[c][1])),
        (r"What colour is the sphere nearer the fingertip in the image\?",
         lambda: least(lambda c: np.linalg.norm(pixel[c] - tip_pixel))),
    ], "depth": [
        (r"How deep is the (.+), to the nearest 5 cm\?", lambda n: to5(env.camera_depth(place[n]))),
        (r"Is the fingertip nearer to the camera than the (.+)\?",
         lambda n: yes(env.camera_depth(env.fingertip) < env.camera_depth(place[n]))),
        (r"On which side of the image is the (.+)\?",
         lambda n: "left" if project(env, np.array([*place[n], 0.03]))[1] < size / 2 else "right"),
    ], "proprio": [
        (r"What is the (shoulder|elbow) angle, to the nearest 90 degrees\?",
         lambda j: nearest90(shoulder if j == "shoulder" else elbow)),
        (r"Is the arm moving\?", lambda: yes(moving)),
        (r"Is the elbow bent more than 90 degrees\?", lambda: yes(abs(elbow) > 90)),
        (r"Is the fingertip more than 14 cm from the base\?", lambda: yes(np.linalg.norm(tip) > 0.14)),
        (r"In which direction from the base is the fingertip\?", lambda: sector(tip)),
        (r"How far is the fingertip from the base, to the nearest 5 cm\?", lambda: to5(np.linalg.norm(tip))),
    ], "objects": [
        (r"Where is the (\w+) sphere relative to the base\?", lambda c: sector(xy[c])),
        (r"Is the (\w+) sphere within 13 cm of the base\?", lambda c: yes(np.linalg.norm(xy[c]) < 0.13)),
        (r"Is the (\w+) sphere to the left of the base\?", lambda c: yes(xy[c][0] < 0)),
        (r"Which sphere is farther from the base\?", lambda: least(lambda c: -np.linalg.norm(xy[c]))),
        (r"Which sphere is nearer the front\?", lambda: least(lambda c: xy[c][1])),
        (r"Which sphere is further to the left\?", lambda: least(lambda c: xy[c][0])),
    ]}
    for pattern, answer in forms[modality]:
        if (m := re.fullmatch(pattern, question)):
            return answer(*m.groups())
    raise AssertionError(f"{modality} question {question!r} is none the test knows")


@pytest.mark.parametrize("distractor", [True, False])
def test_questions_are_exact_and_each_modality_has_its_own(distractor):
    env = ReachEnv(objects=True, distractor=distractor)
    asked: dict[str, set[str]] = {}
    groups: dict[str, set[str]] = {m: set() for m in ("rgb", "depth", "proprio", "objects")}
    try:
        for seed in range(6):
            obs, _ = env.reset(seed=seed)
            expert = ReachExpert()
            expert.reset(env)
            for _ in range(12):
                for modality, (_, qas) in env.describe(obs).items():
                    for question, answer in qas:
                        assert answer == reach_answer(env, obs, modality, question), (seed, modality, question)
                        assert asked.setdefault(question, {modality}) == {modality}, question  # one modality
                        groups[modality].add(" ".join(question.split()[:2]))
                        assert modality != "objects" or not {"fingertip", "arm"} & set(question[:-1].split())
                obs, *_ = env.step(expert.act())
    finally:
        env.close()
    assert {m: len(g) for m, g in groups.items()} == ({"rgb": 3, "depth": 3, "proprio": 4, "objects": 3} if distractor
                                                       else {"rgb": 2, "depth": 3, "proprio": 4, "objects": 2}), groups
