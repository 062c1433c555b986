"""Normalisation statistics that travel with each adapter, and the check that an env matches them.

Every graft that was trained on env data records what it was trained on: the observation spec and
statistics of each modality it reads, the action space it learned to act in with the statistics of
its demonstrations, and for an action generator the bounds it scales actions with (its
`ActionTokenizer`). They are written with the agent (`save_mmllm`), read back with it, and checked
wherever the agent is put to act (`load_policy`: serve, rollout, ros2, evaluation): an env whose
observation or action space differs from what an adapter was trained on, or a generator whose
scaling differs from its output head's, is refused with an error naming both. So a served agent
cannot pair an adapter with the wrong stats (openvla#87, lerobot#694 and their kin).

    norm_stats.json  {"format": "graft.norm_stats", "version": 1, "grafts": {
        "<graft>": {"env": "mujoco_reach", "samples": 1200,
                    "observation": {"proprio": {"spec": ModalitySpec.to_json(), "stats": STATS}},
                    "action": {"space": protocol.space_to_json(...), "stats": STATS},
                    "normalizer": {"low": [...], "high": [...]}}}}       (action generators only)
    STATS = {"count", "mean", "std", "min", "max", "q01", "q99"}: per dimension of a vector, per
            channel of an image (H, W, C <= 4), one number otherwise

A checkpoint saved before this file existed has none: it loads and acts unchecked, and says so.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from graft.envs.robot.protocol import space_to_json
from graft.envs.spec import ModalitySpec, env_modality_specs

FILE = "norm_stats.json"
FORMAT, VERSION = "graft.norm_stats", 1


class NormStatsMismatch(ValueError):
    """An env (or a generator) does not match the statistics an adapter was trained with."""


def feature_stats(values: np.ndarray) -> dict[str, Any]:
    """STATS (see the module docstring) of `values` (N, *shape)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim <= 2:  # (N,) scalars or (N, D) vectors: per dimension
        axes = (0,)
    elif x.shape[-1] <= 4:  # (N, H, W, C) images: per channel
        axes = tuple(range(x.ndim - 1))
    else:  # (N, H, W) depth maps and the like: one number
        axes = None
    q01, q99 = np.quantile(x, [0.01, 0.99], axis=axes)
    out = {"mean": x.mean(axes), "std": x.std(axes), "min": x.min(axes), "max": x.max(axes), "q01": q01, "q99": q99}
    return {"count": int(x.shape[0]), **{k: np.round(v, 6).tolist() for k, v in out.items()}}


def env_description(env: gym.Env) -> dict[str, Any]:
    """What the stats record of an env: its modality specs, action space and action names."""
    names = getattr(env.unwrapped, "action_names", None)
    names = list(names) if isinstance(env.action_space, gym.spaces.Discrete) and names is not None else None
    return {"specs": env_modality_specs(env), "action": space_to_json(env.action_space, names)}


def graft_stats(env: Mapping[str, Any], env_name: str, observations: Mapping[str, np.ndarray],
                actions: np.ndarray | None = None, normalizer: Any = None) -> dict[str, Any]:
    """One graft's entry: `observations` {modality: (N, *shape)} it was trained on in the env that
    `env_description` described as `env`, the `actions` (N, ...) of its demonstrations, and an action
    generator's `normalizer` (its low, high)."""
    specs = env["specs"]
    missing = [m for m in observations if m not in specs]
    if missing:
        raise ValueError(f"env '{env_name}' emits no modality {missing} (it emits {sorted(specs)})")
    entry: dict[str, Any] = {
        "env": env_name, "samples": max((len(v) for v in observations.values()), default=0),
        "observation": {m: {"spec": specs[m].to_json(), "stats": feature_stats(v)} for m, v in observations.items()},
    }
    if actions is not None:
        entry["action"] = {"space": env["action"], "stats": feature_stats(actions)}
    if normalizer is not None:
        entry["normalizer"] = {"low": np.asarray(normalizer.low).tolist(), "high": np.asarray(normalizer.high).tolist()}
    return entry


def document(grafts: Mapping[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "grafts": dict(grafts)}


def read(folder: str | Path) -> dict[str, Any]:
    """The grafts' stats in an agent folder ({} when it has no norm_stats.json)."""
    path = Path(folder) / FILE
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a graft norm_stats file (format {FORMAT!r} expected)")
    if doc.get("version") != VERSION:
        raise ValueError(f"{path} has norm_stats version {doc.get('version')}; this graft reads version {VERSION}")
    return dict(doc["grafts"])


def _spec(data: Mapping[str, Any]) -> ModalitySpec:
    return ModalitySpec(data["name"], tuple(data["shape"]), data["dtype"], data.get("low"), data.get("high"))


def _space(data: Mapping[str, Any]) -> str:
    if data["type"] == "discrete":
        names = f" named {data['names']}" if data.get("names") else ""
        return f"Discrete({data['n']}, start={data['start']}){names}"
    return f"Box(shape={tuple(data['shape'])}, {data['dtype']}, low={data['low']}, high={data['high']})"


def _same_spec(a: ModalitySpec, b: ModalitySpec) -> bool:
    return (a.shape, np.dtype(a.dtype), a.low, a.high) == (b.shape, np.dtype(b.dtype), b.low, b.high)


def check_env(grafts: Mapping[str, Any], env: gym.Env, env_name: str, reads: Sequence[str]) -> None:
    """Refuse `env` (NormStatsMismatch, naming both sides) if a graft that reads a modality in `reads`
    recorded an observation spec of it, or an action space, that differs from what `env` emits and takes."""
    if not grafts:
        return
    described = env_description(env)
    specs, here = described["specs"], described["action"]
    for graft, entry in grafts.items():
        observed = entry.get("observation") or {}
        if not any(m in reads for m in observed):
            continue  # a graft for a modality this policy does not read (e.g. grid on the reach arm)
        where = f"adapter '{graft}' was trained in env '{entry.get('env')}'"
        for m, obs in observed.items():
            if m not in reads:
                continue
            trained = _spec(obs["spec"])
            if m not in specs:
                raise NormStatsMismatch(f"{where} on {trained.describe()}; env '{env_name}' emits no '{m}' "
                                        f"(it emits {sorted(specs)})")
            if not _same_spec(trained, specs[m]):
                raise NormStatsMismatch(f"{where} on {trained.describe()}; env '{env_name}' emits "
                                        f"{specs[m].describe()}")
        action = entry.get("action")
        if action is not None and action["space"] != here:
            raise NormStatsMismatch(f"{where} to act in {_space(action['space'])}; env '{env_name}' takes "
                                    f"{_space(here)}")


def check_normalizer(grafts: Mapping[str, Any], output: str, generator: Any) -> None:
    """Refuse a generator whose action scaling is not the one output `output` was trained with."""
    recorded = (grafts.get(output) or {}).get("normalizer")
    if recorded is None or getattr(generator, "normalizer", None) is None:
        return
    low, high = np.asarray(generator.normalizer.low).tolist(), np.asarray(generator.normalizer.high).tolist()
    if not (np.allclose(low, recorded["low"]) and np.allclose(high, recorded["high"])):
        raise NormStatsMismatch(f"output '{output}' was trained with actions scaled from low={recorded['low']}, "
                                f"high={recorded['high']}; its generator scales from low={low}, high={high} "
                                "(a generator from another run?)")


def summary(grafts: Mapping[str, Any]) -> dict[str, Any]:
    """What a handshake says of the stats: per graft, its env, sample count and what it records."""
    if not grafts:
        return {"recorded": False, "note": "saved without norm_stats.json: env and stats are not checked"}
    return {"recorded": True, "version": VERSION, "grafts": {
        g: {"env": e.get("env"), "samples": e.get("samples"), "observation": sorted(e.get("observation") or {}),
            "action": e.get("action", {}).get("space", {}).get("type"), "normalizer": "normalizer" in e}
        for g, e in grafts.items()}}
