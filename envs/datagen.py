"""Training data from simulators: captions (MM PT), questions and demonstrations (MM IT).

`generate_dataset(env, out_dir, episodes, seed)` runs the env's expert (`experts.make_expert`), keeps
the episodes it solves, and writes one flat record per (step, utterance): demonstrations for every
modality of `spec.env_modality_specs(env)` (so a sensor a wrapper adds gets demos, described or not),
captions and questions for the modalities a describer on the wrapper chain talks about (`captions`).

    episode_seed int64          reset seed of the episode (train and test never share one)
    step         int32          step index in the episode
    kind         str            "caption" | "qa" | "demo"
    modalities   list[str]      modalities the prompt uses; each appears as "<name>" in `prompt`
    prompt       str            e.g. "How many keys can you see?\n<grid>" (envs/prompts.py)
    response     str            short verifiable answer; for demos the action name (discrete) or
                                the continuous action as space-separated numbers
    action       list[float32]  demos: [action id] or the continuous action; [] otherwise
    mission      str            the episode's mission ("" for an env without a `mission` key)
    env          str            env name (the config's `name`)
    <obs keys>                  every observation entry of that step (`features_for`): BabyAI
                                rgb uint8 (56,56,3), grid uint8 (7,7,3), direction int; reach rgb
                                uint8 (64,64,3), depth float32 (64,64), proprio float32 (6,),
                                objects float32 (N,5); plus whatever a wrapper adds

With `balance` (the default) each split's questions then go through `captions.balance_answers`:
within every question (modalities, question text) the answers are downsampled to equal counts (rare
answers and one-answer questions dropped), so no answer prior, of the group or of the question,
beats an even guess on that split.
Captions and demos are kept as they are.

Written as `<out_dir>/<split>.parquet` with Hugging Face `datasets` (features kept in the Parquet
metadata) plus `datagen.json` (counts, seeds, sizes, timing, and under `balance` each split's qa
counts per group before and after). Same arguments → same rows.
Load with `load_generated(out_dir)`.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import gymnasium as gym
import numpy as np
from graft.envs.atomic import write_json_atomic
from graft.envs.captions import balance_answers, describe, describers
from graft.envs.experts import ExpertFailure, make_expert
from graft.envs.factory import make_env_factory
from graft.envs.prompts import NEXT_ACTION, mission_prompt
from graft.envs.spec import env_modality_specs

DEFAULT_SPLITS = {"train": 0.8, "test": 0.2}
RECORD_FEATURES = {  # the columns of every record; the observation columns (`features_for`) follow
    "episode_seed": datasets.Value("int64"), "step": datasets.Value("int32"),
    "kind": datasets.Value("string"), "modalities": datasets.Sequence(datasets.Value("string")),
    "prompt": datasets.Value("string"), "response": datasets.Value("string"),
    "action": datasets.Sequence(datasets.Value("float32")),
    "mission": datasets.Value("string"), "env": datasets.Value("string"),
}
_ARRAYS = {2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D, 5: datasets.Array5D}


def features_for(space: gym.spaces.Space) -> dict[str, Any]:
    """`datasets` features for the observation columns of an env's Dict observation space.

    Box: a scalar Value (shape ()), a fixed-length Sequence (1-D) or an Array2D..Array5D; Discrete:
    int64; MultiDiscrete / MultiBinary: int64 the same way; Text: a string (the `mission` Text has
    its own column). Other spaces, or a key that collides with a record column, are a clear error.
    """
    if not isinstance(space, gym.spaces.Dict):
        raise TypeError(f"datagen needs an env with a Dict observation space (a modality dict such as "
                        f"{{'rgb': Box, 'mission': Text}}), got {space}")
    out = {}
    for key, sub in space.spaces.items():
        if key == "mission" and isinstance(sub, gym.spaces.Text):
            continue  # the mission has its own column
        if key in RECORD_FEATURES:
            raise ValueError(f"observation key {key!r} collides with the record column of that name; "
                             f"rename the sensor (record columns: {list(RECORD_FEATURES)})")
        out[key] = _feature(key, sub)
    return out


def _feature(key: str, sub: gym.spaces.Space) -> Any:
    if isinstance(sub, gym.spaces.Text):
        return datasets.Value("string")
    if isinstance(sub, gym.spaces.Discrete):
        return datasets.Value("int64")
    if isinstance(sub, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        dtype, shape = "int64", tuple(sub.shape)
    elif isinstance(sub, gym.spaces.Box):
        dtype, shape = str(sub.dtype), tuple(sub.shape)
    else:
        raise TypeError(f"observation {key!r}: no dataset column for {sub}; expected Box, Discrete, "
                        "MultiDiscrete, MultiBinary or Text")
    if len(shape) == 0:
        return datasets.Value(dtype)
    if len(shape) == 1:
        return datasets.Sequence(datasets.Value(dtype), length=shape[0])
    if len(shape) in _ARRAYS:
        return _ARRAYS[len(shape)](shape=shape, dtype=dtype)
    raise TypeError(f"observation {key!r}: {len(shape)}-D arrays {shape} have no dataset column; "
                    "expected at most 5 dimensions")


def record_features(space: gym.spaces.Dict) -> datasets.Features:
    return datasets.Features({**RECORD_FEATURES, **features_for(space)})


def demo_modalities_for(specs: Mapping[str, Any], described: list[str]) -> list[str]:
    """The modalities demos are written for: every spec'd modality, the described ones first (in the
    order the describers give them), then the rest in observation-space order."""
    first = [m for m in dict.fromkeys(described) if m in specs]
    return first + [m for m in specs if m not in first]


def episode_seeds(seed: int) -> Iterator[int]:
    """An endless stream of distinct episode seeds; each split draws from it in turn."""
    rng = np.random.default_rng(seed)
    used: set[int] = set()
    while True:
        s = int(rng.integers(0, 2**31 - 1))
        if s not in used:
            used.add(s)
            yield s


def action_text(env: gym.Env, action: Any) -> tuple[str, list[float]]:
    """(response, action column) for a demo: the action's name, or its numbers."""
    names = getattr(env.unwrapped, "action_names", None)
    if isinstance(env.action_space, gym.spaces.Discrete):
        a = int(action)
        return (names[a] if names else str(a)), [float(a)]
    values = np.asarray(action, dtype=np.float32).ravel()
    return " ".join(f"{v:.3f}" for v in values), values.tolist()


def run_episode(env: gym.Env, ep_seed: int, *, language_every: int = 2, questions: int = 2,
                demo_modalities: str = "each", max_steps: int = 1000) -> list[dict]:
    """All records of one expert episode; raises ExpertFailure if the expert does not succeed."""
    if language_every < 1:
        raise ValueError(f"language_every must be >= 1 (a step interval), got {language_every}")
    expert = make_expert(env)
    obs, info = env.reset(seed=ep_seed)
    expert.reset(env)
    specs = env_modality_specs(env)
    name = getattr(env.unwrapped, "name", type(env.unwrapped).__name__)
    records, demo_sets = [], None
    for step in range(max_steps):
        action = expert.act()
        mission = obs.get("mission", "")
        base = {"episode_seed": ep_seed, "step": step, "mission": mission, "env": name,
                **{k: v for k, v in obs.items() if k != "mission"}}
        said = []
        if step % language_every == 0:
            said = describe(env, obs, np.random.default_rng([ep_seed, step]), questions=questions)
            for u in said:
                records.append({**base, "kind": u.kind, "modalities": [u.modality], "prompt": u.prompt,
                                "response": u.response, "action": []})
        if demo_sets is None:  # step 0 always has language: fix the episode's demo modality order
            mods = demo_modalities_for(specs, [u.modality for u in said])
            demo_sets = {"each": [[m] for m in mods], "all": [mods],
                         "each+all": [[m] for m in mods] + [mods]}[demo_modalities]
        response, values = action_text(env, action)
        for modalities in demo_sets:
            records.append({**base, "kind": "demo", "modalities": modalities, "response": response,
                            "prompt": mission_prompt(mission, NEXT_ACTION, modalities),
                            "action": values})
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    if not info.get("is_success", False):
        raise ExpertFailure(f"expert did not solve episode seed {ep_seed} in {step + 1} steps")
    return records


def generate_dataset(
    env: Any,
    out_dir: str | os.PathLike | None = None,
    episodes: int = 20,
    seed: int = 0,
    splits: Mapping[str, float] = DEFAULT_SPLITS,
    language_every: int = 2,
    questions: int = 2,
    demo_modalities: str = "each",
    max_failures: int | None = None,
    progress: bool = True,
    balance: bool = True,
) -> datasets.DatasetDict:
    """Generate, write (if `out_dir`) and return a DatasetDict; see the module docstring.

    `env`: anything `make_env_factory` takes. With `progress`, one line on stderr when it starts and
    one when it is done (episodes, rows per kind, seconds).
    `splits` maps split name → fraction of `episodes`; every split gets at least one episode.
    Episodes the expert fails are skipped and replaced by fresh seeds (at most `max_failures`, default
    `episodes`, before giving up with ExpertFailure). datagen.json's `samples_per_s` is rows per second
    of simulation, language and Arrow conversion; the Parquet write is `write_seconds`.
    `balance`: balance each split's answers (module docstring), seeded by (`seed`, split index).
    """
    if episodes < len(splits):
        raise ValueError(f"need at least one episode per split, got episodes={episodes}, "
                         f"splits={dict(splits)}")
    if demo_modalities not in ("each", "all", "each+all"):
        raise ValueError(f"demo_modalities must be 'each', 'all' or 'each+all', got {demo_modalities!r}")
    counts = _split_counts(episodes, splits)
    instance = make_env_factory(env)()
    seeds_iter = episode_seeds(seed)
    max_failures = episodes if max_failures is None else max_failures
    out, report = {}, {"seed": seed, "splits": {}, "skipped": [], "balance": {} if balance else None}
    label = getattr(instance.unwrapped, "name", type(instance.unwrapped).__name__)
    started = time.perf_counter()
    try:
        features = record_features(instance.observation_space)
        mods = list(env_modality_specs(instance))
        if not mods:
            raise ValueError(f"{label} emits no modalities (Box entries of its Dict observation space); "
                             "datagen has nothing to write demonstrations for")
        make_expert(instance)  # no expert: a clear TypeError now, not after the first reset
        described = [type(layer).__name__ for layer in describers(instance)] or ["nothing (demos only)"]
        _say(progress, f"datagen {label}: {episodes} expert episodes {dict(counts)}, modalities {mods}, "
                       f"described: {described} ...")
        for index, (split, n) in enumerate(counts.items()):
            rows, used = [], []
            while len(used) < n:
                ep_seed = next(seeds_iter)
                try:
                    rows += run_episode(instance, ep_seed, language_every=language_every,
                                        questions=questions, demo_modalities=demo_modalities)
                    used.append(ep_seed)
                except ExpertFailure as exc:
                    report["skipped"].append({"episode_seed": ep_seed, "reason": str(exc)})
                    if len(report["skipped"]) > max_failures:
                        raise ExpertFailure(f"expert failed {len(report['skipped'])} episodes; last: {exc}")
            if balance:
                qa_before = sum(r["kind"] == "qa" for r in rows)
                split_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
                rows, groups = balance_answers(rows, split_seed)
                report["balance"][split] = {"qa_before": qa_before,
                                            "qa_after": sum(r["kind"] == "qa" for r in rows), **groups}
            out[split] = datasets.Dataset.from_list(rows, features=features)
            report["splits"][split] = {"episodes": n, "episode_seeds": used, "rows": len(rows)}
        report["env"] = label
    finally:
        instance.close()
    seconds = time.perf_counter() - started
    dd = datasets.DatasetDict(out)
    total = sum(len(d) for d in out.values())
    report.update(seconds=round(seconds, 3), rows=total, samples_per_s=round(total / seconds, 1),
                  rows_by_kind={k: int(sum(np.sum(np.array(d["kind"]) == k) for d in out.values()))
                                for k in ("caption", "qa", "demo")})
    if out_dir is not None:
        write_generated(dd, out_dir, report)
    kinds = ", ".join(f"{n} {k}" for k, n in report["rows_by_kind"].items())
    asked = sum(b["qa_before"] for b in report["balance"].values()) if balance else None
    _say(progress, f"datagen {label}: done, {episodes} episodes ({len(report['skipped'])} skipped), "
                   f"{total} rows ({kinds}) in {time.perf_counter() - started:.1f} s"
                   + (f" -> {out_dir}" if out_dir is not None else "")
                   + (f"; balancing kept {report['rows_by_kind']['qa']} of {asked} qa" if balance else ""))
    return dd


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr, flush=True)


def _split_counts(episodes: int, splits: Mapping[str, float]) -> dict[str, int]:
    fractions = np.array([float(f) for f in splits.values()])
    if np.any(fractions <= 0):
        raise ValueError(f"split fractions must be positive, got {dict(splits)}")
    counts = np.maximum(1, np.floor(fractions / fractions.sum() * episodes)).astype(int)
    counts[0] += episodes - counts.sum()  # remainder goes to the first split (train)
    if counts[0] < 1:
        raise ValueError(f"cannot split {episodes} episodes as {dict(splits)}")
    return dict(zip(splits, counts.tolist()))


@contextmanager
def _quiet_datasets():
    """No per-call progress bars from datasets (parquet write/read) inside our own calls."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def write_generated(dd: datasets.DatasetDict, out_dir: str | os.PathLike, report: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for split, ds in dd.items():
        tmp = out_dir / f".{split}.parquet.tmp"
        with _quiet_datasets():
            ds.to_parquet(str(tmp))
        os.replace(tmp, out_dir / f"{split}.parquet")
        report["splits"][split]["bytes"] = (out_dir / f"{split}.parquet").stat().st_size
    report["write_seconds"] = round(time.perf_counter() - started, 3)
    write_json_atomic(out_dir / "datagen.json", report)


def load_generated(out_dir: str | os.PathLike) -> datasets.DatasetDict:
    """Read what `generate_dataset` wrote (all `<split>.parquet` files in `out_dir`)."""
    out_dir = Path(out_dir)
    files = sorted(out_dir.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no <split>.parquet files in {out_dir}; run generate_dataset first")
    with _quiet_datasets():
        return datasets.DatasetDict({f.stem: datasets.Dataset.from_parquet(str(f)) for f in files})

