"""The MuJoCo reach arm as a ROS 2 node: a simulated robot for tests and demos.

    python -m graft.envs.robot.ros2.sim_node --rate-hz 50 --camera-hz 25 --episodes 3 --report sim.json

Every tick (1 / rate_hz, default 50 Hz: two 10 ms physics steps) the latest joint-velocity command
is applied through `ReachJointController` (clipping, slew limit) and the joint states are published;
the camera renders at camera_hz. Topics:

    publishes   /joint_states   sensor_msgs/JointState         shoulder, elbow: position, velocity
                /camera/rgb     sensor_msgs/Image              rgb8 (or bgr8), image_size^2
                /camera/depth   sensor_msgs/Image              32FC1 metres (or 16UC1 millimetres)
                /mission        std_msgs/String                latched: "reach the red target"
                /sim/target     std_msgs/Float64MultiArray     latched: target [x, y, z] metres
                /sim/episode    std_msgs/String                JSON per finished episode (success, ...)
    subscribes  /joint_commands   std_msgs/Float64MultiArray   joint velocities, rad/s
                /joint_trajectory trajectory_msgs/JointTrajectory   velocities, timed from its stamp

Like a real robot it brakes (zero velocity) when no command has come for `command_timeout_ms`.
An episode ends on success or after episode_seconds; the next one starts with the next seed. After
`--episodes` episodes (or SIGINT/SIGTERM) it writes `--report` (tick rate held, commands received)
and exits.
"""
from __future__ import annotations

import argparse
import json
import signal
import time
from collections import deque
from pathlib import Path

import numpy as np
from graft.envs.mujoco_reach import ReachEnv
from graft.envs.robot.controllers import ReachJointController
from graft.envs.robot.protocol import percentiles
from graft.envs.robot.ros2.convert import (
    ConversionError,
    array_to_image,
    float64_array,
    to_float64_array,
    trajectory_points,
)
from graft.envs.robot.ros2.runtime import NodeRunner, qos, stamp_seconds
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

JOINTS = ("shoulder", "elbow")


class ReachSimNode:
    """The simulated arm (see the module docstring)."""

    def __init__(self, rate_hz: float = 50.0, camera_hz: float = 25.0, image_size: int = 64, seed: int = 0,
                 episodes: int | None = None, episode_seconds: float | None = None,
                 rgb_encoding: str = "rgb8", depth_encoding: str = "32FC1", command_timeout_ms: float = 200.0,
                 domain_id: int | None = None):
        if rgb_encoding not in ("rgb8", "bgr8") or depth_encoding not in ("32FC1", "16UC1"):
            raise ValueError(f"encodings {rgb_encoding}, {depth_encoding}; expected rgb8|bgr8 and 32FC1|16UC1")
        self.env = ReachEnv(image_size=image_size)
        self.arm = ReachJointController(self.env, rate_hz=rate_hz, episode_seconds=episode_seconds)
        self.rate_hz, self.camera_every = float(rate_hz), max(1, round(rate_hz / camera_hz))
        self.rgb_encoding, self.depth_encoding = rgb_encoding, depth_encoding
        self.command_timeout_s = command_timeout_ms / 1000
        self.seed, self.episodes_left = seed, episodes
        self.runner = NodeRunner("graft_reach_sim", domain_id=domain_id)
        node = self.runner.node
        self.pub_joints = node.create_publisher(JointState, "/joint_states", qos("sensor"))
        self.pub_rgb = node.create_publisher(Image, "/camera/rgb", qos("sensor"))
        self.pub_depth = node.create_publisher(Image, "/camera/depth", qos("sensor"))
        self.pub_mission = node.create_publisher(String, "/mission", qos("latched"))
        self.pub_target = node.create_publisher(Float64MultiArray, "/sim/target", qos("latched"))
        self.pub_episode = node.create_publisher(String, "/sim/episode", qos("reliable"))
        node.create_subscription(Float64MultiArray, "/joint_commands", self._on_velocity, qos("reliable"))
        node.create_subscription(JointTrajectory, "/joint_trajectory", self._on_trajectory, qos("reliable"))
        self._command: tuple[float, np.ndarray, np.ndarray] | None = None  # (start, times (H,), rad/s (H, 2))
        self._received = 0
        self._command_times: deque = deque(maxlen=100_000)
        self._tick_times: deque = deque(maxlen=100_000)
        self.braked_ticks, self.rejected, self.records = 0, 0, []
        self.finished, self._ticks = False, 0
        self._start_episode()
        self.timer = node.create_timer(1.0 / self.rate_hz, self._tick)

    # -- commands -------------------------------------------------------------------------------
    def _on_velocity(self, msg: Float64MultiArray) -> None:
        try:
            velocity = float64_array(msg, size=len(JOINTS)).astype(np.float64)
        except ConversionError as exc:
            return self._reject("/joint_commands", exc)
        self._set_command(time.monotonic(), np.zeros(1), velocity[None])

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            times, values = trajectory_points(msg, JOINTS, "velocities")
        except ConversionError as exc:
            return self._reject("/joint_trajectory", exc)
        stamp = stamp_seconds(msg)
        lag = 0.0 if stamp is None else self.runner.now_s() - stamp  # points are timed from the stamp
        self._set_command(time.monotonic() - max(lag, 0.0), times, values)

    def _set_command(self, start: float, times: np.ndarray, values: np.ndarray) -> None:
        self._command = (start, times, values)
        self._received += 1
        self._command_times.append(time.monotonic())

    def _reject(self, topic: str, exc: Exception) -> None:
        self.rejected += 1
        self.runner.node.get_logger().warning(f"{topic}: rejected a command: {exc}")

    def _velocity_now(self, now: float) -> np.ndarray:
        """rad/s (2,): the command's point for now; zero (brake) once the command is too old."""
        if self._command is None:
            return np.zeros(2)
        start, times, values = self._command
        elapsed = now - start
        if elapsed > times[-1] + self.command_timeout_s:
            self.braked_ticks += 1
            return np.zeros(2)
        return values[max(int(np.searchsorted(times, elapsed, side="right")) - 1, 0)]

    # -- the robot's own loop ---------------------------------------------------------------------
    def _tick(self) -> None:
        if self.finished:
            return
        now = time.monotonic()
        self._tick_times.append(now)
        self.arm.apply(self._velocity_now(now) / self.env.max_joint_speed)  # action in [-1, 1]
        stamp = self.runner.now_msg()
        joints = JointState(name=list(JOINTS), position=self.env.data.qpos[:2].tolist(),
                            velocity=self.env.data.qvel[:2].tolist())
        joints.header.stamp, joints.header.frame_id = stamp, "base"
        self.pub_joints.publish(joints)
        if self._ticks % self.camera_every == 0:
            self._publish_camera(stamp)
        self._ticks += 1
        if self.arm.done:
            self._end_episode()

    def _publish_camera(self, stamp) -> None:
        obs = self.env.observe()
        rgb = obs["rgb"] if self.rgb_encoding == "rgb8" else np.ascontiguousarray(obs["rgb"][..., ::-1])
        self.pub_rgb.publish(array_to_image(rgb, self.rgb_encoding, stamp, "camera"))
        depth = obs["depth"]  # (H, W) float32 metres
        if self.depth_encoding == "16UC1":
            depth = np.round(depth * 1000).astype(np.uint16)
        self.pub_depth.publish(array_to_image(depth, self.depth_encoding, stamp, "camera"))

    def _start_episode(self) -> None:
        self.arm.reset(self.seed)
        self._episode_start = time.monotonic()
        self.pub_mission.publish(String(data=self.env.mission))
        self.pub_target.publish(to_float64_array([*self.env.target, 0.03], label="xyz"))
        self._publish_camera(self.runner.now_msg())

    def _end_episode(self) -> None:
        record = {"episode": len(self.records), "seed": self.seed, "success": bool(self.arm.success),
                  "ticks": self.arm._ticks, "seconds": round(time.monotonic() - self._episode_start, 3),
                  "distance": round(self.env.distance(), 4), "mission": self.env.mission}
        self.records.append(record)
        self.pub_episode.publish(String(data=json.dumps(record)))
        if self.episodes_left is not None:
            self.episodes_left -= 1
            if self.episodes_left <= 0:
                self.finished = True
                return
        self.seed += 1
        self._start_episode()

    def report(self) -> dict:
        ticks = np.asarray(self._tick_times)
        cmds = np.asarray(self._command_times)
        span = lambda t: (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else 0.0
        return {"rate_hz": self.rate_hz, "tick_rate_held_hz": round(span(ticks), 2),
                "tick_interval_ms": percentiles(np.diff(ticks) * 1000),
                "commands_received": self._received, "command_rate_hz": round(span(cmds), 2),
                "command_interval_ms": percentiles(np.diff(cmds) * 1000),
                "braked_ticks": self.braked_ticks, "rejected_commands": self.rejected,
                "episodes": self.records,
                "success_rate": float(np.mean([r["success"] for r in self.records])) if self.records else 0.0}

    def run(self) -> dict:
        """Spin on this thread (the GL context stays on it) until done, shut down or interrupted."""
        try:
            while not self.finished and self.runner.context.ok():
                self.runner.executor.spin_once(timeout_sec=0.1)
            deadline = time.monotonic() + 0.3  # let the last episode report go out
            while self.runner.context.ok() and time.monotonic() < deadline:
                self.runner.executor.spin_once(timeout_sec=0.05)
        except KeyboardInterrupt:  # SIGINT / SIGTERM: stop and report
            pass
        except Exception:
            if self.runner.context.ok():
                raise
        return self.report()

    def close(self) -> None:
        self.runner.close()
        self.env.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate-hz", type=float, default=50.0)
    p.add_argument("--camera-hz", type=float, default=25.0)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=None, help="exit after this many (default: run until killed)")
    p.add_argument("--episode-seconds", type=float, default=None, help="default: the env's 5 s")
    p.add_argument("--rgb-encoding", default="rgb8", choices=["rgb8", "bgr8"])
    p.add_argument("--depth-encoding", default="32FC1", choices=["32FC1", "16UC1"])
    p.add_argument("--command-timeout-ms", type=float, default=200.0)
    p.add_argument("--report", type=Path, default=None, help="write the JSON report here on exit")
    a = p.parse_args(argv)

    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background parent may have ignored it
        signal.signal(sig, signal.default_int_handler)  # raises KeyboardInterrupt
    sim = ReachSimNode(a.rate_hz, a.camera_hz, a.image_size, a.seed, a.episodes, a.episode_seconds,
                       a.rgb_encoding, a.depth_encoding, a.command_timeout_ms)
    print(f"graft sim node: reach arm at {a.rate_hz:g} Hz, camera {a.camera_hz:g} Hz, ready", flush=True)
    try:
        report = sim.run()
    finally:
        sim.close()
    if a.report is not None:
        a.report.write_text(json.dumps(report, indent=1))
    print(f"graft sim node: {len(report['episodes'])} episodes, success rate {report['success_rate']:.2f}, "
          f"ticks held {report['tick_rate_held_hz']} Hz", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
