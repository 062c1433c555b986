"""The bridge node: a robot's ROS 2 topics -> the agent's modality dict -> commands at a fixed rate.

    bridge = Bridge(BridgeConfig.from_mapping(cfg), policy)   # policy: PolicyClient or LocalPolicy
    record = bridge.run(seconds=10)                          # or bridge.run(episodes=3)
    bridge.close()

- Each configured topic is converted (`convert.make_converter`) and checked against its modality
  spec (shape, dtype, range) in the subscription callback. A message that fails is logged with the
  topic, what was wrong and what was expected, and dropped: the topic keeps its previous value,
  which then goes stale. Nothing a publisher sends stops the bridge.
- `sync.LatestSync` keeps the latest value per topic; a missing or stale topic makes the loop drop
  the chunk it was playing and hold the safe action (reported once per stale spell, counted every
  tick in `stale_ticks`) until every topic is fresh again.
- The fixed-rate loop is `ControlLoop` (control_loop.py: pacing, chunking, clamping, watchdog, safe
  action), subclassed here only for the staleness rule and latency bookkeeping.
- Commands: `float64_array` publishes the tick's action (times `scale`) as Float64MultiArray;
  `joint_trajectory` publishes the rest of the running chunk (and the queued one) as a
  JointTrajectory whose points are timed from now, so the robot's controller has the lookahead.
- `close()` publishes the safe action once before the node goes (the robot need not wait for its
  own command timeout).
- Sensor-to-command latency: for the first command of every chunk, the node's clock at publication
  minus the header stamps of the sensor messages the chunk was computed from: the oldest one (the
  age of the stalest input, bounded below by the slowest sensor's period) and the newest one.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from graft.envs.robot.control_loop import EPS, KEEP, ControlLoop
from graft.envs.robot.controllers import box_safe_action
from graft.envs.robot.protocol import Metadata, percentiles
from graft.envs.robot.ros2.convert import (
    ConversionError,
    make_converter,
    to_float64_array,
    to_joint_trajectory,
)
from graft.envs.robot.ros2.runtime import NodeRunner, qos, stamp_seconds
from graft.envs.robot.ros2.sync import LatestSync, Snapshot, TopicSlot
from graft.envs.spec import ModalitySpec, ObservationError, ObservationSpec
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

log = logging.getLogger(__name__)
LOG_EVERY_S = 1.0  # per topic: at most one rejection log line per second (with the count suppressed)


@dataclass
class TopicConfig:
    key: str  # observation key: a modality name, or a text key such as "mission"
    topic: str
    converter: str
    type: str | None = None  # message type; needed for user-written converters
    args: dict = field(default_factory=dict)
    stale_ms: float | None = None  # None: never stale once received (latched topics)
    qos: str = "sensor"
    spec: ModalitySpec | None = None  # None: a text key (the converter returns str)

    @classmethod
    def from_mapping(cls, key: str, m: Mapping[str, Any]) -> TopicConfig:
        spec = m.get("spec")
        if spec is None and m.get("converter") != "string":
            raise ValueError(f"topic {m.get('topic')} ({key}) needs `spec: {{shape, dtype, low, high}}` "
                             "(only `converter: string` topics are text keys without one)")
        if spec is not None:
            spec = ModalitySpec(key, tuple(spec["shape"]), str(spec["dtype"]), spec.get("low"), spec.get("high"),
                                str(spec.get("description", m.get("topic", ""))))
        return cls(key, str(m["topic"]), str(m["converter"]), m.get("type"), dict(m.get("args") or {}),
                   m.get("stale_ms"), str(m.get("qos", "sensor")), spec)


@dataclass
class CommandConfig:
    topic: str = "/joint_commands"
    type: str = "float64_array"  # float64_array | joint_trajectory
    joint_names: list = field(default_factory=list)  # joint_trajectory only
    field: str = "velocities"  # joint_trajectory point field: velocities | positions
    scale: float = 1.0  # published value = action x scale (e.g. [-1, 1] -> rad/s)
    qos: str = "reliable"


@dataclass
class BridgeConfig:
    topics: list[TopicConfig]
    command: CommandConfig
    rate_hz: float = 50.0
    action_shape: tuple = (2,)
    action_low: float | list = -1.0
    action_high: float | list = 1.0
    deadline_ms: float = 250.0
    node_name: str = "graft_bridge"
    episodes_topic: str | None = None  # std_msgs/String JSON per finished episode ({"success": ...})

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> BridgeConfig:
        topics = [TopicConfig.from_mapping(k, v) for k, v in dict(m["topics"]).items()]
        action = dict(m.get("action") or {})
        return cls(topics, CommandConfig(**dict(m.get("command") or {})), float(m.get("rate_hz", 50.0)),
                   tuple(action.get("shape", (2,))), action.get("low", -1.0), action.get("high", 1.0),
                   float(m.get("deadline_ms", 250.0)), str(m.get("node_name", "graft_bridge")),
                   m.get("episodes_topic"))

    def action_space(self) -> gym.spaces.Box:
        bounds = (-np.inf, np.inf) if self.action_low is None else (self.action_low, self.action_high)
        low, high = (np.broadcast_to(np.asarray(v, np.float32), self.action_shape) for v in bounds)
        return gym.spaces.Box(low, high, self.action_shape, np.float32)

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec({t.key: t.spec for t in self.topics if t.spec is not None},
                               text_keys=tuple(t.key for t in self.topics if t.spec is None))

    def metadata(self, control_rate_hz: float | None = None, chunk_size: int = 1, model: dict | None = None) -> Metadata:
        """The contract an in-process policy gets (a `graft serve` server sends its own)."""
        return Metadata(self.observation_spec(), self.action_space(), control_rate_hz or self.rate_hz,
                        chunk_size, model=dict(model or {}))


class BridgeNode:
    """The ROS side: subscriptions into a LatestSync, the command publisher, episode reports."""

    def __init__(self, cfg: BridgeConfig, domain_id: int | None = None):
        self.cfg = cfg
        self.runner = NodeRunner(cfg.node_name, domain_id=domain_id)
        node = self.runner.node
        slots = [TopicSlot(t.topic, t.key, None if t.stale_ms is None else float(t.stale_ms) / 1000)
                 for t in cfg.topics]
        self.sync = LatestSync(slots)
        self._last_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        for t in cfg.topics:  # the node keeps its subscriptions
            msg_type, convert = make_converter(t.converter, t.type, t.args)
            node.create_subscription(msg_type, t.topic, self._callback(t, convert), qos(t.qos))
        cmd = cfg.command
        if cmd.type not in ("float64_array", "joint_trajectory"):
            raise ValueError(f"command type {cmd.type!r}; expected float64_array or joint_trajectory")
        if cmd.type == "joint_trajectory" and len(cmd.joint_names) != int(np.prod(cfg.action_shape)):
            raise ValueError(f"joint_trajectory commands need one joint name per action value: "
                             f"{cmd.joint_names} for action shape {cfg.action_shape}")
        msg_type = Float64MultiArray if cmd.type == "float64_array" else JointTrajectory
        self.publisher = node.create_publisher(msg_type, cmd.topic, qos(cmd.qos))
        self.episodes: list[dict] = []
        if cfg.episodes_topic:
            node.create_subscription(String, cfg.episodes_topic, self._episode, qos("reliable"))
        self.runner.start()

    def _callback(self, t: TopicConfig, convert):
        def on_message(msg) -> None:
            try:
                value = convert(msg)
                if t.spec is not None:
                    value = t.spec.validate(value)
                elif not isinstance(value, str):
                    raise ConversionError(f"got {type(value).__name__}; expected str for text key {t.key!r}")
            except (ConversionError, ObservationError, ValueError, TypeError) as exc:
                self.sync.reject(t.key)
                self._log_rejection(t, msg, exc)
                return
            self.sync.update(t.key, value, stamp_seconds(msg))
        return on_message

    def _log_rejection(self, t: TopicConfig, msg, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_log.get(t.key, -np.inf) < LOG_EVERY_S:
            self._suppressed[t.key] = self._suppressed.get(t.key, 0) + 1
            return
        more = self._suppressed.pop(t.key, 0)
        extra = f" ({more} more rejected since the last report)" if more else ""
        log.warning("topic %s (%s): rejected a %s message: %s%s", t.topic, t.key, type(msg).__name__, exc, extra)
        self._last_log[t.key] = now

    def _episode(self, msg: String) -> None:
        try:
            record = json.loads(msg.data)
            why = "" if isinstance(record, dict) else f"a JSON {type(record).__name__}"
        except ValueError as exc:
            why = f"not JSON ({exc})"
        if why:
            log.warning("topic %s: rejected an episode report %r: %s; expected a JSON object",
                        self.cfg.episodes_topic, msg.data[:80], why)
            return
        self.episodes.append(record)

    def close(self) -> None:
        self.runner.close()


class Ros2Controller:
    """The bridge as a `Controller` for ControlLoop: observe = the synced topics, apply = publish."""

    def __init__(self, node: BridgeNode, safe_action: Any = None):
        self.node, self.cfg = node, node.cfg
        self.rate_hz = float(self.cfg.rate_hz)
        self.action_space = self.cfg.action_space()
        self._safe = box_safe_action(self.action_space) if safe_action is None else \
            np.asarray(safe_action, np.float32).reshape(self.cfg.action_shape)
        self.snap: Snapshot | None = None
        self.stop_after_episodes: int | None = None
        self.rest: tuple[np.ndarray, np.ndarray] | None = None  # (times (H,), actions (H, *shape)) to publish
        self.latency_stamps: tuple | None = None  # (oldest, newest) header stamps, for a chunk's first command
        self.latency_ms: deque = deque(maxlen=KEEP)  # from the oldest stamp
        self.newest_latency_ms: deque = deque(maxlen=KEEP)
        self.publish_times: deque = deque(maxlen=KEEP)  # monotonic seconds of every command

    def take_snapshot(self) -> Snapshot:
        self.snap = self.node.sync.snapshot()
        return self.snap

    def observe(self) -> dict[str, Any]:
        return dict((self.snap or self.take_snapshot()).observation)

    def apply(self, action: Any) -> None:
        cmd, scale = self.cfg.command, float(self.cfg.command.scale)
        action = np.asarray(action, np.float64)
        if cmd.type == "float64_array":
            msg = to_float64_array(action * scale)
        else:
            times, actions = self.rest if self.rest is not None else (np.zeros(1), action[None])
            msg = to_joint_trajectory(actions.reshape(len(times), -1) * scale, cmd.joint_names, times, cmd.field,
                                      stamp=self.node.runner.now_msg())
        self.node.publisher.publish(msg)
        self.publish_times.append(time.monotonic())
        if self.latency_stamps is not None:
            now, (oldest, newest) = self.node.runner.now_s(), self.latency_stamps
            if oldest is not None:
                self.latency_ms.append((now - oldest) * 1000)
                self.newest_latency_ms.append((now - newest) * 1000)
            self.latency_stamps = None

    def safe_action(self) -> np.ndarray:
        return self._safe.copy()

    def reset(self, seed: int | None = None) -> None:
        """A robot is not reset by its bridge: episodes are the robot's (or the sim node's) business."""

    @property
    def done(self) -> bool:
        n = self.stop_after_episodes
        return n is not None and len(self.node.episodes) >= n

    @property
    def success(self) -> bool:
        return any(bool(e.get("success")) for e in self.node.episodes)

    def rate_report(self) -> dict:
        t = np.asarray(self.publish_times)
        if t.size < 2:
            return {"commands": int(t.size)}
        return {"commands": int(t.size), "rate_hz": round((t.size - 1) / (t[-1] - t[0]), 2),
                "interval_ms": percentiles(np.diff(t) * 1000)}

    def close(self) -> None:
        """The node is closed by the Bridge that owns it."""


class BridgeLoop(ControlLoop):
    """ControlLoop plus the staleness rule and latency bookkeeping (see the module docstring)."""

    controller: Ros2Controller

    def __init__(self, controller: Ros2Controller, client, deadline_s: float = 0.25, **kwargs):
        super().__init__(controller, client, deadline_s=deadline_s, **kwargs)
        self.stale_ticks = 0  # not in LoopStats: run_episode rebuilds LoopStats from its own int fields
        self._stale_spell = False
        self._pending_stamp = self._active_stamp = self._queued_stamp = None
        self._first_command = False

    def _submit(self, now: float) -> None:
        if not self.controller.snap or not self.controller.snap.ok:
            return
        before = self._pending
        super()._submit(now)
        if self._pending is not before:
            snap = self.controller.snap
            self._pending_stamp = (snap.oldest_stamp_s, snap.newest_stamp_s)

    def _collect(self, now: float, t: float) -> None:
        active, queued, stamp = self._active, self._queued, self._pending_stamp
        super()._collect(now, t)
        if self._active is not active:
            self._active_stamp, self._first_command = stamp, True
        elif self._queued is not None and self._queued is not queued:
            self._queued_stamp = stamp

    def _action(self, t: float) -> Any:
        c = self.controller
        c.rest = None
        snap = c.take_snapshot()
        if not snap.ok:
            self._active = self._queued = None  # chunks computed from data that is now stale are dropped
            self._waiting = True
            self.stats.safe_ticks += 1
            self.stale_ticks += 1
            if not self._stale_spell:
                self._stale_spell = True
                self.report("stale_sensor", "; ".join(snap.problems) + "; holding the safe action")
            return c.safe_action()
        if self._stale_spell:
            self._stale_spell = False
            log.info("bridge: every topic is fresh again; resuming the policy")
        active = self._active
        action = super()._action(t)
        if self._active is not active:  # the queued chunk took over
            self._active_stamp, self._first_command = self._queued_stamp, True
        if self._waiting:
            return action
        if self._first_command:
            c.latency_stamps, self._first_command = self._active_stamp, False
        if c.cfg.command.type == "joint_trajectory":
            rate = self.meta.control_rate_hz
            i = int((t - self._active.start) * rate + EPS * rate)
            chunks = [self._active.actions[i:]] + ([self._queued] if self._queued is not None else [])
            actions = np.concatenate(chunks)  # (H, *shape)
            times = np.maximum(self._active.start + (i + np.arange(len(actions))) / rate - t, 0.0)
            c.rest = (times, actions)
        return action


class Bridge:
    """Node + controller + loop for one policy (see the module docstring)."""

    def __init__(self, cfg: BridgeConfig, policy, domain_id: int | None = None, safe_action: Any = None):
        self.cfg = cfg
        self.node = BridgeNode(cfg, domain_id=domain_id)
        try:
            self.controller = Ros2Controller(self.node, safe_action)
            self.loop = BridgeLoop(self.controller, policy, deadline_s=float(cfg.deadline_ms) / 1000)
            self._check_contract(self.loop.meta)
        except BaseException:
            self.node.close()
            raise

    def _check_contract(self, meta: Metadata) -> None:
        missing = [k for k in [*meta.observation.modalities, *meta.observation.text_keys]
                   if k not in {t.key for t in self.cfg.topics}]
        if missing:
            raise ValueError(f"the policy reads {missing}, which no configured topic provides "
                             f"(topics give {[t.key for t in self.cfg.topics]})")
        shape = tuple(getattr(meta.action_space, "shape", ()) or ())
        if shape != tuple(self.cfg.action_shape):
            raise ValueError(f"the policy's actions have shape {shape}; the bridge is configured for "
                             f"{tuple(self.cfg.action_shape)} (action.shape)")

    def wait_for_topics(self, timeout_s: float = 10.0) -> Snapshot:
        """Block until every topic has a fresh message (or the timeout); return the last snapshot."""
        deadline = time.monotonic() + timeout_s
        while True:
            snap = self.node.sync.snapshot()
            if snap.ok or time.monotonic() > deadline:
                return snap
            time.sleep(0.02)

    def run(self, seconds: float | None = None, episodes: int | None = None) -> dict:
        """Command at rate_hz until `seconds` pass or the robot reports `episodes` finished episodes."""
        self.controller.stop_after_episodes = episodes
        max_ticks = None if seconds is None else max(1, round(seconds * self.cfg.rate_hz))
        record = self.loop.run_episode(seed=None, max_ticks=max_ticks)
        stats = {**self.loop.stats.summary(), "stale_ticks": self.loop.stale_ticks}
        c = self.controller
        return {"record": record, "stats": stats, "sensor_to_command_ms": percentiles(c.latency_ms),
                "newest_sensor_to_command_ms": percentiles(c.newest_latency_ms),
                "command_rate": c.rate_report(), "episodes": list(self.node.episodes),
                "received": dict(self.node.sync.received), "rejected": dict(self.node.sync.rejected)}

    def stop(self) -> None:
        self.loop.stop()

    def close(self) -> None:
        """Stop the loop, command the safe action once more (see the module docstring), shut the node down."""
        try:
            self.loop.close()
            self.controller.rest = None
            self.controller.apply(self.controller.safe_action())
        finally:
            self.node.close()
