"""The control-step fast path: a cached KV prefix, every candidate scored in one forward, merged adapters.

Scoring a fixed set of candidate answers (e.g. an environment's action names) after a prompt is
what a discrete-action policy does at every control step. The slow way repeats the whole prompt
once per candidate (`MMLLM.score_repeated`), or asks `generate()` for a few tokens and
string-matches them. `FastScorer.score` gives the same log-probabilities with:

1. **Cached KV prefixes.** graft's prompts put the static text first and the observation last
   (envs/prompts.py): chat-template head, mission, question, then the placeholders. The text
   before the first placeholder is the same at every control step of an episode, so its keys and
   values are computed once per set of active adapters and weights and reused (causal attention:
   they do not depend on what follows). The template head (the tokens before the prompt's own
   text) is always cached; a prompt's whole static text is cached the second time it is seen, so
   a policy pays for its mission and question once per episode and an evaluation pass over
   one-off questions does not fill the cache. Examples with prefixes of different lengths share
   one forward: their cached keys are left-padded and masked.
2. **Candidates in one forward, as a token tree.** The candidates' token ids form a trie (shared
   first tokens, e.g. "turn left" / "turn right", appear once). Trie tokens are appended after
   the left-padded prompt and a 4D attention mask lets each attend to the prompt and to its own
   ancestors only; position ids continue the prompt. Logits are taken only at the prompt's last
   position and at the trie tokens (`logits_to_keep`), not over the whole sequence.
3. **Merged adapters (deployment).** With `merge=True` the active LoRA adapters are folded into a
   copy of the weights (`AdapterBank.merged`), so a step runs a plain transformer with no LoRA
   branches. The copy and the prefix cache are rebuilt whenever an adapter weight changes (their
   storage or in-place version counters), so they never serve stale weights.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence

import torch
from graft.agent.example import Example
from transformers import DynamicCache


def cache_kwarg(model) -> str:
    """The forward's name for the KV cache: `cache` (transformers >= 5.24) or `past_key_values`."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_kwarg(type(inner))


@functools.cache
def _cache_kwarg(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


class Trie:
    """Candidates' token ids as a tree: node i holds `token[i]`, its `parent[i]` (-1: the prompt) and
    its `depth[i]` (1 for first tokens); `paths[k]` are candidate k's nodes in order."""

    def __init__(self, cand_ids: Sequence[Sequence[int]]):
        self.token, self.parent, self.depth, self.paths = [], [], [], []
        index: dict[tuple[int, ...], int] = {}
        for ids in cand_ids:
            path = []
            for d in range(len(ids)):
                key = tuple(ids[: d + 1])
                if key not in index:
                    index[key] = len(self.token)
                    self.token.append(int(ids[d]))
                    self.parent.append(path[-1] if path else -1)
                    self.depth.append(d + 1)
                path.append(index[key])
            self.paths.append(path)

    def __len__(self) -> int:
        return len(self.token)

    def ancestors(self, node: int) -> list[int]:
        out = []
        while node >= 0:
            out.append(node)
            node = self.parent[node]
        return out


class FastScorer:
    """Prefix-cached, one-forward candidate scoring over an `MMLLM` (live model, or merged copy)."""

    def __init__(self, mm, merge: bool = False, dtype: torch.dtype | None = None, cache_head: bool = True):
        self.mm, self.merge, self.dtype, self.cache_head = mm, merge, dtype, cache_head
        self._models: dict[tuple, torch.nn.Module] = {}  # (active adapters, fingerprint) -> merged copy
        self._prefixes: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # (key, ids) -> KV per layer
        self._seen: dict[tuple, int] = {}  # (key, static ids) -> times asked for
        self._head_ids: list[int] | None = None
        self._lora: tuple | None = None  # (which model and adapters, their LoRA tensors)
        self._candidates: dict[tuple[str, ...], tuple[list[list[int]], Trie, torch.Tensor]] = {}

    # ---- weights: which model, and whether cached state is still valid ----------------------------
    def fingerprint(self) -> tuple:
        """Changes whenever an adapter tensor is replaced or modified in place (optimiser steps,
        `copy_`, `load_state_dict`)."""
        bank = self.mm.bank
        if self._lora is None or self._lora[0] != (id(bank.model), tuple(bank.names)):
            params = [p for n, p in bank.model.named_parameters() if "lora_" in n]
            self._lora = ((id(bank.model), tuple(bank.names)), params)
        return tuple((p.data_ptr(), p._version) for p in self._lora[1])

    def _model(self, present: Sequence[str]):
        """(model, context manager, cache key) for inputs holding modalities `present`."""
        mm = self.mm
        mm.route(present)
        active = mm.bank.active
        key = (active, self.fingerprint() if mm.bank.names else ())
        if not self.merge or not active:
            model = mm.bank.model
            if self.dtype is not None and next(model.parameters()).dtype != self.dtype:
                raise ValueError("dtype= needs merge=True (the live model keeps its training dtype)")
            return model, mm.bank.context(), key
        if key not in self._models:
            # copies of older weights go; one per adapter set (gated routing) stays, at most four
            self._models = {k: m for k, m in self._models.items() if k[1] == key[1]}
            if len(self._models) >= 4:
                self._models.clear()
            merged = mm.bank.merged(active).eval()
            self._models[key] = merged.to(self.dtype) if self.dtype is not None else merged
        return self._models[key], torch.no_grad(), key

    # ---- the static head and its keys/values ------------------------------------------------------
    def head_ids(self) -> list[int]:
        """Template tokens before the prompt's own text: the common prefix of two renderings."""
        if self._head_ids is None:
            a, b = self.mm.prompt_ids("a"), self.mm.prompt_ids("b")
            n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            self._head_ids = a[:n]
        return self._head_ids

    def static_ids(self, prompt: str) -> list[int]:
        """The prompt's tokens before its first placeholder or signal token (all of them if none)."""
        ids, mm = self.mm.prompt_ids(prompt), self.mm
        special = set(mm.placeholder_ids.values()) | {i for v in mm.signal_ids.values() for i in v}
        return ids[: next((p for p, i in enumerate(ids) if i in special), len(ids))]

    def _prefix_kv(self, model, key: tuple, ids: Sequence[int], dtype: torch.dtype):
        """Keys and values of token ids `ids` alone, per layer `(1, heads, P, d)`, memoised per weights."""
        memo_key = (key, tuple(ids))
        if memo_key not in self._prefixes:
            stale = [k for k in self._prefixes if k[0] != key]  # older weights: never served again
            for k in stale:
                del self._prefixes[k]
            if len(self._prefixes) >= 64:
                self._prefixes.pop(next(iter(self._prefixes)))
            cache = DynamicCache(config=model.config)
            emb = self.mm.embed_tokens(list(ids))[None].to(dtype)  # (1, P, D)
            model(inputs_embeds=emb, use_cache=True, logits_to_keep=1, **{cache_kwarg(model): cache})
            self._prefixes[memo_key] = [(layer.keys, layer.values) for layer in cache.layers]
        return self._prefixes[memo_key]

    def _prefix_len(self, key: tuple, ids: list[int], static: list[int]) -> int:
        """How much of a prompt to serve from the cache: its static text from the second time it is
        seen (and when something of the prompt follows it), else the template head."""
        head = self.head_ids() if self.cache_head else []
        if ids[: len(head)] != head:
            return 0
        if not self.cache_head or len(static) <= len(head) or len(static) >= len(ids):
            return len(head)
        seen_key = (key, tuple(static))
        if len(self._seen) > 4096:
            self._seen.clear()
        self._seen[seen_key] = self._seen.get(seen_key, 0) + 1
        return len(static) if self._seen[seen_key] > 1 or (key, tuple(static)) in self._prefixes else len(head)

    # ---- scoring ----------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, examples: Sequence[Example], candidates: Sequence[str], normalize: bool = False,
              complete: bool = True) -> torch.Tensor:
        """Log-probability of each candidate answer after each prompt → `(B, K)`; with `complete`
        each candidate is followed by the end token (`MMLLM.score`)."""
        mm = self.mm
        cand_ids, trie, tree = self._tree(tuple(candidates), complete)
        embedded = mm._embed(examples)  # checks the examples; [(seq (L_i, D), where)]
        present = sorted({k for ex in examples for k in ex.obs})
        model, context, key = self._model(present)
        dtype = next(model.parameters()).dtype
        with context:
            ids = [mm.prompt_ids(ex.prompt) for ex in examples]
            cut = [self._prefix_len(key, i, self.static_ids(ex.prompt)) for i, ex in zip(ids, examples)]
            kv = [self._prefix_kv(model, key, i[:c], dtype) if c else [] for i, c in zip(ids, cut)]
            # a spliced prompt's rows equal its token positions up to the first placeholder
            logp = self._forward(model, [seq[c:] for (seq, _), c in zip(embedded, cut)], cut, kv, trie, tree, dtype)
        B, K = len(examples), len(candidates)
        out = torch.zeros(B, K, dtype=torch.float32, device=logp.device)
        for k, path in enumerate(trie.paths):
            for d, node in enumerate(path):
                # the logits predicting node `node` sit at its parent (0: the prompt's last token)
                at = 0 if d == 0 else path[d - 1] + 1
                out[:, k] += logp[:, at, trie.token[node]]
        if normalize:
            out = out / torch.tensor([max(len(i), 1) for i in cand_ids], dtype=out.dtype, device=out.device)
        return out

    def _tree(self, candidates: tuple[str, ...], complete: bool = True):
        """Token ids, trie and trie attention `(T, T)` (node -> its ancestors and itself) of a candidate
        set, computed once per set and tokenizer size."""
        key = (candidates, complete, len(self.mm.tokenizer))
        if key not in self._candidates:
            if len(self._candidates) > 16:
                self._candidates.clear()
            cand_ids = [self.mm.answer_ids(c, complete) for c in candidates]
            trie = Trie(cand_ids)
            tree = torch.zeros(len(trie), len(trie), dtype=torch.bool)
            for t in range(len(trie)):
                tree[t, trie.ancestors(t)] = True
            self._candidates[key] = (cand_ids, trie, tree)
        return self._candidates[key]

    def _forward(self, model, suffixes: list[torch.Tensor], cut: list[int], kv: list, trie: Trie,
                 tree: torch.Tensor, dtype) -> torch.Tensor:
        """One forward over left-padded prompt suffixes `(B, S)` + trie tokens `(T,)` after cached
        prefixes (example b: `cut[b]` tokens, keys/values `kv[b]`, left-padded to the longest, P)
        → log-probs at the prompt's last position and at each trie node `(B, 1+T, V)`."""
        mm = self.mm
        B, T = len(suffixes), len(trie)
        S, P = max(s.shape[0] for s in suffixes), max(cut)
        Q = S + T
        device = suffixes[0].device
        pad_row = mm.embed_tokens([mm.tokenizer.pad_token_id])[0].to(dtype)
        embeds = pad_row.expand(B, Q, -1).clone()  # (B, Q, D)
        if T:
            embeds[:, S:] = mm.embed_tokens(trie.token).to(dtype)  # (T, D)
        allowed = torch.zeros(B, Q, P + Q, dtype=torch.bool, device=device)
        position = torch.zeros(B, Q, dtype=torch.long, device=device)
        causal = torch.ones(S, S, dtype=torch.bool, device=device).tril()
        tree = tree.to(device)
        depth = torch.tensor(trie.depth, dtype=torch.long, device=device)
        for b, s in enumerate(suffixes):
            n, start, h = s.shape[0], S - s.shape[0], cut[b]
            embeds[b, start:S] = s.to(dtype)
            allowed[b, :, P - h : P] = True  # every query sees its own cached prefix
            allowed[b, start:S, P + start : P + S] = causal[start:, start:]  # the prompt: causal
            pads = torch.arange(start, device=device)
            allowed[b, pads, P + pads] = True  # pads see themselves only (never seen by real tokens)
            allowed[b, S:, P + start : P + S] = True  # trie tokens see the whole real prompt
            allowed[b, S:, P + S :] = tree
            position[b, start:S] = h + torch.arange(n, device=device)
            position[b, S:] = h + n - 1 + depth
        mask = torch.zeros(B, 1, Q, P + Q, dtype=dtype, device=device)
        mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)  # additive: 0 attend, min masked
        cache = None
        if P:
            cache = DynamicCache(config=model.config)
            for i in range(len(next(k for k in kv if k))):
                keys, values = [], []
                for b in range(B):
                    if cut[b]:
                        k, v = kv[b][i]  # (1, heads, cut[b], d)
                    else:
                        ref = next(k for k in kv if k)[i][0]
                        k = v = ref.new_zeros(1, ref.shape[1], 0, ref.shape[3])
                    pad = P - cut[b]
                    keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
                    values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
                cache.update(torch.cat(keys), torch.cat(values), i)
        keep = torch.arange(S - 1, Q, device=device)  # the prompt's last position, then the trie
        out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=position, use_cache=cache is not None,
                    logits_to_keep=keep, **{cache_kwarg(model): cache})
        return torch.log_softmax(out.logits.float(), -1)  # (B, 1+T, V)
