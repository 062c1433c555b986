"""The robot-side control loop: fixed rate, action chunking, bounds clamping and a watchdog.

    loop = ControlLoop(controller, PolicyClient(uri), deadline_s=0.25)
    summary = loop.run_episodes(5, seed=0)      # or loop.run_episode(seed) for one
    loop.close()

Every tick (1 / controller.rate_hz seconds, paced on the monotonic clock; a tick that starts more
than one period late is an overrun and the schedule re-anchors instead of bursting):

1. a finished policy request is collected: its chunk of actions is clamped into the action space
   and becomes the active chunk, or, while a chunk is still running, the queued one that starts
   exactly when the active one ends;
2. the watchdog: a request still unanswered at its deadline counts as missed (reported through
   `on_event` and the stats); its answer, if it ever comes, is thrown away;
3. the action for this tick is taken from the active chunk by time (chunk action i runs during
   [start + i / chunk_rate_hz, start + (i + 1) / chunk_rate_hz), measured on the tick schedule so
   sub-millisecond jitter cannot flip a boundary); with no action available the controller's
   safe action is held and counted;
4. when no request is in flight and nothing is queued, the controller is observed and the next
   request goes to a single background worker (the network never blocks the loop): the next
   chunk is computed while the current one executes.

The policy's rate is thus the chunk rate (chunk_rate_hz / chunk_size) when it keeps up, and the
robot's own rate never depends on it. Observations are taken on the loop's thread (GL contexts
are thread-bound); only the client runs on the worker.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from graft.envs.robot.client import PolicyClient
from graft.envs.robot.controllers import Controller
from graft.envs.robot.protocol import ServerError, percentiles

log = logging.getLogger(__name__)
KEEP = 100_000  # timing samples kept per series (the most recent ones)
EPS = 1e-6  # seconds: float slack when a chunk boundary falls exactly on a tick


@dataclass
class Chunk:
    actions: np.ndarray  # (H, *action_shape), already clamped
    start: float  # monotonic seconds when action 0 starts


@dataclass
class Pending:
    future: Future
    sent: float
    deadline: float
    missed: bool = False


@dataclass
class LoopStats:
    ticks: int = 0
    overruns: int = 0  # ticks that started more than one period late
    safe_ticks: int = 0  # ticks that held the safe action
    chunks: int = 0  # answers used
    late: int = 0  # answers used after the robot had begun holding the safe action (incl. episode starts)
    missed: int = 0  # requests whose deadline passed unanswered (watchdog)
    errors: int = 0  # error answers from the server (e.g. bad_observation)
    connection_errors: int = 0  # requests that failed because the server was unreachable
    clamped: int = 0  # actions moved into the bounds
    invalid: int = 0  # actions replaced by the safe action (NaN, wrong shape, out-of-range index)
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=KEEP))
    model_ms: deque = field(default_factory=lambda: deque(maxlen=KEEP))
    overhead_ms: deque = field(default_factory=lambda: deque(maxlen=KEEP))  # latency minus server model time
    tick_lag_ms: deque = field(default_factory=lambda: deque(maxlen=KEEP))
    events: list = field(default_factory=list)  # the first `max_events` watchdog/error reports

    def summary(self) -> dict:
        counts = {k: v for k, v in self.__dict__.items() if isinstance(v, int)}
        return {**counts, "events": self.events, "latency_ms": percentiles(self.latency_ms),
                "model_ms": percentiles(self.model_ms), "overhead_ms": percentiles(self.overhead_ms),
                "tick_lag_ms": percentiles(self.tick_lag_ms)}


def clamp_chunk(actions: Any, space: gym.Space, chunk_size: int, safe: Any) -> tuple[np.ndarray, int, int]:
    """Actions `(H, *shape)` moved into `space` -> (chunk, clamped count, invalid count).

    Box: NaN/inf rows become `safe`, the rest is clipped. Discrete: rows that are not an integer in
    range become `safe`. A wrong overall shape makes the whole chunk `safe`.
    """
    arr = np.asarray(actions)
    if isinstance(space, gym.spaces.Box):
        want = (chunk_size, *space.shape)
        if arr.shape != want or arr.dtype.kind not in "iuf":
            return np.repeat(np.asarray(safe, space.dtype)[None], chunk_size, 0), 0, chunk_size
        arr = arr.astype(np.float64)
        bad = ~np.isfinite(arr).reshape(chunk_size, -1).all(-1)
        arr[bad] = safe
        clipped = np.clip(arr, space.low, space.high)
        moved = int((~np.isclose(clipped, arr)).reshape(chunk_size, -1).any(-1).sum())
        return clipped.astype(space.dtype), moved, int(bad.sum())
    if isinstance(space, gym.spaces.Discrete):
        if arr.shape != (chunk_size,) or arr.dtype.kind not in "iuf":
            return np.full(chunk_size, safe, np.int64), 0, chunk_size
        with np.errstate(invalid="ignore"):
            inside = (arr >= space.start) & (arr < space.start + space.n)
            ok = np.isfinite(arr) & (arr == np.round(arr)) & inside
        out = np.where(ok, np.nan_to_num(arr), safe).astype(np.int64)
        return out, 0, int((~ok).sum())
    raise TypeError(f"the control loop supports Box and Discrete action spaces, got {space}")


class ControlLoop:
    """Run a controller against a policy server (see the module docstring)."""

    def __init__(self, controller: Controller, client: PolicyClient, deadline_s: float = 0.25,
                 max_events: int = 50, on_event: Callable[[str, str], None] | None = None):
        if deadline_s <= 0:
            raise ValueError(f"deadline_s must be positive, got {deadline_s}")
        self.controller, self.client, self.deadline_s = controller, client, float(deadline_s)
        self.stats = LoopStats()
        self.max_events, self.on_event = max_events, on_event
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-client")
        self._t0 = time.monotonic()
        # fail fast on a wrong address or token
        self.meta = self._worker.submit(client.ensure_connected).result()
        if self.meta.chunk_size < 1:
            raise ValueError(f"server chunk_size {self.meta.chunk_size} < 1")
        self._pending: Pending | None = None
        self._active: Chunk | None = None
        self._queued: np.ndarray | None = None
        self._waiting = False  # holding the safe action until an answer comes
        self._stop = threading.Event()

    def stop(self) -> None:
        """End the running episode after its current tick, and run no more (callable from any thread)."""
        self._stop.set()

    # -- reporting ------------------------------------------------------------------------------
    def report(self, kind: str, detail: str) -> None:
        if len(self.stats.events) < self.max_events:
            t = round(time.monotonic() - self._t0, 3)
            self.stats.events.append({"t": t, "kind": kind, "detail": detail})
        log.warning("control loop %s: %s", kind, detail)
        if self.on_event is not None:
            self.on_event(kind, detail)

    # -- one tick's parts -------------------------------------------------------------------------
    def _request(self, obs: dict, deadline: float) -> Any:
        return self.client.act(obs, timeout=max(deadline - time.monotonic(), 0.001))

    def _submit(self, now: float) -> None:
        if self.client.retry_in > 0:  # backing off after a failed connect: hold, do not hammer
            return
        obs = self.controller.observe()
        deadline = now + self.deadline_s
        self._pending = Pending(self._worker.submit(self._request, obs, deadline), now, deadline)

    def _collect(self, now: float, t: float) -> None:
        """`now`: the clock (for the deadline); `t`: this tick's scheduled time (for chunk timing)."""
        pending, s = self._pending, self.stats
        if pending is None:
            return
        if not pending.future.done():
            if now > pending.deadline and not pending.missed:
                pending.missed = True
                self._missed()
            return
        self._pending = None
        try:
            reply = pending.future.result()
        except TimeoutError:
            if not pending.missed:
                self._missed()
            return
        except ServerError as exc:
            s.errors += 1
            self.report("server_error", str(exc))
            return
        except ConnectionError as exc:
            s.connection_errors += 1
            self.report("connection_error", f"{exc}; holding the safe action")
            return
        except Exception as exc:  # e.g. an observation the codec cannot send: report, hold, go on
            s.errors += 1
            self.report("client_error", f"{type(exc).__name__}: {exc}")
            return
        if pending.missed:
            return  # answered after its deadline: stale
        space, meta = self.controller.action_space, self.meta
        safe = self.controller.safe_action()
        chunk, clamped, invalid = clamp_chunk(reply.actions, space, meta.chunk_size, safe)
        s.clamped, s.invalid, s.chunks = s.clamped + clamped, s.invalid + invalid, s.chunks + 1
        s.latency_ms.append(reply.latency_ms)
        s.model_ms.append(reply.model_ms)
        s.overhead_ms.append(reply.latency_ms - reply.model_ms)
        if self._active is None or t >= self._end(self._active) - EPS:
            s.late += int(self._waiting)
            self._active, self._queued = Chunk(chunk, t), None
        else:
            self._queued = chunk

    def _missed(self) -> None:
        self.stats.missed += 1
        self.report("deadline_missed",
                    f"no answer within {self.deadline_s * 1000:.0f} ms; holding the safe action")

    def _end(self, chunk: Chunk) -> float:
        return chunk.start + len(chunk.actions) / self.meta.control_rate_hz

    def _action(self, t: float) -> Any:
        active = self._active
        if active is not None and t >= self._end(active) - EPS and self._queued is not None:
            active = self._active = Chunk(self._queued, self._end(active))
            self._queued = None
        if active is not None:
            i = int((t - active.start) * self.meta.control_rate_hz + EPS * self.meta.control_rate_hz)
            if 0 <= i < len(active.actions):
                self._waiting = False
                return active.actions[i]
        self._waiting = True
        self.stats.safe_ticks += 1
        return self.controller.safe_action()

    # -- episodes -----------------------------------------------------------------------------------
    def run_episode(self, seed: int | None = None, max_ticks: int | None = None) -> dict:
        """Reset the controller and tick until it is done (or `max_ticks`); return the episode record."""
        self._drain()
        self.controller.reset(seed)
        before = LoopStats(**{k: v for k, v in self.stats.__dict__.items() if isinstance(v, int)})
        period = 1.0 / self.controller.rate_hz
        start = time.monotonic()
        tick = 0
        limit = float("inf") if max_ticks is None else max_ticks
        while not (self.controller.done or self._stop.is_set() or tick >= limit):
            target = start + tick * period
            now = time.monotonic()
            if now < target:
                time.sleep(target - now)
                now = time.monotonic()
            lag = now - target
            if lag > period:  # overrun: re-anchor the schedule rather than catching up in a burst
                self.stats.overruns += 1
                start = now - tick * period
                target = now
            self.stats.tick_lag_ms.append(lag * 1000)
            # Chunks are timed on the tick schedule, not the jittery clock: a chunk boundary that falls
            # on a tick then lands on the same side of it every time.
            self._collect(now, target)
            action = self._action(target)
            if self._pending is None and self._queued is None:
                self._submit(now)
            self.controller.apply(action)
            self.stats.ticks += 1
            tick += 1
        seconds = time.monotonic() - start
        s = self.stats
        return {"seed": seed, "success": bool(self.controller.success), "ticks": tick,
                "seconds": round(seconds, 3), "rate_hz": round(tick / seconds, 2) if seconds > 0 else None,
                "chunks": s.chunks - before.chunks, "safe_ticks": s.safe_ticks - before.safe_ticks,
                "missed": s.missed - before.missed}

    def run_episodes(self, episodes: int, seed: int = 0, max_ticks: int | None = None) -> dict:
        records = []
        for i in range(episodes):
            if self._stop.is_set():
                break
            records.append(self.run_episode(seed + i, max_ticks))
        rate = float(np.mean([r["success"] for r in records])) if records else 0.0
        return {"episodes": len(records), "success_rate": rate,
                "records": records, "stats": self.stats.summary(),
                "reconnects": max(self.client.connects - 1, 0), "server": self.meta.model}

    def server_stats(self, timeout: float = 5.0) -> dict:
        """The server's counters, asked on the loop's client thread (between episodes)."""
        return self._worker.submit(self.client.stats, timeout).result()

    def _drain(self) -> None:
        """Forget chunks and wait out a request left from the last episode (bounded by its deadline)."""
        if self._pending is not None:
            try:
                self._pending.future.result(timeout=self.deadline_s + 1.0)
            except Exception:
                pass
        self._pending, self._active, self._queued, self._waiting = None, None, None, False

    def close(self) -> None:
        self._drain()
        self._worker.submit(self.client.close).result()
        self._worker.shutdown(wait=True)
