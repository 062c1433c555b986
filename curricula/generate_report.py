"""The `graft generate` report: report.json, report.md and a PNG of real vs generated goal images.

report.md holds one table per task: each metric for the untrained and the trained output, whether
training improved it, and the reference predictors that learn nothing (mean target, first view,
expert). Every file is written atomically (graft.envs.atomic).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from graft.envs.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic

# metric key -> (label, higher is better)
METRICS = {"mse": ("goal-image MSE", False), "psnr": ("goal-image PSNR (dB)", True),
           "l2": ("action-chunk L2", False), "success_rate": ("success rate", True),
           "score": ("score in [0, 1]", True)}


def _resize_nearest(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 `(B, H, W, 3)` → `(B, size, size, 3)` by nearest-neighbour sampling (no smoothing)."""
    h, w = images.shape[1:3]
    rows = (np.arange(size) * h // size)[:, None]
    cols = (np.arange(size) * w // size)[None, :]
    return images[:, rows, cols]


def goal_grid(images: Mapping[str, np.ndarray], columns: int, size: int = 64, gap: int = 2) -> np.ndarray:
    """One row per kind (first view, real goal, untrained, trained), `columns` test episodes across."""
    rows = []
    for kind in ("first", "real", "untrained", "trained"):
        tiles = _resize_nearest(np.asarray(images[kind][:columns], dtype=np.uint8), size)  # (n, size, size, 3)
        pad = np.full((len(tiles), size, gap, 3), 255, np.uint8)
        rows.append(np.concatenate([x for t, p in zip(tiles, pad) for x in (t, p)], axis=1)[:, :-gap])
        rows.append(np.full((gap, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def write_goal_png(path: Path, images: Mapping[str, np.ndarray], columns: int = 8) -> Path:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(goal_grid(images, columns)).save(buffer, format="PNG")
    return write_bytes_atomic(path, buffer.getvalue())


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def improved(key: str, before: float, after: float) -> str:
    better = after > before if METRICS[key][1] else after < before
    return "yes" if better else "**no**"


def task_markdown(name: str, t: Mapping[str, Any]) -> list[str]:
    before, after, refs = t["untrained"], t["trained"], t["references"]
    lines = [f"## {name}: {t['output']} ({t['generator']} generator) on {t['env']}", "",
             f"Inputs {', '.join(t['inputs'])}; {t['episodes']['train']} train / {t['episodes']['test']} test expert "
             f"episodes ({t['samples']['train']} / {t['samples']['test']} samples); {t['training']['steps']} steps of "
             f"batch {t['training']['batch_size']} in {t['training']['seconds']:.0f} s; task total {t['seconds']:.0f} s.", "",
             "| metric | untrained | trained | trained better | " + " | ".join(refs) + " |",
             "|---|---:|---:|---|" + "---:|" * len(refs)]
    for key, (label, _) in METRICS.items():
        if key not in after:
            continue
        ref_cells = [fmt(r.get(key)) for r in refs.values()]
        lines.append(f"| {label} | {fmt(before[key])} | {fmt(after[key])} | {improved(key, before[key], after[key])} | "
                     + " | ".join(ref_cells) + " |")
    timing = (f"{after['seconds_per_sample'] * 1000:.1f} ms per generated sample "
              f"({after['sample_steps']} sampler steps, batches of {after['batch_size']}, MM-LLM forward included)")
    if "rollout" in after:
        ro = after["rollout"]
        timing += (f"; {ro['seconds_per_chunk'] * 1000:.1f} ms per planned chunk in rollouts "
                   f"({ro['episodes']} episodes, executing {ro['execute']} actions per chunk)")
    loss = "; ".join(f"{k} {v['first']:.3g} → {v['last']:.3g}" for k, v in t["loss"].items())
    lines += ["", f"Time: {timing}.", "", f"Training loss (mean of first → last 10 steps): {loss}.", ""]
    if t.get("png"):
        lines += [f"![{name}: first view, real goal, untrained, trained]({t['png']})", "",
                  "Rows: first view (input), real goal view, untrained generator, trained generator.", ""]
    return lines


def write_report(out: Path, report: Mapping[str, Any]) -> None:
    write_json_atomic(out / "report.json", report)
    lines = ["# graft generate", "", f"Started {report['started']}; {report['seconds']:.0f} s in all; backbone "
             f"{report['backbone']}; seed {report['seed']}.", "",
             "Each output modality is scored on held-out expert episodes, untrained (random output head and "
             "generator, zero LoRA) and trained, in the same run. Score = 1 / (1 + error / error of the test set's "
             "mean target): 0.5 is as good as always predicting the mean.", ""]
    for name, task in report["tasks"].items():
        lines += task_markdown(name, task)
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
