"""Control step (observation → discrete action): graft's fast path against `generate()`.

    python -m bench.control_step [tiny_llama|smollm2_135m] [rounds]      (from the repo root)

The agent reads real BabyAI GoToLocal observations (env resets with a few seeds and random steps,
4 per episode, through graft's env factory; modalities from the bench config, default the 7x7x3
grid, 16 pooled tokens) in graft's prompt layout (the mission first, the observation last) and
picks one of the env's 7 action names. LoRA adapters carry seeded random non-zero weights, so
merging them is not a no-op. Variants, timed interleaved on the same observations (one control
step each, batch 1); consecutive steps share their episode's mission, as in a rollout:

  generate      the baseline users write today (OpenVLA's `predict_action` shape): the peft model
                with unmerged adapters, HF `generate()` on the full prompt at every step, greedy,
                exactly as many new tokens as the longest action name plus the end token, then
                string-match the answer to an action name. fp32.
  repeated      `MMLLM.score_repeated`: the full prompt once per candidate.
  tree          every candidate as a token tree after the prompt, one forward (live peft model).
  tree+prefix   + the cached keys/values of the prompt's static text (template head, mission,
                question: everything before the observation), computed once per mission.
  graft         + adapters merged into a deployment copy: `Agent(deploy=True)`, graft's path, fp32.
  graft_bf16    graft's path on a bfloat16 deployment copy.
  graft_auto    graft's path in the precision `dtype="auto"` picks on this host
                (agent/precision.choose_dtype on these observations: bf16 only where it is faster
                and picks fp32's action on >= 99% of them).

Agreement: the share of observations where a path picks the reference action — fp32 generate()'s
where its text names an action, else fp32 graft's (`reference` says how many of each).

FLOP floor: 2 × (transformer-body parameters × tokens processed + LM-head parameters × positions
whose logits are computed) ÷ the matmul FLOP/s measured in the same run, in the variant's dtype.
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


def choose_auto(mm, examples, names, fallback: dict) -> dict:
    """What `dtype="auto"` picks here: agent/precision.choose_dtype on `examples` where that module is
    present, else `fallback` (this run's own fp32 / bf16 timings and agreement)."""
    try:
        from graft.agent.precision import choose_dtype
    except ImportError as err:
        return {**fallback, "source": f"bench fallback (agent/precision.py: {err})"}
    choice = choose_dtype(mm, examples, names)
    return {**choice, "source": "agent/precision.choose_dtype"}


def host_capability() -> dict:
    """agent/precision.cpu_capability where present, else torch's dispatch level and /proc/cpuinfo flags."""
    try:
        from graft.agent.precision import cpu_capability

        return cpu_capability()
    except ImportError:
        flags: set[str] = set()
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
        except OSError:
            pass
        get = getattr(torch.backends.cpu, "get_cpu_capability", None)
        return {"torch": get() if get else None,
                **{f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}}


def run(backbone: str = "tiny_llama", modalities: Sequence[str] = ("grid",), rounds: int = 10,
        bf16: bool = True, flops: float | None = None) -> dict:
    from graft.agent.fast_path import FastScorer, Trie
    from graft.agent.policy import Agent

    mm, obs, names, space = build(backbone, modalities)
    agent = Agent(mm, space, names, modalities=list(modalities), deploy=True)
    examples = [agent.examples(o) for o in obs]
    cand = [mm._token_ids(n) for n in names]
    new_tokens = max(len(c) for c in cand) + 1  # the longest action name and its end token

    def generated(i: int) -> int | None:  # what users write: generate on the full prompt, match the string
        text = mm.generate(examples[i], max_new_tokens=new_tokens, min_new_tokens=new_tokens)[0]
        return next((k for k, n in enumerate(names) if text.startswith(n)), None)

    tree = FastScorer(mm, cache_head=False)
    prefix = FastScorer(mm)
    fast16 = Agent(mm, space, names, modalities=list(modalities), deploy=True, dtype=torch.bfloat16)
    with torch.no_grad():
        gen_actions = [generated(i) for i in range(len(obs))]
        fp32_actions = [int(agent(o)[0]) for o in obs]
        bf16_actions = [int(fast16(o)[0]) for o in obs]
        repeated = [int(mm.score_repeated(ex, names).argmax(-1)) for ex in examples]
    reference = [g if g is not None else f for g, f in zip(gen_actions, fp32_actions)]
    agreement = lambda acts: float(np.mean([a == r for a, r in zip(acts, reference)]))
    bf16_agree = float(np.mean([a == b for a, b in zip(bf16_actions, fp32_actions)]))
    flat = [ex[0] for ex in examples]
    auto = choose_auto(mm, flat, names, {"dtype": "bfloat16" if bf16_agree >= 0.99 else "float32",
                                         "agreement": bf16_agree, "probes": len(obs)})
    auto_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[auto["dtype"]]
    fast_auto = Agent(mm, space, names, modalities=list(modalities), deploy=True, dtype=auto_dtype)
    with torch.no_grad():
        auto_actions = [int(fast_auto(o)[0]) for o in obs]

    variants = {
        "generate": lambda r: generated(r % len(obs)),
        "repeated": lambda r: mm.score_repeated(examples[r % len(obs)], names).argmax(-1),
        "tree": lambda r: tree.score(examples[r % len(obs)], names).argmax(-1),
        "tree+prefix": lambda r: prefix.score(examples[r % len(obs)], names).argmax(-1),
        "graft": lambda r: agent(obs[r % len(obs)]),
    }
    if bf16 or auto["dtype"] == "bfloat16":
        variants["graft_bf16"] = lambda r: fast16(obs[r % len(obs)])
    variants["graft_auto"] = lambda r: fast_auto(obs[r % len(obs)])
    with torch.no_grad():
        times = interleaved(variants, rounds)
    if auto.get("source", "").startswith("bench fallback"):  # no choose_dtype: pick from this run's timings
        faster = median(times.get("graft_bf16", [float("inf")])) < median(times["graft"])
        auto["dtype"] = "bfloat16" if faster and bf16_agree >= 0.99 else "float32"
        auto["ms"] = {"float32": round(median(times["graft"]) * 1e3, 3),
                      "bfloat16": round(median(times["graft_bf16"]) * 1e3, 3) if "graft_bf16" in times else None}
        if auto["dtype"] == "float32":  # graft_auto was timed as bf16; the fp32 path is graft's row
            times["graft_auto"], auto_actions = times["graft"], fp32_actions
    flops = {"float32": flops or matmul_flops(), "bfloat16": matmul_flops(dtype=torch.bfloat16)}
    body, head = param_counts(mm.bank.model)
    lengths = [mm.embed_prompts(ex)[0].shape[0] for ex in examples]
    # after the first step of an episode the prompt's static text is served from the cache
    static = [len(prefix.static_ids(ex[0].prompt)) for ex in examples]
    length, cached = median(lengths), median(static)
    fresh = median([n - s for n, s in zip(lengths, static)])
    T = len(Trie(cand))
    tokens = {"generate": (length + new_tokens - 1, new_tokens),
              "repeated": (len(names) * (length + max(map(len, cand))),) * 2, "tree": (length + T, 1 + T)}
    for name in ("tree+prefix", "graft", "graft_bf16", "graft_auto"):
        tokens[name] = (fresh + T, 1 + T)
    dtype_of = {"graft_bf16": "bfloat16", "graft_auto": auto["dtype"]}
    base = median(times["generate"])
    rows = {}
    for name, ts in times.items():
        sec = median(ts)
        tok, logit_pos = tokens[name]
        dt = dtype_of.get(name, "float32")
        floor = 2 * (body * tok + head * logit_pos) / flops[dt]
        rows[name] = {"ms": round(sec * 1e3, 3), "hz": round(1 / sec, 2), "speedup_vs_generate": round(base / sec, 3),
                      "dtype": dt, "tokens": int(tok), "logit_positions": int(logit_pos),
                      "floor_ms": round(floor * 1e3, 3), "times_floor": round(sec / floor, 2)}
    matched = sum(g is not None for g in gen_actions)
    return {"backbone": backbone, "modalities": list(modalities), "rounds": rounds, "actions": names,
            "observations": len(obs), "prompt_example": flat[0].prompt,
            "prompt_tokens": int(length), "cached_head_tokens": int(cached), "template_head_tokens": len(prefix.head_ids()),
            "tree_tokens": T, "generate_new_tokens": new_tokens,
            "params_body": body, "params_head": head, "matmul_gflops": round(flops["float32"] / 1e9, 1),
            "matmul_gflops_bf16": round(flops["bfloat16"] / 1e9, 1), "cpu_capability": host_capability(),
            "same_action_as_repeated": float(np.mean([a == b for a, b in zip(repeated, fp32_actions)])),
            "bf16_same_action": bf16_agree,
            "reference": {"generate": matched, "graft_fp32": len(obs) - matched,
                          "what": "fp32 generate()'s action where its text names one, else fp32 graft's"},
            "agreement": {"graft": agreement(fp32_actions), "graft_bf16": agreement(bf16_actions),
                          "graft_auto": agreement(auto_actions)},
            "agreement_with_generate_where_matched": {
                k: (float(np.mean([a == g for a, g in zip(acts, gen_actions) if g is not None])) if matched else None)
                for k, acts in (("graft", fp32_actions), ("graft_auto", auto_actions))},
            "auto": auto, "speedup_vs_generate": rows["graft"]["speedup_vs_generate"],
            "speedup_vs_generate_auto": rows["graft_auto"]["speedup_vs_generate"], "variants": rows}


if __name__ == "__main__":
    import json

    torch.set_num_threads(1)
    args = sys.argv[1:]
    print(json.dumps(run(args[0] if args else "tiny_llama", rounds=int(args[1]) if len(args) > 1 else 10), indent=1))
