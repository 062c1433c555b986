"""Modality Generators (diffusers): goal images (`image`) and action chunks (`action`).

`build_generator(cfg)` makes one from `configs/generator/<name>.yaml` (`_target_` + kwargs; the
`output` section is the MM-LLM side and is ignored here); `load_generator(folder)` reads back what
`save_pretrained` wrote, whichever kind it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

KINDS = {"image": "graft.agent.generators.image.ImageGenerator",
         "action": "graft.agent.generators.action.ActionGenerator"}


def build_generator(cfg: Mapping[str, Any]):
    import hydra.utils
    from omegaconf import DictConfig, OmegaConf

    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    cfg.pop("output", None)
    return hydra.utils.instantiate(cfg, _convert_="all")


def load_generator(folder: str | Path, **kwargs):
    """A saved generator of any kind (graft_generator.json names it)."""
    import importlib

    from graft.agent.generators.base import read_meta

    kind = read_meta(folder).get("kind")
    if kind not in KINDS:
        raise ValueError(f"{folder} is not a saved graft generator (graft_generator.json kind {kind!r}; "
                         f"known: {sorted(KINDS)})")
    module, cls = KINDS[kind].rsplit(".", 1)
    return getattr(importlib.import_module(module), cls).from_pretrained(folder, **kwargs)
