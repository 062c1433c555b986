"""`graft datagen`: an env's expert data and the text-only set, as Parquet files per kind and split.

Writes to the run folder
    env/{train,test}.parquet + env/datagen.json     everything, as `graft.envs.datagen` generates it
    pt-{split}.parquet      captions (MM PT pairs)
    it-{split}.parquet      questions with verifiable answers (MM IT)
    demo-{split}.parquet    observation + mission -> expert action (behaviour cloning)
    text-{split}.parquet    text-only instructions (held-out templates in test)
    datagen.json, datagen.md   row counts, bytes and generation speed
Train and test never share an episode seed.

With `format=lerobot` it writes the env's solved expert episodes as a LeRobotDataset v3 folder
instead (graft.envs.lerobot_export; images as PNG inside the Parquet, no video):
    lerobot/meta/{info.json,stats.json,tasks.parquet,episodes/...}, lerobot/data/chunk-000/file-000.parquet
    datagen.json, datagen.md   episodes, frames, fps, features and speed
the last `test_fraction` of the episodes being info.json's "test" split.
"""
from __future__ import annotations

import time
from pathlib import Path

from graft.curricula.config import run_dir
from graft.envs.atomic import write_json_atomic, write_text_atomic
from graft.envs.datagen import generate_dataset
from graft.envs.text_tasks import text_dataset
from omegaconf import OmegaConf

KINDS = {"pt": "caption", "it": "qa", "demo": "demo"}


def datagen(cfg) -> dict:
    fmt = str(cfg.get("format") or "graft")
    if fmt not in ("graft", "lerobot"):
        raise ValueError(f"datagen format must be 'graft' (Parquet splits per kind) or 'lerobot' (a LeRobotDataset "
                         f"v3 folder), got {fmt!r}")
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    out = run_dir(cfg, "datagen", env_cfg.get("name", "env"))
    if fmt == "lerobot":
        return lerobot_datagen(cfg, env_cfg, out)
    started = time.perf_counter()
    frac = float(cfg.test_fraction)
    dd = generate_dataset(env_cfg, out / "env", episodes=int(cfg.episodes), seed=int(cfg.seed),
                          splits={"train": 1 - frac, "test": frac})
    env_seconds = time.perf_counter() - started
    text_started = time.perf_counter()
    text = text_dataset(train=int(cfg.text.train), test=int(cfg.text.test), seed=int(cfg.seed))
    text_seconds = time.perf_counter() - text_started
    files = {}
    for split, ds in dd.items():
        for short, kind in KINDS.items():
            part = ds.filter(lambda k, kind=kind: k == kind, input_columns="kind")
            files[f"{short}-{split}"] = _write(part, out / f"{short}-{split}.parquet")
    for split, ds in text.items():
        files[f"text-{split}"] = _write(ds, out / f"text-{split}.parquet")
    env_rows = sum(len(d) for d in dd.values())
    report = {
        "env": env_cfg.get("name"), "episodes": int(cfg.episodes), "seed": int(cfg.seed),
        "env_rows": env_rows, "env_seconds": round(env_seconds, 2), "env_rows_per_s": round(env_rows / env_seconds, 1),
        "text_rows": sum(len(d) for d in text.values()), "text_seconds": round(text_seconds, 2),
        "files": files, "run_dir": str(out),
    }
    write_json_atomic(out / "datagen.json", report)
    lines = [f"# Data: {report['env']}", "", (f"{env_rows} env rows in {env_seconds:.1f} s "
             f"({report['env_rows_per_s']} rows/s); {report['text_rows']} text rows."), "",
             "| file | rows | bytes |", "|---|---:|---:|"]
    lines += [f"| {name}.parquet | {f['rows']} | {f['bytes']:,} |" for name, f in files.items()]
    write_text_atomic(out / "datagen.md", "\n".join(lines) + "\n")
    return report


def lerobot_datagen(cfg, env_cfg: dict, out: Path) -> dict:
    from graft.envs.lerobot_export import export_lerobot

    lerobot = cfg.get("lerobot") or {}
    made = export_lerobot(env_cfg, out / "lerobot", episodes=int(cfg.episodes), seed=int(cfg.seed),
                          test_fraction=float(cfg.test_fraction), fps=int(lerobot.get("fps", 10)))
    report = {"format": "lerobot", "env": env_cfg.get("name"), "episodes": int(cfg.episodes), "seed": int(cfg.seed),
              "env_rows": made["frames"], "env_seconds": made["seconds"],
              "env_rows_per_s": round(made["frames"] / max(made["seconds"], 1e-9), 1), "text_rows": 0,
              "lerobot": made, "run_dir": str(out)}
    write_json_atomic(out / "datagen.json", report)
    summary = (f"{made['episodes']} expert episodes, {made['frames']} frames at {made['fps']} fps, {made['tasks']} "
               f"tasks, splits {made['splits']}, in {made['seconds']:.1f} s -> {made['path']}")
    lines = [f"# LeRobotDataset v3: {report['env']}", "", summary, "", "| feature | dtype |", "|---|---|"]
    lines += [f"| {name} | {dtype} |" for name, dtype in made["features"].items()]
    write_text_atomic(out / "datagen.md", "\n".join(lines) + "\n")
    return report


def _write(ds, path: Path) -> dict:
    tmp = path.with_name(f".{path.name}.tmp")
    ds.to_parquet(str(tmp))
    tmp.replace(path)
    return {"rows": len(ds), "bytes": path.stat().st_size}
