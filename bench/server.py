"""Policy-server round trip: `graft serve` on loopback against calling the same agent in-process.

    python -m bench.server                                               (from the repo root)

Starts a real `graft serve` process (tiny untrained agent on babyai_goto, or a checkpoint) via
bench/serve_latency.py and sends back-to-back requests from one client. The baseline is the
server's own model time for the same requests (the agent called in-process, as a controller
linked against graft would); the ratio is the round trip over it, and `beyond_model_ms` is what
websocket + msgpack + validation + batching add. Client and server share this machine's CPU.
"""
from __future__ import annotations

import sys


def run(checkpoint: str = "tiny", env: str = "babyai_goto", requests: int = 100) -> dict:
    from bench.serve_latency import observations, single, start_server

    proc, uri = start_server(f"checkpoint={checkpoint}", f"env={env}", "threads=1")
    try:
        row = single(uri, observations(env), requests)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lat, model = row["latency_ms"], row["model_ms"]
    return {"checkpoint": checkpoint, "env": env, "requests": requests, "round_trip_ms": lat, "model_ms": model,
            "beyond_model_ms": row["beyond_model_ms"], "sustained_hz": row["sustained_hz"],
            "round_trip_over_model_p50": round(lat["p50"] / model["p50"], 3)}


if __name__ == "__main__":
    import json

    print(json.dumps(run(*sys.argv[1:2]), indent=1))
