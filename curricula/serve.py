"""`graft serve`: load (or build) an agent for an env and serve it (graft.agent.serve).

    checkpoint=<folder>   a saved MM-LLM (graft.json + safetensors); the agent reads the modalities
                          it shares with the env
    checkpoint=tiny       a fresh, untrained agent: backbone= (default tiny_llama) with every env
                          modality that has a configs/modality file grafted (demos, tests, benches)

Action chunks: a folder with a saved action generator (`generators/<name>/`, e.g. the action_chunk
output of `graft onboard curriculum=mujoco_outputs`) is served by `ChunkPolicy.plan`
(agent/chunk_policy.py): the prompt shows the modalities the output's stage read, the generator
samples H actions and each answer is the first `execute` of them in env units, clipped to the action
space (the handshake's chunk_size is `execute`). `output=` picks: auto (the folder's only action
generator; the text Agent if it has none) | none (always the text Agent) | <name>. The stage's
`inputs` and `rollout.execute` are read from the onboarding run's config.yaml (<run>/<method>/agent);
`inputs=` / `execute=` override them, and without a run config the policy reads every grafted
input modality the env emits and executes min(8, H) actions.

There is no `checkpoint=expert`: the only expert that acts from observations would have to be the
MuJoCo reach expert, and the reach observation (rgb, depth, proprio, mission) does not contain the
target position (only pixels and a colour name); BabyAI's bot needs the whole env state.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from graft.agent.build import _versions, build_mmllm, load_mmllm
from graft.agent.chunk_policy import ChunkPolicy
from graft.agent.generators import load_generator
from graft.agent.generators.base import read_meta
from graft.agent.policy import Agent
from graft.agent.runtime import configure_threads
from graft.agent.serve import (
    Policy,
    PolicyServer,
    ServeSettings,
    agent_check,
    agent_policy,
    check_bind,
    metadata_for,
)
from graft.curricula.config import config_dir
from graft.envs.atomic import write_json_atomic
from graft.envs.rollout import make_env_factory
from graft.envs.spec import ObservationError
from omegaconf import OmegaConf

DEFAULT_EXECUTE = 8  # as rollout_success (curricula/output_stage.py)


def action_output(cfg, folder: Path | None, mm) -> str | None:
    """The output whose saved action generator `output=` (auto | none | <name>) picks, or None."""
    choice = cfg.get("output", "auto")
    choice = "none" if choice is None else str(choice)
    if choice == "none":
        return None
    root = folder / "generators" if folder is not None else None
    saved = ({p.name: read_meta(p).get("kind") for p in sorted(root.iterdir()) if p.is_dir()}
             if root is not None and root.is_dir() else {})
    actions = [n for n, kind in saved.items() if kind == "action" and n in mm.outputs]
    if choice == "auto":
        if len(actions) > 1:
            raise ValueError(f"the checkpoint has several action generators {actions}: pick one with output=<name> "
                             "(or output=none for the text Agent)")
        return actions[0] if actions else None
    if choice not in saved:
        raise ValueError(f"output={choice!r}: the checkpoint has no generators/{choice}/ (saved generators: "
                         f"{list(saved)}); use output=auto | none | <name>")
    if saved[choice] != "action" or choice not in mm.outputs:
        raise ValueError(f"output={choice!r} is not a grafted output with an action generator (its generator is "
                         f"{saved[choice]!r}, outputs: {list(mm.outputs)}); only action chunks can be served")
    return choice


def stage_of(folder: Path, output: str) -> dict[str, Any]:
    """The onboarding stage that trained `output`, from the run's config.yaml (the agent folder is
    <run>/<method>/agent), or {} when there is none."""
    path = folder.resolve().parent.parent / "config.yaml"
    if not path.is_file():
        return {}
    stages = OmegaConf.select(OmegaConf.load(path), "curriculum.stages", default=None)
    for stage in OmegaConf.to_container(stages, resolve=True) if stages is not None else []:
        if isinstance(stage, dict) and stage.get("output") == output:
            return stage
    return {}


def build_chunk_policy(cfg, env, mm, folder: Path, output: str) -> ChunkPolicy:
    """`ChunkPolicy` over output `output` and its saved generator, reading its stage's inputs."""
    if (cfg.get("dtype") or "float32") != "float32":
        raise ValueError(f"dtype={cfg.dtype} applies to the text Agent's merged copy; action chunks are served in "
                         "float32 (dtype=float32, or output=none for the text Agent)")
    generator = load_generator(folder / "generators" / output)
    stage = stage_of(folder, output)
    emits = list(getattr(env.unwrapped, "modality_specs", {}))
    inputs = list(cfg.get("inputs") or stage.get("inputs") or [m for m in mm.modalities if m in emits])
    missing = [m for m in inputs if m not in emits]
    if not inputs or missing:
        raise ValueError(f"output '{output}' reads {inputs}, but the env emits {emits} (missing {missing}); "
                         "set inputs= to modalities both have")
    execute = (cfg.get("execute") or (stage.get("rollout") or {}).get("execute")
               or min(DEFAULT_EXECUTE, generator.horizon))
    return ChunkPolicy(mm, output, generator, env.action_space, inputs, execute=int(execute),
                       sample_steps=cfg.get("sample_steps") or None, seed=int(cfg.seed))


def chunk_check(policy: ChunkPolicy) -> Callable[[Mapping[str, Any]], None]:
    """`agent_check` on the policy's inputs, and no output's signal tokens in the mission (they would
    move where the conditioning is read, or break the prompt)."""
    check = agent_check(policy)
    signals = [t for head in policy.mm.outputs.values() for t in head.token_strings()]

    def both(obs: Mapping[str, Any]) -> None:
        check(obs)
        mission = obs.get("mission", "")
        for token in signals:
            if token in mission:
                raise ObservationError(f"text key 'mission' contains the signal token {token}, which is reserved "
                                       "for the model's output; expected plain text")
    return both


def serving(agent: Agent | ChunkPolicy, settings: ServeSettings) -> tuple[Policy, Callable, Callable, ServeSettings]:
    """The server's policy, observation check, extra stats and settings for `agent`; an action-chunk
    policy answers `execute` actions, so the settings' chunk_size becomes that."""
    if isinstance(agent, ChunkPolicy):
        return (agent.plan, chunk_check(agent),
                lambda: {"plans": agent.plans, "seconds_per_chunk": agent.seconds_per_chunk},
                replace(settings, chunk_size=agent.execute))
    # invalid_answers: continuous answers that did not parse and became the space's centre
    return agent_policy(agent), agent_check(agent), lambda: {"invalid_answers": agent.invalid_count}, settings


def build_agent(cfg, env) -> tuple[Agent | ChunkPolicy, dict[str, Any]]:
    """The policy for `cfg.checkpoint` on `env` (an Agent, or a ChunkPolicy when the checkpoint has an
    action generator and `output` is not none), and the model description for the handshake."""
    checkpoint = str(cfg.checkpoint)
    if checkpoint == "expert":
        raise ValueError("checkpoint=expert is not servable: no env expert acts from observations alone (the "
                         "reach observation lacks the target position; BabyAI's bot needs the env state)")
    if checkpoint == "tiny":
        available = {p.stem for p in (config_dir() / "modality").glob("*.yaml")}
        wanted = [m for m in getattr(env.unwrapped, "modality_specs", {}) if m in available]
        torch.manual_seed(int(cfg.seed))
        mm = build_mmllm({
            "backbone": cfg.backbone, "projector": cfg.projector, "lora": cfg.lora, "routing": cfg.routing,
            "modalities": {m: OmegaConf.load(config_dir() / "modality" / f"{m}.yaml") for m in wanted},
        })
        versions = _versions()
        folder = None
    else:
        folder = Path(checkpoint)
        if not (folder / "graft.json").exists():
            raise ValueError(f"checkpoint must be a graft checkpoint folder or 'tiny'; "
                             f"{checkpoint!r} has no graft.json")
        mm = load_mmllm(folder)
        versions = json.loads((folder / "graft.json").read_text()).get("versions", {})
    backbone = mm.build_config.get("backbone", {})
    model = {"checkpoint": checkpoint, "backbone": backbone.get("name") or backbone.get("pretrained"),
             "adapters": list(mm.bank.names), "routing": mm.routing, "versions": versions}
    output = action_output(cfg, folder, mm)
    if output is not None:
        policy = build_chunk_policy(cfg, env, mm, folder, output)
        gen = policy.generator
        model.update(modalities=list(policy.modalities), output=output,
                     policy=f"samples action chunks from the '{output}' generator ({gen.sampler}, "
                            f"{int(policy.sample_steps or gen.sample_steps)} steps)",
                     chunk=f"the first {policy.execute} of {gen.horizon} planned actions (receding horizon)")
        return policy, model
    dtype = cfg.get("dtype") or None
    if dtype not in (None, "float32", "bfloat16"):
        raise ValueError(f"serve dtype must be float32 or bfloat16, got {dtype!r}")
    agent = Agent.for_env(mm, env, invalid=str(cfg.invalid), max_new_tokens=int(cfg.max_new_tokens),
                          dtype=getattr(torch, dtype) if dtype else None)
    if not agent.modalities:
        specs = list(getattr(env.unwrapped, "modality_specs", {}))
        raise ValueError(f"the agent reads none of the env's modalities: it has {list(mm.modalities)}, "
                         f"the env emits {specs}")
    model.update(modalities=list(agent.modalities),
                 policy="scores action names" if agent.discrete else "generates action numbers",
                 chunk="the one predicted action repeated chunk_size times")
    return agent, model


def settings_from(cfg) -> ServeSettings:
    return ServeSettings(
        host=str(cfg.host), port=int(cfg.port), token=cfg.token or None, max_batch=int(cfg.max_batch),
        max_wait_ms=float(cfg.max_wait_ms), chunk_size=int(cfg.chunk_size),
        max_message_bytes=int(cfg.max_message_bytes), max_clients=int(cfg.max_clients),
        max_text=int(cfg.max_text), debug_delay_ms=float(cfg.debug_delay_ms))


def run_serve(cfg, ready: Callable[[str, int], None] | None = None) -> dict:
    """Build the server from a composed `serve` config and serve until SIGTERM/SIGINT; return stats."""
    settings = settings_from(cfg)
    check_bind(settings.host, settings.token)  # before minutes of model loading
    configure_threads(cfg.get("threads", "auto"))
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    env = make_env_factory(env_cfg)()
    try:
        agent, model = build_agent(cfg, env)
        model["env"] = env_cfg.get("name", "env")
        policy, check, policy_stats, settings = serving(agent, settings)
        meta = metadata_for(agent, env, settings, model, cfg.control_rate_hz)
    finally:
        env.close()
    server = PolicyServer(policy, meta, settings, check=check, policy_stats=policy_stats)

    def announce(host: str, port: int) -> None:
        where = f"[{host}]" if ":" in host else host  # IPv6 literals in brackets
        print(f"graft serve: {model['checkpoint']} ({model['backbone']}) for {model['env']}, reads "
              f"{model['modalities']}, listening on ws://{where}:{port}", flush=True)
        if ready is not None:
            ready(host, port)

    stats = server.run(announce)
    if cfg.get("run_dir"):
        write_json_atomic(Path(cfg.run_dir) / "serve.json", {"model": model, "stats": stats})
    return stats
