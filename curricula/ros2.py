"""`graft ros2`: run the agent as a ROS 2 node against a robot (or the simulated arm) and report.

    policy=expert              the reach arm's Jacobian expert from proprio + target (demos, tests)
    policy=tiny | <folder>     an in-process policy (untrained, or a graft checkpoint) for `env`, made as
                               `graft serve` makes it (`load_policy`; a saved action generator
                               answers its chunks, chunk_size = its execute count)
    policy=ws://host:port      forward every observation to a `graft serve` server (PolicyClient)

With `sim.launch` the simulated arm (`graft.envs.robot.ros2.sim_node`) runs in a subprocess. The
bridge (`graft.envs.robot.ros2.bridge`) waits for every topic, commands at `bridge.rate_hz` until
`duration_s` passes or the robot reports `episodes` episodes, and ros2.json + ros2.md go to the
run folder: success, sensor-to-command latency p50/p99, the command rate held (bridge side, and as
received by the sim), safe-action ticks, stale-sensor ticks, missed deadlines, rejected messages.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from graft.curricula.config import run_dir
from graft.envs.atomic import write_json_atomic, write_text_atomic
from omegaconf import OmegaConf


def build_policy(cfg, bridge_cfg) -> tuple[Any, str]:
    """The policy client for `cfg.policy` and a label for reports."""
    from graft.envs.robot.client import PolicyClient
    from graft.envs.robot.ros2.policies import LocalPolicy, ReachObservationExpert

    source = str(cfg.policy)
    if source.startswith(("ws://", "wss://")):
        return PolicyClient(source, token=cfg.token or None, connect_timeout_s=float(cfg.connect_timeout_s)), source
    if source == "expert":
        meta = bridge_cfg.metadata(cfg.control_rate_hz or bridge_cfg.rate_hz, int(cfg.chunk_size),
                                   {"checkpoint": "expert", "policy": "Jacobian reach expert"})
        return LocalPolicy(ReachObservationExpert(), meta), "expert"
    fn, model, rate, chunk_size = agent_policy(cfg)
    meta = bridge_cfg.metadata(cfg.control_rate_hz or rate, chunk_size or int(cfg.chunk_size), model)
    return LocalPolicy(fn, meta), source


def agent_policy(cfg) -> tuple[Callable, dict, float, int | None]:
    """An in-process policy (checkpoint folder or `tiny`, through serve's `build_agent`) as
    `fn(obs) -> {"actions": ...}` (`infer`: the observation is validated once, there), its model info,
    the env's control rate (1 / dt) and, for action chunks, the chunk size (its execute count)."""
    from graft.agent.runtime import configure_threads
    from graft.curricula.serve import build_agent
    from graft.envs.rollout import make_env_factory

    configure_threads(cfg.get("threads", "auto"))
    agent_cfg = OmegaConf.create({**OmegaConf.to_container(cfg, resolve=True), "checkpoint": str(cfg.policy)})
    env = make_env_factory(OmegaConf.to_container(cfg.env, resolve=True))()
    try:
        policy, model = build_agent(agent_cfg, env)
        rate = 1.0 / float(getattr(env.unwrapped, "dt", 0.1))
    finally:
        env.close()

    def act(obs):
        return policy.infer(obs)

    act.__name__ = f"agent:{cfg.policy}"
    return act, model, rate, getattr(policy, "execute", None)


class SimProcess:
    """The sim node in a subprocess; its output goes to a log file, its report to sim.json."""

    def __init__(self, sim_cfg, episodes: int | None, out: Path):
        self.report_path, self.log_path = out / "sim.json", out / "sim.log"
        args = [sys.executable, "-m", "graft.envs.robot.ros2.sim_node", "--rate-hz", str(sim_cfg.rate_hz),
                "--camera-hz", str(sim_cfg.camera_hz), "--rgb-encoding", str(sim_cfg.rgb_encoding),
                "--depth-encoding", str(sim_cfg.depth_encoding), "--seed", str(sim_cfg.seed),
                "--report", str(self.report_path)]
        if episodes is not None:
            args += ["--episodes", str(episodes)]
        with open(self.log_path, "w") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))

    def stop(self, timeout: float = 10.0) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the node stops spinning and writes its report
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.report_path.exists():
            return json.loads(self.report_path.read_text())
        return {"unavailable": f"the sim node wrote no report; see {self.log_path}"}


def markdown(s: dict) -> str:
    lat, new, rate = s["sensor_to_command_ms"], s["newest_sensor_to_command_ms"], s["command_rate"]
    st, sim = s["stats"], s.get("sim", {})
    ms = lambda d, k: f"{d[k]:.1f}" if k in d else "-"
    lines = [
        f"# ROS 2 bridge: {s['policy']} at {s['rate_hz']:g} Hz",
        "",
        (f"Command: {s['command']['type']} on {s['command']['topic']}; deadline {s['deadline_ms']:g} ms; "
         f"topics: {', '.join(f'{k} <- {v}' for k, v in s['topics'].items())}."),
        "",
        ("| episodes | success rate | sensor->command p50 / p99 ms (oldest input) | (newest input) "
         "| commands Hz held | interval p99 ms | safe ticks | stale ticks | missed | rejected msgs |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        (f"| {len(s['episodes'])} | {s['success_rate']:.2f} | {ms(lat, 'p50')} / {ms(lat, 'p99')} | "
         f"{ms(new, 'p50')} / {ms(new, 'p99')} | {rate.get('rate_hz', 0):.1f} | "
         f"{ms(rate.get('interval_ms', {}), 'p99')} | {st['safe_ticks']} / {st['ticks']} | {st['stale_ticks']} | "
         f"{st['missed']} | {sum(s['rejected'].values())} |"),
    ]
    if "tick_rate_held_hz" in sim:
        lines += ["", (f"Sim arm: ticks held {sim['tick_rate_held_hz']} Hz (of {sim['rate_hz']:g}); commands "
                       f"received at {sim['command_rate_hz']} Hz, interval p99 "
                       f"{ms(sim['command_interval_ms'], 'p99')} ms; braked (no command) {sim['braked_ticks']} "
                       "ticks.")]
    if st["events"]:
        lines += ["", "First watchdog / stale-sensor reports:", ""]
        lines += [f"- t={e['t']} s {e['kind']}: {e['detail']}" for e in st["events"][:10]]
    return "\n".join(lines) + "\n"


@contextmanager
def stop_on_signals(bridge):
    """Ctrl-C or SIGTERM ends the run after the current tick (then the last safe action and the report);
    a second one interrupts at once. Main thread only (signal handlers live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in sigs}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def stop(signum, frame) -> None:
        print(f"graft ros2: {signal.Signals(signum).name}: stopping after this tick", flush=True)
        restore()
        bridge.stop()

    for sig in sigs:
        signal.signal(sig, stop)
    try:
        yield
    finally:
        restore()


def run_ros2(cfg) -> dict:
    from graft.envs.robot.ros2.bridge import Bridge, BridgeConfig  # ImportError: pip install 'graft[ros2]'

    bridge_cfg = BridgeConfig.from_mapping(OmegaConf.to_container(cfg.bridge, resolve=True))
    episodes = None if cfg.episodes is None else int(cfg.episodes)
    out = run_dir(cfg, "ros2", str(cfg.policy).replace("/", "_").replace(":", "_")[-40:])
    if cfg.sim.launch:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if cfg.domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(cfg.domain_id)
    policy, label = build_policy(cfg, bridge_cfg)  # before the sim: an agent can take a while to build
    sim = SimProcess(cfg.sim, episodes, Path(out)) if cfg.sim.launch else None
    sim_report: dict = {}
    try:
        bridge = Bridge(bridge_cfg, policy)
        try:
            with stop_on_signals(bridge):
                waited = time.monotonic()
                snap = bridge.wait_for_topics(float(cfg.wait_for_topics_s))
                if not snap.ok:
                    print(f"graft ros2: still waiting for {snap.problems}; holding the safe action", flush=True)
                waited = time.monotonic() - waited
                result = bridge.run(seconds=float(cfg.duration_s), episodes=episodes)
        finally:
            bridge.close()
    finally:
        if sim is not None:
            sim_report = sim.stop()
    eps = result["episodes"]
    summary = {
        "policy": label, "rate_hz": bridge_cfg.rate_hz, "deadline_ms": bridge_cfg.deadline_ms,
        "command": {"topic": bridge_cfg.command.topic, "type": bridge_cfg.command.type},
        "topics": {t.key: t.topic for t in bridge_cfg.topics}, "waited_for_topics_s": round(waited, 2),
        "success_rate": sum(bool(e.get("success")) for e in eps) / len(eps) if eps else 0.0,
        **result, "sim": sim_report,
    }
    write_json_atomic(Path(out) / "ros2.json", summary)
    write_text_atomic(Path(out) / "ros2.md", markdown(summary))
    lat, rate = summary["sensor_to_command_ms"], summary["command_rate"]
    summary["summary"] = (
        f"{label}: {len(eps)} episodes, success rate {summary['success_rate']:.2f}; sensor->command "
        f"p50 {lat.get('p50', float('nan')):.1f} ms / p99 {lat.get('p99', float('nan')):.1f} ms; commands "
        f"{rate.get('rate_hz', 0):.1f} Hz held (target {bridge_cfg.rate_hz:g}); safe ticks "
        f"{result['stats']['safe_ticks']}/{result['stats']['ticks']}; report in {out}")
    summary["run_dir"] = str(out)
    return summary
