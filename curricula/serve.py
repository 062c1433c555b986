"""`graft serve`: load (or build) an agent for an env and serve it (graft.agent.serve).

    checkpoint=<folder>   a saved agent (graft.json + safetensors): `load_policy` (agent/loader.py)
                          makes its policy for the env
    checkpoint=tiny       a fresh, untrained agent: backbone= (default tiny_llama) with every env
                          modality that has a configs/modality file grafted (demos, tests, benches)

Action chunks: a folder with a saved action generator (`generators/<name>/`, e.g. the action_chunk
output of `graft onboard curriculum=mujoco_outputs`) is served by `ChunkPolicy` (agent/chunk_policy.py):
the prompt shows the output's recorded inputs, the generator samples H actions and each answer is
the first `execute` of them in env units, clipped to the action space (the handshake's chunk_size
is `execute`). `output=` picks: auto (the folder's only action generator; the text Agent if it has
none) | none (always the text Agent) | <name>. The inputs, execute count and prompt template are the
ones `graft_output` recorded in the folder's graft.json; `inputs=` / `execute=` override them, and a
folder that recorded none reads every grafted input modality the env emits and executes min(8, H).

There is no `checkpoint=expert`: the only expert that acts from observations would have to be the
MuJoCo reach expert, and the reach observation (rgb, depth, proprio, mission) does not contain the
target position (only pixels and a colour name); BabyAI's bot needs the whole env state.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from graft.agent.build import _versions, build_mmllm
from graft.agent.chunk_policy import ChunkPolicy
from graft.agent.loader import load_policy
from graft.agent.policy import Agent
from graft.agent.runtime import configure_threads
from graft.agent.serve import Policy, PolicyServer, ServeSettings, agent_policy, check_bind, metadata_for
from graft.curricula.config import group_options, modality_config
from graft.envs.atomic import write_json_atomic
from graft.envs.rollout import make_env_factory
from graft.envs.spec import env_modality_specs
from omegaconf import OmegaConf


def serving(agent: Agent | ChunkPolicy, settings: ServeSettings) -> tuple[Policy, Callable, Callable, ServeSettings]:
    """The server's policy (validated batches), text check, extra stats and settings for `agent`; an
    action-chunk policy answers `execute` actions, so the settings' chunk_size becomes that."""
    if isinstance(agent, ChunkPolicy):
        settings = replace(settings, chunk_size=agent.execute)
    return agent_policy(agent), agent.check_text, agent.stats, settings


def tiny_agent(cfg, env):
    """A fresh, untrained MM-LLM (`build_mmllm`) with every modality the env emits that has a config."""
    available = group_options("modality", cfg.get("searchpath") or [])
    wanted = [m for m in env_modality_specs(env) if m in available]
    torch.manual_seed(int(cfg.seed))
    return build_mmllm({"backbone": cfg.backbone, "projector": cfg.projector, "lora": cfg.lora, "routing": cfg.routing,
                        "modalities": {m: modality_config(cfg, m) for m in wanted}})


def build_agent(cfg, env) -> tuple[Agent | ChunkPolicy, dict[str, Any]]:
    """The policy for `cfg.checkpoint` on `env` (`load_policy`: an Agent, or a ChunkPolicy when the
    checkpoint has an action generator and `output` is not none), and the model description for the
    handshake. The policy only acts: a text Agent scores on merged adapters."""
    checkpoint = str(cfg.checkpoint)
    if checkpoint == "expert":
        raise ValueError("checkpoint=expert is not servable: no env expert acts from observations alone (the "
                         "reach observation lacks the target position; BabyAI's bot needs the env state)")
    if checkpoint == "tiny":
        source, versions = tiny_agent(cfg, env), _versions()
    else:
        source = Path(checkpoint)
        if not (source / "graft.json").exists():
            raise ValueError(f"checkpoint must be a graft checkpoint folder or 'tiny'; "
                             f"{checkpoint!r} has no graft.json")
        versions = json.loads((source / "graft.json").read_text()).get("versions", {})
    inputs = cfg.get("inputs")
    policy = load_policy(source, env, output=cfg.get("output", "auto"), inputs=list(inputs) if inputs else None,
                         execute=cfg.get("execute"), sample_steps=cfg.get("sample_steps"), dtype=cfg.get("dtype"),
                         invalid=str(cfg.get("invalid", "fallback")), max_new_tokens=int(cfg.max_new_tokens),
                         seed=int(cfg.seed), deploy=True)
    mm = policy.mm
    backbone = mm.build_config.get("backbone", {})
    model = {"checkpoint": checkpoint, "backbone": backbone.get("name") or backbone.get("pretrained"),
             "adapters": list(mm.bank.names), "routing": mm.routing, "versions": versions,
             "modalities": list(policy.modalities), "precision": getattr(policy, "precision", None),
             "norm_stats": policy.norm_stats}  # what the adapters were trained on, checked against the env
    if isinstance(policy, ChunkPolicy):
        gen = policy.generator
        model.update(output=policy.output,
                     policy=f"samples action chunks from the '{policy.output}' generator ({gen.sampler}, "
                            f"{int(policy.sample_steps or gen.sample_steps)} steps)",
                     chunk=f"the first {policy.execute} of {gen.horizon} planned actions (receding horizon)")
    else:
        model.update(policy="scores action names" if policy.discrete else "generates action numbers",
                     chunk="the one predicted action repeated chunk_size times")
    return policy, model


def settings_from(cfg) -> ServeSettings:
    return ServeSettings(
        host=str(cfg.host), port=int(cfg.port), token=cfg.token or None, max_batch=int(cfg.max_batch),
        max_wait_ms=float(cfg.max_wait_ms), chunk_size=int(cfg.chunk_size),
        max_message_bytes=int(cfg.max_message_bytes), max_clients=int(cfg.max_clients),
        max_text=int(cfg.max_text), debug_delay_ms=float(cfg.debug_delay_ms),
        protocol=str(cfg.get("protocol", "graft")),
        openpi_keys=dict(OmegaConf.to_container(cfg.openpi_keys)) if cfg.get("openpi_keys") else None)


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
        server = PolicyServer(policy, meta, settings, check=check, policy_stats=policy_stats)
        timing = server.calibrate(env.reset(seed=int(cfg.seed))[0])  # a real first frame
    finally:
        env.close()

    def announce(host: str, port: int) -> None:
        where = f"[{host}]" if ":" in host else host  # IPv6 literals in brackets
        print(f"graft serve: {model['checkpoint']} ({model['backbone']}) for {model['env']}, reads "
              f"{model['modalities']} ({settings.protocol} protocol), inference {timing['inference_ms']['p50']:.1f} ms per "
              f"chunk of {settings.chunk_size} ({timing['chunk_execution_ms']:.0f} ms to execute), "
              f"listening on ws://{where}:{port}", flush=True)
        if timing["warning"]:
            print(f"graft serve: warning: {timing['warning']}", flush=True)
        if ready is not None:
            ready(host, port)

    stats = server.run(announce)
    if cfg.get("run_dir"):
        write_json_atomic(Path(cfg.run_dir) / "serve.json", {"model": model, "stats": stats})
    return stats
