"""`graft generate`: a preset over `graft onboard` for output modalities (goal images, action chunks).

Each curriculum in `cfg.curricula` runs through `onboard` with one method (`cfg.method`) and
`cfg.overrides`; its report holds every output stage's metrics untrained (right after grafting),
trained (after its own stage) and final, and `<curriculum>/<method>/<output>.png` shows goal images
(first view, real goal, untrained, trained). This file only collects those into one report.json +
report.md; the stages themselves are curricula/stages/output.py.
"""
from __future__ import annotations

import time
from pathlib import Path

from graft.curricula.config import compose_config, run_dir
from graft.envs.atomic import write_json_atomic, write_text_atomic
from omegaconf import OmegaConf

METRICS = [("score in [0, 1]", "score"), ("goal-image MSE", "mse"), ("goal-image PSNR (dB)", "psnr"),
           ("action-chunk L2", "l2"), ("success rate", "success_rate"), ("error of the mean target", "reference_error")]


def generate(cfg) -> dict:
    from graft.curricula.onboard import onboard

    out = run_dir(cfg, "generate")
    started = time.perf_counter()
    runs = {}
    for name in cfg.curricula:
        overrides = [f"curriculum={name}", f"compare=[{cfg.method}]", f"run_dir={out / name}",
                     f"progress={str(bool(cfg.progress)).lower()}", *cfg.overrides]
        report = onboard(compose_config("onboard", overrides))
        method = report["methods"][cfg.method]
        runs[name] = {"env": report.get("env"), "outputs": method.get("outputs") or {}, "report": f"{name}/report.md",
                      "seconds": method.get("seconds")}
    report = {"method": cfg.method, "overrides": list(cfg.overrides), "curricula": runs,
              "seconds": round(time.perf_counter() - started, 1), "config": OmegaConf.to_container(cfg, resolve=True)}
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", markdown(report, out))
    report["run_dir"] = str(out)
    return report


def markdown(report: dict, out: Path) -> str:
    lines = ["# graft generate", "", f"Method {report['method']}; {report['seconds']:.0f} s in all. Each output is "
             "scored on held-out expert episodes: score = 1 / (1 + error / error of the test set's mean target), so "
             "0.5 is as good as always predicting the mean.", ""]
    for name, run in report["curricula"].items():
        for output, entry in run["outputs"].items():
            phases = [entry.get(p) or {} for p in ("untrained", "trained", "final")]
            lines += [f"## {output} ({entry.get('kind')}) in {name} on {run['env']}", "",
                      "| metric | untrained | trained | final |", "|---|---:|---:|---:|"]
            lines += [f"| {label} | " + " | ".join(_fmt(p.get(key)) for p in phases) + " |"
                      for label, key in METRICS if any(key in p for p in phases)]
            png = Path(name) / report["method"] / f"{output}.png"
            if (out / png).exists():
                lines += ["", f"![{output}: first view, real goal, untrained, trained]({png})"]
            lines += ["", f"Full report: [{run['report']}]({run['report']}).", ""]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_lines(report: dict) -> list[str]:
    """One line per output: untrained → trained (what the CLI prints)."""
    lines = []
    for name, run in report["curricula"].items():
        for output, entry in run["outputs"].items():
            before, after = entry.get("untrained") or {}, entry.get("trained") or {}
            cells = [f"{k} {before[k]:.4g} -> {after[k]:.4g}" for k in ("mse", "psnr", "l2", "success_rate")
                     if k in before and k in after]
            lines.append(f"{name}/{output}: {', '.join(cells)}")
    return lines
