"""Compose graft's Hydra configs from the installed package (no source checkout needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

CONFIG_MODULE = "graft.configs"


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `configs/<name>.yaml` with command-line style overrides (`key=value`)."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def config_dir() -> Path:
    import graft.configs

    return Path(graft.configs.__file__).parent


def group_options(group: str) -> list[str]:
    """The config names in one group folder, e.g. group_options("modality") → ["depth", "grid", ...]."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def run_dir(cfg, command: str, label: str = "") -> Path:
    """The run folder: `cfg.run_dir` if set, else runs/<command>/<label>-<YYYYmmdd-HHMMSS>."""
    import time

    if cfg.get("run_dir"):
        folder = Path(cfg.run_dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path("runs") / command / (f"{label}-{stamp}" if label else stamp)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
