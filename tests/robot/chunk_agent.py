"""A tiny agent with an action-chunk output, for the serving tests (imported by test files here)."""
from __future__ import annotations

import numpy as np
import torch


def tiny_chunk_agent(compose, **recorded):
    """(MM-LLM with rgb + proprio and an action_chunk output grafted with `recorded` (inputs=, execute=,
    prompt=), its ActionGenerator fitted to actions in [-2, 2], wider than the reach arm's Box)."""
    from graft.agent.build import build_mmllm, graft_output
    from graft.agent.generators import build_generator
    from graft.curricula.config import group_config

    torch.manual_seed(0)
    mm = build_mmllm(compose("chat", ["~modality@modalities.grid", "+modality@modalities.rgb=rgb",
                                      "+modality@modalities.proprio=proprio"]))
    gen_cfg = group_config(None, "generator", "action")
    gen_cfg["unet"]["channels"], gen_cfg["sample_steps"] = [8, 16], 2
    generator = build_generator(gen_cfg).fit(np.random.default_rng(0).uniform(-2.0, 2.0, (64, 2)))
    graft_output(mm, "action_chunk", gen_cfg["output"], generator.cond_tokens, generator.cond_dim, **recorded)
    return mm, generator
