"""One way from a trained agent to a policy: `load_policy(source, env, ...)`.

    policy = load_policy("runs/onboard/.../graft/agent", env)          # a saved agent folder
    policy = load_policy(mm, env, generators=run.generators)          # an MM-LLM in memory (training)
    policy.infer(obs)["actions"]                                      # see agent/policy.py

`graft serve`, `graft rollout`, `graft ros2` and evaluation all go through it, so a checkpoint acts
the same everywhere. Everything comes from the agent itself (nothing reads a run's config.yaml):
its grafts, what `graft_output` recorded for an output modality (agent/build.py), the generator's
saved normalisation stats, and from `env` what it emits (`env_modality_specs`: sensors a wrapper
adds count), its action space and action names. The agent's recorded normalisation stats
(agent/norm_stats.py) are checked against the env and the generator before any policy is returned:
a mismatch raises `NormStatsMismatch` naming both sides; `policy.norm_stats` summarises them.

`output` picks the policy: "auto" — the agent's only action generator (`ChunkPolicy`), the text
`Agent` when it has none; "none" (or None) — always the text Agent; a name — that output's action
generator. Overrides for action chunks: `inputs`, `execute`, `sample_steps`; for the text Agent:
`inputs`, `dtype` (its merged deployment copy: float32 | bfloat16 | auto), `invalid`, `max_new_tokens`.

`dtype="auto"` measures the choice on this host (agent/precision.py): the text Agent's scoring is
timed in float32 and bfloat16 on probe prompts in its own format (observations sampled from each
modality, or the `probe` observations given) and bfloat16 is used only when it is faster and picks
float32's action on >= 99% of the probes. Every policy records its precision as `policy.precision`
({"dtype", "reason", and for a measured choice "ms", "agreement", "probes", "cpu"}) for a handshake to
report. Action chunks, and a text Agent generating continuous actions, stay in float32.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from graft.agent import norm_stats
from graft.agent.chunk_policy import PROMPT as CHUNK_PROMPT
from graft.agent.chunk_policy import ChunkPolicy
from graft.agent.generators import load_generator
from graft.agent.generators.base import read_meta
from graft.agent.mmllm import MMLLM
from graft.agent.policy import Agent
from graft.agent.precision import choose_dtype, cpu_capability, probe_examples
from graft.envs.spec import env_modality_specs

DEFAULT_EXECUTE = 8  # actions per chunk when the output recorded none (as rollout_success)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_policy(source: str | Path | MMLLM, env: gym.Env, *, generators: Mapping[str, Any] | None = None,
                output: str | None = "auto", inputs: Sequence[str] | None = None, execute: int | None = None,
                sample_steps: int | None = None, dtype: str | torch.dtype | None = None, invalid: str = "fallback",
                max_new_tokens: int = 32, seed: int = 0, deploy: bool = False,
                probe: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
                revisits: str = "repeat") -> Agent | ChunkPolicy:
    """The policy of agent `source` (a saved folder, or an MMLLM with its `generators` by output
    name) acting in `env`; see the module docstring. `deploy=True`: see `Agent`. `probe`: real
    observations for `dtype="auto"` to measure on (default: sampled ones)."""
    from graft.agent.build import load_mmllm  # hydra and safetensors: only when reading a folder

    folder = None if isinstance(source, MMLLM) else Path(source)
    mm = source if folder is None else load_mmllm(folder)
    if generators is not None:
        kinds = {n: getattr(g, "kind", None) for n, g in generators.items()}
    else:
        kinds = saved_generator_kinds(folder) if folder is not None else {}
    emits = env_modality_specs(env)
    name = pick_output(mm, kinds, output, saved=generators is None)
    env_name = env.spec.id if getattr(env, "spec", None) is not None else type(env.unwrapped).__name__
    norm_stats.check_env(mm.norm_stats, env, env_name, reads_of(mm, name, inputs, emits))  # before any probing
    if name is None:
        agent = text_agent(mm, env, emits, inputs=inputs, dtype=dtype, invalid=invalid,
                           max_new_tokens=max_new_tokens, deploy=deploy, probe=probe, revisits=revisits)
    else:
        generator = generators[name] if generators is not None else load_generator(folder / "generators" / name)
        norm_stats.check_normalizer(mm.norm_stats, name, generator)
        agent = chunk_policy(mm, name, generator, env, emits, inputs=inputs, execute=execute,
                             sample_steps=sample_steps, dtype=dtype, seed=seed)
    agent.norm_stats = norm_stats.summary(mm.norm_stats)
    return agent


def saved_generator_kinds(folder: Path) -> dict[str, str | None]:
    """{output name: generator kind} of the generators saved in an agent folder, without loading them."""
    root = folder / "generators"
    return {p.name: read_meta(p).get("kind") for p in sorted(root.iterdir()) if p.is_dir()} if root.is_dir() else {}


def reads_of(mm: MMLLM, output: str | None, inputs: Sequence[str] | None, emits: Mapping) -> list[str]:
    """The modalities a policy's prompt shows: `inputs` if given, else for an output what
    `graft_output` recorded, else every grafted input modality the env emits."""
    recorded = (mm.graft_configs.get(output, {}).get("output") or {}) if output is not None else {}
    return list(inputs or recorded.get("inputs") or [m for m in mm.modalities if m in emits])


def pick_output(mm: MMLLM, kinds: Mapping[str, str | None], choice: str | None, saved: bool = True) -> str | None:
    """The output whose action generator `choice` (auto | none | <name>) picks, or None for the text Agent;
    `kinds` maps output names to their generator's kind (`saved`: read from the folder, else given)."""
    where = "the checkpoint" if saved else "the agent"
    choice = "none" if choice is None else str(choice)
    if choice == "none":
        return None
    actions = [n for n, kind in kinds.items() if kind == "action" and n in mm.outputs]
    if choice == "auto":
        if len(actions) > 1:
            raise ValueError(f"{where} has several action generators {actions}: pick one with output=<name> "
                             "(or output=none for the text Agent)")
        return actions[0] if actions else None
    if choice not in kinds:
        has = (f"the checkpoint has no generators/{choice}/ (saved generators: {list(kinds)})" if saved
               else f"no generator was given for it (generators: {list(kinds)})")
        raise ValueError(f"output={choice!r}: {has}; use output=auto | none | <name>")
    if kinds[choice] != "action" or choice not in mm.outputs:
        raise ValueError(f"output={choice!r} is not a grafted output with an action generator (its generator is "
                         f"{kinds[choice]!r}, outputs: {list(mm.outputs)}); only action chunks can be served")
    return choice


def text_agent(mm: MMLLM, env: gym.Env, emits: Mapping, *, inputs: Sequence[str] | None = None,
               dtype: str | torch.dtype | None = None, invalid: str = "fallback", max_new_tokens: int = 32,
               deploy: bool = False, probe: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
               revisits: str = "repeat") -> Agent:
    """The text Agent reading `inputs` (default: every grafted modality the env emits); `dtype="auto"`
    picks its merged copy's precision by measuring (see the module docstring, `probe`: what on)."""
    auto = dtype == "auto"
    dtype = None if auto else DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if dtype is not None and dtype not in DTYPES.values():
        raise ValueError(f"dtype must be float32 or bfloat16 (the text Agent's merged copy), or auto (measured on "
                         f"this host), got {dtype!r}")
    modalities = reads_of(mm, None, inputs, emits)
    if not modalities:
        raise ValueError(f"the agent reads none of the env's modalities: it has {list(mm.modalities)}, "
                         f"the env emits {list(emits)}")
    missing = [m for m in modalities if m not in emits]
    if missing:
        raise ValueError(f"the agent reads {modalities}, but the env emits {list(emits)} (missing {missing}); "
                         "set inputs= to modalities both have")
    agent = Agent(mm, env.action_space, getattr(env.unwrapped, "action_names", None), modalities=modalities,
                  invalid=invalid, max_new_tokens=int(max_new_tokens), deploy=deploy, dtype=dtype, specs=emits,
                  revisits=revisits)
    if not auto:
        agent.precision = given_precision(mm, dtype)
    elif not agent.discrete:  # generation runs on the live model: a deployment dtype would change nothing
        own = given_precision(mm, None)["dtype"]
        agent.precision = {"dtype": own, "reason": f"auto: continuous actions are generated on the live model, in its "
                                                   f"own dtype ({own}); dtype applies to scoring discrete actions"}
    else:
        # deploy=False scores on the live model: measure for when it deploys, keep no copy until then
        choice = choose_dtype(mm, probe_examples(agent, probe), agent.action_names, keep=deploy)
        agent.dtype = DTYPES[choice["dtype"]]
        agent.precision = {**choice, "reason": f"auto: {choice['reason']}", "cpu": cpu_capability()}
    return agent


def given_precision(mm: MMLLM, dtype: torch.dtype | None) -> dict[str, str]:
    """`policy.precision` for a dtype given (None: the model's own)."""
    if dtype is not None:
        return {"dtype": str(dtype).removeprefix("torch."), "reason": "given"}
    own = next((str(p.dtype).removeprefix("torch.") for p in mm.backbone.parameters()), "float32")
    return {"dtype": own, "reason": "default: the model's own dtype"}


def chunk_policy(mm: MMLLM, output: str, generator, env: gym.Env, emits: Mapping, *,
                 inputs: Sequence[str] | None = None, execute: int | None = None, sample_steps: int | None = None,
                 dtype: str | torch.dtype | None = None, seed: int = 0) -> ChunkPolicy:
    """`ChunkPolicy` over output `output` and its generator, as `graft_output` recorded it (overrides win)."""
    if dtype not in (None, "float32", torch.float32, "auto"):
        if isinstance(dtype, str) and dtype not in DTYPES:
            raise ValueError(f"dtype must be float32 or bfloat16, or auto, got {dtype!r}")
        raise ValueError(f"dtype={dtype} applies to the text Agent's merged copy; action chunks are served in "
                         "float32 (dtype=float32 or auto, or output=none for the text Agent)")
    recorded = mm.graft_configs.get(output, {}).get("output") or {}
    reads = reads_of(mm, output, inputs, emits)
    missing = [m for m in reads if m not in emits]
    if not reads or missing:
        raise ValueError(f"output '{output}' reads {reads}, but the env emits {list(emits)} (missing {missing}); "
                         "set inputs= to modalities both have")
    execute = int(execute or recorded.get("execute") or min(DEFAULT_EXECUTE, generator.horizon))
    policy = ChunkPolicy(mm, output, generator, env.action_space, reads, execute=execute,
                         sample_steps=int(sample_steps) if sample_steps else None, seed=int(seed),
                         prompt=recorded.get("prompt") or CHUNK_PROMPT, specs=emits)
    policy.precision = {"dtype": "float32", "reason": ("auto: action chunks are served in float32" if dtype == "auto"
                                                       else "action chunks are served in float32")}
    return policy
