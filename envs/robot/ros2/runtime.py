"""One rclpy node in its own context, spun on its own thread, and the QoS profiles graft uses.

    runner = NodeRunner("graft_bridge")          # rclpy.Context + Node + SingleThreadedExecutor
    runner.node.create_subscription(...)
    runner.start()                               # spins on a daemon thread (or runner.spin() here)
    runner.close()                               # executor, node and context shut down

A context per node keeps nodes in one process (tests) from sharing rclpy's global state; the domain
comes from ROS_DOMAIN_ID as usual, or `domain_id=`.
"""
from __future__ import annotations

import threading

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

QOS = {
    # best effort, the last 5: cameras and joint states (a late sample is worth less than the next one)
    "sensor": qos_profile_sensor_data,
    "reliable": QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE),
    # transient local: a late joiner still gets the last message (the mission, the target)
    "latched": QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL),
}


def qos(name: str) -> QoSProfile:
    if name not in QOS:
        raise ValueError(f"qos {name!r}; expected one of {sorted(QOS)}")
    return QOS[name]


def stamp_seconds(msg) -> float | None:
    """A message's header stamp in seconds, None without a header or with a zero stamp."""
    header = getattr(msg, "header", None)
    if header is None or (header.stamp.sec == 0 and header.stamp.nanosec == 0):
        return None
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class NodeRunner:
    """A node with a private context and executor (see the module docstring)."""

    def __init__(self, name: str, namespace: str | None = None, domain_id: int | None = None):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(name, namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread: threading.Thread | None = None

    def now_s(self) -> float:
        """The node's clock (ROS time: the system clock unless use_sim_time) in seconds."""
        return self.node.get_clock().now().nanoseconds * 1e-9

    def now_msg(self):
        return self.node.get_clock().now().to_msg()

    def start(self) -> NodeRunner:
        self._thread = threading.Thread(target=self.spin, name=f"spin-{self.node.get_name()}", daemon=True)
        self._thread.start()
        return self

    def spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # the context was shut down under the executor: that is how spinning ends
            if self.context.ok():
                raise

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        try:
            self.node.destroy_node()
        finally:
            if self.context.ok():
                rclpy.shutdown(context=self.context)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
