"""`graft control`: run a controller against `graft serve` for some episodes and report.

Builds the env's controller (`graft.envs.robot.controllers.make_controller`: the MuJoCo arm's
50 Hz joint controller for mujoco_reach, one env step per tick otherwise), connects a
`PolicyClient`, runs `ControlLoop.run_episodes` and writes control.json and control.md (success
rate, control rate, latency percentiles, deadline misses, safe-action ticks) to the run folder.
"""
from __future__ import annotations

from pathlib import Path

from graft.curricula.config import run_dir
from graft.envs.atomic import write_json_atomic, write_text_atomic
from graft.envs.robot.client import PolicyClient
from graft.envs.robot.control_loop import ControlLoop
from graft.envs.robot.controllers import make_controller
from omegaconf import OmegaConf


def markdown(summary: dict) -> str:
    s, lat, over = summary["stats"], summary["stats"]["latency_ms"], summary["stats"]["overhead_ms"]
    rates = [r["rate_hz"] for r in summary["records"] if r["rate_hz"]]
    ms = lambda d, k: f"{d[k]:.1f}" if k in d else "-"
    lines = [
        f"# Control: {summary['env']} via {summary['server_uri']}",
        "",
        f"Server model: `{summary['server'].get('checkpoint')}` ({summary['server'].get('backbone')}), "
        f"reads {summary['server'].get('modalities')}; controller {summary['controller_rate_hz']} Hz, "
        f"deadline {summary['deadline_ms']} ms.",
        "",
        "| episodes | success rate | control Hz (mean) | chunks | latency p50 / p99 ms "
        "| beyond model p50 / p99 ms | missed deadlines | safe-action ticks | reconnects |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {summary['episodes']} | {summary['success_rate']:.2f} | "
        f"{sum(rates) / len(rates) if rates else 0:.1f} | {s['chunks']} | "
        f"{ms(lat, 'p50')} / {ms(lat, 'p99')} | "
        f"{ms(over, 'p50')} / {ms(over, 'p99')} | {s['missed']} | {s['safe_ticks']} / {s['ticks']} | "
        f"{summary['reconnects']} |",
    ]
    server = summary.get("server_stats", {})
    if "invalid_answers" in server:
        lines += ["", f"The server answered {server.get('answered')} requests in {server.get('batches')} "
                      f"batches; {server['invalid_answers']} answers did not parse as actions and became the "
                      "centre action."]
    if s["events"]:
        lines += ["", "First watchdog / error reports:", ""]
        lines += [f"- t={e['t']} s {e['kind']}: {e['detail']}" for e in s["events"][:10]]
    return "\n".join(lines) + "\n"


def run_control(cfg) -> dict:
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    controller = make_controller(env_cfg, rate_hz=cfg.rate_hz, episode_seconds=cfg.episode_seconds)
    client = PolicyClient(str(cfg.server), token=cfg.token or None,
                          connect_timeout_s=float(cfg.connect_timeout_s),
                          backoff_initial_s=float(cfg.backoff_initial_s),
                          backoff_max_s=float(cfg.backoff_max_s))
    try:
        loop = ControlLoop(controller, client, deadline_s=float(cfg.deadline_ms) / 1000)
        try:
            summary = loop.run_episodes(int(cfg.episodes), seed=int(cfg.seed))
            try:  # the server's own counters (batches, model time, unparseable answers), if it is still up
                summary["server_stats"] = loop.server_stats()
            except (ConnectionError, TimeoutError) as exc:
                summary["server_stats"] = {"unavailable": str(exc)}
        finally:
            loop.close()
    finally:
        controller.close()
    out = run_dir(cfg, "control", env_cfg.get("name", "env"))
    summary = {"env": env_cfg.get("name", "env"), "server_uri": str(cfg.server),
               "controller_rate_hz": controller.rate_hz, "deadline_ms": float(cfg.deadline_ms), **summary}
    write_json_atomic(Path(out) / "control.json", summary)
    write_text_atomic(Path(out) / "control.md", markdown(summary))
    summary["run_dir"] = str(out)
    return summary
