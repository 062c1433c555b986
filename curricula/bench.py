"""`graft bench`: run every benchmark against its baseline and write BENCHMARKS.md and bench.json.

Each benchmark lives in the checkout's bench/ folder (bench/control_step.py, train_throughput.py,
rollouts.py, memory.py, server.py) as a plain `run(...)`/`measure(...)` function returning a
dict; this module runs them in one process with one torch thread, collects the headline figures
and writes both files (at the repository root unless `out_dir=` says otherwise). Every figure is
a ratio against a baseline measured in the same run, with the absolute numbers beside it.

bench.json headline keys (the rest of the report is under "benchmarks"):
    control_step_speedup_vs_generate   graft's control step over HF generate() (headline backbone)
    control_step_hz                    graft's control steps per second (headline backbone)
    train_overhead_vs_plain_loop       graft's stage loop time per sample over a plain peft loop's, -1
    train_overhead_vs_plain_loop_packed  the same with padding-free packing + label-only logits
    rollout_speedup_8_envs             env-steps/s on 8 envs over one env at a time (tiny model)
    replay_*                           replay memory at the largest size measured
    server_round_trip_over_model       `graft serve` round trip over in-process model time
"""
from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from graft.envs.atomic import write_json_atomic, write_text_atomic
from omegaconf import OmegaConf
from tqdm.auto import tqdm

BENCHMARKS = ("control", "train", "rollouts", "memory", "server")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def bench_module(name: str, bench_dir: str | None = None):
    """Import `bench.<name>` from the checkout's bench/ folder (not part of the installed package)."""
    folder = Path(bench_dir) if bench_dir else repo_root() / "bench"
    if not (folder / f"{name}.py").exists():
        raise FileNotFoundError(f"graft bench needs a source checkout: {folder / (name + '.py')} is missing "
                                f"(set bench_dir= to the bench/ folder)")
    parent = str(folder.resolve().parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    return importlib.import_module(f"bench.{name}")


def settings(cfg) -> dict:
    """The composed config as a dict, with quick_settings merged in when quick=true."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    quick = plain.pop("quick_settings", {}) or {}
    if plain.get("quick"):  # one level deep: quick's `backbones` replaces the full run's
        for key, value in quick.items():
            plain[key] = {**plain[key], **value} if isinstance(value, dict) else value
    return plain


def _run_control(s: dict, mod, flops: float) -> dict:
    c = s["control"]
    return {bb: mod.run(bb, c["modalities"], rounds=int(v["rounds"]), bf16=bool(c["bf16"]), flops=flops)
            for bb, v in c["backbones"].items()}


def _run_train(s: dict, mod, flops: float) -> dict:
    return {bb: mod.run(bb, rounds=int(v["rounds"]), steps=int(v["steps"])) for bb, v in s["train"]["backbones"].items()}


def _run_rollouts(s: dict, mod, flops: float) -> dict:
    r = s["rollouts"]
    return {bb: mod.run(bb, counts=list(r["num_envs"]), env_steps=int(v["env_steps"]), rounds=int(v["rounds"]))
            for bb, v in r["backbones"].items()}


def _run_memory(s: dict, mod, flops: float) -> dict:
    return {str(n): mod.measure(int(n)) for n in s["memory"]["sizes"]}


def _run_server(s: dict, mod, flops: float) -> dict:
    v = s["server"]
    return mod.run(str(v["checkpoint"]), str(v["env"]), int(v["requests"]))


RUNNERS = {"control": ("control_step", _run_control), "train": ("train_throughput", _run_train),
           "rollouts": ("rollouts", _run_rollouts), "memory": ("memory", _run_memory),
           "server": ("server", _run_server)}


def headline(report: dict, backbone: str) -> dict:
    """The flat headline keys of bench.json, from whatever benchmarks ran."""
    b, out = report["benchmarks"], {}
    if "control" in b:
        pick = backbone if backbone in b["control"] else next(iter(b["control"]))
        row = b["control"][pick]
        out.update(control_step_backbone=pick, control_step_speedup_vs_generate=row["speedup_vs_generate"],
                   control_step_hz=row["variants"]["graft"]["hz"],
                   control_step_generate_hz=row["variants"]["generate"]["hz"],
                   control_step_times_flop_floor=row["variants"]["graft"]["times_floor"])
        if "graft_bf16" in row["variants"]:
            out["control_step_speedup_vs_generate_bf16"] = row["variants"]["graft_bf16"]["speedup_vs_generate"]
        for bb, r in b["control"].items():
            out[f"control_step_speedup_vs_generate_{bb}"] = r["speedup_vs_generate"]
    if "train" in b:
        pick = backbone if backbone in b["train"] else next(iter(b["train"]))
        out.update(train_backbone=pick, train_overhead_vs_plain_loop=b["train"][pick]["overhead"],
                   train_samples_per_s=b["train"][pick]["graft"]["samples_per_s"])
        out["train_overhead_vs_plain_loop_packed"] = b["train"][pick]["overhead_packed"]
        for bb, r in b["train"].items():
            out[f"train_overhead_vs_plain_loop_{bb}"] = r["overhead"]
            out[f"train_overhead_vs_plain_loop_packed_{bb}"] = r["overhead_packed"]
    if "rollouts" in b:
        for bb, r in b["rollouts"].items():
            most = max(r["num_envs"], key=int)
            out[f"rollout_speedup_{most}_envs_{bb}"] = r["num_envs"][most]["speedup_vs_one_env"]
        first = next(iter(b["rollouts"].values()))
        most = max(first["num_envs"], key=int)
        out[f"rollout_speedup_{most}_envs"] = first["num_envs"][most]["speedup_vs_one_env"]
    if "memory" in b:
        m = b["memory"][max(b["memory"], key=int)]
        out.update(replay_samples=m["samples"], replay_insert_us=round(m["insert_us"]["graft"], 2),
                   replay_sample256_ms=round(m["sample256_ms"]["graft"], 3),
                   replay_disk_bytes_per_sample=round(m["disk_bytes_per_sample"], 1),
                   replay_resident_mb=round(m["resident_mb"]["graft"], 1))
    if "server" in b:
        out.update(server_round_trip_ms_p50=b["server"]["round_trip_ms"]["p50"],
                   server_round_trip_over_model=b["server"]["round_trip_over_model_p50"])
    return out


def run_bench(cfg) -> dict:
    """Run the selected benchmarks; write BENCHMARKS.md and bench.json; return the report."""
    import torch

    s = settings(cfg)
    torch.set_num_threads(int(s.get("threads") or 1))
    common = bench_module("common", s.get("bench_dir"))
    report_mod = bench_module("report", s.get("bench_dir"))
    names = [n for n in BENCHMARKS if not s.get("only") or n in s["only"]]
    unknown = [n for n in (s.get("only") or []) if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"only= names unknown benchmarks {unknown}; known: {list(BENCHMARKS)}")
    started = time.perf_counter()
    flops = common.matmul_flops()
    report: dict[str, Any] = {"quick": bool(s.get("quick")), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "machine": common.machine(), "matmul_gflops_fp32": round(flops / 1e9, 1),
                              "benchmarks": {}, "seconds": {}}
    bar = tqdm(names, desc="graft bench", disable=not s.get("progress", True))
    for name in bar:
        bar.set_postfix_str(name)
        module, runner = RUNNERS[name]
        t = time.perf_counter()
        report["benchmarks"][name] = runner(s, bench_module(module, s.get("bench_dir")), flops)
        report["seconds"][name] = round(time.perf_counter() - t, 1)
    report["seconds"]["total"] = round(time.perf_counter() - started, 1)
    if s.get("gpu_json"):  # figures from `python -m bench.gpu --out FILE` on a GPU machine
        report["gpu"] = json.loads(Path(s["gpu_json"]).read_text())
    report = {**headline(report, str(s["headline_backbone"])), **report}
    out = Path(s["out_dir"]) if s.get("out_dir") else repo_root()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "bench.json", report)
    write_text_atomic(out / "BENCHMARKS.md", report_mod.markdown(report))
    report["files"] = [str(out / "BENCHMARKS.md"), str(out / "bench.json")]
    return report


def summary_lines(report: dict) -> list[str]:
    """A few lines for the terminal: the headline figures and where the files went."""
    lines = []
    if "control_step_speedup_vs_generate" in report:
        lines.append(f"control step ({report['control_step_backbone']}): {report['control_step_hz']} Hz, "
                     f"{report['control_step_speedup_vs_generate']}x generate() "
                     f"({report['control_step_generate_hz']} Hz); {report['control_step_times_flop_floor']}x its FLOP floor")
    if "train_overhead_vs_plain_loop" in report:
        lines.append(f"training ({report['train_backbone']}): {report['train_samples_per_s']} samples/s, overhead vs "
                     f"a plain peft loop {report['train_overhead_vs_plain_loop']:+.1%}")
    for key, value in report.items():
        if key.startswith("rollout_speedup_") and key.endswith("_envs"):
            lines.append(f"rollouts: {key[len('rollout_speedup_'):].replace('_', ' ')} {value}x one env at a time")
    if "replay_insert_us" in report:
        lines.append(f"replay memory ({report['replay_samples']} samples): insert {report['replay_insert_us']} us, "
                     f"sample(256) {report['replay_sample256_ms']} ms, {report['replay_disk_bytes_per_sample']} B/sample, "
                     f"{report['replay_resident_mb']} MB resident")
    if "server_round_trip_ms_p50" in report:
        lines.append(f"policy server: round trip p50 {report['server_round_trip_ms_p50']} ms, "
                     f"{report['server_round_trip_over_model']}x the in-process model time")
    lines.append(f"{report['seconds']['total']} s -> {', '.join(report.get('files', []))}")
    return lines
