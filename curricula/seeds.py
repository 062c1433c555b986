"""Several seeds of one comparison as one report: per-seed values, mean ± std, and which method
differences are smaller than the spread over seeds.

`combine({seed: report}, curriculum)` takes the per-seed reports of `graft onboard seeds=[...]`
(each a full run: its own data, initialisation and batches) and returns the top-level report:

    seeds                          the seeds, in order; runs: {seed: run folder}
    summary.<m>.<metric>           {mean, std (over seeds, ddof=1), values (per seed)}
    differences.<m>.<metric>       method m − the first method: {mean, std of the per-seed
                                   differences, inside_spread}, inside_spread when |mean| is at most
                                   the larger of the two methods' stds (then the difference is noise)
    methods.<m>                    matrices averaged cell by cell; success cells pooled over seeds
                                   (their episodes summed, one Wilson interval); the metrics' means
    baselines                      stage references averaged over seeds; success cells pooled
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from graft.curricula.metrics import success_cell, summarize

METRICS = ("avg_acc", "avg_shuffled", "perception_gain", "bwt", "fwt", "forgetting", "imitation", "success_rate",
           "text_retention", "knowledge_retention", "knowledge_retention_cc", "perplexity_retention",
           "knowledge_retention_adapters_on", "perplexity_retention_adapters_on", "seconds")
MATRICES = ("acc_matrix", "shuffled_matrix", "imitation_matrix", "val_matrix")


def mean_cells(values: list) -> Any:
    """Cell-wise mean of equally shaped nested lists (None where any seed lacks the cell)."""
    if values and all(isinstance(v, list) for v in values):
        return [mean_cells(list(cells)) for cells in zip(*values)]
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def pool_cells(values: list) -> Any:
    """Success cells pooled over seeds: successes and episodes summed, one interval."""
    if values and all(isinstance(v, list) for v in values):
        return [pool_cells(list(cells)) for cells in zip(*values)]
    if not values or any(not isinstance(v, Mapping) for v in values):
        return None
    successes = sum(int(round(v["rate"] * v["episodes"])) for v in values)
    return success_cell(successes, sum(int(v["episodes"]) for v in values))


def combine(reports: Mapping[int, dict], curriculum: str) -> dict:
    seeds = list(reports)
    first = reports[seeds[0]]
    names = list(first["methods"])
    per = {m: [reports[s]["methods"][m] for s in seeds] for m in names}
    summary = {m: {k: summarize([r.get(k) for r in runs]) for k in METRICS} for m, runs in per.items()}
    differences = {}
    for m in names[1:]:
        differences[m] = {}
        for k in METRICS:
            pairs = [(a.get(k), b.get(k)) for a, b in zip(per[m], per[names[0]])]
            d = [a - b for a, b in pairs if a is not None and b is not None]
            if not d:
                continue
            spread = max(summary[m][k]["std"] or 0.0, summary[names[0]][k]["std"] or 0.0)
            mean = float(np.mean(d))
            differences[m][k] = {"mean": mean, "std": float(np.std(d, ddof=1)) if len(d) > 1 else 0.0,
                                 "inside_spread": abs(mean) <= spread, "versus": names[0]}
    methods = {}
    for m, runs in per.items():
        entry = {k: summary[m][k]["mean"] for k in METRICS}
        entry.update({k: mean_cells([r[k] for r in runs]) for k in MATRICES})
        entry["success_matrix"] = pool_cells([r["success_matrix"] for r in runs])
        entry["baseline"] = mean_cells([r["baseline"] for r in runs])
        entry.update(stages=runs[0]["stages"], gate=[{**g, "seed": s} for s, r in zip(seeds, runs) for g in r["gate"]],
                     notes=list(dict.fromkeys(n for r in runs for n in r.get("notes", []))))
        probes = [r.get("text_probes") or {} for r in runs]
        entry["text_probes"] = {k: mean_cells([p.get(k) for p in probes]) for k in probes[0]}
        methods[m] = entry
    stage_keys = {s: list(v) for s, v in first["baselines"]["stages"].items()}
    baselines = {
        "stages": {s: {k: mean_cells([reports[x]["baselines"]["stages"][s].get(k) for x in seeds]) for k in keys}
                   for s, keys in stage_keys.items()},
        "success": {p: pool_cells([reports[x]["baselines"]["success"][p] for x in seeds])
                    for p in first["baselines"]["success"]},
    }
    if "text_probes" in first["baselines"]:
        baselines["text_probes"] = {k: mean_cells([reports[x]["baselines"]["text_probes"].get(k) for x in seeds])
                                    for k in first["baselines"]["text_probes"]}
    return {"curriculum": curriculum, "env": first.get("env"), "seeds": seeds,
            "runs": {str(s): reports[s].get("run_dir") for s in seeds}, "stages": first["stages"],
            "started": first.get("started"), "seconds": round(sum(r.get("seconds") or 0 for r in reports.values()), 1),
            "versions": first.get("versions"), "text": first.get("text"), "baselines": baselines,
            "methods": methods, "summary": summary, "differences": differences}
