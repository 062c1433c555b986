"""The policy server: a policy (agent/policy.py) behind a websocket, batching concurrent clients.

    server = PolicyServer(agent_policy(policy), metadata_for(policy, env, settings, model_info), settings,
                          check=policy.check_text)
    server.run()                                   # until SIGTERM / SIGINT

Protocol, codec and the metadata handshake are shared with the client and live in
`graft.envs.robot` (protocol.py documents the messages). Here:

- Every connection first receives the metadata. Each `act` observation is validated once, here,
  before it is queued: against the handshake (`validate_observation` on the policy's
  `observation_spec()`, one check per modality), then the text rules of `check` (the policy's
  `check_text`); the policy then runs on the batch with `validated=True`. A bad observation gets a
  `bad_observation` error naming what was expected, and the connection stays open. Anything
  undecodable (not msgpack, truncated, a text frame, not a map, an unknown type) gets a
  `bad_message` error; a model exception gets `server_error` for that request only. Nothing a
  client sends stops the server.
- Valid observations from all connections go through one `Batcher`: one forward pass per batch
  (`max_batch`, `max_wait_ms`), run on a single model thread.
- Action chunks: the text Agent predicts one action per observation, so a chunk of `chunk_size`
  repeats it (`(chunk_size, *action_shape)`; default chunk_size 1); a policy that predicts chunks
  (`ChunkPolicy`) returns `(B, chunk_size, *action_shape)`, served as is.
- Wire formats (`protocol`): graft's own (protocol.py: typed envelopes, error maps) or openpi's
  (`protocol="openpi"`, agent/serve_openpi.py: what `openpi_client.WebsocketClientPolicy` speaks).
  Both go through the same `act` (validation, text check, batching), limits and auth rules.
- Start-up timing: `calibrate(observation)` times the policy on a real observation and puts
  `chunk_timing` (inference beside one chunk's execution time, and a warning when inference is
  slower) in the handshake of both wires; the warning is logged too.
- Security: with a `token`, a client must send `Authorization: Bearer <token>` (openpi: `Api-Key
  <token>`) in the websocket handshake (compared with `hmac.compare_digest`) or gets HTTP 401. Binding to anything but a
  loopback address without a token is refused before any socket opens. Messages are capped at
  `max_message_bytes` (a bigger one closes that connection with code 1009), compression is off
  (no decompression bombs), and at most `max_clients` connections are open at once (HTTP 503).
- `debug_delay_ms` sleeps before every batch: a stalled model for watchdog tests and demos.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import gymnasium as gym
import numpy as np
from graft.agent.serve_batching import Batcher
from graft.envs.robot.codec import CodecError, decode, encode
from graft.envs.robot.protocol import (
    BAD_MESSAGE,
    BAD_OBSERVATION,
    MAX_TEXT_CHARS,
    SERVER_ERROR,
    Metadata,
    chunk_timing,
    validate_observation,
)
from graft.envs.spec import ObservationError
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

log = logging.getLogger(__name__)
Policy = Callable[[Mapping[str, Any]], np.ndarray]  # batched obs dict -> actions (B, *action_shape)


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8765  # 0: any free port (the chosen one is printed and passed to `ready`)
    token: str | None = None
    max_batch: int = 8
    max_wait_ms: float = 5.0
    chunk_size: int = 1
    max_message_bytes: int = 4 * 1024 * 1024
    max_clients: int = 64
    max_text: int = MAX_TEXT_CHARS
    debug_delay_ms: float = 0.0
    protocol: str = "graft"  # graft | openpi (agent/serve_openpi.py)
    openpi_keys: dict | None = None  # openpi client key -> graft key, on top of openpi_wire.KEY_MAP


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other host name may resolve anywhere


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a shared secret (raise ValueError before binding)."""
    if not token and not is_loopback(host):
        raise ValueError(f"refusing to serve on {host!r} without an auth token: set token= (or the "
                         "GRAFT_SERVE_TOKEN environment variable); only loopback addresses (127.0.0.1, ::1, "
                         "localhost) may be served without one")


def agent_policy(agent) -> Policy:
    """A policy of agent/policy.py (Agent or ChunkPolicy) as a server policy: batched, already
    validated observations -> `infer_batch` actions (B, *action_shape) or chunks (B, chunk, ...).
    A served text Agent only acts, so it scores on merged adapters (`deploy`, agent/fast_path.py)."""
    if hasattr(agent, "deploy"):
        agent.deploy = True

    def policy(obs: Mapping[str, Any]) -> np.ndarray:
        return np.asarray(agent.infer_batch(obs, validated=True)["actions"])
    return policy


def metadata_for(agent, env: gym.Env | None, settings: ServeSettings, model: Mapping[str, Any],
                 control_rate_hz: float | None = None) -> Metadata:
    """The handshake for a policy: its `observation_spec()`, its action space, and the control rate
    (given, else the env's 1 / dt, else 10 Hz)."""
    if control_rate_hz is None:
        dt = getattr(env.unwrapped, "dt", None) if env is not None else None
        control_rate_hz = 1.0 / dt if dt else 10.0
    return Metadata(agent.observation_spec(), agent.action_space,
                    control_rate_hz=float(control_rate_hz), chunk_size=settings.chunk_size,
                    action_names=getattr(agent, "action_names", None), model=dict(model),
                    max_message_bytes=settings.max_message_bytes, max_batch=settings.max_batch,
                    auth=bool(settings.token))


class PolicyServer:
    """Serve `policy` over websockets (see the module docstring)."""

    def __init__(self, policy: Policy, metadata: Metadata, settings: ServeSettings,
                 check: Callable[[Mapping[str, Any]], None] | None = None,
                 policy_stats: Callable[[], dict] | None = None):
        check_bind(settings.host, settings.token)
        if settings.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {settings.chunk_size}")
        self.policy, self.meta, self.settings = policy, metadata, settings
        self.check = check  # the policy's text rules, after the handshake's checks (ObservationError)
        self.policy_stats = policy_stats  # extra counters for `stats`, e.g. unparseable answers
        self.wire = make_wire(settings.protocol, self)
        self._open: set[ServerConnection] = set()
        self.started = time.monotonic()
        self.counters = {"connections": 0, "rejected": 0, "oversized": 0, "answered": 0}
        self.errors: dict[str, int] = {}
        self.batcher: Batcher | None = None
        self.port: int | None = None

    # -- the model side -------------------------------------------------------------------------
    def run_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """Observations validated by `handle` -> one chunk `(chunk_size, *action_shape)` each, one forward."""
        spec = self.meta.observation
        # (B, *spec.shape) per modality, a list of B strings per text key
        batch: dict[str, Any] = {m: np.stack([o[m] for o in observations]) for m in spec.modalities}
        batch.update({k: [o[k] for o in observations] for k in spec.text_keys})
        actions = np.asarray(self.policy(batch))  # (B, *action_shape) or (B, chunk_size, *action_shape)
        if actions.shape[0] != len(observations):
            raise RuntimeError(f"policy returned {len(actions)} actions for {len(observations)} observations")
        single = len(self.meta.action_space.shape) + 1
        if actions.ndim == single + 1:  # the policy plans chunks itself
            if actions.shape[1] != self.settings.chunk_size:
                raise RuntimeError(f"policy returned chunks of {actions.shape[1]} actions, the handshake "
                                   f"promised {self.settings.chunk_size}")
            return list(actions)
        if actions.ndim != single:
            raise RuntimeError(f"policy returned shape {actions.shape}; expected (B, *action_shape) or "
                               f"(B, chunk_size, *action_shape) for {self.meta.action_space}")
        return [np.repeat(a[None], self.settings.chunk_size, axis=0) for a in actions]

    def calibrate(self, observation: Mapping[str, Any], repeats: int = 5) -> dict:
        """Time the policy on one real observation (a warm-up, then `repeats` timed batches of one)
        and put `chunk_timing` in the handshake; log its warning if inference is slower than execution."""
        obs = validate_observation(self.meta.select(observation), self.meta.observation, self.settings.max_text)
        self.run_batch([obs])
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            time.sleep(self.settings.debug_delay_ms / 1000)  # a simulated stall is part of inference
            self.run_batch([obs])
            times.append(1000 * (time.perf_counter() - started))
        self.meta.timing = chunk_timing(times, self.settings.chunk_size, self.meta.control_rate_hz)
        if self.meta.timing["warning"]:
            log.warning(self.meta.timing["warning"])
        return self.meta.timing

    async def act(self, observation: Any, alive: Callable[[], bool] | None = None):
        """One observation -> its batched answer (`Batcher.submit`). Raises ObservationError for an
        observation that breaks the handshake or the policy's text rules, before it is queued."""
        obs = validate_observation(observation, self.meta.observation, self.settings.max_text)
        if self.check is not None:
            self.check(obs)
        return await self.batcher.submit(obs, alive)

    # -- the network side -----------------------------------------------------------------------
    def _error(self, code: str, message: str, rid: Any = None) -> dict:
        self.errors[code] = self.errors.get(code, 0) + 1
        return {"type": "error", "id": rid, "code": code, "error": message}

    async def handle(self, raw: Any, alive: Callable[[], bool] | None = None) -> dict:
        """One incoming frame -> the answer (never raises for anything a client can send)."""
        if isinstance(raw, str):
            return self._error(BAD_MESSAGE, "expected a binary msgpack frame, got a text frame")
        try:
            msg = decode(raw, self.settings.max_message_bytes)
        except CodecError as exc:
            return self._error(BAD_MESSAGE, str(exc))
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            return self._error(BAD_MESSAGE, "a message must be a map with a str 'type' (act | stats | ping)")
        rid = msg.get("id")
        rid = rid if isinstance(rid, int) and not isinstance(rid, bool) else None
        kind = msg["type"]
        if kind == "ping":
            return {"type": "pong", "id": rid}
        if kind == "stats":
            return {"type": "stats", "id": rid, **self.stats()}
        if kind != "act":
            why = f"unknown message type {kind[:40]!r}; expected act | stats | ping"
            return self._error(BAD_MESSAGE, why, rid)
        try:
            out = await self.act(msg.get("observation"), alive)
        except ObservationError as exc:
            return self._error(BAD_OBSERVATION, str(exc), rid)
        except ConnectionAbortedError as exc:  # the client left while its request waited: nobody to tell
            return self._error(SERVER_ERROR, str(exc), rid)
        except Exception as exc:  # the model failed on this observation: answer, keep serving
            log.exception("policy failed")
            return self._error(SERVER_ERROR, f"{type(exc).__name__}: {exc}", rid)
        self.counters["answered"] += 1
        return {"type": "action", "id": rid, "actions": out.value, "model_ms": round(out.model_ms, 3),
                "queue_ms": round(out.queue_ms, 3), "batch_size": out.batch_size}

    async def _connection(self, ws: ServerConnection) -> None:
        self._open.add(ws)
        self.counters["connections"] += 1
        try:
            await ws.send(self.wire.hello())
            async for raw in ws:
                await ws.send(await self.wire.answer(raw, alive=lambda: ws.state is State.OPEN))
        except ConnectionClosed as exc:
            codes = {frame.code for frame in (exc.rcvd, exc.sent) if frame is not None}
            if 1009 in codes:  # message too big
                self.counters["oversized"] += 1
        finally:
            self._open.discard(ws)

    async def _admit(self, connection: ServerConnection, request) -> Any:
        if request.path == "/healthz":  # liveness for orchestrators (as openpi's server): says nothing else
            return connection.respond(HTTPStatus.OK, "OK\n")
        token, scheme = self.settings.token, self.wire.auth_scheme
        if token:
            given = request.headers.get_all("Authorization")  # exactly one header, or it is wrong
            given = given[0] if len(given) == 1 else ""
            if not hmac.compare_digest(given.encode(), f"{scheme} {token}".encode()):
                self.counters["rejected"] += 1
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token: send "
                                          f"'Authorization: {scheme} <token>'\n")
        if len(self._open) >= self.settings.max_clients:
            self.counters["rejected"] += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                      f"server full: {self.settings.max_clients} connections open\n")
        return None

    def stats(self) -> dict:
        return {"uptime_s": round(time.monotonic() - self.started, 3), "open_connections": len(self._open),
                **self.counters, "errors": dict(self.errors),
                **(self.batcher.stats() if self.batcher is not None else {}),
                **(self.policy_stats() if self.policy_stats is not None else {})}

    async def serve(self, stop: asyncio.Future, ready: Callable[[str, int], None] | None = None) -> None:
        """Listen until `stop` resolves; `ready(host, port)` is called once the socket is open."""
        s = self.settings
        # one request in flight per connection (answers go out in order), so a batch can hold at most
        # as many requests as there are open connections
        self.batcher = Batcher(self.run_batch, s.max_batch, s.max_wait_ms / 1000, s.debug_delay_ms / 1000,
                               senders=lambda: len(self._open))
        batching = asyncio.create_task(self.batcher.run())
        try:
            async with serve(self._connection, s.host, s.port, process_request=self._admit,
                             max_size=s.max_message_bytes, compression=None, max_queue=4,
                             server_header=None) as server:
                self.port = server.sockets[0].getsockname()[1]
                if ready is not None:
                    ready(s.host, self.port)
                await stop
        finally:
            batching.cancel()

    def run(self, ready: Callable[[str, int], None] | None = None) -> dict:
        """Serve until SIGTERM or SIGINT; return the final stats."""
        async def main() -> None:
            loop = asyncio.get_running_loop()
            stop = loop.create_future()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
            await self.serve(stop, ready)

        asyncio.run(main())
        return self.stats()


class GraftWire:
    """graft's own wire format (envs/robot/protocol.py): typed envelopes, errors as maps."""

    auth_scheme = "Bearer"

    def __init__(self, server: PolicyServer):
        self.server = server

    def hello(self) -> bytes:
        return encode(self.server.meta.to_message())

    async def answer(self, raw: Any, alive: Callable[[], bool]) -> bytes:
        try:
            answer = await self.server.handle(raw, alive)
        except Exception as exc:  # a bug of ours: report it to this client, keep the server up
            log.exception("unexpected error handling a message")
            answer = self.server._error(SERVER_ERROR, f"{type(exc).__name__}: {exc}")
        return encode(answer)


def make_wire(protocol: str, server: PolicyServer):
    if protocol == "graft":
        return GraftWire(server)
    if protocol == "openpi":
        from graft.agent.serve_openpi import OpenpiWire

        return OpenpiWire(server)
    raise ValueError(f"protocol must be 'graft' (graft's own messages) or 'openpi' (openpi_client's), got {protocol!r}")
