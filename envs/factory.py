"""Env configs → picklable zero-argument env factories, and the wrapper chain of a built env.

An env config is a mapping (or an OmegaConf config, or the name of a file under configs/env):

    _target_: graft.envs.babyai.make_babyai_env   # any factory or gymnasium env class, dotted path
    name: babyai_goto                              # label written into datasets and rollout.json
    level: BabyAI-GoToLocal-v0                     # every other key is a keyword of the target
    wrappers:                                      # optional, applied in order (innermost first)
      - my_pkg.sensors.ForceSensor                 #   a dotted path: Wrapper(env)
      - {_target_: my_pkg.sensors.Noise, std: 0.1} #   or a config: Noise(env, std=0.1)

Instead of `_target_`, `id: CartPole-v1` builds `gymnasium.make(id, **other keys)` (the env as
gymnasium registers it; for BabyAI levels with graft's rgb/grid modalities use
`_target_: graft.envs.babyai.make_babyai_env` with `level:`). `wrappers` is never passed to the
target. `name` is passed when the target names a `name` parameter; otherwise it is set as
`env.unwrapped.name`. The factory is a `functools.partial` of module-level functions, so it pickles
into AsyncVectorEnv workers.

`env_layers(env)` lists the wrapper chain from the outermost layer to `env.unwrapped`;
`find_on_layers(env, attr)` returns the layers that define `attr` (gymnasium >= 1.0 wrappers do not
forward attribute access, so each layer answers only for itself). Language (`describe`) and experts
(`make_expert`) are found this way, so a wrapper can bring its own.
"""
from __future__ import annotations

import functools
import inspect
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import gymnasium as gym

EnvFactory = Callable[[], gym.Env]


def env_config_dir() -> Path:
    """configs/env inside the installed package."""
    return Path(str(resources.files("graft.configs"))) / "env"


def load_env_config(name: str):
    """The OmegaConf config `configs/env/<name>.yaml`."""
    from omegaconf import OmegaConf

    path = env_config_dir() / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in env_config_dir().glob("*.yaml"))
        raise FileNotFoundError(f"no env config {name!r} in {env_config_dir()}; known: {known}")
    return OmegaConf.load(path)


def make_env_factory(env: Any) -> EnvFactory:
    """A picklable zero-argument env factory from a config, a config name or a factory."""
    if isinstance(env, str):
        env = load_env_config(env)
    if callable(env):
        return env
    import hydra.utils
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(env, DictConfig):
        env = OmegaConf.to_container(env, resolve=True)
    if isinstance(env, Mapping):  # e.g. dict(cfg.env): plain on top, OmegaConf values inside
        env = {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v
               for k, v in env.items()}
    if not isinstance(env, Mapping) or ("_target_" not in env and "id" not in env):
        raise TypeError("env must be a config with _target_ (or a gymnasium id), a config name under "
                        f"configs/env or a zero-argument factory, got {env!r}")
    cfg = dict(env)
    wrappers = _wrapper_configs(cfg.pop("wrappers", None) or [])
    name = cfg.get("name")
    if "_target_" in cfg:
        target = hydra.utils.get_object(str(cfg["_target_"])) if isinstance(cfg["_target_"], str) else cfg["_target_"]
        if name is not None and not _takes_name(target):
            cfg.pop("name")
        else:
            name = None  # the target receives it itself
        build = hydra.utils.instantiate(cfg, _partial_=True)
    else:  # `id:` style; `_target_: gymnasium.make` with `id:` goes through the branch above
        cfg.pop("name", None)
        build = functools.partial(gym.make, str(cfg.pop("id")), **cfg)
    if not wrappers and name is None:
        return build
    return functools.partial(_build_env, build, tuple(wrappers), name)


def _wrapper_configs(entries: Any) -> list[dict]:
    """`wrappers:` entries as configs with `_target_`, each checked to be importable now."""
    import hydra.utils

    if not isinstance(entries, (list, tuple)):
        raise TypeError(f"env config 'wrappers' must be a list of dotted paths or configs with _target_, "
                        f"got {entries!r}")
    out = []
    for i, entry in enumerate(entries):
        cfg = {"_target_": entry} if isinstance(entry, str) else dict(entry) if isinstance(entry, Mapping) else None
        if cfg is None or not isinstance(cfg.get("_target_"), str):
            raise TypeError(f"env config wrappers[{i}] must be a dotted path such as 'my_pkg.MyWrapper' "
                            f"or a mapping with _target_ and keyword arguments, got {entry!r}")
        try:
            wrapper = hydra.utils.get_object(cfg["_target_"])
        except Exception as exc:
            raise ImportError(f"env config wrappers[{i}]: cannot import {cfg['_target_']!r} ({exc})") from exc
        if not callable(wrapper):
            raise TypeError(f"env config wrappers[{i}]: {cfg['_target_']!r} is not callable; expected a "
                            "gymnasium Wrapper class (or a function env -> env)")
        out.append(cfg)
    return out


def _takes_name(target: Any) -> bool:
    """Whether `target` declares a `name` parameter (a **kwargs catch-all does not count)."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return "name" in params and params["name"].kind is not inspect.Parameter.VAR_KEYWORD


def _build_env(build: EnvFactory, wrappers: tuple[dict, ...], name: str | None) -> gym.Env:
    import hydra.utils

    env = build()
    if name is not None:
        env.unwrapped.name = name
    for i, cfg in enumerate(wrappers):
        wrapped = hydra.utils.instantiate(cfg, _partial_=True)(env)
        if not isinstance(wrapped, gym.Env):
            raise TypeError(f"env config wrappers[{i}] ({cfg['_target_']}) returned {type(wrapped).__name__}, "
                            "expected a gymnasium env (a Wrapper around the env it was given)")
        env = wrapped
    return env


def env_layers(env: Any) -> list[Any]:
    """The wrapper chain, outermost first, ending with `env.unwrapped`."""
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def find_on_layers(env: Any, attr: str) -> list[Any]:
    """The layers of `env` (outermost first) on which `attr` is defined and not None."""
    return [layer for layer in env_layers(env) if getattr(layer, attr, None) is not None]
