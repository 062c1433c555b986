"""In-process policies for the bridge, behind the same interface as `PolicyClient`.

The bridge's `ControlLoop` talks to a client: `ensure_connected() -> Metadata`, `act(obs, timeout)
-> Reply`, `retry_in`, `connects`, `stats()`, `close()`. `LocalPolicy` gives any callable
`fn(obs) -> action | chunk` (or `{"actions": ...}`, what a graft policy's `infer` returns) that
interface, so an agent in this process gets exactly the watchdog, chunking and clamping a
`graft serve` client gets. Each call runs on a daemon thread and `act` returns by its timeout even
when `fn` hangs: the loop counts a missed deadline and holds the safe action; a hung call is never
joined, so it cannot keep the process from exiting.

`ReachObservationExpert` is the reach arm's Jacobian expert (`graft.envs.experts.ReachExpert`) computed
from an observation instead of the simulator: joint angles and tip from `proprio`, the target's
(x, y) from a `target` entry (the sim node publishes it; a real robot would get it from perception).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np
from graft.envs.robot.client import Reply
from graft.envs.robot.protocol import Metadata
from graft.envs.robot.ros2.reach_converters import LINK_LENGTHS


class LocalPolicy:
    """`fn(obs) -> action (*shape) or chunk (chunk_size, *shape)`, bare or as `{"actions": ...}`, as a
    PolicyClient (see module docstring)."""

    def __init__(self, fn: Callable[[Mapping[str, Any]], Any], metadata: Metadata):
        self.fn, self.metadata = fn, metadata
        self.uri = f"local:{getattr(fn, '__name__', type(fn).__name__)}"
        self.connects, self.retry_in = 1, 0.0
        self._busy: Future | None = None
        self.answered = self.failed = self.timeouts = 0

    # the PolicyClient interface -------------------------------------------------------------------
    def ensure_connected(self, timeout: float | None = None) -> Metadata:
        return self.metadata

    def act(self, observation: Mapping[str, Any], timeout: float = 1.0) -> Reply:
        sent = time.perf_counter()
        deadline = time.monotonic() + timeout
        busy = self._busy
        if busy is not None and not busy.done():  # the previous call still runs: wait for it, bounded
            try:
                busy.exception(timeout=max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                self.timeouts += 1
                raise TimeoutError(f"{self.uri} is still busy with an earlier observation") from None
        future: Future = Future()
        thread = threading.Thread(target=self._call, args=(future, observation), daemon=True,
                                  name="local-policy")
        self._busy = future
        thread.start()
        try:
            actions, model_ms = future.result(timeout=max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            self.timeouts += 1
            raise TimeoutError(f"{self.uri} gave no action within {timeout * 1000:.0f} ms") from None
        return Reply(actions, (time.perf_counter() - sent) * 1000, model_ms, 1)

    def _call(self, future: Future, observation: Mapping[str, Any]) -> None:
        start = time.perf_counter()
        try:
            actions = self._as_chunk(self.fn(observation))
        except Exception as exc:  # noqa: BLE001 - re-raised in act(): the loop reports it and holds the safe action
            self.failed += 1
            future.set_exception(exc)
            return
        self.answered += 1
        future.set_result((actions, (time.perf_counter() - start) * 1000))

    def _as_chunk(self, action: Any) -> np.ndarray:
        """One action is repeated chunk_size times; anything else is passed on for the loop to check."""
        if isinstance(action, Mapping):
            if "actions" not in action:
                raise ValueError(f"{self.uri} answered a map without 'actions' (keys {sorted(action)})")
            action = action["actions"]
        arr = np.asarray(action)
        shape = tuple(self.metadata.action_space.shape or ())
        if arr.shape == shape:
            return np.repeat(arr[None], self.metadata.chunk_size, axis=0)  # (chunk_size, *shape)
        return arr

    def stats(self, timeout: float = 5.0) -> dict:
        return {"answered": self.answered, "failed": self.failed, "timeouts": self.timeouts}

    def close(self) -> None:
        """Nothing to close; a hung call stays on its daemon thread."""


class ReachObservationExpert:
    """Damped-least-squares reaching from `proprio` and `target` (see the module docstring)."""

    __name__ = "reach_expert"

    def __init__(self, gain: float = 6.0, damping: float = 0.03, max_joint_speed: float = 4.0):
        self.gain, self.damping, self.max_joint_speed = float(gain), float(damping), float(max_joint_speed)
        self.l1, self.l2 = LINK_LENGTHS

    def __call__(self, obs: Mapping[str, Any]) -> np.ndarray:
        proprio = np.asarray(obs["proprio"], np.float64)  # (6,) q1, q2, dq1, dq2, tip x, y
        target = np.asarray(obs["target"], np.float64)[:2]  # (2,) x, y metres
        q1, q2 = proprio[0], proprio[1]
        s1, c1, s12, c12 = np.sin(q1), np.cos(q1), np.sin(q1 + q2), np.cos(q1 + q2)
        jac = np.array([[-self.l1 * s1 - self.l2 * s12, -self.l2 * s12],
                        [self.l1 * c1 + self.l2 * c12, self.l2 * c12]])  # (2, 2) d tip / d q
        error = target - proprio[4:6]
        dq = jac.T @ np.linalg.solve(jac @ jac.T + self.damping**2 * np.eye(2), error)
        return np.clip(self.gain * dq / self.max_joint_speed, -1.0, 1.0).astype(np.float32)
