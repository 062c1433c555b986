"""ROS 2 message <-> numpy conversion: every image encoding round-trips exactly, depth follows REP 118,
malformed messages are rejected with what was expected, and the reach converters and expert agree
with the MuJoCo arm. No nodes here: message objects only (they still need the ros2 extra)."""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest

try:  # the package's own ImportError names what is missing (rclpy or a message package)
    import graft.envs.robot.ros2  # noqa: F401
except ImportError as exc:
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        raise  # CI installs the ros2 extra: a missing rclpy there is a failure, not a skip
    pytest.skip(f"needs the ros2 extra (pip install 'graft[ros2]'): {exc}", allow_module_level=True)

from graft.envs.robot.ros2 import convert as cv
from graft.envs.robot.ros2.convert import ConversionError
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String

RNG = np.random.default_rng(0)
PIXELS = {
    "rgb8": RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8),
    "bgr8": RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8),
    "rgba8": RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8),
    "bgra8": RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8),
    "mono8": RNG.integers(0, 256, (5, 7), dtype=np.uint8),
    "mono16": RNG.integers(0, 65536, (5, 7), dtype=np.uint16),
    "16UC1": RNG.integers(0, 65536, (5, 7), dtype=np.uint16),
    "32FC1": RNG.uniform(0, 10, (5, 7)).astype(np.float32),
}


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", sorted(PIXELS))
def test_image_round_trip_is_exact(encoding, bigendian):
    pixels = PIXELS[encoding]
    msg = cv.array_to_image(pixels, encoding, bigendian=bigendian)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (5, 7, encoding, int(bigendian))
    back = cv.image_to_array(msg)
    assert back.dtype == pixels.dtype and back.shape == pixels.shape
    np.testing.assert_array_equal(back, pixels)


def test_row_padding_is_dropped():
    pixels = PIXELS["16UC1"]
    msg = cv.array_to_image(pixels, "16UC1")
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(5, 14)
    msg.step = 16  # two padding bytes per row, as some drivers send
    msg.data = np.concatenate([rows, np.full((5, 2), 0xAB, np.uint8)], 1).tobytes()
    np.testing.assert_array_equal(cv.image_to_array(msg), pixels)


def test_bgr8_is_swapped_to_rgb_and_alpha_dropped():
    rgb = PIXELS["rgb8"]
    np.testing.assert_array_equal(cv.rgb(cv.array_to_image(np.ascontiguousarray(rgb[..., ::-1]), "bgr8")), rgb)
    bgra = np.concatenate([rgb[..., ::-1], np.full((5, 7, 1), 9, np.uint8)], -1)
    np.testing.assert_array_equal(cv.rgb(cv.array_to_image(bgra, "bgra8")), rgb)
    np.testing.assert_array_equal(cv.rgb(cv.array_to_image(rgb, "rgb8")), rgb)
    mono = cv.rgb(cv.array_to_image(PIXELS["mono8"], "mono8"))
    assert mono.shape == (5, 7, 3) and np.all(mono[..., 2] == PIXELS["mono8"])
    pixel = np.zeros((1, 1, 3), np.uint8)
    pixel[0, 0] = (10, 20, 30)  # B G R on the wire
    assert cv.rgb(cv.array_to_image(pixel, "bgr8"))[0, 0].tolist() == [30, 20, 10]


def test_16uc1_millimetres_become_float32_metres():
    mm = np.array([[1500, 0, 250], [2000, 65535, 1]], np.uint16)
    metres = cv.depth(cv.array_to_image(mm, "16UC1"), max_depth=3.0)
    assert metres.dtype == np.float32 and metres.shape == (2, 3)
    np.testing.assert_allclose(metres, [[1.5, 3.0, 0.25], [2.0, 3.0, 0.001]], rtol=1e-6)  # 0 mm: no return -> far
    missing = cv.depth(cv.array_to_image(mm, "16UC1"), max_depth=3.0, missing=0.0)
    assert missing[0, 1] == 0.0


def test_32fc1_nan_and_inf_follow_rep_118():
    m = np.array([[0.5, np.nan, np.inf, -np.inf, 7.0]], np.float32)
    out = cv.depth(cv.array_to_image(m, "32FC1"), max_depth=2.0)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, np.array([[0.5, 2.0, 2.0, 0.0, 2.0]], np.float32))
    out = cv.depth(cv.array_to_image(m, "32FC1"), max_depth=2.0, missing=0.0)
    assert out[0, 1] == 0.0 and out[0, 2] == 2.0


def test_resize_nearest():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(cv.resize_nearest(img, (2, 2)), [[0, 2], [8, 10]])
    assert cv.resize_nearest(img, (8, 8)).shape == (8, 8)
    assert cv.rgb(cv.array_to_image(PIXELS["rgb8"], "rgb8"), size=(10, 14)).shape == (10, 14, 3)


@pytest.mark.parametrize("mutate, words", [
    (lambda m: setattr(m, "encoding", "yuv422"), ["yuv422", "expected one of"]),
    (lambda m: setattr(m, "data", bytes(m.data)[:-3]), ["bytes", "expected step"]),
    (lambda m: setattr(m, "step", 3), ["step 3", "rgb8"]),
    (lambda m: setattr(m, "height", 0), ["0x7", "positive"]),
])
def test_malformed_images_are_rejected_with_what_was_expected(mutate, words):
    msg = cv.array_to_image(PIXELS["rgb8"], "rgb8")
    mutate(msg)
    with pytest.raises(ConversionError) as err:
        cv.rgb(msg)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_wrong_kind_of_image_is_rejected():
    with pytest.raises(ConversionError, match="16UC1"):
        cv.rgb(cv.array_to_image(PIXELS["16UC1"], "16UC1"))
    with pytest.raises(ConversionError, match="depth needs a 16UC1"):
        cv.depth(cv.array_to_image(PIXELS["rgb8"], "rgb8"))
    with pytest.raises(ConversionError, match=r"needs a \(H, W, 3\) uint8"):
        cv.array_to_image(PIXELS["32FC1"], "rgb8")


def test_joint_state_selects_joints_in_order_and_rejects_bad_ones():
    msg = JointState(name=["elbow", "gripper", "shoulder"], position=[1.0, 9.0, 2.0], velocity=[3.0, 9.0, 4.0])
    out = cv.joint_state(msg, ["shoulder", "elbow"])
    assert out.dtype == np.float32 and out.tolist() == [2.0, 1.0, 4.0, 3.0]
    with pytest.raises(ConversionError, match="'wrist' is not in the JointState"):
        cv.joint_state(msg, ["shoulder", "wrist"])
    with pytest.raises(ConversionError, match="velocity has 1 values for 3 joint names"):
        cv.joint_state(JointState(name=msg.name, position=[1.0, 2.0, 3.0], velocity=[1.0]))
    with pytest.raises(ConversionError, match="NaN"):
        cv.joint_state(JointState(name=["a"], position=[float("nan")], velocity=[0.0]))


def test_text_and_arrays():
    assert cv.string(String(data="reach the red target")) == "reach the red target"
    with pytest.raises(ConversionError, match="at most 8"):
        cv.string(String(data="x" * 9), max_chars=8)
    msg = cv.to_float64_array(np.array([0.5, -1.25]))
    assert msg.layout.dim[0].size == 2
    np.testing.assert_array_equal(cv.float64_array(msg, size=2), np.float32([0.5, -1.25]))
    with pytest.raises(ConversionError, match="3 values; expected 2"):
        cv.float64_array(Float64MultiArray(data=[1.0, 2.0, 3.0]), size=2)


def test_joint_trajectory_round_trip():
    chunk = np.array([[0.1, -0.2], [0.3, 0.4], [0.5, 0.6]])
    msg = cv.to_joint_trajectory(chunk, ["shoulder", "elbow"], [0.0, 0.02, 0.04])
    times, values = cv.trajectory_points(msg, ["elbow", "shoulder"])
    np.testing.assert_allclose(times, [0.0, 0.02, 0.04])
    np.testing.assert_array_equal(values, chunk[:, ::-1])
    msg.points[1].velocities = [0.1]
    with pytest.raises(ConversionError, match="point 1"):
        cv.trajectory_points(msg, ["shoulder", "elbow"])


def test_converter_registry_builtin_and_dotted_path():
    msg_type, fn = cv.make_converter("depth", args={"max_depth": 1.0})
    assert msg_type is Image and fn(cv.array_to_image(PIXELS["32FC1"], "32FC1")).max() == 1.0
    msg_type, fn = cv.make_converter("graft.envs.robot.ros2.reach_converters:target_xy",
                                     "std_msgs/Float64MultiArray")
    assert msg_type is Float64MultiArray and fn(Float64MultiArray(data=[0.1, 0.05, 0.03])).tolist() == \
        pytest.approx([0.1, 0.05])
    with pytest.raises(ValueError, match="needs `type:`"):
        cv.make_converter("graft.envs.robot.ros2.reach_converters:target_xy")
    with pytest.raises(ValueError, match="cannot load converter"):
        cv.make_converter("graft.envs.robot.ros2.reach_converters:nope", "std_msgs/String")
    with pytest.raises(ValueError, match="not installed"):
        cv.make_converter("string", "std_msgs/NoSuchType")


def test_reach_converters_and_expert_match_the_mujoco_arm():
    from graft.envs.experts import ReachExpert
    from graft.envs.mujoco_reach import LINK_LENGTHS, ReachEnv
    from graft.envs.robot.ros2 import reach_converters
    from graft.envs.robot.ros2.policies import ReachObservationExpert

    assert reach_converters.LINK_LENGTHS == LINK_LENGTHS
    env = ReachEnv(image_size=16)
    try:
        expert, ours = ReachExpert(), ReachObservationExpert()
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            env.data.qvel[:2] = [0.3, -0.7]
            obs = env.observe()
            msg = JointState(name=["shoulder", "elbow"], position=env.data.qpos[:2].tolist(),
                             velocity=env.data.qvel[:2].tolist())
            np.testing.assert_allclose(reach_converters.reach_proprio(msg), obs["proprio"], atol=1e-5)
            expert.reset(env)
            target = reach_converters.target_xy(cv.to_float64_array([*env.target, 0.03]))
            np.testing.assert_allclose(ours({"proprio": obs["proprio"], "target": target}), expert.act(), atol=1e-4)
    finally:
        env.close()
    with pytest.raises(ConversionError, match="within the arm's reach"):
        reach_converters.target_xy(Float64MultiArray(data=[1.0, 1.0]))


def test_missing_rclpy_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rclpy", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "graft.envs.robot.ros2")
    with pytest.raises(ImportError, match=r"pip install 'graft\[ros2\]'"):
        importlib.import_module("graft.envs.robot.ros2")
