"""Control step (observation → discrete action): graft's fast path against `generate()`.

    python -m bench.control_step [tiny_llama|smollm2_135m] [rounds]      (from the repo root)

The agent reads BabyAI GoToLocal's observation (modalities from the bench config; default the
7x7x3 grid, 49 projected tokens) and picks one of the env's 7 action names. LoRA adapters carry
seeded random non-zero weights, so merging them is not a no-op. Variants, timed interleaved on
the same observations (one control step each, batch 1):

  generate      the baseline users write today (OpenVLA's `predict_action` shape): the peft model
                with unmerged adapters, HF `generate()` on the full prompt at every step, greedy,
                exactly as many new tokens as the longest action name plus the end token, then
                string-match the answer to an action name.
  repeated      graft before this work: `MMLLM.score_repeated`, the full prompt once per candidate.
  tree          every candidate as a token tree after the prompt, one forward (live peft model).
  tree+prefix   + the template head's keys/values cached (live peft model).
  graft         + adapters merged into a deployment copy: `Agent(deploy=True)`, graft's path.
  graft_bf16    graft's path on a bfloat16 deployment copy (a different precision: reported
                beside, never used as the headline ratio).

FLOP floor: 2 × (transformer-body parameters × tokens processed + LM-head parameters × positions
whose logits are computed) ÷ the fp32 matmul FLOP/s measured in the same run.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch

from bench.common import interleaved, matmul_flops, median


def build(backbone: str, modalities: Sequence[str], seed: int = 0):
    """An MM-LLM with `modalities` grafted and seeded random LoRA weights; env observations; names."""
    from graft.agent.build import build_mmllm
    from graft.curricula.config import compose_config
    from graft.envs.rollout import load_env_config, make_env_factory

    torch.manual_seed(seed)
    overrides = [f"backbone={backbone}"] + [f"+modality@modalities.{m}={m}" for m in modalities if m != "grid"]
    if "grid" not in modalities:
        overrides.append("~modality@modalities.grid")
    mm = build_mmllm(compose_config("chat", overrides)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in mm.bank.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    env = make_env_factory(load_env_config("babyai_goto"))()
    obs = []
    for episode in range(4):
        o, _ = env.reset(seed=seed + episode)
        for _ in range(4):
            obs.append({k: (np.asarray(v)[None] if k != "mission" else [v]) for k, v in o.items()})
            o, *_ = env.step(env.action_space.sample())
    names = list(env.unwrapped.action_names)
    space = env.action_space
    env.close()
    return mm, obs, names, space


def param_counts(model) -> tuple[int, int]:
    """(transformer-body parameters a token passes through, LM-head parameters)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = inner.get_output_embeddings().weight.numel()
    emb = inner.get_input_embeddings().weight.numel()
    body = sum(p.numel() for n, p in inner.named_parameters() if "lora_" not in n) - emb
    if inner.get_output_embeddings().weight is not inner.get_input_embeddings().weight:
        body -= head
    return body, head


def run(backbone: str = "tiny_llama", modalities: Sequence[str] = ("grid",), rounds: int = 10,
        bf16: bool = True, flops: float | None = None) -> dict:
    from graft.agent.fast_path import FastScorer, Trie
    from graft.agent.policy import Agent

    mm, obs, names, space = build(backbone, modalities)
    agent = Agent(mm, space, names, modalities=list(modalities), deploy=True)
    examples = [agent.examples(o) for o in obs]
    cand = [mm._token_ids(n) for n in names]
    new_tokens = max(len(c) for c in cand) + 1  # the longest action name and its end token

    def generate(r: int) -> int:  # what users write: generate on the full prompt, match the string
        text = mm.generate(examples[r % len(obs)], max_new_tokens=new_tokens, min_new_tokens=new_tokens)[0]
        return next((i for i, n in enumerate(names) if text.startswith(n)), 0)

    tree = FastScorer(mm, cache_head=False)
    prefix = FastScorer(mm)
    variants = {
        "generate": generate,
        "repeated": lambda r: mm.score_repeated(examples[r % len(obs)], names).argmax(-1),
        "tree": lambda r: tree.score(examples[r % len(obs)], names).argmax(-1),
        "tree+prefix": lambda r: prefix.score(examples[r % len(obs)], names).argmax(-1),
        "graft": lambda r: agent(obs[r % len(obs)]),
    }
    if bf16:
        fast16 = Agent(mm, space, names, modalities=list(modalities), deploy=True, dtype=torch.bfloat16)
        variants["graft_bf16"] = lambda r: fast16(obs[r % len(obs)])
    # same actions from every exact path (bf16 may differ in near ties)
    agree = [int(variants["repeated"](i)) == int(agent(obs[i])[0]) for i in range(len(obs))]
    bf16_agree = [int(fast16(obs[i])[0]) == int(agent(obs[i])[0]) for i in range(len(obs))] if bf16 else []
    with torch.no_grad():
        times = interleaved(variants, rounds)
    flops = flops or matmul_flops()
    body, head = param_counts(mm.bank.model)
    length = median([mm.embed_prompts(ex)[0].shape[0] for ex in examples])
    h = len(prefix.head_ids())
    T = len(Trie(cand))
    tokens = {"generate": (length + new_tokens - 1, new_tokens), "repeated": (len(names) * (length + max(map(len, cand))),) * 2, "tree": (length + T, 1 + T),
              "tree+prefix": (length - h + T, 1 + T), "graft": (length - h + T, 1 + T), "graft_bf16": (length - h + T, 1 + T)}
    base = median(times["generate"])
    rows = {}
    for name, ts in times.items():
        sec = median(ts)
        tok, logit_pos = tokens[name]
        floor = 2 * (body * tok + head * logit_pos) / flops
        rows[name] = {"ms": round(sec * 1e3, 3), "hz": round(1 / sec, 2), "speedup_vs_generate": round(base / sec, 3),
                      "tokens": int(tok), "logit_positions": int(logit_pos), "floor_ms": round(floor * 1e3, 3),
                      "times_floor": round(sec / floor, 2)}
    return {"backbone": backbone, "modalities": list(modalities), "rounds": rounds, "actions": names,
            "prompt_tokens": int(length), "cached_head_tokens": h, "tree_tokens": T, "generate_new_tokens": new_tokens,
            "params_body": body, "params_head": head, "matmul_gflops": round(flops / 1e9, 1),
            "same_action_as_repeated": float(np.mean(agree)),
            "bf16_same_action": float(np.mean(bf16_agree)) if bf16 else None,
            "speedup_vs_generate": rows["graft"]["speedup_vs_generate"], "variants": rows}


if __name__ == "__main__":
    import json

    torch.set_num_threads(1)
    args = sys.argv[1:]
    print(json.dumps(run(args[0] if args else "tiny_llama", rounds=int(args[1]) if len(args) > 1 else 10), indent=1))
