"""The reach arm's own converters: examples of user-written converters registered by dotted path.

A robot's bridge config names them like any function of its own package:

    proprio: {topic: /joint_states, type: sensor_msgs/msg/JointState,
              converter: "graft.envs.robot.ros2.reach_converters:reach_proprio", spec: {...}}
"""
from __future__ import annotations

import numpy as np
from graft.envs.robot.ros2.convert import ConversionError, float64_array, joint_state
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

LINK_LENGTHS = (0.10, 0.11)  # metres; the same arm as graft.envs.mujoco_reach (checked in the tests)
PROPRIO_BOUND = 20.0


def reach_proprio(msg: JointState, joints=("shoulder", "elbow")) -> np.ndarray:
    """JointState -> the reach env's proprio (6,) float32: shoulder (wrapped to [-pi, pi)), elbow (rad),
    their velocities (rad/s) and the fingertip (x, y) in metres by forward kinematics."""
    q1, q2, dq1, dq2 = joint_state(msg, list(joints), ("position", "velocity")).astype(np.float64)
    l1, l2 = LINK_LENGTHS
    tip = (l1 * np.cos(q1) + l2 * np.cos(q1 + q2), l1 * np.sin(q1) + l2 * np.sin(q1 + q2))
    shoulder = (q1 + np.pi) % (2 * np.pi) - np.pi
    out = np.array([shoulder, q2, dq1, dq2, *tip], np.float32)
    return np.clip(out, -PROPRIO_BOUND, PROPRIO_BOUND)


def target_xy(msg: Float64MultiArray) -> np.ndarray:
    """The target's position [x, y, (z)] -> (2,) float32 metres; it must lie within the arm's reach."""
    xy = float64_array(msg)[:2]
    if xy.size != 2:
        raise ConversionError(f"{len(msg.data)} values; expected the target's [x, y] in metres")
    if np.hypot(*xy) > sum(LINK_LENGTHS) + 0.05:
        raise ConversionError(f"target {xy.tolist()} is {np.hypot(*xy):.3f} m from the base; "
                              f"expected within the arm's reach ({sum(LINK_LENGTHS):.2f} m)")
    return xy
