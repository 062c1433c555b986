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
Every file is written atomically; the plots (curricula/plots.py) are swapped in as a folder.
"""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
from graft.curricula.plots import matrix, write_plots
from graft.envs.atomic import write_json_atomic, write_text_atomic

DASH = "–"
COLUMNS = [("avg acc", "avg_acc"), ("shuffled", "avg_shuffled"), ("perception gain", "perception_gain"),
           ("BWT", "bwt"), ("FWT", "fwt"), ("forgetting", "forgetting"), ("imitation", "imitation"),
           ("text retention", "text_retention"), ("text, adapters on", "knowledge_retention_adapters_on"),
           ("success rate", "success_rate"), ("seconds", "seconds")]
EXPLAINED = [
    "avg acc: mean over stages of the final score (multiple-choice accuracy; output stages 1/(1+error/error of "
    "the mean)); shuffled: the same model with observations permuted across test items, averaged over the "
    "stages that read an observation; perception gain: the mean over those stages of score − shuffled (what the "
    "observation adds to the answer prior).",
    "BWT, forgetting: from the accuracy matrix R (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018). FWT = "
    "mean_j R[j−1][j] − b_j: R[j−1][j] scores stage j blind (its modality not yet grafted, placeholder dropped) "
    "after the stages before it, b_j the same blind questions on the untrained model.",
    "text retention: the text probes' knowledge after ÷ before, on text-only prompts; text, adapters on: the "
    "same with every grafted input adapter switched on, as in a prompt that carries observations (under gated "
    "routing a text-only prompt runs none, so only this column shows what the text mix protects).",
    "imitation: next-action accuracy on demonstration items (beside the majority action); success rate: mean "
    "over the final row's rollout cells (episodes on held-out seeds, 95% Wilson intervals in the matrices).",
]
OUTPUT_METRICS = [("score", "score"), ("MSE", "mse"), ("PSNR (dB)", "psnr"), ("L2 to expert", "l2"),
                  ("success rate", "success_rate"), ("ms / sample", "seconds_per_sample"),
                  ("ms / chunk (rollout)", "seconds_per_chunk")]


def fmt(x, decimals: int = 3) -> str:
    if x is None or (isinstance(x, (float, np.floating)) and not np.isfinite(x)):
        return DASH
    if isinstance(x, (bool, str)):
        return str(x)
    return f"{float(x):.{decimals}f}"


def fmt_count(x) -> str:
    return f"{int(x):,}" if isinstance(x, (int, np.integer)) and not isinstance(x, bool) else fmt(x)


OPTIONAL = {"knowledge_retention_adapters_on"}  # a column shown only where some method has the number


def columns(methods: dict) -> list[tuple[str, str]]:
    return [(label, key) for label, key in COLUMNS
            if key not in OPTIONAL or any(m.get(key) is not None for m in methods.values())]


def metric_cells(m: dict, cols: list[tuple[str, str]] | None = None) -> list[str]:
    return [fmt(m.get(key), 1 if key == "seconds" else 3) for _, key in cols or COLUMNS]


def fmt_cell(cell) -> str:
    """A success cell as "rate [lo, hi] n=N"; a bare number as itself."""
    if isinstance(cell, dict):
        lo, hi = cell["ci95"]
        return f"{fmt(cell['rate'])} [{fmt(lo, 2)}, {fmt(hi, 2)}] n={cell['episodes']}"
    return fmt(cell)


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


def comparison_table(report: dict) -> str:
    """Fixed-width plain-text table of the per-method metrics, for the terminal."""
    cols = columns(report.get("methods", {}))
    header = ["method"] + [label for label, _ in cols]
    rows = [[name] + metric_cells(m, cols) for name, m in report.get("methods", {}).items()]
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
    out = []
    for field, title, suffix in (("text_probes", "test split, no modality input", ""),
                                 ("text_probes_on", "the same text with every grafted input adapter switched on, "
                                  "as in a prompt that carries observations", "_adapters_on")):
        probes = m.get(field) or {}
        keys = [k for k in ("perplexity", "knowledge", "divergence") if probes.get(k)]
        if not keys:
            continue
        rows = [[f"after {s}"] + [fmt((probes[k] or [None] * len(stages))[i]) for k in keys]
                for i, s in enumerate(stages)]
        out += [f"**Text probes** ({title})", ""] + md_table(["", *keys], rows) + [""]
        kept = [(label, m.get(key + suffix)) for label, key in (("knowledge after ÷ before", "knowledge_retention"),
                                                               ("knowledge chance-corrected", "knowledge_retention_cc"),
                                                               ("perplexity before ÷ after", "perplexity_retention"))
                if m.get(key + suffix) is not None]
        if kept:
            out += ["Retention after the last stage (1.0: nothing lost): "
                    + "; ".join(f"{k} {fmt(v)}" for k, v in kept), ""]
    return out


def md_hallucination(stages: list[str], m: dict) -> list[str]:
    """POPE and CHAIR per (stage, after) cell beside their controls (curricula/hallucination.py)."""
    H = m.get("hallucination_matrix") or []
    rows = [[stage, f"after {stages[i]}", fmt(h["pope_f1"]), fmt(h["controls"]["pope_f1_shuffled"]),
             fmt(h["controls"]["pope_f1_always_yes"]), fmt(h["yes_ratio"]), fmt(h["chair_i"]),
             fmt(h["controls"]["chair_i_other_scene"]), fmt(h["chair_s"]), str(h["scenes"])]
            for i, row in enumerate(H) for stage, h in zip(stages, row) if h]
    if not rows:
        return []
    title = ("**Hallucination** (POPE F1 of balanced yes/no probes, beside the same model with the views shuffled "
             "and always saying yes; yes-ratio, 0.5 unbiased; CHAIR_i / CHAIR_s of \"Describe what you see.\", "
             "CHAIR_i also against another scene's objects, lower is better)")
    header = ["stage", "after", "POPE F1", "shuffled", "always yes", "yes-ratio", "CHAIR_i", "other scene",
              "CHAIR_s", "scenes"]
    return [title, ""] + md_table(header, rows) + [""]


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
    out += md_hallucination(stages, m)
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
    groups = {stage: after[stages[-1]] for stage, after in (m.get("question_groups") or {}).items()
              if stages and stages[-1] in after}
    if groups:
        out += [f"**Per question group** (after {stages[-1]}: score vs the shuffled control, items)", ""]
        out += md_table(["stage", "group", "items", "score", "shuffled"],
                        [[stage, key.removeprefix("qa:"), str(g["items"]), fmt(g["score"], 3), fmt(g["shuffled"], 3)]
                         for stage, table in groups.items() for key, g in table.items()]) + [""]
    parts = m.get("seconds_by_part") or {}
    if any(parts.values()):
        out += ["**Where the time went**: " + ", ".join(
            f"{k} {v:.0f} s" for k, v in parts.items()) + f" (evaluate includes rollouts; total {m.get('seconds') or 0:.0f} s)", ""]
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
                    [[s] + [fmt_count(int(round(v[k]))) if k == "questions" and v.get(k) is not None else fmt(v.get(k))
                            for k, _ in keys]
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
    cols = columns(methods)
    out += md_table(["method"] + [label for label, _ in cols],
                    [[name] + metric_cells(m, cols) for name, m in methods.items()]) + [""]
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


def write_report(run_dir, report: dict) -> dict[str, Path]:
    """Write report.json, report.md and plots/*.png to `run_dir`; returns their paths by name."""
    run_dir = Path(run_dir)
    data = plain(report)
    plots = write_plots(run_dir / "plots", data)
    paths = {"json": write_json_atomic(run_dir / "report.json", data),
             "md": write_text_atomic(run_dir / "report.md", markdown(data, plots))}
    return {**paths, **plots}
