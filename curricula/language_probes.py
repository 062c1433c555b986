"""Does a grafted LLM keep its own language and knowledge? Label-free, offline probes.

Each probe reads the model as a text-only prompt sees it (the adapters `MMLLM._routed` switches on
for an `Example` with no observations), against held-out data no training mix contains:

    heldout_passages(split)       natural English from Python's own pydoc topics (`pydoc_data`,
                                  shipped with every Python; the text differs between Python versions)
    perplexity(mm, passages)      exp(mean token NLL) of the raw passages, no chat template
    knowledge_accuracy(mm, items) multiple-choice general knowledge and instruction following
                                  (`knowledge_items(split)`, curricula/probe_items.py), by
                                  length-normalised log-probability; `knowledge_chance(items)`
    divergence(mm, prompts)       mean KL(original ‖ grafted) of next-token distributions over the
                                  original vocabulary (`base_vocab_size`), on chat prompts
                                  (`divergence_prompts()`) and the original's greedy continuation,
                                  teacher-forced for both
    self_distilled_records(mm, prompts)  the original LLM's own greedy answers to `distill_prompts()`
                                  as text-mix records (self-distilled replay for pretrained backbones)
    language_probes(mm, split)    perplexity, knowledge and divergence on one split, a line per probe

"Original" is the LLM with every LoRA adapter switched off (peft's `disable_adapter`). Every probe
runs without gradients in eval mode and leaves train/eval modes, routing and the adapters'
`requires_grad` as it found them.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import re
import time
from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from graft.agent.example import Example
from graft.agent.fast_path import cache_kwarg
from graft.curricula.probe_items import SPLITS, distill_prompts, divergence_prompts, knowledge_items
from transformers import DynamicCache

__all__ = ["base_vocab_size", "distill_prompts", "divergence", "divergence_prompts", "heldout_passages",
           "knowledge_accuracy", "knowledge_chance", "knowledge_items", "language_probes", "perplexity",
           "self_distilled_records"]
TEXT_ONLY = Example("")  # routing reads only `obs`: this is what any text-only prompt gets


# ---- held-out English --------------------------------------------------------------------------
def _topic_split(key: str) -> str:
    return "val" if hashlib.sha256(key.encode()).digest()[0] % 2 == 0 else "test"


def _sentences(text: str) -> list[str]:
    """The prose of one pydoc topic as sentences: headings, indented blocks (code, grammar, quotes)
    and tables dropped, whitespace collapsed."""
    prose = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln for ln in para.splitlines() if ln.strip()]
        if not lines or any(ln[0].isspace() or ln.lstrip().startswith(("+", "|", ">>>")) for ln in lines):
            continue
        if len(lines) == 1 or set(lines[-1].strip()) <= set("*=-~^"):  # a heading (and its underline)
            continue
        flat = " ".join(" ".join(lines).split())
        if sum(ch.isalpha() or ch == " " for ch in flat) >= 0.85 * len(flat):
            prose += re.split(r"(?<=[.!?])\s+", flat)
    return prose


def _pack(sentences: list[str], max_chars: int, min_chars: int) -> list[str]:
    """Consecutive sentences joined into passages of `min_chars`..`max_chars` characters."""
    out, cur = [], ""
    for s in sentences:
        s = s if len(s) <= max_chars else s[:max_chars].rsplit(" ", 1)[0]
        if cur and len(cur) + 1 + len(s) > max_chars:
            out.append(cur)
            cur = ""
        cur = f"{cur} {s}" if cur else s
    out.append(cur)
    return [p for p in out if len(p) >= min_chars]


def heldout_passages(split: str, max_chars: int = 400, count: int | None = 32,
                     min_chars: int = 160) -> list[str]:
    """Passages of `split` ("val" / "test": disjoint halves of the pydoc topics, by a stable hash
    of the topic name, sharing no sentence); `count` of them (None: all), chosen by a stable hash
    of their text."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    from pydoc_data.topics import topics

    passages, seen = [], set()
    for key in sorted(topics):  # a sentence several topics repeat belongs to the first one only
        sentences = [s for s in _sentences(topics[key]) if s not in seen]
        seen.update(sentences)
        if _topic_split(key) == split:
            passages += _pack(sentences, max_chars, min_chars)
    passages.sort(key=lambda p: hashlib.sha256(p.encode()).digest())
    return passages if count is None else passages[:count]


# ---- running the model ---------------------------------------------------------------------------
@contextlib.contextmanager
def _probing(mm):
    """No gradients, eval mode; afterwards every module's mode and the adapter routing (which
    adapters peft runs and which may learn) are put back."""
    modes = [(m, m.training) for m in mm.modules()]
    bank = mm.bank
    routed = (bank._active, bank._trainable)
    mm.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        if routed[0] is not None:
            bank._active = None  # force route() to set peft's adapters and requires_grad again
            bank.route(*routed)


@contextlib.contextmanager
def _original(mm):
    """The LLM with every LoRA adapter switched off (inside `_probing`, which restores routing)."""
    with mm.bank.model.disable_adapter() if mm.bank.names else contextlib.nullcontext():
        yield mm.bank.model


def _device(mm) -> torch.device:
    return mm.backbone.get_input_embeddings().weight.device


def _batch(rows: list[list[int]], pad: int, side: str, device, offset: int = 0) -> dict:
    """Token id rows padded into `input_ids`, `attention_mask` and `position_ids`, each `(B, L)`;
    positions start at `offset` (the length of a cached head)."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for b, r in enumerate(rows):
        at = slice(0, len(r)) if side == "right" else slice(length - len(r), length)
        ids[b, at], mask[b, at] = torch.tensor(r, dtype=torch.long), 1
    position_ids = offset + (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "position_ids": position_ids.to(device)}


def _head_kv(model, head: list[int], device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values of the chat template's head (the tokens before every prompt's own text),
    each `(1, heads, H, d)`, computed once per model."""
    if not head:
        return []
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([head], device=device), use_cache=True, logits_to_keep=1,
          **{cache_kwarg(model): cache})
    return [(layer.keys, layer.values) for layer in cache.layers]


def _stepwise(model, kv, rows: list[list[int]], n: int, pad: int, device, feed: torch.Tensor | None = None):
    """`n` next-token distributions per row, behind the cached head `kv`: at the row's last token,
    then after each of `n - 1` fed tokens, the model's own greedy ones or `feed` `(B, n)` (teacher
    forcing). Returns (tokens `(B, n)`, logits `(B, n, V)`); each step runs on the KV cache, so two
    models fed the same tokens compute in exactly the same way."""
    h = kv[0][0].shape[2] if kv else 0
    batch = _batch(rows, pad, "left", device, offset=h)
    cache = DynamicCache(config=model.config)
    for i, (k, v) in enumerate(kv):  # the head's keys and values, once per row: (B, heads, H, d)
        cache.update(*(x.expand(len(rows), -1, -1, -1).contiguous() for x in (k, v)), i)
    mask = torch.cat([batch["attention_mask"].new_ones(len(rows), h), batch["attention_mask"]], 1)
    ids, position, tokens, logits = batch["input_ids"], batch["position_ids"], [], []
    for t in range(n):
        out = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True,
                    logits_to_keep=1, **{cache_kwarg(model): cache})
        logits.append(out.logits[:, -1])
        tokens.append(logits[-1].argmax(-1) if feed is None else feed[:, t])
        ids, position = tokens[-1][:, None], position[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], 1)
    return torch.stack(tokens, 1), torch.stack(logits, 1)


# ---- the probes ----------------------------------------------------------------------------------
def perplexity(mm, passages: Sequence[str], max_tokens: int = 128, batch_size: int = 8) -> float:
    """exp(mean NLL per predicted token) of the raw passages (first `max_tokens` tokens each);
    batched by length, so rows pad little."""
    rows = sorted((ids for ids in (mm._token_ids(p)[:max_tokens] for p in passages) if len(ids) > 1),
                  key=len)
    if not rows:
        raise ValueError("perplexity needs passages of at least two tokens")
    nll, count = 0.0, 0
    with _probing(mm):
        for i in range(0, len(rows), batch_size):
            batch = _batch(rows[i:i + batch_size], mm.tokenizer.pad_token_id, "right", _device(mm))
            target = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)[:, 1:]  # (B, L-1)
            with mm._routed([TEXT_ONLY]) as model:
                logits = model(**batch).logits[:, :-1].float()  # (B, L-1, V)
            nll += float(F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100,
                                         reduction="sum"))
            count += int((target != -100).sum())
    return math.exp(nll / count)


def knowledge_accuracy(mm, items: Sequence[dict], batch_size: int = 16) -> float:
    """Share of items whose answer has the highest length-normalised log-probability among their
    candidates (`mm.score`); items sharing a candidate tuple are scored together."""
    groups = defaultdict(list)
    for it in items:
        groups[tuple(it["candidates"])].append(it)
    right = 0
    with _probing(mm):
        for candidates, group in groups.items():
            for i in range(0, len(group), batch_size):
                chunk = group[i:i + batch_size]
                scores = mm.score([Example(it["prompt"]) for it in chunk], candidates, normalize=True)
                best = scores.argmax(-1).tolist()  # scores: (B, K)
                right += sum(candidates[k] == it["answer"] for k, it in zip(best, chunk))
    return right / len(items)


def knowledge_chance(items: Sequence[dict]) -> float:
    """Expected accuracy of guessing uniformly among each item's candidates."""
    return sum(1 / len(it["candidates"]) for it in items) / len(items)


def base_vocab_size(mm) -> int:
    """The original vocabulary: the LM head's rows. agent/ never resizes the embeddings (placeholder
    and signal tokens get their rows in `MMLLM._embed` and are never predicted), so this holds
    after grafting too; a caller that resizes them records it before and passes `base_vocab`."""
    return mm.backbone.get_output_embeddings().weight.shape[0]


def divergence(mm, prompts: Sequence[str], max_new_positions: int = 4, base_vocab: int | None = None,
               batch_size: int = 16) -> float:
    """Mean KL(original ‖ grafted) over prompts and positions: the chat prompt's last position and
    the positions of the original's greedy continuation (`max_new_positions` in all, none past an
    end token), over the first `base_vocab` logits (default `base_vocab_size(mm)`). Both models read
    the same tokens through the same code, so a model with nothing grafted (or LoRA B at zero)
    gives exactly 0."""
    vocab, n = base_vocab or base_vocab_size(mm), max_new_positions
    eos, pad, device = mm.tokenizer.eos_token_id, mm.tokenizer.pad_token_id, _device(mm)
    rows = [mm.prompt_ids(p) for p in prompts]
    head = mm.scorer().head_ids()  # the template tokens before the prompt's own text
    head = head if all(r[:len(head)] == head for r in rows) else []
    rows = [r[len(head):] for r in rows]
    total, count = 0.0, 0
    with _probing(mm):
        with _original(mm) as model:
            kv_original = _head_kv(model, head, device)
        with mm._routed([TEXT_ONLY]) as model:
            kv_grafted = _head_kv(model, head, device)
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            with _original(mm) as model:
                cont, ref = _stepwise(model, kv_original, chunk, n, pad, device)  # (B, n), (B, n, V)
            with mm._routed([TEXT_ONLY]) as model:
                _, cur = _stepwise(model, kv_grafted, chunk, n, pad, device, feed=cont)
            ref, cur = (x[..., :vocab].float().log_softmax(-1) for x in (ref, cur))  # (B, n, V)
            kl = (ref.exp() * (ref - cur)).sum(-1)  # (B, n)
            is_eos = cont == eos
            valid = (is_eos.long().cumsum(-1) - is_eos.long()) == 0  # up to and including the first end
            total += float(kl[valid].sum())
            count += int(valid.sum())
    return total / count


def self_distilled_records(mm, prompts: Sequence[str], max_new_tokens: int = 24,
                           batch_size: int = 64, sample: bool = False, seed: int = 0) -> list[dict]:
    """The original LLM's answers (`mm.generate` with every adapter off) as text-mix records shaped
    like envs/text_tasks.py's; prompts it answers with nothing are skipped.

    Greedy answers are the base model's mode: training on them sharpens the distribution (a 135M
    model's are repetitive), and prose perplexity with the adapter on rises. With `sample` the
    answers are drawn from the base distribution itself (temperature 1, seeded, the global RNG left
    as it was), so the cross-entropy on them is, in expectation, the KL to the base model plus a
    constant: a distillation target, not a sharpening one."""
    out = []
    options = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0} if sample else {}
    with _probing(mm), _original(mm), torch.random.fork_rng():
        torch.manual_seed(seed)
        for i in range(0, len(prompts), batch_size):
            chunk = list(prompts[i:i + batch_size])
            for prompt, answer in zip(chunk, mm.generate([Example(p) for p in chunk], max_new_tokens, **options)):
                if answer.strip():
                    out.append({"kind": "text", "modalities": [], "prompt": prompt,
                                "response": answer.strip(), "family": "self_distilled",
                                "template": "self_distilled", "match": "normalized"})
    return out


def language_probes(mm, split: str = "test", base_vocab: int | None = None) -> dict:
    """{"perplexity", "knowledge", "knowledge_chance", "divergence"} of `mm` on `split` (the
    divergence prompts are one set for both splits), printing a line as each probe ends."""
    items = knowledge_items(split)
    out = {"knowledge_chance": knowledge_chance(items)}
    for name, probe in (("perplexity", lambda: perplexity(mm, heldout_passages(split))),
                        ("knowledge", lambda: knowledge_accuracy(mm, items)),
                        ("divergence", lambda: divergence(mm, divergence_prompts(), base_vocab=base_vocab))):
        start = time.perf_counter()
        out[name] = probe()
        chance = f" (chance {out['knowledge_chance']:.3f})" if name == "knowledge" else ""
        seconds = time.perf_counter() - start
        print(f"language probes [{split}] {name} {out[name]:.4g}{chance} in {seconds:.1f}s", flush=True)
    return out
