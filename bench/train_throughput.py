"""Training throughput of an onboarding stage: graft's stage loop against plain peft loops.

    python -m bench.train_throughput [tiny_llama|smollm2_135m] [rounds] [steps]   (from the repo root)

Every variant trains the same MM-LLM (the grid modality's projector + LoRA adapter, MM IT) on the
same records — the batches graft's loop draws — with the same batch size, AdamW (the stage's lr)
and gradient clipping at 1.0. The env data is generated fresh into the run's temporary folder, so
the records are in the prompt layout of the checkout (envs/prompts.py: static text first, the
observation placeholder last).

  plain_today   what a user writes today with peft + transformers, the headline baseline: the
                backbone's own chat template as its tokenizer ships it (SmolLM2: with its default
                system prompt), the prompts rewritten to the common layout with the observation
                placeholder first ("<grid>\\nMission: ...\\nWhat is the next action?"), its own
                LLaVA-1.5 projector (Linear-GELU-Linear) over all 49 grid cells, fp32, right-padded
                batches, full-vocabulary logits, labels -100 on the prompt,
                `peft_model(inputs_embeds=..., labels=...)`.
  graft_onboard `MethodRun`'s loop (curricula/engine.py) as `graft onboard` runs it by default: its
                prompt layout and chat template (configs/backbone), 16 pooled grid tokens
                (configs/modality/grid.yaml), padding-free packing where it saves FLOPs and the LM
                head only at labelled positions (`packing: true`), `precision: auto` (bf16
                autocast where this host runs bf16 matmuls >= 1.5x faster; the choice and its
                measurement are reported). Every step draws its batch (seeded), the replay plugin
                swaps a quarter of it for samples from the SQLite replay memory, the text-mix plugin
                a quarter for text-only instructions; loss curve, and checkpoints every
                `checkpoint_every` steps (timed apart and amortised per step).
  plain         the machinery baseline: a hand-written peft loop on graft's own layout, template
                and projector (16 tokens), fp32, right-padded, full logits (`plain_batch`).
  graft         graft's loop with `packing` off, in fp32: the machinery's cost alone (vs plain).
  graft_packed  the same with packing on, still fp32: what packing and label-only logits save.

Chunks of `steps` steps alternate between the variants for `rounds` rounds (one warm-up step each
first); per-step medians give samples/s and tokens/s (non-pad tokens). `speedup_vs_plain_today` is
plain_today's time per sample over graft_onboard's; `overhead` is graft's time per sample over
plain's, minus one (negative: graft is faster), `overhead_packed` the same for graft_packed.
Evaluation after a stage is not training and is left out.
"""
from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import median

VARIANTS = ("plain_today", "graft_onboard", "plain", "graft", "graft_packed")
PLACEHOLDER_LINE = re.compile(r"(<[A-Za-z0-9_]+>)+")


def setup(backbone: str, out: Path, episodes: int = 64):
    """A graft MethodRun on the grid stage of babyai_modalities (env data generated under `out`), its
    replay memory holding text samples."""
    from graft.curricula.config import compose_config
    from graft.curricula.stages import build_stages
    from graft.curricula.strategy import MethodRun
    from graft.memory.replay import ReplayMemory
    from omegaconf import OmegaConf

    cfg = compose_config("onboard", [f"backbone={backbone}", "compare=[graft]", "progress=false", "tensorboard=false",
                                     f"curriculum.data.episodes={episodes}", "curriculum.text.train=512"])
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    # generated here, not cached across runs: a cache would keep records in an older prompt layout
    stages, text = build_stages(cfg, env_cfg, out / "env_data", skip_text=True)
    stage = next(s for s in stages if s.modality == "grid")
    stage.index = 0

    def memory_factory(path: Path):
        return ReplayMemory("reservoir", max_size=int(stage.replay_size), store_path=path, seed=0)

    run = MethodRun(cfg, "graft", None, [stage], text, [{"blind": 0.0}], out / "graft", env_cfg, None, memory_factory)
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


def collate(mm, records: list[dict], project, chat_template: str | None = None, layout=None,
            encoders: dict | None = None) -> dict:
    """A user's collate: chat template, splice projected observations at their placeholders,
    right-pad, labels -100 on the prompt. `project(name, features (B_m, N, F)) -> (B_m, N', D)`;
    `chat_template` replaces the tokenizer's; `layout(prompt) -> prompt` rewrites each prompt;
    `encoders` replaces some of the MM-LLM's modality encoders (name -> Modality)."""
    tok = mm.tokenizer
    table = mm.backbone.get_input_embeddings()
    device, dtype = table.weight.device, table.weight.dtype
    feats = {}
    for name in mm.modalities:
        rows = [r[name] for r in records if name in (r.get("modalities") or [])]
        if rows:
            encoder = (encoders or {}).get(name, mm.modalities[name])
            feats[name] = iter(project(name, encoder(np.stack(rows))))  # (B_m, N_m, D)
    seqs, labels = [], []
    for r in records:
        prompt = layout(r["prompt"]) if layout else r["prompt"]
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False, **({"chat_template": chat_template} if chat_template else {}))
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


def plain_batch(mm, records: list[dict]) -> dict:
    """The collate on graft's own prompts, template and projectors (the machinery baseline)."""
    return collate(mm, records, lambda name, x: mm.projectors[name](x))


# ---- what a user writes today ---------------------------------------------------------------------
def placeholder_first(prompt: str) -> str:
    """The common layout of today's VLM/VLA prompts: the observation placeholder lines first."""
    lines = prompt.split("\n")
    tags = [line for line in lines if PLACEHOLDER_LINE.fullmatch(line.strip())]
    return "\n".join(tags + [line for line in lines if not PLACEHOLDER_LINE.fullmatch(line.strip())])


def shipped_chat_template(backbone_cfg, tokenizer) -> str | None:
    """The backbone's chat template as its tokenizer ships it (graft's backbone config may replace it,
    e.g. SmolLM2's without the default system prompt)."""
    if not backbone_cfg.get("chat_template"):
        return tokenizer.chat_template
    from graft.agent.backbone import cache_root, find_package_file
    from transformers import AutoTokenizer

    source = backbone_cfg["source"]
    if source == "pretrained":
        return AutoTokenizer.from_pretrained(backbone_cfg["pretrained"]).chat_template
    if source == "gguf":
        cached = cache_root() / "models" / backbone_cfg["name"]
        if (cached / "tokenizer_config.json").exists():  # agent/backbone.py saves it before the override
            return AutoTokenizer.from_pretrained(cached).chat_template
        path = find_package_file(backbone_cfg["package"], backbone_cfg["gguf_file"])
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).chat_template
    return tokenizer.chat_template


class TodayLoop:
    """The plain peft + transformers loop a user writes today (see the module docstring)."""

    def __init__(self, mm, backbone_cfg, seed: int = 0):
        self.mm = mm
        self.template = shipped_chat_template(backbone_cfg, mm.tokenizer)
        from graft.agent.build import build_modality
        from graft.curricula.config import group_config

        torch.manual_seed(seed)
        # today's grid encoder: the learned cell features, one token per cell (49), whatever graft reads
        self.encoders = {"grid": build_modality("grid", group_config(None, "modality", "grid"))} if "grid" in mm.modalities else {}
        self.projectors = torch.nn.ModuleDict({  # LLaVA-1.5's mlp2x_gelu, one LLM token per encoder token
            name: torch.nn.Sequential(torch.nn.Linear(self.encoders.get(name, m).feature_dim, mm.embed_dim), torch.nn.GELU(),
                                      torch.nn.Linear(mm.embed_dim, mm.embed_dim))
            for name, m in mm.modalities.items()})

    def batch(self, records: list[dict]) -> dict:
        return collate(self.mm, records, lambda name, x: self.projectors[name](x), self.template, placeholder_first,
                       self.encoders)

    def chunk(self, run, stage, batches: list[list[dict]]) -> None:
        mm = run.mm
        graft_projectors = {id(p) for p in mm.projectors.parameters()}
        lora = [p for p in mm.set_trainable(stage.name, "it") if id(p) not in graft_projectors]
        params = lora + list(self.projectors.parameters())
        opt = torch.optim.AdamW(params, lr=float(stage.lr))
        mm.train()
        self.projectors.train()
        for records in batches:
            plain_step(mm, self.batch(records), params, opt)
        mm.set_trainable(None)


def plain_step(mm, batch: dict, params, opt) -> None:
    """A user's step: the peft model's own loss on the padded batch, backward, clip, AdamW."""
    loss = mm.bank.model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss.item()


def plain_chunk(run, stage, batches: list[list[dict]]) -> int:
    """A plain peft training loop over `batches` in graft's layout; returns the non-pad tokens processed."""
    mm = run.mm
    params = mm.set_trainable(stage.name, "it")
    opt = torch.optim.AdamW(params, lr=float(stage.lr))
    mm.train()
    tokens = 0
    for records in batches:
        batch = plain_batch(mm, records)
        tokens += int(batch["attention_mask"].sum())
        plain_step(mm, batch, params, opt)
    mm.set_trainable(None)
    return tokens


# ---- what each side computes --------------------------------------------------------------------------
def shape_of(batch: dict) -> dict:
    """Tokens of one padded batch: real, padded positions, full-vocabulary logit positions."""
    mask = batch["attention_mask"]
    return {"tokens": int(mask.sum()), "positions": int(mask.numel()), "logit_positions": int(mask.numel()),
            "samples": int(mask.shape[0])}


def graft_shape(mm, records: list[dict], fast: bool) -> dict:
    """What graft's loop computes for one batch: real tokens; positions after packing (when `fast` and
    `worth_packing`) or padding; LM-head positions (labelled ones when `fast`, else all)."""
    from graft.agent.packing import worth_packing

    batch = plain_batch(mm, records)
    mask, labels = batch["attention_mask"], batch["labels"]
    lengths = mask.sum(-1).tolist()
    packed = fast and worth_packing(lengths, mm.backbone.config)
    shifted = labels[:, 1:] != -100
    if fast and packed:  # one row: the labelled positions of every sequence
        logit_positions = int(shifted.sum())
    elif fast:  # padded: the columns where any row has a label
        logit_positions = int(shifted.any(0).sum()) * len(lengths)
    else:
        logit_positions = int(mask.numel())
    return {"tokens": int(sum(lengths)), "positions": int(sum(lengths) if packed else mask.numel()),
            "logit_positions": logit_positions, "samples": len(lengths), "packed": bool(packed)}


def per_sample(shapes: list[dict]) -> dict:
    n = sum(s["samples"] for s in shapes)
    out = {k: round(sum(s[k] for s in shapes) / n, 1) for k in ("tokens", "positions", "logit_positions")}
    if "packed" in shapes[0]:
        out["packed_batches"] = round(float(np.mean([s["packed"] for s in shapes])), 3)
    return out


def run(backbone: str = "tiny_llama", rounds: int = 3, steps: int = 8, variants=VARIANTS) -> dict:
    from graft.curricula import engine

    variants = [v for v in VARIANTS if v in set(variants)]
    with tempfile.TemporaryDirectory() as tmp:
        method, stage = setup(backbone, Path(tmp))
        mm = method.mm
        today = TodayLoop(mm, method.cfg.backbone)
        batches = [composed(method, stage, s) for s in range(steps)]
        samples = sum(len(b) for b in batches)
        auto = dict(method.results["precision"])  # `precision: auto`, measured when the run was set up
        default_fast = bool(method.fast_text_loss)  # `packing: true`, unless a plugin reads every logit
        fp32 = {"dtype": "float32", "reason": "bench: the fp32 rows"}

        def graft(n: int, fast: bool, precision: dict) -> None:
            method.fast_text_loss, method.results["precision"] = fast, precision
            engine.train(method, stage, "it", n)

        fns = {"plain_today": lambda n: today.chunk(method, stage, batches[:n]),
               "graft_onboard": lambda n: graft(n, default_fast, auto),
               "plain": lambda n: plain_chunk(method, stage, batches[:n]),
               "graft": lambda n: graft(n, False, fp32),
               "graft_packed": lambda n: graft(n, True, fp32)}
        fns = {k: fns[k] for k in variants}
        per_step: dict[str, list[float]] = {name: [] for name in fns}
        for r in range(rounds + 1):  # round 0: one warm-up step each
            for name, fn in fns.items():
                n = steps if r else 1
                t = time.perf_counter()
                fn(n)
                if r:
                    per_step[name].append((time.perf_counter() - t) / n)
        method.fast_text_loss, method.results["precision"] = default_fast, auto
        saves = []
        for _ in range(2):
            t = time.perf_counter()
            method.save(stage.index, "it", 1)
            saves.append(time.perf_counter() - t)
        every = int(method.cfg.checkpoint_every)
        checkpoint_per_step = median(saves) / every if every else 0.0
        with torch.no_grad():
            shapes = {"plain_today": [shape_of(today.batch(b)) for b in batches],
                      "plain": [shape_of(plain_batch(mm, b)) for b in batches],
                      "graft": [graft_shape(mm, b, False) for b in batches],
                      "graft_packed": [graft_shape(mm, b, True) for b in batches],
                      "graft_onboard": [graft_shape(mm, b, default_fast) for b in batches]}
        grid_tokens = {"graft": int(mm.projectors["grid"](mm.modalities["grid"](
                           np.zeros((1, 7, 7, 3), np.uint8))).shape[1]) if "grid" in mm.projectors else None,
                       "plain_today": 49 if "grid" in mm.modalities else None}
        example = next((b for batch in batches for b in batch if b.get("modalities")), batches[0][0])
        method.memory.close()
    step_samples = samples / steps
    out = {"backbone": backbone, "stage": f"{stage.name} (MM IT)", "batch_size": int(stage.batch_size),
           "steps_per_chunk": steps, "rounds": rounds, "replay_ratio": float(stage.replay_ratio),
           "text_mix": float(stage.text_mix), "checkpoint_every": every, "checkpoint_s": round(median(saves), 3),
           "checkpoint_ms_per_step": round(checkpoint_per_step * 1e3, 2), "precision": auto,
           "packing": default_fast, "grid_tokens": grid_tokens,
           "prompts": {"graft": example["prompt"], "plain_today": placeholder_first(example["prompt"])},
           "tokens_per_step": round(sum(s["tokens"] for s in shapes["plain"]) / steps, 1),
           "padded_positions_per_step": round(sum(s["positions"] for s in shapes["plain"]) / steps, 1)}
    for name, times in per_step.items():
        step = median(times) + (checkpoint_per_step if name.startswith("graft") else 0.0)
        shape = per_sample(shapes[name])
        out[name] = {"step_ms": round(step * 1e3, 2), "samples_per_s": round(step_samples / step, 2),
                     "tokens_per_s": round(shape["tokens"] * step_samples / step, 1),
                     "tokens_per_sample": shape["tokens"], "positions_per_sample": shape["positions"],
                     "logit_positions_per_sample": shape["logit_positions"],
                     "precision": auto["dtype"] if name == "graft_onboard" else "float32",
                     **({"packed_batches": shape["packed_batches"]} if "packed_batches" in shape else {})}
    if "plain" in out:
        for name in ("graft", "graft_packed", "graft_onboard", "plain"):
            if name in out:
                out[name]["vs_plain"] = round(out[name]["step_ms"] / out["plain"]["step_ms"] - 1, 4)
    if "plain_today" in out:
        for name in VARIANTS:
            if name in out:
                out[name]["speedup_vs_plain_today"] = round(out["plain_today"]["step_ms"] / out[name]["step_ms"], 3)
    if "graft" in out and "plain" in out:
        out["overhead"] = out["graft"]["vs_plain"]
    if "graft_packed" in out and "plain" in out:
        out["overhead_packed"] = out["graft_packed"]["vs_plain"]
    if "graft_onboard" in out and "plain_today" in out:
        out["speedup_vs_plain_today"] = out["graft_onboard"]["speedup_vs_plain_today"]
    return out


if __name__ == "__main__":
    import json

    torch.set_num_threads(1)
    args = sys.argv[1:]
    print(json.dumps(run(args[0] if args else "tiny_llama", *map(int, args[1:3])), indent=1))
