"""The report's figures: accuracy matrices, per-stage curves with their references, text retention
and training loss, as plain `matplotlib.figure.Figure`s (Agg canvas, never registered with pyplot,
so nothing is left open and the caller's backend is untouched), saved as plots/*.png.

`figures(report)` builds every figure the report has data for (chance and majority drawn as grey
reference lines, the shuffled control dotted); `write_plots(dir, report)` swaps the folder in
atomically; `write_png(path, image)` writes one uint8 image.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from graft.envs.atomic import write_bytes_atomic, write_dir_atomic
from matplotlib.figure import Figure

TEXT_MIXING_PAIR = ("graft", "replay")
DPI = 100


def rate_of(cell):
    return cell.get("rate") if isinstance(cell, dict) else cell


def matrix(rows, T: int) -> np.ndarray:
    """Ragged rows with None (or success cells) -> T x T float array with NaN for missing entries."""
    out = np.full((T, T), np.nan)
    for i, row in enumerate((rows or [])[:T]):
        for j, v in enumerate((row or [])[:T]):
            v = rate_of(v)
            out[i, j] = np.nan if v is None else float(v)
    return out


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot_acc_matrix(name: str, m: dict):
    stages = list(m.get("stages", []))
    if not stages:
        return None
    R = matrix(m.get("acc_matrix"), len(stages))
    size = 2.5 + 0.9 * len(stages)
    fig = Figure(figsize=(size + 1, size), layout="tight")
    ax = fig.subplots()
    finite = R[np.isfinite(R)]
    lo, hi = min(0.0, *finite.tolist()), max(1.0, *finite.tolist())
    im = ax.imshow(np.ma.masked_invalid(R), cmap="viridis", vmin=lo, vmax=hi)
    for (i, j), v in np.ndenumerate(R):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center",
                    color="black" if (v - lo) / (hi - lo) > 0.6 else "white", fontsize=9)
    ax.set_xticks(range(len(stages)), stages, rotation=30, ha="right")
    ax.set_yticks(range(len(stages)), stages)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("after training")
    ax.set_title(f"Accuracy matrix: {name}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig


def style(k: int, name: str) -> dict:
    emphasised = name in TEXT_MIXING_PAIR
    return {"color": f"C{k % 10}", "marker": "os^Dv<>p"[k % 8], "lw": 3.0 if emphasised else 1.4,
            "alpha": 1.0 if emphasised else 0.8, "label": name}


def grid(n: int, w: float = 4.0, h: float = 3.2):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(w * cols, h * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def plot_stage_curves(methods: dict, references: dict | None = None):
    """Each stage's score after every stage (blind before it is grafted: thin), the shuffled control
    (dotted), and chance / majority as grey reference lines."""
    stages = max((list(m.get("stages", [])) for m in methods.values()), key=len, default=[])
    if not stages:
        return None
    references = references or {}
    fig, axes = grid(len(stages))
    scores = [v for m in methods.values() for row in m.get("acc_matrix") or [] for v in row or [] if v is not None]
    ylim = (min([0.0] + scores) - 0.03, max([1.0] + scores) + 0.03)
    for ax, stage in zip(axes, stages):
        for k, (name, m) in enumerate(methods.items()):
            own = list(m.get("stages", []))
            if stage not in own:
                continue
            j, T = own.index(stage), len(own)
            R, C = matrix(m.get("acc_matrix"), T), matrix(m.get("shuffled_matrix"), T)
            look = style(k, name)
            ax.plot(range(j, T), R[j:, j], **look)
            if j:
                ax.plot(range(j + 1), R[: j + 1, j], color=look["color"], lw=0.8, alpha=0.7)
            if np.isfinite(C[j:, j]).any():
                ax.plot(range(j, T), C[j:, j], color=look["color"], ls=":", lw=1.2, marker=look["marker"],
                        markersize=3, label=f"{name} shuffled")
        ref = references.get(stage) or {}
        for key, ls in (("chance", ":"), ("majority", "-.")):
            if ref.get(key) is not None:
                ax.axhline(ref[key], color="grey", ls=ls, lw=1.0, label=key)
        ax.set_title(f"score on {stage}")
        ax.set_xticks(range(len(stages)), [f"after {s}" for s in stages], rotation=30, ha="right")
        ax.set_xlim(-0.3, len(stages) - 0.7)
        ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    seen: dict = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    fig.legend(list(seen.values()), list(seen), loc="upper center", ncol=min(len(seen), 6), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    return fig


def plot_text_retention(methods: dict, before: dict | None = None):
    """Knowledge (and perplexity) retention per stage against the model before grafting."""
    before = before or {}
    shown = {n: m for n, m in methods.items() if (m.get("text_probes") or {}).get("knowledge") and before.get("knowledge")}
    if not shown:
        return None
    fig = Figure(figsize=(7, 4.5), layout="tight")
    ax = fig.subplots()
    stages: list[str] = []
    for k, (name, m) in enumerate(methods.items()):
        if name not in shown:
            continue
        stages = max(stages, list(m.get("stages", [])), key=len)
        probes = m["text_probes"]
        y = [np.nan if v is None else v / before["knowledge"] for v in probes["knowledge"]]
        ax.plot(range(len(y) + 1), [1.0] + y, **style(k, name))
        if probes.get("perplexity") and before.get("perplexity"):
            p = [np.nan if v is None else before["perplexity"] / v for v in probes["perplexity"]]
            ax.plot(range(len(p) + 1), [1.0] + p, color=f"C{k % 10}", ls="--", lw=1.0, label=f"{name} perplexity")
    ax.axhline(1.0, color="grey", ls="--", lw=0.8)
    if before.get("chance") is not None:
        ax.axhline(before["chance"] / before["knowledge"], color="grey", ls=":", lw=1.0, label="chance")
    ax.set_xticks(range(len(stages) + 1), ["before"] + [f"after {s}" for s in stages])
    ax.set_ylabel("knowledge now / before (perplexity: before / now)")
    a, b = TEXT_MIXING_PAIR
    if a in shown and b in shown:
        ax.set_title(f"Text retention: {a} (with text mixing) vs {b} (without) in bold")
    else:
        ax.set_title("Text retention (1.0: nothing lost)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_hallucination(methods: dict):
    """POPE F1 and CHAIR_i of each input stage right after its training, per method, with controls."""
    shown = {n: m for n, m in methods.items() if any(m.get("hallucination") or [])}
    if not shown:
        return None
    fig = Figure(figsize=(9, 4), layout="tight")
    pope, chair = fig.subplots(1, 2)
    for k, (name, m) in enumerate(shown.items()):
        cells = [(s, h) for s, h in zip(m.get("stages", []), m["hallucination"]) if h]
        x = range(len(cells))
        pope.plot(x, [h["pope_f1"] for _, h in cells], **style(k, name))
        pope.plot(x, [h["controls"]["pope_f1_shuffled"] for _, h in cells], color=f"C{k % 10}", ls=":", lw=1.0,
                  label=f"{name} shuffled")
        chair.plot(x, [np.nan if h["chair_i"] is None else h["chair_i"] for _, h in cells], **style(k, name))
        chair.plot(x, [np.nan if h["controls"]["chair_i_other_scene"] is None else h["controls"]["chair_i_other_scene"]
                       for _, h in cells], color=f"C{k % 10}", ls=":", lw=1.0, label=f"{name} other scene")
        for ax in (pope, chair):
            ax.set_xticks(list(x), [s for s, _ in cells])
    if cells:
        pope.axhline(cells[0][1]["controls"]["pope_f1_always_yes"], color="grey", ls="--", lw=0.8, label="always yes")
    pope.set_title("POPE F1 (higher is better)")
    chair.set_title("CHAIR_i (lower is better)")
    for ax in (pope, chair):
        ax.set_ylim(0, 1)  # both are fractions: a full axis keeps small differences small
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def plot_loss(name: str, m: dict):
    curves = m.get("loss_curves") or {}
    if not any(c for phases in curves.values() for c in phases.values()):
        return None
    fig = Figure(figsize=(9, 4.5), layout="tight")
    ax = fig.subplots()
    start = 0
    for k, (stage, phases) in enumerate(curves.items()):
        for phase, losses in phases.items():
            y = [np.nan if v is None else v for v in losses]
            pt = phase == "pt"
            ax.plot(range(start, start + len(y)), y, color=f"C{k % 10}", ls="--" if pt else "-",
                    alpha=0.6 if pt else 1.0, label=f"{stage} {phase}")
            start += len(y)
        if k < len(curves) - 1:
            ax.axvline(start - 0.5, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("step (stages and phases in order; pt dashed, it solid)")
    ax.set_ylabel("loss")
    ax.set_title(f"Training loss: {name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def figures(report: dict) -> dict:
    methods = report.get("methods", {})
    figs = {f"acc_matrix_{slug(n)}": plot_acc_matrix(n, m) for n, m in methods.items()}
    base = report.get("baselines") or {}
    figs["stage_curves"] = plot_stage_curves(methods, base.get("stages"))
    figs["text_retention"] = plot_text_retention(methods, base.get("text_probes"))
    figs["hallucination"] = plot_hallucination(methods)
    figs.update({f"loss_{slug(n)}": plot_loss(n, m) for n, m in methods.items()})
    return {k: f for k, f in figs.items() if f is not None}


def write_plots(plots_dir: Path, report: dict) -> dict[str, Path]:
    figs = figures(report)

    def save(tmp: Path) -> None:
        tmp.chmod(0o755)
        for key, fig in figs.items():
            fig.savefig(tmp / f"{key}.png", dpi=DPI)

    write_dir_atomic(save, plots_dir)
    return {key: plots_dir / f"{key}.png" for key in figs}


def write_png(path: Path, image: np.ndarray) -> Path:
    """A uint8 (H, W, 3) array as a PNG file, written atomically."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return write_bytes_atomic(path, buffer.getvalue())
