"""The end-of-run report of a curriculum: report.json, report.md and plots/*.png in the run folder.

`write_report(run_dir, report)` takes the dict the onboarding loop builds (one entry per method
under "methods": accuracy matrix R with its shuffled control, imitation, success cells, validation
matrix, text probes, gate decisions, loss curves, ...; "baselines": chance, majority, blind, random
policy and expert; with several seeds "summary" and "differences") and writes it for a machine
(json), a person (Markdown that says what each number is, with embedded plots; chance, majority and
the shuffled control drawn as reference lines) and a terminal (`comparison_table`). Missing values
(None or NaN) print as "–" and are left out of plots.
Output stages (goal images, action chunks) add an "Output modalities" table per method: each
generation metric untrained (right after grafting), trained (after its own stage) and final.
Every file is written atomically; the plots folder is swapped in as a whole. Figures are plain
`matplotlib.figure.Figure`s (Agg canvas, never registered with pyplot), so nothing is left open
and the caller's backend is untouched.
"""
from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path

import numpy as np
from graft.envs.atomic import write_bytes_atomic, write_dir_atomic, write_json_atomic, write_text_atomic
from matplotlib.figure import Figure

DASH = "–"
COLUMNS = [("avg acc", "avg_acc"), ("shuffled", "avg_shuffled"), ("perception gain", "perception_gain"),
           ("BWT", "bwt"), ("FWT", "fwt"), ("forgetting", "forgetting"), ("imitation", "imitation"),
           ("text retention", "text_retention"), ("success rate", "success_rate"), ("seconds", "seconds")]
EXPLAINED = [
    "avg acc: mean over stages of the final score (multiple-choice accuracy; output stages 1/(1+error/error of "
    "the mean)); shuffled: the same model with observations permuted across test items; perception gain = "
    "avg acc − shuffled (what the observation adds to the answer prior).",
    "BWT, forgetting: from the accuracy matrix R (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018). FWT = "
    "mean_j R[j−1][j] − b_j: R[j−1][j] scores stage j blind (its modality not yet grafted, placeholder dropped) "
    "after the stages before it, b_j the same blind questions on the untrained model.",
    "imitation: next-action accuracy on demonstration items (beside the majority action); success rate: mean "
    "over the final row's rollout cells (episodes on held-out seeds, 95% Wilson intervals in the matrices).",
]
TEXT_MIXING_PAIR = ("graft", "replay")
OUTPUT_METRICS = [("score", "score"), ("MSE", "mse"), ("PSNR (dB)", "psnr"), ("L2 to expert", "l2"),
                  ("success rate", "success_rate"), ("ms / sample", "seconds_per_sample"),
                  ("ms / chunk (rollout)", "seconds_per_chunk")]
DPI = 100


def fmt(x, decimals: int = 3) -> str:
    if x is None or (isinstance(x, (float, np.floating)) and not np.isfinite(x)):
        return DASH
    if isinstance(x, (bool, str)):
        return str(x)
    return f"{float(x):.{decimals}f}"


def fmt_count(x) -> str:
    return f"{int(x):,}" if isinstance(x, (int, np.integer)) and not isinstance(x, bool) else fmt(x)


def metric_cells(m: dict) -> list[str]:
    return [fmt(m.get(key), 1 if key == "seconds" else 3) for _, key in COLUMNS]


def fmt_cell(cell) -> str:
    """A success cell as "rate [lo, hi] n=N"; a bare number as itself."""
    if isinstance(cell, dict):
        lo, hi = cell["ci95"]
        return f"{fmt(cell['rate'])} [{fmt(lo, 2)}, {fmt(hi, 2)}] n={cell['episodes']}"
    return fmt(cell)


def rate_of(cell):
    return cell.get("rate") if isinstance(cell, dict) else cell


def plain(x):
    """JSON-safe copy: numpy scalars and arrays to Python, tuples to lists, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


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


def comparison_table(report: dict) -> str:
    """Fixed-width plain-text table of the per-method metrics, for the terminal."""
    header = ["method"] + [label for label, _ in COLUMNS]
    rows = [[name] + metric_cells(m) for name, m in report.get("methods", {}).items()]
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    out = [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    outputs = output_rows(report.get("methods", {}))
    if outputs:
        head = ["method", "output", "metric", "untrained", "trained", "final"]
        w = [max(len(r[c]) for r in [head] + outputs) for c in range(len(head))]
        out += ["", "  ".join(c.ljust(x) if k < 3 else c.rjust(x) for k, (c, x) in enumerate(zip(head, w)))]
        out += ["  ".join(c.ljust(x) if k < 3 else c.rjust(x) for k, (c, x) in enumerate(zip(r, w))) for r in outputs]
    return "\n".join(out)


def output_cell(metrics: dict | None, key: str) -> str:
    value = (metrics or {}).get(key)
    if value is not None and key.startswith("seconds_per"):
        return fmt(1000 * value, 1)
    return fmt(value, 2 if key == "psnr" else 4 if key == "mse" else 3)


def output_rows(methods: dict) -> list[list[str]]:
    """[method, output, metric, untrained, trained, final] for every output stage's metrics."""
    rows = []
    for name, m in methods.items():
        for output, entry in (m.get("outputs") or {}).items():
            phases = [entry.get("untrained"), entry.get("trained"), entry.get("final")]
            for label, key in OUTPUT_METRICS:
                if any((p or {}).get(key) is not None for p in phases):
                    rows.append([name, output, label] + [output_cell(p, key) for p in phases])
    return rows


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    sep = [":---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(r) + " |" for r in [header, sep] + rows]


def md_matrix(title: str, stages: list[str], R: np.ndarray, extra: dict[str, list] | None = None) -> list[str]:
    rows = [[f"after {s}"] + [fmt(v) for v in R[i]] for i, s in enumerate(stages)]
    for label, values in (extra or {}).items():
        if values:
            rows.append([label] + [fmt(v) for v in list(values)[: len(stages)]])
    return [f"**{title}**", ""] + md_table([""] + list(stages), rows) + [""]


def md_pairs(title: str, stages: list[str], R, C, blind_note: bool = True) -> list[str]:
    """R with its shuffled control in each cell ("score (shuffled)"); cells above the diagonal are blind."""
    T = len(stages)
    rows = []
    for i, s in enumerate(stages):
        cells = []
        for j in range(T):
            v = (R[i] if i < len(R) else [None] * T)[j] if R else None
            c = (C[i] if C and i < len(C) else [None] * T)[j] if C else None
            cells.append(fmt(v) + (f" ({fmt(c)})" if c is not None else "") + (" blind" if j > i and v is not None
                                                                                 and blind_note else ""))
        rows.append([f"after {s}"] + cells)
    return [f"**{title}**", ""] + md_table([""] + list(stages), rows) + [""]


def md_probes(stages: list[str], m: dict) -> list[str]:
    probes = m.get("text_probes") or {}
    keys = [k for k in ("perplexity", "knowledge", "divergence") if probes.get(k)]
    if not keys:
        return []
    rows = [[f"after {s}"] + [fmt((probes[k] or [None] * len(stages))[i]) for k in keys] for i, s in enumerate(stages)]
    out = ["**Text probes** (test split, no modality input)", ""] + md_table(["", *keys], rows) + [""]
    kept = [(label, m.get(key)) for label, key in (("knowledge after ÷ before", "knowledge_retention"),
                                                  ("knowledge chance-corrected", "knowledge_retention_cc"),
                                                  ("perplexity before ÷ after", "perplexity_retention"))
            if m.get(key) is not None]
    if kept:
        out += ["Retention after the last stage (1.0: nothing lost): " + "; ".join(f"{k} {fmt(v)}" for k, v in kept), ""]
    return out


def md_method(name: str, m: dict) -> list[str]:
    stages = list(m.get("stages", []))
    T = len(stages)
    out = [f"## {name}", ""]
    out += md_pairs("Accuracy matrix R (rows: after training, columns: evaluated on; in brackets the same "
                    "model with observations shuffled; blind: stage not yet grafted, observation dropped)",
                    stages, m.get("acc_matrix"), m.get("shuffled_matrix"))
    extra = {"untrained blind (b_j)": m.get("baseline"), "just after grafting": m.get("pre_scores")}
    extra_rows = [[label] + [fmt(v) for v in values[:T]] for label, values in extra.items()
                  if values and any(v is not None for v in values)]
    if extra_rows:
        out += md_table([""] + stages, extra_rows) + [""]
    if any(v is not None for row in m.get("imitation_matrix") or [] for v in row):
        out += md_matrix("Next-action imitation (demonstration items)", stages, matrix(m.get("imitation_matrix"), T))
    cells = m.get("success_matrix") or []
    if any(c is not None for row in cells for c in row):
        rows = [[f"after {s}"] + [fmt_cell(c) for c in (cells[i] if i < len(cells) else [None] * T)]
                for i, s in enumerate(stages)]
        out += ["**Env rollout success** (rate [95% Wilson interval] n=episodes, held-out seeds)", ""]
        out += md_table([""] + stages, rows) + [""]
    if m.get("unscored_success"):
        out += ["Rollout success not measured for: " + "; ".join(f"{k} ({v})" for k, v in m["unscored_success"].items()),
                ""]
    if any(v is not None for row in m.get("val_matrix") or [] for v in row):
        out += md_matrix("Validation split (what the gate decides on)", stages, matrix(m.get("val_matrix"), T))
    out += md_probes(stages, m)
    if m.get("gate"):
        out += ["**Gate**", ""] + [f"- {g.get('stage')}: **{g.get('decision')}** — {g.get('reason', '')}"
                                    for g in m["gate"]] + [""]
    outputs = output_rows({name: m})
    if outputs:
        title = ("**Output modalities** (untrained: right after grafting; trained: after its own stage; "
                 "final: after the last stage)")
        out += [title, ""]
        out += md_table(["output", "metric", "untrained", "trained", "final"], [r[1:] for r in outputs]) + [""]
    params = m.get("trainable_params") or {}
    if params:
        keys = list(dict.fromkeys(k for p in params.values() for k in p))
        out += ["**Trainable parameters**", ""]
        out += md_table(["stage"] + keys, [[s] + [fmt_count(p.get(k)) for k in keys] for s, p in params.items()]) + [""]
    if m.get("notes"):
        out += ["**Notes**", ""] + [f"- {n}" for n in m["notes"]] + [""]
    return out


def when(report: dict) -> str:
    started = report.get("started")
    try:
        started = datetime.fromisoformat(str(started)).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        pass
    seconds = report.get("seconds")
    took = DASH if seconds is None else f"{int(seconds) // 60} min {float(seconds) % 60:.0f} s"
    return f"Started {started or DASH}, took {took}."


def md_baselines(report: dict) -> list[str]:
    """What every score must beat: per stage chance, majority and the blind untrained agent; the
    random policy and the expert on the same rollout seeds; the base model's text probes."""
    base = report.get("baselines") or {}
    stages = base.get("stages") or {}
    if not stages:
        return []
    out = ["## What the numbers must beat", "",
           "chance: a uniform guess among each question's candidates; majority: always the most common "
           "training answer of the question's group (output stages: the mean training target); blind: the "
           "untrained model with the observation dropped.", ""]
    keys = [("questions", "test items"), ("chance", "chance"), ("majority", "majority"), ("blind", "blind untrained"),
            ("untrained", "grafted, untrained"), ("imitation_chance", "imitation chance"),
            ("imitation_majority", "majority action")]
    keys = [(k, label) for k, label in keys if any(v.get(k) is not None for v in stages.values())]
    out += md_table(["stage"] + [label for _, label in keys],
                    [[s] + [fmt_count(v.get(k)) if k == "questions" else fmt(v.get(k)) for k, _ in keys]
                     for s, v in stages.items()]) + [""]
    success = base.get("success") or {}
    if any(c for cells in success.values() for c in cells or []):
        names = list(stages)
        out += ["**Reference policies** on the same held-out rollout seeds (rate [95% Wilson] n=episodes)", ""]
        out += md_table(["policy"] + names, [[p] + [fmt_cell(c) for c in cells] for p, cells in success.items()]) + [""]
    probes = base.get("text_probes")
    if probes:
        out += ["**Text probes of the model before grafting** (test split): " +
                "; ".join(f"{k} {fmt(v)}" for k, v in probes.items() if k != "items"), ""]
    text = report.get("text") or {}
    if text.get("probes"):
        seen = (f" ({text['test_seen_in_training']} of the {text['test_items']} template test prompts also appear in "
                "training)" if text.get("test_seen_in_training") else "")
        out += [f"Text is measured by: {text['probes']}{seen}.", ""]
    return out


def md_seeds(report: dict) -> list[str]:
    summary = report.get("summary") or {}
    if not summary:
        return []
    keys = [(label, key) for label, key in COLUMNS if any(m.get(key, {}).get("mean") is not None for m in summary.values())]
    out = [f"## Over seeds {report.get('seeds')}", "", "mean ± std over seeds; per-seed values in report.json "
           "(`summary.<method>.<metric>.values`).", ""]
    out += md_table(["method"] + [label for label, _ in keys],
                    [[name] + [f"{fmt(m[k]['mean'])} ± {fmt(m[k]['std'])}" if m[k]["mean"] is not None else DASH
                               for _, k in keys] for name, m in summary.items()]) + [""]
    diffs = report.get("differences") or {}
    for name, d in diffs.items():
        shown = [(label, d[k]) for label, k in keys if k in d and k != "seconds"]
        if shown:
            out += [f"**{name} − {next(iter(d.values()))['versus']}**: " + "; ".join(
                f"{label} {v['mean']:+.3f}" + (" (inside the spread over seeds: noise)" if v["inside_spread"] else "")
                for label, v in shown), ""]
    return out


def markdown(report: dict, plots: dict[str, Path]) -> str:
    methods = report.get("methods", {})
    env = f" on {report['env']}" if report.get("env") else ""
    out = [f"# graft report: {report.get('curriculum', DASH)}{env}", "", when(report), "", "## Comparison", ""]
    if report.get("summary"):
        out += [f"Means over seeds {report.get('seeds')} (success cells pooled over seeds).", ""]
    out += md_table(["method"] + [label for label, _ in COLUMNS],
                    [[name] + metric_cells(m) for name, m in methods.items()]) + [""]
    out += [f"- {line}" for line in EXPLAINED] + [""]
    out += md_seeds(report)
    out += md_baselines(report)
    for name, m in methods.items():
        out += md_method(name, m)
    if plots:
        out += ["## Plots", ""] + [f"![{key}](plots/{path.name})" for key, path in plots.items()] + [""]
    seeds = report.get("seeds")
    seeds = ", ".join(f"{k} {v}" for k, v in seeds.items()) if isinstance(seeds, dict) else str(seeds or DASH)
    out += ["## Seeds and versions", "", f"Seeds: {seeds}", ""]
    out += md_table(["package", "version"], [[k, str(v)] for k, v in (report.get("versions") or {}).items()])
    return "\n".join(out) + "\n"


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


def write_report(run_dir, report: dict) -> dict[str, Path]:
    """Write report.json, report.md and plots/*.png to `run_dir`; returns their paths by name."""
    run_dir = Path(run_dir)
    data = plain(report)
    plots = write_plots(run_dir / "plots", data)
    paths = {"json": write_json_atomic(run_dir / "report.json", data),
             "md": write_text_atomic(run_dir / "report.md", markdown(data, plots))}
    return {**paths, **plots}
