"""Measure `graft serve`: round-trip latency beyond model time, batching, sustained control rate.

    OMP_NUM_THREADS=1 python bench/serve_latency.py                       # tiny random agent, babyai_goto
    OMP_NUM_THREADS=1 python bench/serve_latency.py --smollm2             # + SmolLM2-135M, grid + rgb
    OMP_NUM_THREADS=1 python bench/serve_latency.py --checkpoint DIR --env mujoco_reach

For each policy it starts a real `graft serve` process on loopback and prints one JSON line per
measurement (writes nothing else; a SmolLM2 checkpoint is saved once under runs/bench/):

  single    one client, back-to-back requests: latency p50/p99 measured by the client, the server's
            model time for the same requests, their difference (websocket + msgpack + validation +
            batching wait, the "beyond model" cost) and its ratio to the model time; the request rate
            a closed-loop robot can sustain.
  clients8  8 concurrent clients: aggregate requests/s, latency, mean batch size on the server.
  loop      the fixed-rate ControlLoop with a GymController on the same env (20 Hz, deadline
            `--deadline-ms`): achieved policy-update rate (chunks/s), safe-action ticks and misses.

Client and server share the machine's 2 vCPUs (one FPU), so the numbers include that contention.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from graft.envs.robot.client import PolicyClient
from graft.envs.robot.control_loop import ControlLoop
from graft.envs.robot.controllers import make_controller
from graft.envs.robot.protocol import percentiles
from graft.envs.rollout import load_env_config, make_env_factory

SMOLLM2_CKPT = Path("runs/bench/smollm2_grid_rgb")


def start_server(*overrides: str, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    log = Path(tempfile.mkdtemp(prefix="serve-bench-")) / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "graft.curricula.cli", "serve", "port=0", *overrides],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(r"listening on (ws://\S+)", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"graft serve did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


def observations(env_name: str, n: int = 16) -> list[dict]:
    env = make_env_factory(load_env_config(env_name))()
    out = [env.reset(seed=i)[0] for i in range(n)]
    env.close()
    return out


def single(uri: str, obs: list[dict], requests: int) -> dict:
    with PolicyClient(uri) as client:
        for o in obs[:3]:
            client.act(o, timeout=60)  # warm-up
        start = time.perf_counter()
        replies = [client.act(obs[i % len(obs)], timeout=60) for i in range(requests)]
        seconds = time.perf_counter() - start
    lat = [r.latency_ms for r in replies]
    model = [r.model_ms for r in replies]
    beyond = [r.latency_ms - r.model_ms for r in replies]
    return {"requests": requests, "latency_ms": percentiles(lat), "model_ms": percentiles(model),
            "beyond_model_ms": percentiles(beyond),
            "beyond_over_model_p50": round(float(np.median(beyond) / np.median(model)), 3),
            "sustained_hz": round(requests / seconds, 2)}


def concurrent(uri: str, obs: list[dict], clients: int, requests: int) -> dict:
    replies: list = []
    lock = threading.Lock()

    def run(i: int) -> None:
        with PolicyClient(uri) as client:
            mine = [client.act(obs[(i + k) % len(obs)], timeout=120) for k in range(requests)]
        with lock:
            replies.extend(mine)

    with PolicyClient(uri) as client:
        before = client.stats()["batch_sizes"]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    with PolicyClient(uri) as client:
        after = client.stats()["batch_sizes"]
    # batches of this phase only
    sizes = {int(k): n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}
    return {"clients": clients, "requests": len(replies), "throughput_hz": round(len(replies) / seconds, 2),
            "latency_ms": percentiles(r.latency_ms for r in replies),
            "beyond_model_ms": percentiles(r.latency_ms - r.model_ms for r in replies),
            "server_mean_batch": round(sum(k * n for k, n in sizes.items()) / sum(sizes.values()), 2),
            "server_batch_sizes": {str(k): n for k, n in sorted(sizes.items())}}


def loop(uri: str, env_name: str, seconds: float, deadline_ms: float) -> dict:
    controller = make_controller(env_name, rate_hz=20.0 if env_name != "mujoco_reach" else 50.0)
    client = PolicyClient(uri)
    control = ControlLoop(controller, client, deadline_s=deadline_ms / 1000)
    ticks = max(1, int(seconds * controller.rate_hz))
    start = time.perf_counter()
    done = 0
    seed = 0
    while done < ticks:  # episodes back to back until the tick budget is used
        record = control.run_episode(seed, max_ticks=ticks - done)
        done += record["ticks"]
        seed += 1
    elapsed = time.perf_counter() - start
    s = control.stats
    control.close()
    controller.close()
    return {"controller_hz": controller.rate_hz, "seconds": round(elapsed, 2),
            "achieved_tick_hz": round(s.ticks / elapsed, 2),
            "policy_updates_hz": round(s.chunks / elapsed, 2),
            "safe_tick_fraction": round(s.safe_ticks / max(s.ticks, 1), 3), "missed_deadlines": s.missed,
            "latency_ms": percentiles(s.latency_ms), "tick_lag_ms": percentiles(s.tick_lag_ms)}


def make_smollm2_checkpoint(folder: Path) -> Path:
    """SmolLM2-135M with grid + rgb grafted, untrained, saved once (the base weights stay in the cache)."""
    if (folder / "graft.json").exists():
        return folder
    import torch
    from graft.agent.build import build_mmllm, save_mmllm
    from graft.curricula.config import compose_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = compose_config("chat", ["backbone=smollm2_135m", "+modality@modalities.rgb=rgb"])
    save_mmllm(build_mmllm(cfg), folder)
    return folder


def bench(label: str, checkpoint: str, env: str, args) -> None:
    started = time.perf_counter()
    proc, uri = start_server(f"checkpoint={checkpoint}", f"env={env}",
                             f"control_rate_hz={args.control_rate_hz}")
    boot = time.perf_counter() - started
    try:
        obs = observations(env)
        rows = [("single", single(uri, obs, args.requests)),
                ("clients8", concurrent(uri, obs, 8, max(args.requests // 8, 4))),
                ("loop", loop(uri, env, args.loop_seconds, args.deadline_ms))]
        for kind, row in rows:
            line = {"policy": label, "env": env, "kind": kind, "server_boot_s": round(boot, 1), **row}
            print(json.dumps(line), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="tiny", help="tiny or a graft checkpoint folder")
    parser.add_argument("--env", default="babyai_goto")
    parser.add_argument("--smollm2", action="store_true", help="also bench SmolLM2-135M with grid + rgb")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--loop-seconds", type=float, default=10.0)
    parser.add_argument("--deadline-ms", type=float, default=250.0)
    parser.add_argument("--control-rate-hz", type=float, default=20.0,
                        help="chunk action rate the server announces")
    args = parser.parse_args()
    label = "tiny_llama (untrained)" if args.checkpoint == "tiny" else args.checkpoint
    bench(label, args.checkpoint, args.env, args)
    if args.smollm2:
        ckpt = make_smollm2_checkpoint(SMOLLM2_CKPT)
        small = argparse.Namespace(**{**vars(args), "requests": max(args.requests // 5, 16)})
        bench("smollm2_135m (untrained grid + rgb)", str(ckpt), "babyai_goto", small)


if __name__ == "__main__":
    main()
