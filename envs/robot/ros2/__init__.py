"""graft.envs.robot.ros2: the agent as a node in a robot's ROS 2 graph (optional extra `graft[ros2]`).

    convert     ROS messages <-> numpy (images in the encodings robots send, joints, text, arrays,
                trajectories); the converter registry (built-in names or a user's dotted path)
    sync        the latest message of each topic with a staleness limit per topic
    runtime     one node in its own context and executor; the QoS profiles
    policies    in-process policies behind the PolicyClient interface; the reach expert
    bridge      the bridge node: subscriptions -> modality dict -> policy -> commands at a fixed rate
    sim_node    the MuJoCo reach arm as a ROS 2 node (`python -m graft.envs.robot.ros2.sim_node`)

Importing this package needs rclpy and the message packages; without them it raises an ImportError
that says what to install. Nothing else in graft imports it, so graft works without the extra.
"""
from __future__ import annotations

try:
    import rclpy  # noqa: F401
    import sensor_msgs.msg  # noqa: F401
    import std_msgs.msg  # noqa: F401
    import trajectory_msgs.msg  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f"the ROS 2 bridge needs rclpy and the std/sensor/trajectory message packages "
                      f"({exc}); install them with: pip install 'graft[ros2]'") from exc
