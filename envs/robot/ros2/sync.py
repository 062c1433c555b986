"""The latest message of each topic, with a staleness limit per topic: the bridge's observation sync.

    sync = LatestSync([TopicSlot("/camera/rgb", "rgb", stale_s=0.2), TopicSlot("/mission", "mission")])
    sync.update("rgb", array, stamp_s=1700000000.12)       # from a subscription callback (any thread)
    snap = sync.snapshot()                                  # from the control loop
    snap.ok, snap.problems, snap.observation, snap.oldest_stamp_s, snap.newest_stamp_s

Freshness is judged on this process's monotonic clock at *receipt*, so a robot whose clock is off
(no NTP, sim time) cannot make stale data look fresh. A topic with `stale_s: null` (e.g. the mission,
latched) never goes stale once received. The header stamps are kept for latency measurement only.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TopicSlot:
    topic: str
    key: str  # the observation key (modality name, or a text key such as "mission")
    stale_s: float | None = None  # None: never stale once received


@dataclass
class Latest:
    value: Any
    stamp_s: float | None  # header stamp (ROS time, seconds), None for messages without a header
    received: float  # monotonic seconds


@dataclass
class Snapshot:
    observation: dict[str, Any]
    problems: list[str]  # one line per missing or stale topic; empty: usable
    oldest_stamp_s: float | None  # the oldest header stamp among the values (for latency)
    newest_stamp_s: float | None = None  # the newest one

    @property
    def ok(self) -> bool:
        return not self.problems


class LatestSync:
    """Latest value per topic and the staleness check (see the module docstring)."""

    def __init__(self, slots: Sequence[TopicSlot]):
        keys = [s.key for s in slots]
        if len(set(keys)) != len(keys):
            raise ValueError(f"two topics map to the same observation key: {keys}")
        for s in slots:
            if s.stale_s is not None and s.stale_s <= 0:
                raise ValueError(f"topic {s.topic}: stale_s must be positive or null, got {s.stale_s}")
        self.slots = {s.key: s for s in slots}
        self._latest: dict[str, Latest] = {}
        self._lock = threading.Lock()
        self.received = {k: 0 for k in self.slots}
        self.rejected = {k: 0 for k in self.slots}

    def update(self, key: str, value: Any, stamp_s: float | None = None) -> None:
        item = Latest(value, stamp_s, time.monotonic())
        with self._lock:
            self._latest[key] = item
            self.received[key] += 1

    def reject(self, key: str) -> None:
        with self._lock:
            self.rejected[key] += 1

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        with self._lock:
            latest = dict(self._latest)
        obs, problems, stamps = {}, [], []
        for key, slot in self.slots.items():
            item = latest.get(key)
            if item is None:
                problems.append(f"{slot.topic} ({key}): no message received yet")
                continue
            age = now - item.received
            if slot.stale_s is not None and age > slot.stale_s:
                problems.append(f"{slot.topic} ({key}): stale, last message {age * 1000:.0f} ms ago, "
                                f"limit {slot.stale_s * 1000:.0f} ms")
                continue
            obs[key] = item.value
            if item.stamp_s is not None:
                stamps.append(item.stamp_s)
        return Snapshot(obs, problems, min(stamps) if stamps else None, max(stamps) if stamps else None)
