"""openpi's side of `graft serve protocol=openpi`: what `openpi_client.WebsocketClientPolicy` speaks.

    graft serve checkpoint=... env=mujoco_reach protocol=openpi port=8000

    from openpi_client import action_chunk_broker, websocket_client_policy
    policy = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", 8000, api_key=token)
    policy.get_server_metadata()["observation_keys"]    # {"prompt": "mission", "rgb": "rgb", ...}
    broker = action_chunk_broker.ActionChunkBroker(policy, action_horizon=meta["action_horizon"])
    action = broker.infer({"rgb": frame, "proprio": state, "prompt": "reach the red sphere"})["actions"]

The wire format (msgpack-numpy maps, text frames for errors) is envs/robot/openpi_wire.py. Here the
server's side: the metadata map sent on connect (graft's whole handshake, plus the keys an openpi
client sends, `action_horizon` and the start-up timing), and one answer per observation:
`{"actions": (chunk_size, *action_shape), "server_timing": {"infer_ms", "queue_ms", "batch_size"}}`
(a discrete action space: `(chunk_size,)` action ids). Every observation goes through the server's
`act`, like graft's own wire: the same validation against the handshake, text rules, batching with
other connections, limits and auth (`Authorization: Api-Key <token>`). An observation that breaks
them, or a frame that is not an openpi observation map, is answered with a text frame saying what
was wrong and what was expected; unlike openpi's own server the connection stays open, so the
client's next `infer` is served.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from graft.envs.robot import openpi_wire
from graft.envs.robot.codec import CodecError
from graft.envs.robot.protocol import BAD_MESSAGE, BAD_OBSERVATION, SERVER_ERROR
from graft.envs.spec import ObservationError

log = logging.getLogger(__name__)


class OpenpiWire:
    """openpi's messages over the graft PolicyServer `server` (agent/serve.py)."""

    auth_scheme = openpi_wire.AUTH_SCHEME

    def __init__(self, server):
        self.server = server
        self.key_map = {**openpi_wire.KEY_MAP, **(server.settings.openpi_keys or {})}
        spec = server.meta.observation
        self.client_keys = openpi_wire.client_keys([*spec.modalities, *spec.text_keys], self.key_map)

    def metadata(self) -> dict[str, Any]:
        message = self.server.meta.to_message()  # read at each connect: `calibrate` fills its timing later
        message.pop("type")
        return {**message, "wire": "openpi", "observation_keys": self.client_keys,
                "action_horizon": int(self.server.meta.chunk_size)}

    def hello(self) -> bytes:
        return openpi_wire.encode(self.metadata())

    def _error(self, code: str, message: str) -> str:
        self.server.errors[code] = self.server.errors.get(code, 0) + 1
        return f"{code}: {message}"

    async def answer(self, raw: Any, alive: Callable[[], bool]) -> bytes | str:
        """One frame -> a binary answer, or a text frame saying what was wrong (never raises)."""
        if isinstance(raw, str):
            return self._error(BAD_MESSAGE, "expected a binary msgpack frame (an openpi observation map), "
                                            "got a text frame")
        try:
            obs = openpi_wire.to_graft_observation(openpi_wire.decode(raw, self.server.settings.max_message_bytes),
                                                   self.key_map)
        except CodecError as exc:
            return self._error(BAD_MESSAGE, str(exc))
        try:
            out = await self.server.act(obs, alive)
        except ObservationError as exc:
            return self._error(BAD_OBSERVATION, f"{exc} (openpi keys: {self.client_keys})")
        except ConnectionAbortedError as exc:
            return self._error(SERVER_ERROR, str(exc))
        except Exception as exc:  # the model failed on this observation: answer, keep serving
            log.exception("policy failed")
            return self._error(SERVER_ERROR, f"{type(exc).__name__}: {exc}")
        self.server.counters["answered"] += 1
        return openpi_wire.encode({"actions": out.value, "server_timing": {
            "infer_ms": round(out.model_ms, 3), "queue_ms": round(out.queue_ms, 3), "batch_size": out.batch_size}})
