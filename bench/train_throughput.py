"""Training throughput of an onboarding stage: graft's stage loop against a plain peft loop.

    python -m bench.train_throughput [tiny_llama|smollm2_135m] [rounds] [steps]   (from the repo root)

Both sides train the same MM-LLM (the grid modality's projector + LoRA adapter, MM IT) on the same
batches, with AdamW and gradient clipping at 1.0:

  graft   `MethodRun.train_phase` of graft's method (curricula/strategy.py), the real onboarding
          loop: every step draws its batch (seeded), the replay plugin swaps a quarter of it for
          samples from the SQLite-backed replay memory, the text-mix plugin a quarter for text-only
          instructions; loss through `MMLLM.forward`, plugin penalties, loss curve, checkpoints every
          `checkpoint_every` steps (timed separately and amortised per step, since a short timed
          chunk would otherwise skip or over-count them).
          Run with `packing` off: the machinery's cost alone, the loop before the packing work.
  graft_packed  the same loop as `graft onboard` runs it by default (`packing: true`): padding-free
          rows where that saves FLOPs and the LM head only where a label is predicted
          (agent/packing.py, same loss; LwF keeps the padded layout).
  plain   what a user writes with peft + transformers: the batches graft drew (the same records),
          chat template, placeholder splice of the projected observation, right padding, labels
          -100 on the prompt, `peft_model(inputs_embeds=..., labels=...)`.

Chunks of `steps` steps alternate between the two for `rounds` rounds; per-step medians give
samples/s and tokens/s (non-pad tokens). `overhead` is graft's time per sample over the plain
loop's, minus one (negative: graft is faster). Evaluation after a stage is not training and is
left out of both.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import median


def data_dir() -> Path:
    """Generated env data for the bench, cached in graft's user cache (~/.cache/graft/bench)."""
    from graft.agent.backbone import cache_root

    return cache_root() / "bench" / "data"


def setup(backbone: str, out: Path, episodes: int = 12):
    """A graft MethodRun on the grid stage of babyai_modalities, its replay memory holding text samples."""
    from graft.curricula.config import compose_config
    from graft.curricula.stages import build_stages
    from graft.curricula.strategy import MethodRun
    from graft.memory.replay import ReplayMemory
    from omegaconf import OmegaConf

    cfg = compose_config("onboard", [f"backbone={backbone}", "compare=[graft]", "progress=false", "tensorboard=false",
                                     f"curriculum.data.episodes={episodes}", "curriculum.text.train=512"])
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    stages, text = build_stages(cfg, env_cfg, data_dir() / f"e{episodes}", skip_text=True)
    stage = next(s for s in stages if s.modality == "grid")
    stage.index = 0

    def memory_factory(path: Path):
        return ReplayMemory("reservoir", max_size=int(stage.replay_size), store_path=path, seed=0)

    run = MethodRun(cfg, "graft", None, [stage], text, [{"blind": 0.0}], out, env_cfg, None, memory_factory)
    stage.graft_seeded(run.mm, cfg, None)
    run.memory.add("text", text["train"][: int(stage.replay_size)])  # an earlier stage's samples to replay
    for plugin in run.plugins:
        plugin.before_stage(run, stage)
    return run, stage


def composed(method, stage, step: int) -> list[dict]:
    """The records graft trains on at `step`: the stage's draw with replay and text mix put in."""
    batch, rng = stage.draw(method.seed, "it", step)
    for plugin in method.plugins:
        plugin.compose(method, stage, "it", batch, rng)
    return batch.rows


def plain_batch(mm, records: list[dict]) -> dict:
    """The user's collate: chat template, splice projected observations, right-pad, mask the prompt."""
    tok = mm.tokenizer
    table = mm.backbone.get_input_embeddings()
    device, dtype = table.weight.device, table.weight.dtype
    feats = {}
    for name in mm.modalities:
        rows = [r[name] for r in records if name in (r.get("modalities") or [])]
        if rows:
            feats[name] = iter(mm.projectors[name](mm.modalities[name](np.stack(rows))))  # (B_m, N_m, D)
    seqs, labels = [], []
    for r in records:
        text = tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], add_generation_prompt=True,
                                       tokenize=False)
        prompt = tok(text, add_special_tokens=False)["input_ids"]
        answer = tok(r["response"] + tok.eos_token, add_special_tokens=False)["input_ids"]
        pieces, start = [], 0
        for pos, i in enumerate(prompt):
            name = next((n for n, pid in mm.placeholder_ids.items() if pid == i), None)
            if name is not None:
                pieces += [table(torch.tensor(prompt[start:pos], device=device)), next(feats[name]).to(dtype)]
                start = pos + 1
        pieces.append(table(torch.tensor(prompt[start:] + answer, device=device)))
        seq = torch.cat(pieces)  # (L, D)
        seqs.append(seq)
        labels.append(torch.tensor([-100] * (seq.shape[0] - len(answer)) + answer, device=device))
    length = max(s.shape[0] for s in seqs)
    embeds = torch.zeros(len(seqs), length, seqs[0].shape[1], dtype=dtype, device=device)  # (B, L, D)
    mask = torch.zeros(len(seqs), length, dtype=torch.long, device=device)
    lab = torch.full((len(seqs), length), -100, device=device)
    for b, (s, y) in enumerate(zip(seqs, labels)):
        embeds[b, : len(s)], mask[b, : len(s)], lab[b, : len(s)] = s, 1, y
    return {"inputs_embeds": embeds, "attention_mask": mask, "labels": lab}


def plain_chunk(run, stage, batches: list[list[dict]]) -> int:
    """A plain peft training loop over `batches`; returns the non-pad tokens processed."""
    mm = run.mm
    params = mm.set_trainable(stage.name, "it")
    opt = torch.optim.AdamW(params, lr=float(stage.lr))
    mm.train()
    tokens = 0
    for records in batches:
        batch = plain_batch(mm, records)
        tokens += int(batch["attention_mask"].sum())
        loss = mm.bank.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    mm.set_trainable(None)
    return tokens


def run(backbone: str = "tiny_llama", rounds: int = 3, steps: int = 8) -> dict:
    from graft.curricula import engine

    with tempfile.TemporaryDirectory() as tmp:
        method, stage = setup(backbone, Path(tmp) / "graft")
        batches = [composed(method, stage, s) for s in range(steps)]
        tokens = sum(int(plain_batch(method.mm, b)["attention_mask"].sum()) for b in batches)
        padded = sum(len(b) * int(plain_batch(method.mm, b)["attention_mask"].shape[1]) for b in batches)
        samples = sum(len(b) for b in batches)

        def graft(n: int, fast: bool) -> None:
            method.fast_text_loss = fast  # graft's default is True; the "graft" row is the loop before packing
            engine.train(method, stage, "it", n)

        variants = {"graft": lambda n: graft(n, False), "graft_packed": lambda n: graft(n, True),
                    "plain": lambda n: plain_chunk(method, stage, batches[:n])}
        per_step: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(rounds + 1):  # round 0: one warm-up step each
            for name, fn in variants.items():
                n = steps if r else 1
                t = time.perf_counter()
                fn(n)
                if r:
                    per_step[name].append((time.perf_counter() - t) / n)
        saves = []
        for _ in range(2):
            t = time.perf_counter()
            method.save(stage.index, "it", 1)
            saves.append(time.perf_counter() - t)
        every = int(method.cfg.checkpoint_every)
        checkpoint_per_step = median(saves) / every if every else 0.0
        method.memory.close()
    per_sample = samples / steps
    out = {"backbone": backbone, "stage": f"{stage.name} (MM IT)", "batch_size": int(stage.batch_size),
           "steps_per_chunk": steps, "rounds": rounds, "replay_ratio": float(stage.replay_ratio),
           "text_mix": float(stage.text_mix), "checkpoint_every": every, "checkpoint_s": round(median(saves), 3),
           "checkpoint_ms_per_step": round(checkpoint_per_step * 1e3, 2),
           "tokens_per_step": round(tokens / steps, 1), "padded_positions_per_step": round(padded / steps, 1)}
    plain_step = median(per_step["plain"])
    for name, times in per_step.items():
        step = median(times) + (checkpoint_per_step if name != "plain" else 0.0)
        out[name] = {"step_ms": round(step * 1e3, 2), "samples_per_s": round(per_sample / step, 2),
                     "tokens_per_s": round(tokens / steps / step, 1), "vs_plain": round(step / plain_step - 1, 4)}
    out["overhead"] = out["graft"]["vs_plain"]
    out["overhead_packed"] = out["graft_packed"]["vs_plain"]
    return out


if __name__ == "__main__":
    import json

    torch.set_num_threads(1)
    args = sys.argv[1:]
    print(json.dumps(run(args[0] if args else "tiny_llama", *map(int, args[1:3])), indent=1))
