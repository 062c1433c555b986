"""Real `graft serve` processes on loopback for the robot tests, always terminated.

The three long-lived servers boot together (a process takes ~8 s to import torch and build a tiny
agent here, and booting them side by side overlaps that); each test waits only for the one it uses.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TOKEN = "test-secret-token"
LISTENING = re.compile(r"listening on (ws://\S+)")


class ServerProcess:
    """`python -m graft.curricula.cli serve ...` with its output in a file (no pipe to fill up)."""

    def __init__(self, log: Path, *overrides: str, port: int = 0):
        tiny = [] if any(o.startswith("backbone=") for o in overrides) else ["backbone=tiny_llama"]  # tests' default
        self.log, self.overrides = log, [f"port={port}", *tiny, *overrides]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GRAFT_SERVE_TOKEN": ""}
        self._out = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "graft.curricula.cli", "serve", *self.overrides],
                                     stdout=self._out, stderr=subprocess.STDOUT, env=env)
        self._uri: str | None = None

    def uri(self, timeout: float = 90.0) -> str:
        """Wait for the "listening on ws://..." line; fail with the log if the process died first."""
        deadline = time.monotonic() + timeout
        while self._uri is None:
            found = LISTENING.search(self.log.read_text())
            if found:
                self._uri = found.group(1)
            elif self.proc.poll() is not None:
                log = self.log.read_text()[-3000:]
                pytest.fail(f"graft serve exited with {self.proc.returncode}:\n{log}")
            elif time.monotonic() > deadline:
                pytest.fail(f"graft serve not listening after {timeout} s:\n{self.log.read_text()[-3000:]}")
            else:
                time.sleep(0.1)
        return self._uri

    @property
    def port(self) -> int:
        return int(self.uri().rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL: the server dies without closing its connections."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """Start `graft serve` processes; every one still running at the end of the session is stopped."""
    started: list[ServerProcess] = []

    def start(*overrides: str, port: int = 0) -> ServerProcess:
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        server = ServerProcess(log, *overrides, port=port)
        started.append(server)
        return server

    yield start
    for server in started:  # signal all first: each takes ~3 s to exit (interpreter teardown of torch)
        if server.proc.poll() is None:
            server.proc.terminate()
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def babyai_checkpoint(tmp_path_factory):
    """A tiny random agent with grid + rgb, saved: the server and the test load the same weights."""
    import torch
    from graft.agent.build import build_mmllm, save_mmllm
    from graft.curricula.config import compose_config

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "babyai_tiny"
    save_mmllm(build_mmllm(compose_config("chat", ["+modality@modalities.rgb=rgb"])), folder)
    return folder


@pytest.fixture(scope="session")
def servers(start_server, babyai_checkpoint):
    """main: the babyai checkpoint with a token and a 64 KiB message cap; reach: a tiny untrained
    agent for mujoco_reach; stalled: a tiny babyai agent whose every batch sleeps 400 ms."""
    started = {
        "main": start_server(f"checkpoint={babyai_checkpoint}", "env=babyai_goto", f"token={TOKEN}",
                             "max_wait_ms=20", "max_message_bytes=65536"),
        "reach": start_server("checkpoint=tiny", "env=mujoco_reach", "max_new_tokens=8"),
        "stalled": start_server("checkpoint=tiny", "env=babyai_goto", "debug_delay_ms=400"),
    }
    for server in started.values():  # all booted before any test times anything
        server.uri()
    return started


@pytest.fixture(scope="session")
def token():
    return TOKEN


@pytest.fixture(scope="session")
def babyai_obs():
    """`make(rng, i)`: a valid babyai observation with varied content (the tiny agent's answers
    differ across these, unlike across real first frames, where it mostly says the same)."""
    def make(rng: np.random.Generator, i: int = 0) -> dict:
        # (7, 7, 3): object, colour, state indices
        grid = np.stack([rng.integers(0, n, (7, 7)) for n in (11, 6, 3)], -1)
        colour = ("red", "green", "blue", "grey", "purple", "yellow")[i % 6]
        return {"grid": grid.astype(np.uint8), "rgb": rng.integers(0, 256, (56, 56, 3), dtype=np.uint8),
                "mission": f"go to the {colour} ball"}
    return make
