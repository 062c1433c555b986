"""`graft bench`: run every benchmark against its baseline and write BENCHMARKS.md and bench.json.

Each benchmark lives in the checkout's bench/ folder (bench/control_step.py, train_throughput.py,
rollouts.py, memory.py, server.py) as a plain `run(...)`/`measure(...)` function returning a
dict; this module runs them in one process with one torch thread, collects the headline figures
and writes both files (at the repository root unless `out_dir=` says otherwise). Every figure is
a ratio against a baseline measured in the same run, with the absolute numbers beside it.

bench.json headline keys (the rest of the report is under "benchmarks"):
    control_step_speedup_vs_generate   graft's control step (fp32) over HF generate() (fp32; headline backbone)
    control_step_speedup_vs_generate_auto  graft's control step in the dtype `dtype=auto` picks on this host
    control_step_agreement[_auto]      share of observations with the reference action (fp32 generate()'s
                                       where its text names an action, else fp32 graft's)
    control_step_hz                    graft's control steps per second (headline backbone)
    cpu_capability                     what the host offers (torch dispatch level, avx2/avx512f/avx512_bf16/amx_bf16)
    train_speedup_vs_plain_loop        samples/s of graft's onboarding loop as `graft onboard` runs it over
                                       the plain peft loop users write today (old layout, fp32); also
                                       _<backbone>, and _smollm2 for SmolLM2-135M
    train_overhead_vs_plain_loop       graft's stage loop (fp32, no packing) time per sample over a plain
                                       peft loop's on the same layout, -1
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
    variants = s["train"].get("variants") or mod.VARIANTS
    return {bb: mod.run(bb, rounds=int(v["rounds"]), steps=int(v["steps"]), variants=list(variants))
            for bb, v in s["train"]["backbones"].items()}


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
        v = row["variants"]
        out.update(control_step_backbone=pick, control_step_speedup_vs_generate=row["speedup_vs_generate"],
                   control_step_hz=v["graft"]["hz"], control_step_generate_hz=v["generate"]["hz"],
                   control_step_times_flop_floor=v["graft"]["times_floor"])
        if "graft_bf16" in v:
            out["control_step_speedup_vs_generate_bf16"] = v["graft_bf16"]["speedup_vs_generate"]
        if "graft_auto" in v:
            out.update(control_step_speedup_vs_generate_auto=row["speedup_vs_generate_auto"],
                       control_step_auto_dtype=row["auto"]["dtype"], control_step_auto_hz=v["graft_auto"]["hz"],
                       control_step_agreement=row["agreement"]["graft"],
                       control_step_agreement_auto=row["agreement"]["graft_auto"],
                       control_step_agreement_reference=(f"{row['reference']['generate']} of {row['observations']} "
                                                         f"observations: fp32 generate()'s action; the rest: fp32 "
                                                         f"graft's (generate()'s text named no action)"))
        for bb, r in b["control"].items():
            out[f"control_step_speedup_vs_generate_{bb}"] = r["speedup_vs_generate"]
            if "speedup_vs_generate_auto" in r:
                out[f"control_step_speedup_vs_generate_auto_{bb}"] = r["speedup_vs_generate_auto"]
        if row.get("cpu_capability"):
            out["cpu_capability"] = row["cpu_capability"]
    if "train" in b:
        pick = backbone if backbone in b["train"] else next(iter(b["train"]))
        row = b["train"][pick]
        out["train_backbone"] = pick
        if "speedup_vs_plain_today" in row:
            out.update(train_speedup_vs_plain_loop=row["speedup_vs_plain_today"],
                       train_samples_per_s=row["graft_onboard"]["samples_per_s"],
                       train_plain_loop_samples_per_s=row["plain_today"]["samples_per_s"],
                       train_tokens_per_sample=row["graft_onboard"]["tokens_per_sample"],
                       train_plain_loop_tokens_per_sample=row["plain_today"]["tokens_per_sample"],
                       train_precision=row["precision"]["dtype"])
            if row["precision"].get("gflops"):
                g = row["precision"]["gflops"]
                out["train_precision_bf16_over_fp32_matmul"] = round(g["bfloat16"] / g["float32"], 2)
        if "overhead" in row:
            out["train_overhead_vs_plain_loop"] = row["overhead"]
        if "overhead_packed" in row:
            out["train_overhead_vs_plain_loop_packed"] = row["overhead_packed"]
        for bb, r in b["train"].items():
            if "speedup_vs_plain_today" in r:
                out[f"train_speedup_vs_plain_loop_{bb}"] = r["speedup_vs_plain_today"]
                if bb.startswith("smollm2"):
                    out["train_speedup_vs_plain_loop_smollm2"] = r["speedup_vs_plain_today"]
            if "overhead" in r:
                out[f"train_overhead_vs_plain_loop_{bb}"] = r["overhead"]
            if "overhead_packed" in r:
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
    write_text_atomic(out / "BENCHMARKS.md", markdown(report, report_mod))
    report["files"] = [str(out / "BENCHMARKS.md"), str(out / "bench.json")]
    return report


def summary_lines(report: dict) -> list[str]:
    """A few lines for the terminal: the headline figures and where the files went."""
    lines = []
    if "control_step_speedup_vs_generate" in report:
        lines.append(f"control step ({report['control_step_backbone']}): {report['control_step_hz']} Hz, "
                     f"{report['control_step_speedup_vs_generate']}x generate() "
                     f"({report['control_step_generate_hz']} Hz); {report['control_step_times_flop_floor']}x its FLOP floor")
    if "control_step_speedup_vs_generate_auto" in report:
        lines.append(f"control step in the dtype auto picks ({report['control_step_auto_dtype']}): "
                     f"{report['control_step_auto_hz']} Hz, {report['control_step_speedup_vs_generate_auto']}x fp32 "
                     f"generate(); same action {report['control_step_agreement_auto']:.0%} (fp32 graft "
                     f"{report['control_step_agreement']:.0%})")
    if "train_speedup_vs_plain_loop" in report:
        lines.append(f"training ({report['train_backbone']}, precision {report['train_precision']}): "
                     f"{report['train_samples_per_s']} samples/s, {report['train_speedup_vs_plain_loop']}x the plain "
                     f"peft loop users write today ({report['train_plain_loop_samples_per_s']} samples/s; "
                     f"{report['train_tokens_per_sample']} vs {report['train_plain_loop_tokens_per_sample']} "
                     f"tokens per sample)")
    if "train_overhead_vs_plain_loop" in report:
        lines.append(f"training machinery ({report['train_backbone']}, fp32, same layout): overhead vs a plain peft "
                     f"loop {report['train_overhead_vs_plain_loop']:+.1%}")
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


# ---- BENCHMARKS.md ----------------------------------------------------------------------------------
def markdown(report: dict, report_mod) -> str:
    """bench/report.py's BENCHMARKS.md with the against-today section after the headline table."""
    text = report_mod.markdown(report)
    extra = baseline_lines(report, report_mod.table)
    if not extra:
        return text
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line == "## Headline"), None)
    at = next((i for i, line in enumerate(lines) if start is not None and i > start and line.startswith("## ")),
              len(lines))
    return "\n".join(lines[:at] + extra + lines[at:])


def _mark(value) -> str:
    return "yes" if value is True else "no" if value is False else "?"


def baseline_lines(report: dict, table) -> list[str]:
    """graft against what users write today: the training loop and the control step, with the host."""
    b = report["benchmarks"]
    train = {bb: r for bb, r in b.get("train", {}).items() if "plain_today" in r and "graft_onboard" in r}
    control = {bb: r for bb, r in b.get("control", {}).items() if "graft_auto" in r["variants"]}
    if not train and not control:
        return []
    out = ["## Against what users write today", ""]
    cap = report.get("cpu_capability") or next((r.get("cpu_capability") for r in control.values()), None)
    if cap:
        flags = ", ".join(f"{f} {_mark(cap.get(f))}" for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
        host = cap.get("model") or report["machine"]["cpu"]
        out += [(f"Host: {host}; torch CPU dispatch {cap.get('torch')}; {flags}. Which precision is faster "
                 "depends on these (bf16 is several times slower than fp32 without native bf16 instructions), so "
                 "graft measures it on the host."), ""]
    if train:
        out += ["### Training: an onboarding stage (MM IT of the grid stage)", "",
                ("Same records, batch size, AdamW and grad clip on both sides. plain_today: a peft + transformers "
                 "loop as users write it — the backbone's chat template as shipped (SmolLM2: with its default "
                 "system prompt), the observation placeholder first, its own LLaVA-1.5 projector over all 49 grid "
                 "cells, fp32, right-padded, full-vocabulary logits. graft_onboard: graft's loop as `graft onboard` "
                 "runs it by default — static text first and the observation last, the config's compact template, "
                 "16 pooled grid tokens, padding-free packing where it saves FLOPs, LM head only at labelled "
                 "positions, `precision: auto`."), ""]
        rows = []
        for bb, r in train.items():
            for side in ("plain_today", "graft_onboard"):
                v = r[side]
                rows.append([bb, side, r["grid_tokens"][side if side == "plain_today" else "graft"], v["precision"],
                             v["tokens_per_sample"], v["positions_per_sample"], v["logit_positions_per_sample"],
                             v["step_ms"], v["samples_per_s"],
                             "baseline" if side == "plain_today" else f"{v['speedup_vs_plain_today']}×"])
        out += table(["backbone", "loop", "grid tokens", "precision", "tokens/sample", "positions/sample",
                             "logit positions/sample", "ms/step", "samples/s", "speedup"], rows)
        for bb, r in train.items():
            p = r["precision"]
            measured = (f" (bf16 {p['gflops']['bfloat16']} vs fp32 {p['gflops']['float32']} GFLOP/s)"
                        if p.get("gflops") else "")
            out.append(f"- {bb}: precision auto chose {p['dtype']}: {p.get('reason', '')}{measured}; "
                       f"packed batches {r['graft_onboard'].get('packed_batches', 0):.0%}.")
        example = next(iter(train.values()))["prompts"]
        out += ["", f"Prompts — graft: `{example['graft']!r}`; plain_today: `{example['plain_today']!r}`.", ""]
    if control:
        out += ["### Control step: observation → action, batch 1", "",
                ("generate: the peft model (adapters unmerged), HF `generate()` on the full prompt at every step, "
                 "greedy, string match, fp32. graft: `Agent(deploy=True)` — merged adapters, the prompt's static text "
                 "(template, mission, question) served from a KV cache after an episode's first step, action names "
                 "scored as a token tree in one forward. graft_auto: the same in the dtype `dtype=auto` picks here."),
                ""]
        rows = []
        for bb, r in control.items():
            for name in ("generate", "graft", "graft_auto"):
                v = r["variants"][name]
                agree = "reference" if name == "generate" else f"{r['agreement'][name]:.0%}"
                rows.append([bb, name, v["dtype"], v["ms"], v["hz"], f"{v['speedup_vs_generate']}×", agree,
                             v["tokens"], f"{v['times_floor']}×"])
        out += table(["backbone", "path", "dtype", "ms", "Hz", "vs generate (fp32)", "same action",
                             "tokens", "× FLOP floor"], rows)
        for bb, r in control.items():
            a, ref = r["auto"], r["reference"]
            out.append(f"- {bb}: auto chose {a['dtype']} ({a.get('source', '')}): {a.get('reason', '')}. Reference "
                       f"action: fp32 generate()'s on {ref['generate']} of {r['observations']} observations, fp32 "
                       f"graft's on the other {ref['graft_fp32']} (generate()'s text named no action). Matmul "
                       f"fp32 {r['matmul_gflops']} / bf16 {r.get('matmul_gflops_bf16')} GFLOP/s.")
        out.append("")
    return out

