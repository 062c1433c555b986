"""GPU figures at a 0.5B-parameter config: control step and training step, graft against baselines.

    python -m bench.gpu                      # NVIDIA GPU: ~0.5 B random Qwen2, bf16 (< 5 min)
    python -m bench.gpu --smoke              # any machine: a tiny config on CPU, seconds (the test)
    python -m bench.gpu --out gpu.json       # also write the JSON there

Never needed for CI. The model is random (graft's `tiny` backbone source with a large config, so
no download): a Qwen2 body of hidden 1024 x 32 layers (~0.5 B parameters), bf16 weights on the
GPU, the grid modality grafted with a seeded random LoRA adapter. Both sides of each figure run
in the same process on the same card, interleaved, with `torch.cuda.synchronize()` around every
timed call:

  control   graft's path (`Agent(deploy=True)`: cached template head, action names as a token
            tree in one forward, merged adapters) against HF `generate()` on the full prompt with
            the unmerged peft model (longest action name + end token, greedy, string match).
  train     graft's training step (`StageTrainer.step`: `MMLLM.forward` + AdamW) against a plain
            peft loop (bench/train_throughput.py's collate) on the same batches of 8.

Record the printed card name with the numbers in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.common import median

BIG = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 16,
       "num_key_value_heads": 4, "max_position_embeddings": 2048, "tie_word_embeddings": True}
SMOKE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 512, "tie_word_embeddings": True}


def build(smoke: bool, device: str):
    from graft.agent.build import build_mmllm
    from graft.curricula.config import compose_config
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_config("chat", ["backbone=tiny_qwen2"]), resolve=True)
    cfg["backbone"]["config"] = dict(SMOKE if smoke else BIG)
    cfg["backbone"]["dtype"] = "float32" if smoke or device == "cpu" else "bfloat16"
    torch.manual_seed(0)
    mm = build_mmllm(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in mm.bank.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen).to(p.dtype) * 0.02)
    mm.modalities.to(device)  # encoders and projectors stay float32; their tokens are cast when spliced
    mm.projectors.to(device)
    mm.bank.model.to(device)
    return mm.eval()


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def control(mm, device: str, rounds: int) -> dict:
    import gymnasium as gym
    from graft.agent.policy import Agent

    names = ["left", "right", "forward", "pickup", "drop", "toggle", "done"]
    agent = Agent(mm, gym.spaces.Discrete(len(names)), names, modalities=["grid"], deploy=True)
    rng = np.random.default_rng(0)
    obs = [{"grid": mm.modalities["grid"].sample(rng)[None], "mission": ["go to the red ball"]} for _ in range(8)]
    new = max(len(mm._token_ids(n)) for n in names) + 1

    def generate(i: int) -> None:
        text = mm.generate(agent.examples(obs[i % 8]), max_new_tokens=new, min_new_tokens=new)[0]
        next((k for k, n in enumerate(names) if text.startswith(n)), 0)

    times = {"generate": [], "graft": []}
    with torch.no_grad():
        for r in range(rounds + 1):
            g = timed(lambda r=r: generate(r), device)
            f = timed(lambda r=r: agent(obs[r % 8]), device)
            if r:
                times["generate"].append(g)
                times["graft"].append(f)
    base, fast = median(times["generate"]), median(times["graft"])
    return {"generate_ms": round(base * 1e3, 3), "graft_ms": round(fast * 1e3, 3), "graft_hz": round(1 / fast, 1),
            "speedup_vs_generate": round(base / fast, 3)}


def train(mm, device: str, rounds: int, batch: int = 8) -> dict:
    from graft.agent.mmllm import Example
    from graft.agent.training import StageTrainer

    from bench.train_throughput import plain_batch

    rng = np.random.default_rng(0)
    actions = ["left", "right", "forward", "pickup", "drop", "toggle", "done"]
    records = [{"prompt": "Mission: go to the red ball\nWhat is the next action?\n<grid>", "modalities": ["grid"],
                "grid": mm.modalities["grid"].sample(rng), "response": actions[i % 7]} for i in range(batch)]
    examples = [Example(r["prompt"], {"grid": r["grid"]}, r["response"]) for r in records]
    trainer = StageTrainer(mm, "grid", "it")
    params = trainer.params
    opt = torch.optim.AdamW(params, lr=1e-3)

    def plain() -> None:
        mm.set_trainable("grid", "it")
        mm.train()
        loss = mm.bank.model(**plain_batch(mm, records)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()

    times = {"graft": [], "plain": []}
    for r in range(rounds + 1):
        g = timed(lambda: trainer.step(examples), device)
        p = timed(plain, device)
        if r:
            times["graft"].append(g)
            times["plain"].append(p)
    g, p = median(times["graft"]), median(times["plain"])
    return {"graft_step_ms": round(g * 1e3, 2), "plain_step_ms": round(p * 1e3, 2),
            "graft_samples_per_s": round(batch / g, 1), "plain_samples_per_s": round(batch / p, 1),
            "overhead": round(g / p - 1, 4)}


def run(smoke: bool = False, rounds: int = 10) -> dict:
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    if device == "cpu" and not smoke:
        raise SystemExit("no CUDA device: run with --smoke on CPU, or on a machine with an NVIDIA GPU")
    started = time.perf_counter()
    mm = build(smoke, device)
    params = sum(p.numel() for n, p in mm.backbone.named_parameters() if "lora_" not in n)
    out = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)",
           "dtype": str(next(mm.backbone.parameters()).dtype).replace("torch.", ""), "params": params,
           "torch": torch.__version__, "control": control(mm, device, rounds), "train": train(mm, device, rounds)}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny config on CPU (seconds)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = run(args.smoke, args.rounds)
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(result, indent=1))
