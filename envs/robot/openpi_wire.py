"""openpi's wire format, so `openpi_client.WebsocketClientPolicy` can drive a graft policy server.

openpi (Physical Intelligence's policy serving) speaks plain msgpack over websocket binary frames,
with numpy arrays as maps ("msgpack-numpy"):

    array   {b"__ndarray__": True, b"data": raw bytes (C order), b"dtype": "<f4", b"shape": [H, A]}
    scalar  {b"__npgeneric__": True, b"data": 1.5, b"dtype": "<f4"}

A connection goes (`graft serve protocol=openpi`, agent/serve_openpi.py):

    client connects (HTTP header `Authorization: Api-Key <token>` when the server wants one)
    server -> metadata map, once, first (openpi: "server metadata"; graft puts its handshake in it)
    client -> observation map, e.g. {"grid": uint8 (7, 7, 3), "prompt": "go to the red ball"}
    server -> {"actions": (chunk_size, *action_shape) array, "server_timing": {"infer_ms": ...}}
           or a text frame saying what was wrong (openpi's client raises it as a RuntimeError);
              the connection stays open

openpi names the language instruction "prompt" and images "observation/image" and the like;
`KEY_MAP` renames client keys to graft's observation keys (prompt -> mission by default; the
server's `openpi_keys` setting extends it), and the metadata lists the keys a client must send.

Decoding goes through the graft codec's array checks (`codec.array_from`): the same dtype
allow-list (no object, void or big-endian arrays), shapes checked against the bytes before any
array is built, a message-size cap; nothing is ever unpickled. A leaf module like codec.py and
protocol.py: of graft's it imports the codec only.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np
from graft.envs.robot.codec import ALLOWED_DTYPES, DEFAULT_MAX_BYTES, CodecError, array_from, sendable, unpack

AUTH_SCHEME = "Api-Key"  # openpi_client sends `Authorization: Api-Key <api_key>`
KEY_MAP = {"prompt": "mission"}  # openpi client key -> graft observation key
ARRAY_KEYS = {b"__ndarray__", b"data", b"dtype", b"shape"}
SCALAR_KEYS = {b"__npgeneric__", b"data", b"dtype"}


def _pack(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = sendable(obj)
        return {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise CodecError(f"cannot encode a {type(obj).__name__} for an openpi client; "
                     "send numbers, str, bytes, lists, dicts or numpy arrays")


def encode(message: Any) -> bytes:
    """Pack `message` (plain values and numpy arrays) the way openpi's msgpack_numpy does."""
    try:
        return msgpack.packb(message, default=_pack, use_bin_type=True)
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode message: {exc}") from exc


def _unpack(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        if set(obj) != ARRAY_KEYS:
            raise CodecError(f"an openpi array map has exactly the keys {sorted(ARRAY_KEYS)}, got {sorted(obj)}")
        return array_from(obj[b"dtype"], obj[b"shape"], obj[b"data"])
    if b"__npgeneric__" in obj:
        if set(obj) != SCALAR_KEYS:
            raise CodecError(f"an openpi scalar map has exactly the keys {sorted(SCALAR_KEYS)}, got {sorted(obj)}")
        dtype, value = obj[b"dtype"], obj[b"data"]
        if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
            raise CodecError(f"scalar dtype {dtype!r} is not allowed; expected one of {sorted(ALLOWED_DTYPES)}")
        if not isinstance(value, (bool, int, float)):
            raise CodecError(f"scalar data must be a number, got {type(value).__name__}")
        return np.dtype(dtype).type(value)
    return obj


def decode(data: bytes, max_bytes: int | None = DEFAULT_MAX_BYTES) -> Any:
    """Unpack one openpi message; CodecError on anything malformed, truncated, too big or disallowed."""
    return unpack(data, max_bytes, object_hook=_unpack)


def to_graft_observation(obs: Any, key_map: Mapping[str, str] = KEY_MAP) -> dict[str, Any]:
    """An openpi observation map with its keys renamed to graft's (`key_map`; others kept as they are).
    A key that maps onto one the client also sent under graft's own name is ambiguous: CodecError."""
    if not isinstance(obs, Mapping):
        raise CodecError(f"an openpi observation is a map of key to value, got {type(obs).__name__}")
    out: dict[str, Any] = {}
    for key, value in obs.items():
        if not isinstance(key, str):
            raise CodecError(f"observation keys must be str, got {key!r}")
        name = key_map.get(key, key)
        if name in out:
            raise CodecError(f"observation key {key!r} and {name!r} both mean {name!r}; send one of them")
        out[name] = value
    return out


def client_keys(graft_keys: list[str], key_map: Mapping[str, str] = KEY_MAP) -> dict[str, str]:
    """{key an openpi client sends: graft key} for the server's observation keys (for the metadata)."""
    inverse = {v: k for k, v in key_map.items()}
    return {inverse.get(k, k): k for k in graft_keys}
