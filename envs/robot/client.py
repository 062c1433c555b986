"""A synchronous policy-server client with a deadline per request and reconnect backoff.

    client = PolicyClient("ws://127.0.0.1:8765", token=None)
    meta = client.connect()                       # the server's Metadata (handshake)
    reply = client.act(obs, timeout=0.2)          # Reply: actions (chunk_size, *action_shape), timings
    client.close()

The client does not validate observations: the server checks each one against the handshake.
Built on `websockets.sync.client` (no event loop of ours); one client object is used from one
thread at a time (the control loop's background worker).

Failures are bounded in time: `act` returns within `timeout` seconds (plus scheduling noise) or
raises `TimeoutError`; a dropped connection raises `ConnectionError` and the next `act` reconnects,
but only once the backoff delay has passed (exponential from `backoff_initial_s` to
`backoff_max_s`, reset by a successful connect). A call inside the backoff window raises
`ConnectionError` at once instead of hammering a dead server. Answers to requests that timed out
are never waited for: a timed-out request closes its connection (so the server stops working
through a stale backlog) and the next `act` reconnects at once, without backoff.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from graft.envs.robot.codec import CodecError, decode, encode
from graft.envs.robot.protocol import Metadata, ServerError
from graft.envs.spec import ModalitySpec, ObservationSpec
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect


@dataclass
class Reply:
    actions: np.ndarray  # (chunk_size, *action_shape)
    latency_ms: float  # send -> answer, measured here
    model_ms: float  # the forward pass that produced it, measured by the server
    batch_size: int  # observations in that forward pass


def handshake_spec(modalities: Mapping[str, Mapping], text_keys: tuple[str, ...]) -> ObservationSpec:
    """The handshake's modalities (ModalitySpec.to_json each) and text keys as an ObservationSpec."""
    specs = {k: ModalitySpec(m["name"], tuple(m["shape"]), m["dtype"], m.get("low"), m.get("high"),
                             m.get("description", "")) for k, m in modalities.items()}
    return ObservationSpec(specs, text_keys)


class PolicyClient:
    """Talk to `graft serve` (see the module docstring)."""

    def __init__(self, uri: str, token: str | None = None, connect_timeout_s: float = 5.0,
                 backoff_initial_s: float = 0.1, backoff_max_s: float = 2.0,
                 max_message_bytes: int | None = None):
        if not uri.startswith(("ws://", "wss://")):
            raise ValueError(f"server address must start with ws:// or wss://, got {uri!r}")
        self.uri, self.token = uri, token
        self.connect_timeout_s = float(connect_timeout_s)
        self.backoff_initial_s, self.backoff_max_s = float(backoff_initial_s), float(backoff_max_s)
        self.max_message_bytes = max_message_bytes
        self.metadata: Metadata | None = None
        self._ws: ClientConnection | None = None
        self._next_id = 0
        self._backoff, self._next_attempt = 0.0, 0.0
        self.connects = 0  # successful connects (1 + reconnects)
        self.failed_connects = 0

    # -- connection ---------------------------------------------------------------------------
    def connect(self, timeout: float | None = None) -> Metadata:
        """Open the websocket and read the handshake; raise ConnectionError (and back off) on failure."""
        self.close()
        limit = self.connect_timeout_s
        timeout = limit if timeout is None else max(min(timeout, limit), 0.01)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = connect(self.uri, additional_headers=headers, open_timeout=timeout, close_timeout=0.5,
                         max_size=self.max_message_bytes or 16 * 1024 * 1024, compression=None, proxy=None)
        except InvalidStatus as exc:
            self._failed()
            status = exc.response.status_code
            body = exc.response.body.decode(errors="replace").strip()
            why = "missing or wrong token" if status == 401 else body
            raise ConnectionError(f"{self.uri} refused the connection: HTTP {status} ({why})") from exc
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self._failed()
            raise ConnectionError(f"cannot connect to {self.uri}: {exc}") from exc
        try:
            meta = Metadata.from_message(decode(ws.recv(timeout=timeout), None), handshake_spec)
        except (TimeoutError, ConnectionClosed, CodecError, ValueError, KeyError, TypeError) as exc:
            ws.close()
            self._failed()
            raise ConnectionError(f"{self.uri} sent no valid metadata handshake: {exc}") from exc
        if meta.timing.get("warning") and self.connects == 0:  # once per client, not per reconnect
            warnings.warn(f"{self.uri}: {meta.timing['warning']}", RuntimeWarning, stacklevel=2)
        self._ws, self.metadata = ws, meta
        self._backoff, self._next_attempt = 0.0, 0.0
        self.connects += 1
        return meta

    def _failed(self) -> None:
        self.failed_connects += 1
        doubled = min(self._backoff * 2, self.backoff_max_s)
        self._backoff = self.backoff_initial_s if self._backoff == 0 else doubled
        self._next_attempt = time.monotonic() + self._backoff

    @property
    def retry_in(self) -> float:
        """Seconds until the next connect attempt is allowed (0 when connected or ready to try)."""
        if self._ws is not None:
            return 0.0
        return max(self._next_attempt - time.monotonic(), 0.0)

    def ensure_connected(self, timeout: float | None = None) -> Metadata:
        if self._ws is not None and self.metadata is not None:
            return self.metadata
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            raise ConnectionError(f"not connected to {self.uri}; next attempt in {wait:.2f} s (backoff)")
        return self.connect(timeout)

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass
            self._ws = None

    def __enter__(self) -> "PolicyClient":
        self.ensure_connected()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------------
    def request(self, message: Mapping[str, Any], timeout: float, reply_type: str) -> dict:
        """Send one message and wait up to `timeout` s for the answer with its id."""
        deadline = time.monotonic() + timeout
        self.ensure_connected(timeout)
        self._next_id += 1
        ws, rid = self._ws, self._next_id
        try:
            ws.send(encode({**message, "id": rid}))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer from {self.uri} within {timeout * 1000:.0f} ms")
                try:
                    answer = decode(ws.recv(timeout=left), None)
                except TimeoutError:
                    # drop the connection (see the module docstring); a reconnect on loopback takes ~1 ms
                    self.close()
                    raise TimeoutError(f"no answer from {self.uri} within {timeout * 1000:.0f} ms") from None
                if not isinstance(answer, dict):
                    raise ConnectionError(f"{self.uri} sent a non-map message")
                if answer.get("id") not in (rid, None):
                    continue  # the late answer to an earlier request
                if answer.get("type") == "error":
                    raise ServerError(str(answer.get("code")), str(answer.get("error")))
                if answer.get("type") != reply_type:
                    raise ConnectionError(f"expected a {reply_type!r} answer, got {answer.get('type')!r}")
                return answer
        except ConnectionClosed as exc:
            self.close()
            self._failed()
            raise ConnectionError(f"connection to {self.uri} closed: {exc}") from exc
        except CodecError as exc:
            self.close()
            raise ConnectionError(f"undecodable answer from {self.uri}: {exc}") from exc

    def act(self, observation: Mapping[str, Any], timeout: float = 1.0) -> Reply:
        """One observation -> one action chunk; the observation is cut to the keys the server reads."""
        sent = time.perf_counter()
        meta = self.ensure_connected(timeout)
        answer = self.request({"type": "act", "observation": meta.select(observation)}, timeout, "action")
        latency = (time.perf_counter() - sent) * 1000
        actions = answer.get("actions")
        if not isinstance(actions, np.ndarray):
            raise ConnectionError(f"{self.uri} answered without an actions array")
        return Reply(actions, latency, float(answer.get("model_ms", 0.0)), int(answer.get("batch_size", 1)))

    def stats(self, timeout: float = 5.0) -> dict:
        return self.request({"type": "stats"}, timeout, "stats")

    def ping(self, timeout: float = 5.0) -> float:
        start = time.perf_counter()
        self.request({"type": "ping"}, timeout, "pong")
        return (time.perf_counter() - start) * 1000
