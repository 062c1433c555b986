"""The policy-server wire protocol: the metadata handshake, the messages, observation checks.

A connection (websocket, binary frames, `graft.envs.robot.codec`) goes:

    client connects (HTTP header `Authorization: Bearer <token>` when the server wants one)
    server -> {"type": "metadata", **Metadata.to_message()}          once, first
    client -> {"type": "act", "id": 7, "observation": {"rgb": ndarray, ..., "mission": str}}
    server -> {"type": "action", "id": 7, "actions": ndarray (chunk_size, *action_shape),
               "model_ms": float, "queue_ms": float, "batch_size": int}
           or {"type": "error", "id": 7, "code": "bad_observation", "error": "what was wrong ..."}
    client -> {"type": "stats"}  ->  {"type": "stats", ...server counters...}
    client -> {"type": "ping"}   ->  {"type": "pong"}

Requests on one connection are answered in order, one at a time; concurrency comes from several
connections, which the server batches into one forward pass. Every observation is checked against
the handshake's observation spec (missing or unknown keys, shape, dtype, range, NaN, text length)
before it reaches the model, and a bad one is answered with an error message naming what was
expected. A message larger than `max_message_bytes` closes the connection (websocket code 1009).

A leaf module: it imports nothing of graft's, so both sides of the wire share it without pulling in
anything else. Observation specs are duck-typed: anything with `modalities` (name -> a spec with
`to_json()`), `text_keys` and `validate(obs)` serves, such as graft.envs.spec.ObservationSpec, which
`Metadata.from_message` gets built by the caller (graft.envs.robot.client.handshake_spec).
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

PROTOCOL_VERSION = 1
MAX_TEXT_CHARS = 512

# error codes in {"type": "error"} replies
BAD_MESSAGE = "bad_message"  # not msgpack, not a map, unknown type, missing field
BAD_OBSERVATION = "bad_observation"  # fails the handshake's observation spec
SERVER_ERROR = "server_error"  # the model raised; the server keeps serving


class ObservationError(ValueError):
    """An observation breaks the handshake's contract (answered with code bad_observation)."""


def _error_type(spec: Any) -> type[Exception]:
    """The ObservationError of the module defining `spec`'s class (graft.envs.spec's, which the server
    catches), else this module's: looked up, not imported, so this module stays a leaf."""
    own = getattr(sys.modules.get(type(spec).__module__), "ObservationError", None)
    return own if isinstance(own, type) and issubclass(own, Exception) else ObservationError


class ServerError(RuntimeError):
    """The server answered a request with an error message."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


def space_to_json(space: gym.Space, names: list[str] | None = None) -> dict:
    """Discrete and Box action spaces as plain data for the handshake."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "discrete", "n": int(space.n), "start": int(space.start),
                "names": list(names) if names is not None else None}
    if isinstance(space, gym.spaces.Box):
        return {"type": "box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": space.low.tolist(), "high": space.high.tolist()}
    raise TypeError(f"the policy server supports Discrete and Box action spaces, got {space}")


def space_from_json(data: Mapping[str, Any]) -> gym.Space:
    if data.get("type") == "discrete":
        return gym.spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if data.get("type") == "box":
        dtype = np.dtype(data["dtype"])
        shape = tuple(data["shape"])
        low, high = (np.asarray(data[k], dtype).reshape(shape) for k in ("low", "high"))
        return gym.spaces.Box(low, high, shape, dtype)
    raise ValueError(f"unknown action space description {dict(data)!r}; expected type discrete or box")


@dataclass
class Metadata:
    """What the server tells every client first: the contract for observations and actions.

    `control_rate_hz` is the rate at which the actions of one chunk are meant to be executed
    (the env's 1/dt); a chunk of `chunk_size` actions spans chunk_size / control_rate_hz seconds.
    """

    observation: Any  # duck-typed observation spec (see the module docstring)
    action_space: gym.Space
    control_rate_hz: float
    chunk_size: int = 1
    action_names: list[str] | None = None
    model: dict = field(default_factory=dict)  # checkpoint, backbone, adapters, modalities, versions
    max_message_bytes: int = 4 * 1024 * 1024
    max_batch: int = 8
    auth: bool = False
    protocol: int = PROTOCOL_VERSION
    timing: dict = field(default_factory=dict)  # `chunk_timing`: inference measured at start-up vs execution

    def to_message(self) -> dict:
        return {
            "type": "metadata", "protocol": self.protocol,
            "modalities": {k: s.to_json() for k, s in self.observation.modalities.items()},
            "text_keys": list(self.observation.text_keys),
            "action_space": space_to_json(self.action_space, self.action_names),
            "control_rate_hz": float(self.control_rate_hz), "chunk_size": int(self.chunk_size),
            "model": self.model, "max_message_bytes": int(self.max_message_bytes),
            "max_batch": int(self.max_batch), "auth": bool(self.auth), "timing": dict(self.timing),
        }

    @classmethod
    def from_message(cls, msg: Mapping[str, Any],
                     observation_spec: Callable[[dict[str, dict], tuple[str, ...]], Any]) -> Metadata:
        """The server's handshake; `observation_spec(modalities_json, text_keys)` builds `observation`."""
        if not isinstance(msg, Mapping) or msg.get("type") != "metadata":
            raise ValueError(f"expected the server's metadata message first, got {_brief(msg)}")
        if msg.get("protocol") != PROTOCOL_VERSION:
            raise ValueError(f"server speaks protocol {msg.get('protocol')}, this client {PROTOCOL_VERSION}")
        return cls(
            observation=observation_spec(dict(msg["modalities"]), tuple(msg.get("text_keys", ()))),
            action_space=space_from_json(msg["action_space"]),
            action_names=msg["action_space"].get("names"),
            control_rate_hz=float(msg["control_rate_hz"]), chunk_size=int(msg["chunk_size"]),
            model=dict(msg.get("model") or {}), max_message_bytes=int(msg["max_message_bytes"]),
            max_batch=int(msg.get("max_batch", 1)), auth=bool(msg.get("auth", False)),
            timing=dict(msg.get("timing") or {}),
        )

    def select(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """The part of a (richer) env observation the server reads: its modalities and text keys."""
        keys = [*self.observation.modalities, *self.observation.text_keys]
        return {k: obs[k] for k in keys if k in obs}


def validate_observation(obs: Any, spec: Any, max_text: int = MAX_TEXT_CHARS) -> dict[str, Any]:
    """Check one observation against the handshake's `spec` (its `validate(obs)` checks the
    modalities; here: unknown keys and the text keys). Returns it, or raises the spec's
    ObservationError (see _error_type)."""
    error = _error_type(spec)
    if not isinstance(obs, Mapping):
        raise error(f"observation must be a map of modality name to value, got {type(obs).__name__}")
    allowed = [*spec.modalities, *spec.text_keys]
    unknown = sorted(str(k) for k in obs if k not in allowed)
    if unknown:
        raise error(f"observation has unknown keys {unknown}; this server reads {allowed}")
    arrays = spec.validate(obs)
    texts = {}
    for key in spec.text_keys:
        value = obs.get(key)
        if not isinstance(value, str):
            raise error(f"text key '{key}': expected a str (e.g. the mission), got {type(value).__name__}")
        if len(value) > max_text:
            raise error(f"text key '{key}': {len(value)} characters, at most {max_text} allowed")
        texts[key] = value
    return {**arrays, **texts}


def chunk_timing(inference_ms: list[float], chunk_size: int, control_rate_hz: float) -> dict[str, Any]:
    """Inference time (measured) beside the time one chunk takes to execute (chunk_size / rate).

    A client that executes chunks asynchronously (infers the next chunk while this one runs, as
    openpi's and graft's control loops do) stalls when inference takes longer than execution:
    `warning` then says so, with both numbers."""
    execution = 1000.0 * chunk_size / control_rate_hz
    infer = percentiles(inference_ms)
    p50 = infer.get("p50")
    slower = p50 is not None and p50 > execution
    warning = (f"inference takes {p50:.1f} ms (median of {infer['count']}), longer than the {execution:.1f} ms one "
               f"chunk of {chunk_size} action(s) at {control_rate_hz:g} Hz takes to execute: a client that executes "
               "chunks asynchronously will stall (raise chunk_size, or serve on faster hardware)") if slower else None
    return {"inference_ms": infer, "chunk_execution_ms": round(execution, 3),
            "inference_per_execution": round(p50 / execution, 3) if p50 is not None else None,
            "inference_slower_than_execution": bool(slower), "warning": warning}


def percentiles(values, scale: float = 1.0) -> dict[str, float]:
    """p50 / p90 / p99 / mean / max of `values` times `scale`, and their count (empty: count 0)."""
    arr = np.asarray(list(values), dtype=float) * scale
    if arr.size == 0:
        return {"count": 0}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    values = {"p50": p50, "p90": p90, "p99": p99, "mean": arr.mean(), "max": arr.max()}
    return {"count": int(arr.size), **{k: round(float(v), 3) for k, v in values.items()}}


def _brief(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
