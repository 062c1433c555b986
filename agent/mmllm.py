"""The MM-LLM: modality encoders → input projectors → LLM (+ LoRA per modality) → text.

An `Example` is one prompt with its observations (and, for training, its response). The prompt
holds one `<name>` placeholder per observation; `embed` replaces each placeholder by that
modality's projected tokens, so the LLM reads `inputs_embeds` of shape `(B, L, D)`. Labels are
-100 on the prompt and modality positions. The same spliced prompts feed training (`forward`),
free text generation (`generate`) and scoring a fixed set of candidate answers in one forward
pass (`score`), e.g. the names of an environment's actions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from graft.agent.adapters import AdapterBank
from graft.agent.modalities.base import Modality
from graft.envs.spec import ObservationError
from torch import nn

IGNORE = -100


@dataclass
class Example:
    prompt: str
    obs: Mapping[str, np.ndarray] = field(default_factory=dict)
    response: str | None = None


class MMLLM(nn.Module):
    def __init__(self, llm: nn.Module, tokenizer, lora: Mapping, routing: str = "stacked"):
        super().__init__()
        if routing not in ("stacked", "gated"):
            raise ValueError(f"routing must be 'stacked' or 'gated', got '{routing}'")
        self.backbone = llm  # peft injects LoRA layers into these very modules
        self.tokenizer = tokenizer
        self.bank = AdapterBank(llm, lora)
        self.routing = routing
        self.modalities = nn.ModuleDict()
        self.projectors = nn.ModuleDict()
        self.placeholder_ids: dict[str, int] = {}
        self.training_adapter: str | None = None
        self.adapter_of: dict[str, str] = {}  # grafted name -> its LoRA adapter (itself, or a shared one)
        self.embed_dim = llm.get_input_embeddings().embedding_dim
        self.build_config: dict = {}  # how to rebuild it (agent/build.py)
        self.graft_configs: dict = {}

    # ---- grafting and trainability -------------------------------------------------------------
    def graft(self, name: str, modality: Modality | None = None, projector: nn.Module | None = None,
              adapter: str | None = None) -> None:
        """Graft `name`: for an input modality its encoder, projector and `<name>` token, plus a LoRA
        adapter called `name` — or, with `adapter=`, a LoRA adapter shared between grafts.

        Everything already grafted stays frozen; call `set_trainable` to choose what learns.
        """
        if name in self.adapter_of:
            raise ValueError(f"'{name}' is already grafted (grafted: {list(self.adapter_of)})")
        if modality is not None:
            self.register_modality(name, modality, projector)
        adapter = adapter or name
        if adapter not in self.bank.names:
            self.bank.add(adapter)
        self.adapter_of[name] = adapter
        self.set_trainable(None)

    def register_modality(self, name: str, modality: Modality, projector: nn.Module | None) -> None:
        if modality.name != name:
            raise ValueError(f"modality is named '{modality.name}' but grafted as '{name}'")
        if projector is None:
            raise ValueError(f"modality '{name}' needs an input projector")
        token = f"<{name}>"
        self.tokenizer.add_tokens([token], special_tokens=True)
        self.placeholder_ids[name] = self.tokenizer.convert_tokens_to_ids(token)
        self.modalities[name] = modality
        self.projectors[name] = projector

    def set_trainable(self, name: str | Sequence[str] | None, stage: str | None = None) -> list[nn.Parameter]:
        """Freeze everything, then unfreeze the parts of graft `name` (or of several grafts that
        share one adapter) for `stage`.

        stage "pt": the input projector only (MM PT). stage "it": projector + LoRA (MM IT).
        Returns the trainable parameters.
        """
        if stage not in (None, "pt", "it"):
            raise ValueError(f"stage must be 'pt' or 'it', got '{stage}'")
        self.requires_grad_(False)
        self.training_adapter = None
        names = [] if name is None else [name] if isinstance(name, str) else list(name)
        for n in names:
            if n not in self.adapter_of:
                raise KeyError(f"'{n}' is not grafted (grafted: {list(self.adapter_of)})")
            if n in self.projectors:
                self.projectors[n].requires_grad_(True)
        if names and stage == "it":
            adapters = {self.adapter_of[n] for n in names}
            if len(adapters) > 1:
                raise ValueError(f"one adapter trains at a time; {names} use {sorted(adapters)}")
            self.training_adapter = adapters.pop()
        self.bank._active = None  # force the next route() to reset LoRA requires_grad
        self.route(self.modalities.keys())
        return [p for p in self.parameters() if p.requires_grad]

    def route(self, present: Sequence[str]) -> None:
        """Choose the active adapters for inputs holding modalities `present`."""
        names = self.bank.names
        if self.routing == "gated":  # task adapters (no encoder) are always on
            names = [n for n in names if n in present or n not in self.modalities]
        trainable = self.training_adapter if self.training_adapter in names else None
        self.bank.route(names, trainable)

    # ---- inputs --------------------------------------------------------------------------------
    def check(self, example: Example) -> None:
        unknown = [k for k in example.obs if k not in self.modalities]
        if unknown:
            specs = "; ".join(m.spec.describe() for m in self.modalities.values()) or "none grafted"
            raise ObservationError(f"unknown modality {unknown}: this agent reads {specs}")
        for name in self.modalities:
            count = example.prompt.count(f"<{name}>")
            if name in example.obs and count != 1:
                raise ObservationError(
                    f"modality '{name}': the prompt must hold exactly one <{name}> placeholder "
                    f"for the observation, found {count} in {example.prompt!r}"
                )
            if name not in example.obs and count:
                raise ObservationError(
                    f"modality '{name}': the prompt uses <{name}> but no '{name}' observation was given; "
                    f"expected {self.modalities[name].spec.describe()}"
                )

    def encode_observations(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        """Encode + project each modality once for the whole batch → {name: (B_m, N_m, D)}."""
        tokens = {}
        for name, modality in self.modalities.items():
            values = [ex.obs[name] for ex in examples if name in ex.obs]
            if not values:
                continue
            for v in values:  # per-sample first: the error names the spec, not a stacking failure
                modality.validate(v, batched=False)
            tokens[name] = self.projectors[name](modality(np.stack(values)))
        return tokens

    def _token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, prompt: str) -> list[int]:
        chat = [{"role": "user", "content": prompt}]
        text = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        return self._token_ids(text)

    def embed_tokens(self, ids: list[int]) -> torch.Tensor:
        table = self.backbone.get_input_embeddings()
        return table(torch.tensor(ids, dtype=torch.long, device=table.weight.device))  # (L, D)

    def embed_prompts(self, examples: Sequence[Example]) -> list[torch.Tensor]:
        """Chat-formatted prompts with modality tokens spliced in: one `(L_i, D)` per example."""
        for ex in examples:
            self.check(ex)
        tokens = self.encode_observations(examples)
        taken = {name: 0 for name in tokens}
        by_id = {i: n for n, i in self.placeholder_ids.items()}
        out = []
        for ex in examples:
            ids = self.prompt_ids(ex.prompt)
            safe = [0 if i in by_id else i for i in ids]  # placeholders may have no embedding row
            text = self.embed_tokens(safe)
            pieces, start = [], 0
            for pos, i in enumerate(ids):
                if i in by_id:
                    name = by_id[i]
                    pieces += [text[start:pos], tokens[name][taken[name]].to(text.dtype)]
                    taken[name] += 1
                    start = pos + 1
            pieces.append(text[start:])
            out.append(torch.cat(pieces))
        return out

    def pad(self, seqs: list[torch.Tensor], labels: list[torch.Tensor] | None = None, side: str = "right"):
        """Pad `(L_i, D)` sequences into a batch with attention mask and position ids."""
        length = max(s.shape[0] for s in seqs)
        device, dtype = seqs[0].device, seqs[0].dtype
        pad_row = self.embed_tokens([self.tokenizer.pad_token_id])[0]
        embeds = pad_row.expand(len(seqs), length, -1).clone()  # (B, L, D)
        mask = torch.zeros(len(seqs), length, dtype=torch.long, device=device)
        lab = torch.full((len(seqs), length), IGNORE, dtype=torch.long, device=device)
        for b, s in enumerate(seqs):
            sl = slice(0, s.shape[0]) if side == "right" else slice(length - s.shape[0], length)
            embeds[b, sl] = s.to(dtype)
            mask[b, sl] = 1
            if labels is not None:
                lab[b, sl] = labels[b]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": position_ids, "labels": lab}

    def _run(self, examples: Sequence[Example], batch: dict, **kwargs):
        self.route(sorted({k for ex in examples for k in ex.obs}))
        with self.bank.context():
            return self.bank.model(**batch, **kwargs)

    # ---- the three uses ------------------------------------------------------------------------
    def forward(self, examples: Sequence[Example]):
        """Teacher-forced pass; `.loss` is the conditional text-generation loss on the responses."""
        if any(ex.response is None for ex in examples):
            raise ValueError("every training example needs a response")
        prompts = self.embed_prompts(examples)
        seqs, labels = [], []
        for p, ex in zip(prompts, examples):
            ids = self._token_ids(ex.response + self.tokenizer.eos_token)
            seqs.append(torch.cat([p, self.embed_tokens(ids)]))
            labels.append(torch.tensor([IGNORE] * p.shape[0] + ids, device=p.device))
        return self._run(examples, self.pad(seqs, labels))

    @torch.no_grad()
    def generate(self, examples: Sequence[Example], max_new_tokens: int = 32, **generate_kwargs) -> list[str]:
        """Greedy answers, decoded without special tokens."""
        out = self.generate_ids(examples, max_new_tokens, **generate_kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    @torch.no_grad()
    def generate_ids(self, examples: Sequence[Example], max_new_tokens: int = 32, **generate_kwargs) -> torch.Tensor:
        """New token ids `(B, T)`, right-padded with the pad id after an end token."""
        batch = self.pad(self.embed_prompts(examples), side="left")
        batch.pop("labels"), batch.pop("position_ids")
        self.route(sorted({k for ex in examples for k in ex.obs}))
        with self.bank.context():
            out = self.bank.model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                **generate_kwargs,
            )
        return out

    @torch.no_grad()
    def score(self, examples: Sequence[Example], candidates: Sequence[str], normalize: bool = False) -> torch.Tensor:
        """Log-probability of each candidate answer after each prompt, in one forward → `(B, K)`."""
        prompts = self.embed_prompts(examples)
        cand_ids = [self._token_ids(c) for c in candidates]
        cand_emb = [self.embed_tokens(ids) for ids in cand_ids]
        seqs, labels = [], []
        for p in prompts:
            for ids, emb in zip(cand_ids, cand_emb):
                seqs.append(torch.cat([p, emb]))
                labels.append(torch.tensor([IGNORE] * p.shape[0] + ids, device=p.device))
        batch = self.pad(seqs, labels)
        target = batch.pop("labels")
        logits = self._run(examples, batch).logits[:, :-1].float()  # (B*K, L-1, V)
        target = target[:, 1:]
        logp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        logp = (logp * (target != IGNORE)).sum(-1)
        if normalize:
            logp = logp / torch.tensor([len(i) for i in cand_ids] * len(examples), device=logp.device)
        return logp.view(len(examples), len(candidates))
