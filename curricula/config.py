"""Compose graft's Hydra configs from the installed package plus the user's search path.

Every config group (env, modality, output_projector, backbone, ...) is found through Hydra's search
path, so `hydra.searchpath=[file://my_conf]` adds a user's `my_conf/env/my_env.yaml` or
`my_conf/modality/force.yaml` to the package's own options. The composed config keeps that search
path as `searchpath`, so options picked later by name (a stage's `output_projector`, a modality no
default names) come from the same places.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_MODULE = "graft.configs"


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `configs/<name>.yaml` with command-line style overrides (`key=value`)."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides), return_hydra_config=True)
    searchpath = list(cfg.hydra.searchpath)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.searchpath = searchpath
    return cfg


def group_config(cfg: Any, group: str, option: str, what: str = "") -> dict:
    """Config group option `group/option` (e.g. "output_projector", "prefix_attention") as a plain
    dict, found through the package and `cfg.searchpath`."""
    searchpath = list(cfg.get("searchpath") or []) if cfg is not None else []
    overrides = [f"+{group}={option}"] + ([f"hydra.searchpath=[{','.join(searchpath)}]"] if searchpath else [])
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            loaded = compose(config_name=None, overrides=overrides)
    except Exception as err:  # hydra's MissingConfigException and friends
        known = group_options(group, searchpath)
        raise ValueError(f"{what + ': ' if what else ''}no {group} config {option!r} (known: {known}; add your own "
                         f"with hydra.searchpath=[file://<folder>] and <folder>/{group}/<name>.yaml)") from err
    return OmegaConf.to_container(loaded[group], resolve=True)


def modality_config(cfg: Any, name: str) -> Any:
    """The config of modality `name`: `cfg.modalities[name]` if the run names it, else the
    `modality/<name>` option of the search path."""
    if name in (cfg.get("modalities") or {}):
        return cfg.modalities[name]
    return OmegaConf.create(group_config(cfg, "modality", name, f"modality '{name}'"))


def config_dir() -> Path:
    import graft.configs

    return Path(graft.configs.__file__).parent


def group_options(group: str, searchpath: Sequence[str] = ()) -> list[str]:
    """The option names of one group in the package and on `searchpath` (file:// folders)."""
    folders = [config_dir()] + [Path(p[len("file://"):]) for p in searchpath if str(p).startswith("file://")]
    return sorted({p.stem for folder in folders for p in (folder / group).glob("*.yaml")})


def env_label(env_cfg: dict) -> str:
    """What a run folder and a report title call the env: its level if it has one, else its name."""
    return str(env_cfg.get("level") or env_cfg.get("name") or env_cfg.get("_target_", "env")).replace("/", "_")


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
