"""The `graft` command: `graft <subcommand> [key=value ...]` (Hydra override syntax).

Each subcommand composes `configs/<subcommand>.yaml` with the overrides and calls a plain
function that takes the composed config; tests call the same functions in-process.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads; `threads=` in a config overrides


def _chat(cfg) -> int:
    from graft.curricula.chat import chat

    result = chat(cfg)
    print(result["answer"])
    return 0


def _rollout(cfg) -> int:
    from graft.curricula.rollout import run_rollout

    summary = run_rollout(cfg)
    print(f"{summary['policy']} on {summary['env']}: success_rate {summary['success_rate']:.2f} over "
          f"{summary['episodes']} episodes, mean length {summary['mean_length']:.1f} -> {summary['run_dir']}")
    return 0


def _onboard(cfg) -> int:
    from graft.curricula.onboard import onboard
    from graft.curricula.report import comparison_table

    report = onboard(cfg)
    print(comparison_table(report))
    print(f"report: {report['run_dir']}/report.md")
    return 0


def _datagen(cfg) -> int:
    from graft.curricula.datagen import datagen

    report = datagen(cfg)
    if report.get("format") == "lerobot":
        made = report["lerobot"]
        print(f"LeRobotDataset v3: {made['episodes']} episodes, {made['frames']} frames at {made['fps']} fps "
              f"-> {made['path']}")
        return 0
    print(f"{report['env_rows']} env rows ({report['env_rows_per_s']} rows/s) and {report['text_rows']} text rows "
          f"-> {report['run_dir']}")
    return 0


def _serve(cfg) -> int:
    from graft.curricula.serve import run_serve

    stats = run_serve(cfg)
    print(f"graft serve: stopped after {stats.get('requests', 0)} requests in {stats.get('batches', 0)} batches")
    return 0


def _control(cfg) -> int:
    from graft.curricula.control import run_control

    s = run_control(cfg)
    lat = s["stats"]["latency_ms"]
    print(f"{s['env']} via {s['server_uri']}: success_rate {s['success_rate']:.2f} over {s['episodes']} episodes, "
          f"latency p50 {lat.get('p50', '-')} ms p99 {lat.get('p99', '-')} ms, missed deadlines "
          f"{s['stats']['missed']}, safe-action ticks {s['stats']['safe_ticks']}/{s['stats']['ticks']} -> {s['run_dir']}")
    return 0


def _generate(cfg) -> int:
    from graft.curricula.generate import generate, summary_lines

    report = generate(cfg)
    print("\n".join(summary_lines(report)))
    print(f"report: {report['run_dir']}/report.md")
    return 0


def _bench(cfg) -> int:
    from graft.curricula.bench import run_bench, summary_lines

    report = run_bench(cfg)
    print("\n".join(summary_lines(report)))
    return 0


def _ros2(cfg) -> int:
    from graft.curricula.ros2 import run_ros2

    stats = run_ros2(cfg)
    print(f"graft ros2: {stats.get('summary', stats)}")
    return 0


def _show(cfg) -> int:
    from omegaconf import OmegaConf

    print(OmegaConf.to_yaml(cfg))
    return 0


COMMANDS: dict[str, tuple[str, Callable, str]] = {
    "onboard": ("onboard", _onboard, "graft a curriculum's modalities with several methods; report forgetting"),
    "chat": ("chat", _chat, "answer one prompt with observations from the config"),
    "datagen": ("datagen", _datagen, "write an env's PT, IT, demo and text-only splits as Parquet"),
    "rollout": ("rollout", _rollout, "run expert | random | checkpoint policies on vector envs"),
    "generate": ("generate", _generate, "graft output modalities (goal images, action chunks); trained vs untrained"),
    "serve": ("serve", _serve, "serve an agent over websocket + msgpack, batching concurrent clients"),
    "control": ("control", _control, "run a robot controller against `graft serve`; report success and latency"),
    "bench": ("bench", _bench, "benchmark graft against the baselines users write; BENCHMARKS.md + bench.json"),
    "ros2": ("ros2", _ros2, "run the agent as a ROS 2 node (needs the ros2 extra: pip install 'graft[ros2]')"),
}


def usage() -> str:
    lines = ["usage: graft <command> [key=value ...] [--cfg]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "--cfg prints the composed config instead of running; see configs/<command>.yaml."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"graft: unknown command '{command}'\n\n{usage()}", file=sys.stderr)
        return 2
    from graft.curricula.config import compose_config

    show = "--cfg" in overrides
    overrides = [o for o in overrides if o != "--cfg"]
    config_name, run, _ = COMMANDS[command]
    cfg = compose_config(config_name, overrides)
    return _show(cfg) if show else run(cfg)


if __name__ == "__main__":
    sys.exit(main())
