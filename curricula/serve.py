"""`graft serve`: load (or build) an agent for an env and serve it (graft.agent.serve).

    checkpoint=<folder>   a saved MM-LLM (graft.json + safetensors); the agent reads the modalities
                          it shares with the env
    checkpoint=tiny       a fresh, untrained agent: backbone= (default tiny_llama) with every env
                          modality that has a configs/modality file grafted (demos, tests, benches)

There is no `checkpoint=expert`: the only expert that acts from observations would have to be the
MuJoCo reach expert, and the reach observation (rgb, depth, proprio, mission) does not contain the
target position (only pixels and a colour name); BabyAI's bot needs the whole env state.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from graft.agent.build import _versions, build_mmllm, load_mmllm
from graft.agent.policy import Agent
from graft.agent.runtime import configure_threads
from graft.agent.serve import PolicyServer, ServeSettings, agent_check, agent_policy, check_bind, metadata_for
from graft.curricula.config import config_dir
from graft.envs.atomic import write_json_atomic
from graft.envs.rollout import make_env_factory
from omegaconf import OmegaConf


def build_agent(cfg, env) -> tuple[Agent, dict[str, Any]]:
    """The Agent for `cfg.checkpoint` on `env`, and the model description for the handshake."""
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
    else:
        folder = Path(checkpoint)
        if not (folder / "graft.json").exists():
            raise ValueError(f"checkpoint must be a graft checkpoint folder or 'tiny'; "
                             f"{checkpoint!r} has no graft.json")
        mm = load_mmllm(folder)
        versions = json.loads((folder / "graft.json").read_text()).get("versions", {})
    dtype = cfg.get("dtype") or None
    if dtype not in (None, "float32", "bfloat16"):
        raise ValueError(f"serve dtype must be float32 or bfloat16, got {dtype!r}")
    agent = Agent.for_env(mm, env, invalid=str(cfg.invalid), max_new_tokens=int(cfg.max_new_tokens),
                          dtype=getattr(torch, dtype) if dtype else None)
    if not agent.modalities:
        specs = list(getattr(env.unwrapped, "modality_specs", {}))
        raise ValueError(f"the agent reads none of the env's modalities: it has {list(mm.modalities)}, "
                         f"the env emits {specs}")
    backbone = mm.build_config.get("backbone", {})
    model = {"checkpoint": checkpoint, "backbone": backbone.get("name") or backbone.get("pretrained"),
             "adapters": list(mm.bank.names), "modalities": list(agent.modalities), "routing": mm.routing,
             "policy": "scores action names" if agent.discrete else "generates action numbers",
             "chunk": "the one predicted action repeated chunk_size times", "versions": versions}
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
        meta = metadata_for(agent, env, settings, model, cfg.control_rate_hz)
    finally:
        env.close()
    # invalid_answers: continuous answers that did not parse and became the space's centre
    server = PolicyServer(agent_policy(agent), meta, settings, check=agent_check(agent),
                          policy_stats=lambda: {"invalid_answers": agent.invalid_count})

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
