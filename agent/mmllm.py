"""The MM-LLM: modality encoders → input projectors → LLM (+ LoRA per modality) → text.

An `Example` is one prompt with its observations (and, for training, its response). The prompt
holds one `<name>` placeholder per observation; `embed` replaces each placeholder by that
modality's projected tokens, so the LLM reads `inputs_embeds` of shape `(B, L, D)`. Labels are
-100 on the prompt and modality positions. The same spliced prompts feed training (`forward`),
free text generation (`generate`) and scoring a fixed set of candidate answers in one forward
pass (`score`, through the prefix-cached token-tree fast path of agent/fast_path.py), e.g. the
names of an environment's actions.

Under gated routing a text-loss stage's batch (`forward(by_route=True)`) is read row by row as
inference will read it: the rows are grouped by the adapters their observations (and
`Example.routes`) switch on, one forward per group, and `.loss` is the batch's mean token loss
(`RoutedOutput`). Before this, a batch ran with the union of its rows' adapters, so a stage's own
rgb rows trained with a replayed grid row's adapter on, which an rgb-only prompt never has.

Output modalities (agent/outputs.py) are grafted the same way (`graft(name, output=OutputHead)`:
K signal tokens and a LoRA adapter `name`); `signal_hidden` returns the LLM's last-layer hidden
states at the signal tokens `(B, K, D)` and `output_features` the generator conditioning `(B, N, C)`.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from graft.agent.adapters import AdapterBank
from graft.agent.example import Example
from graft.agent.modalities.base import Modality
from graft.agent.outputs import OutputHead
from graft.envs.spec import ObservationError
from torch import nn

IGNORE = -100


@dataclass
class RoutedOutput:
    """A gated training forward split by routing: the batch's mean token loss, each routing
    group's own model output, and which examples (indices) each group held."""

    loss: torch.Tensor
    groups: list
    rows: list[list[int]]


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
        self.outputs = nn.ModuleDict()  # output modalities: signal embeddings + output projector
        self.signal_ids: dict[str, list[int]] = {}  # output name -> ids of its K signal tokens
        self.training_adapter: str | None = None
        self.adapter_of: dict[str, str] = {}  # grafted name -> its LoRA adapter (itself, or a shared one)
        self.embed_dim = llm.get_input_embeddings().embedding_dim
        self.build_config: dict = {}  # how to rebuild it (agent/build.py)
        self.graft_configs: dict = {}
        self.norm_stats: dict = {}  # grafted name -> what it was trained on (agent/norm_stats.py)
        self.pack: bool | str = False  # forward()'s defaults (agent/packing.py); see forward
        self.logits_at = "all"

    # ---- grafting and trainability -------------------------------------------------------------
    def graft(self, name: str, modality: Modality | None = None, projector: nn.Module | None = None,
              adapter: str | None = None, output: OutputHead | None = None) -> None:
        """Graft `name`: for an input modality its encoder, projector and `<name>` token; for an output
        modality (`output=`) its signal tokens and output projector; plus a LoRA adapter called
        `name` — or, with `adapter=`, a LoRA adapter shared between grafts.

        Everything already grafted stays frozen; call `set_trainable` to choose what learns.
        """
        if name in self.adapter_of:
            raise ValueError(f"'{name}' is already grafted (grafted: {list(self.adapter_of)})")
        if modality is not None and output is not None:
            raise ValueError(f"'{name}' is either an input modality or an output modality, not both")
        if modality is not None:
            self.register_modality(name, modality, projector)
        if output is not None:
            self.register_output(name, output)
        adapter = adapter or name
        if adapter not in self.bank.names:
            self.bank.add(adapter)
        self.adapter_of[name] = adapter
        for parts in (self.projectors, self.outputs):  # new parts follow the model's mode (Agent skips eval())
            if name in parts:
                parts[name].train(self.training)
        self.set_trainable(None)

    def register_modality(self, name: str, modality: Modality, projector: nn.Module | None) -> None:
        if modality.name != name:
            raise ValueError(f"modality is named '{modality.name}' but grafted as '{name}'")
        if projector is None:
            raise ValueError(f"modality '{name}' needs an input projector")
        if hasattr(modality, "bind"):  # an encoder that reads the LLM's own vocabulary (grid_words)
            modality.bind(self)
        token = f"<{name}>"
        self.tokenizer.add_tokens([token], special_tokens=True)
        self.placeholder_ids[name] = self.tokenizer.convert_tokens_to_ids(token)
        self.modalities[name] = modality
        self.projectors[name] = projector

    def register_output(self, name: str, head: OutputHead) -> None:
        if head.name != name:
            raise ValueError(f"output head is named '{head.name}' but grafted as '{name}'")
        if name in self.modalities:
            raise ValueError(f"'{name}' is already an input modality")
        if head.signal.shape[1] != self.embed_dim:
            raise ValueError(f"output '{name}': signal embeddings are {head.signal.shape[1]}-wide, the LLM's "
                             f"{self.embed_dim}")
        tokens = head.token_strings()
        self.tokenizer.add_tokens(tokens, special_tokens=True)
        self.signal_ids[name] = [self.tokenizer.convert_tokens_to_ids(t) for t in tokens]
        self.outputs[name] = head

    def set_trainable(self, name: str | Sequence[str] | None, stage: str | None = None) -> list[nn.Parameter]:
        """Freeze everything, then unfreeze the parts of graft `name` (or of several grafts that
        share one adapter) for `stage`.

        stage "pt": the input projector only (MM PT). stage "it": projector + LoRA (MM IT).
        For an output modality the output head (signal embeddings + output projector) stands in for
        the input projector. Returns the trainable parameters.
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
            if n in self.outputs:
                self.outputs[n].requires_grad_(True)
        if names and stage == "it":
            adapters = {self.adapter_of[n] for n in names}
            if len(adapters) > 1:
                raise ValueError(f"one adapter trains at a time; {names} use {sorted(adapters)}")
            self.training_adapter = adapters.pop()
        self.bank._active = None  # force the next route() to reset LoRA requires_grad
        self.route([*self.modalities.keys(), *names])  # gated routing: the trained output adapter too
        return [p for p in self.parameters() if p.requires_grad]

    def route(self, present: Sequence[str]) -> None:
        """Choose the active adapters for inputs holding modalities `present` (input modalities, and
        the output modality being produced); inside `adapters_on(...)` those are on too."""
        names = self.routed([*present, *self.__dict__.get("_forced_on", ())])
        trainable = self.training_adapter if self.training_adapter in names else None
        self.bank.route(names, trainable)
        if self.training_adapter and trainable is None:  # off for this input (gated), still learning:
            for p in self.bank.lora_parameters(self.training_adapter):  # it stays in the optimiser's graph
                p.requires_grad_(True)

    @contextlib.contextmanager
    def adapters_on(self, names: Sequence[str]):
        """Every forward inside routes the adapters of `names` as if those modalities were present
        (gated routing): how a text-only prompt reads once a modality's adapter is on."""
        before = self.__dict__.get("_forced_on", ())
        self.__dict__["_forced_on"] = tuple(dict.fromkeys([*before, *names]))
        try:
            yield self
        finally:
            self.__dict__["_forced_on"] = before

    def routed(self, present: Sequence[str]) -> list[str]:
        """The adapters active for inputs holding modalities `present`."""
        names = self.bank.names
        if self.routing == "gated":  # task adapters (no encoder, no output head) are always on
            names = [n for n in names if n in present or (n not in self.modalities and n not in self.outputs)]
        return list(names)

    @torch.no_grad()
    def fingerprint(self, present: Sequence[str], observed: bool = True) -> str:
        """A digest of every learnable weight a text answer to an input holding modalities `present`
        reads: the routed adapters' LoRA tensors and (`observed`) those modalities' encoders and
        projectors (the base LLM never trains). Equal digests give equal scores, so an evaluation
        can be reused. `observed=False`: a text-only prompt with those adapters on (`adapters_on`)."""
        digest = hashlib.blake2b(digest_size=16)
        parts = [("adapter", n, self.bank.lora_parameters(n)) for n in self.routed(present)]
        parts += [(kind, m, list(table[m].state_dict().values())) for m in sorted(present)
                  if observed and m in self.modalities
                  for kind, table in (("encoder", self.modalities), ("projector", self.projectors))]
        for kind, name, tensors in parts:
            digest.update(f"{kind}:{name}:{len(tensors)};".encode())
            for t in tensors:
                digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    # ---- inputs --------------------------------------------------------------------------------
    def check(self, example: Example) -> None:
        unknown = [k for k in example.obs if k not in self.modalities]
        if unknown:
            specs = "; ".join(m.spec.describe() for m in self.modalities.values()) or "none grafted"
            raise ObservationError(f"unknown modality {unknown}: this agent reads {specs}")
        for name in self.modalities:
            count = example.prompt.count(f"<{name}>")
            if name in example.obs and count != 1:
                raise ObservationError(f"modality '{name}': the prompt must hold exactly one <{name}> "
                                       f"placeholder for the observation, found {count} in "
                                       f"{example.prompt!r}")
            if name not in example.obs and count:
                want = self.modalities[name].spec.describe()
                raise ObservationError(f"modality '{name}': the prompt uses <{name}> but no '{name}' "
                                       f"observation was given; expected {want}")

    def encode_observations(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        """Encode + project each modality once for the whole batch → {name: (B_m, N_m, D)}."""
        tokens = {}
        for name, modality in self.modalities.items():
            rows = [ex for ex in examples if name in ex.obs]
            if not rows:
                continue
            for ex in rows:  # per sample: the error names the spec, not a stacking failure; once only
                if not ex.checked:
                    modality.validate(ex.obs[name], batched=False)
            tokens[name] = self.projectors[name](modality(np.stack([ex.obs[name] for ex in rows]), validate=False))
        return tokens

    def _token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, prompt: str) -> list[int]:
        """The chat-formatted prompt's token ids. Memoised per prompt and tokenizer size (a policy
        sees the same mission at every step of an episode; grafting adds tokens and resets it)."""
        memo = self.__dict__.setdefault("_prompt_ids", {})
        key = (prompt, id(self.tokenizer), len(self.tokenizer))
        if key not in memo:
            if len(memo) >= 4096:
                memo.clear()
            chat = [{"role": "user", "content": prompt}]
            text = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            memo[key] = self._token_ids(text)
        return list(memo[key])

    def embed_tokens(self, ids: list[int]) -> torch.Tensor:
        table = self.backbone.get_input_embeddings()
        return table(torch.tensor(ids, dtype=torch.long, device=table.weight.device))  # (L, D)

    def embed_prompts(self, examples: Sequence[Example]) -> list[torch.Tensor]:
        """Chat-formatted prompts with modality tokens spliced in: one `(L_i, D)` per example."""
        return [seq for seq, _ in self._embed(examples)]

    def _embed(self, examples: Sequence[Example], append: Sequence[Sequence[int]] | None = None):
        """Per example: the spliced prompt `(L_i, D)` (token ids `append[i]` added after it), and
        where each prompt token landed in it (placeholders expand to N_m rows)."""
        for ex in examples:
            self.check(ex)
        tokens = self.encode_observations(examples)
        taken = {name: 0 for name in tokens}
        by_id = {i: n for n, i in self.placeholder_ids.items()}
        signal_of = {i: (n, k) for n, ids in self.signal_ids.items() for k, i in enumerate(ids)}
        out = []
        for b, ex in enumerate(examples):
            ids = self.prompt_ids(ex.prompt) + list(append[b] if append else [])
            safe = [0 if i in by_id or i in signal_of else i for i in ids]  # new tokens have no embedding row
            text = self.embed_tokens(safe)
            rows = [pos for pos, i in enumerate(ids) if i in signal_of]
            if rows:  # signal tokens: rows of their output head's learned table
                values = torch.stack([self.outputs[signal_of[ids[p]][0]].signal[signal_of[ids[p]][1]] for p in rows])
                text = text.index_put((torch.tensor(rows, device=text.device),), values.to(text.dtype))
            pieces, start, where, shift = [], 0, [], 0
            for pos, i in enumerate(ids):
                where.append(pos + shift)
                if i in by_id:
                    name = by_id[i]
                    spliced = tokens[name][taken[name]].to(text.dtype)  # (N_m, D)
                    pieces += [text[start:pos], spliced]
                    taken[name] += 1
                    start, shift = pos + 1, shift + spliced.shape[0] - 1
            pieces.append(text[start:])
            out.append((torch.cat(pieces), where))
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

    @contextlib.contextmanager
    def _routed(self, examples: Sequence[Example], *also: str):
        """The LLM with the adapters of the examples' modalities (and `routes`, and `also`) routed and on."""
        self.route(sorted({k for ex in examples for k in self.present(ex)} | set(also)))
        with self.bank.context():
            yield self.bank.model

    # ---- output modalities ---------------------------------------------------------------------
    def signal_hidden(self, examples: Sequence[Example], name: str, with_prefix: bool = False):
        """The LLM's last-layer hidden states at the K signal tokens of output `name` → `(B, K, D)`.

        A prompt may hold the K tokens (in order, once); a prompt without them gets them appended as
        the start of the assistant's turn, i.e. the LLM is asked to produce the output. Routing
        treats `name` as present, so a gated output adapter is active. With `with_prefix` it returns
        `(signal (B, K, D), states over the whole sequence (B, L, D), its mask (B, L))`.
        """
        if name not in self.outputs:
            raise KeyError(f"'{name}' is not a grafted output modality (outputs: {list(self.outputs)})")
        want = self.signal_ids[name]
        append, found = [], []
        for ex in examples:
            ids = self.prompt_ids(ex.prompt)
            at = [p for p, i in enumerate(ids) if i in want]
            if at and [ids[p] for p in at] != want:
                raise ValueError(f"output '{name}': a prompt must hold its signal tokens "
                                 f"{self.outputs[name].signal_text} once and in order, or none of them; "
                                 f"got {[self.tokenizer.convert_ids_to_tokens(ids[p]) for p in at]}")
            append.append([] if at else want)
            found.append(at or list(range(len(ids), len(ids) + len(want))))
        embedded = self._embed(examples, append)
        batch = self.pad([seq for seq, _ in embedded])
        batch.pop("labels")
        positions = torch.tensor([[where[p] for p in at] for (_, where), at in zip(embedded, found)],
                                 device=batch["inputs_embeds"].device)  # (B, K)
        with self._routed(examples, name) as model:
            out = model(**batch, output_hidden_states=True, **self._keep_one_logit())
        hidden = out.hidden_states[-1]  # (B, L, D)
        signal = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (B, K, D)
        return (signal, hidden, batch["attention_mask"]) if with_prefix else signal

    def output_features(self, examples: Sequence[Example], name: str) -> torch.Tensor:
        """Signal-token hidden states through output `name`'s projector → conditioning `(B, N, C)`."""
        if name not in self.outputs or not self.outputs[name].reads_prefix:
            hidden = self.signal_hidden(examples, name)  # (B, K, D); names an unknown output clearly
            return self.outputs[name](hidden)
        head = self.outputs[name]
        observations = {}
        for m in head.observed:
            if any(m not in ex.obs for ex in examples):
                raise ObservationError(f"output '{name}' reads '{m}' directly, but an example has no '{m}' "
                                       f"observation; expected {self.modalities[m].spec.describe()}")
            observations[m] = self.modalities[m](np.stack([ex.obs[m] for ex in examples]))  # (B, T_m, F_m)
        return head(*self.signal_hidden(examples, name, with_prefix=True), observations=observations)

    def _keep_one_logit(self) -> dict:
        """Skip the LM head's full-vocabulary logits where the model allows it (hidden states only)."""
        if "logits_to_keep" in inspect.signature(self.backbone.forward).parameters:
            return {"logits_to_keep": 1}
        return {}

    # ---- the three uses ------------------------------------------------------------------------
    def forward(self, examples: Sequence[Example], pack: bool | str | None = None, logits_at: str | None = None,
                by_route: bool = False):
        """Teacher-forced pass; `.loss` is the conditional text-generation loss on the responses.

        `pack` (default `self.pack`, False) runs the batch padding-free in one row (True, or "auto":
        when that saves FLOPs); `logits_at="labels"` (default `self.logits_at`, "all") computes
        LM-head logits only where a label is predicted (agent/packing.py). Both give the same loss;
        they change the layout of `.logits`. `by_route` (gated routing): one forward per group of rows
        that switch on the same adapters, so each row is read as inference reads it (`RoutedOutput`
        when there are several groups); otherwise the batch runs with the union of its adapters."""
        pack = self.pack if pack is None else pack
        logits_at = self.logits_at if logits_at is None else logits_at
        if logits_at not in ("all", "labels"):
            raise ValueError(f"logits_at must be 'all' or 'labels', got {logits_at!r}")
        if any(ex.response is None for ex in examples):
            raise ValueError("every training example needs a response")
        prompts = self.embed_prompts(examples)
        seqs, labels = [], []
        for p, ex in zip(prompts, examples):
            ids = self._token_ids(ex.response + self.tokenizer.eos_token)
            seqs.append(torch.cat([p, self.embed_tokens(ids)]))
            labels.append(torch.tensor([IGNORE] * p.shape[0] + ids, device=p.device))
        from graft.agent.packing import label_logits_forward, packed, worth_packing

        groups: dict[tuple[str, ...], list[int]] = {}  # gated: each row as inference will read it
        for i, ex in enumerate(examples):
            key = tuple(self.routed(self.present(ex))) if by_route and self.routing == "gated" else ()
            groups.setdefault(key, []).append(i)
        outputs, counts = [], []
        for rows in groups.values():
            part = [seqs[i] for i in rows], [labels[i] for i in rows]
            use_pack = worth_packing([s.shape[0] for s in part[0]], self.backbone.config) if pack == "auto" else pack
            batch = packed(*part) if use_pack else self.pad(*part)
            with self._routed([examples[i] for i in rows]) as model:
                outputs.append(model(**batch) if logits_at == "all" else label_logits_forward(model, batch))
            counts.append(sum(int((lab != IGNORE).sum()) for lab in part[1]))
        if len(outputs) == 1:
            return outputs[0]
        # the batch's mean token loss, from each group's mean: one output per routing group
        loss = sum(o.loss * n for o, n in zip(outputs, counts)) / sum(counts)
        return RoutedOutput(loss=loss, groups=outputs, rows=list(groups.values()))

    @staticmethod
    def present(example: Example) -> list[str]:
        """The modalities whose adapters `example` is read with: its observations and its `routes`."""
        return sorted({*example.obs, *example.routes})

    @torch.no_grad()
    def generate(self, examples: Sequence[Example], max_new_tokens: int = 32, **generate_kwargs) -> list[str]:
        """Greedy answers (unless `generate_kwargs` say otherwise, e.g. do_sample=True), decoded
        without special tokens."""
        out = self.generate_ids(examples, max_new_tokens, **generate_kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    @torch.no_grad()
    def generate_ids(self, examples: Sequence[Example], max_new_tokens: int = 32, **generate_kwargs) -> torch.Tensor:
        """New token ids `(B, T)`, right-padded with the pad id after an end token."""
        batch = self.pad(self.embed_prompts(examples), side="left")
        batch.pop("labels"), batch.pop("position_ids")
        with self._routed(examples) as model:
            return model.generate(**batch, max_new_tokens=max_new_tokens,
                                  **{"do_sample": False, "pad_token_id": self.tokenizer.pad_token_id,
                                     "eos_token_id": self.tokenizer.eos_token_id, **generate_kwargs})

    @torch.no_grad()
    def score(self, examples: Sequence[Example], candidates: Sequence[str], normalize: bool = False,
              complete: bool = True) -> torch.Tensor:
        """Log-probability of each candidate answer after each prompt, in one forward → `(B, K)`.

        With `complete` (default) a candidate is scored as a whole answer: followed by the end token
        the model is trained to emit, so a candidate that is a prefix of another ("1" / "12") must
        end where it ends. The prompts go through the LLM once, with every candidate appended as a
        token tree behind a cached template head (agent/fast_path.py); same numbers as `score_repeated`."""
        return self.scorer().score(examples, candidates, normalize, complete)

    def answer_ids(self, candidate: str, complete: bool = True) -> list[int]:
        """A candidate answer's token ids; with `complete`, followed by the end token (as in training)."""
        return self._token_ids(candidate + self.tokenizer.eos_token if complete else candidate)

    def scorer(self, merge: bool = False, dtype: torch.dtype | None = None):
        """The fast-path scorer on the live weights, or (`merge=True`) on a merged deployment copy
        that follows the live adapters (rebuilt when they change)."""
        from graft.agent.fast_path import FastScorer

        cache = self.__dict__.setdefault("_scorers", {})  # plain attribute: not a submodule
        if (merge, dtype) not in cache:
            cache[(merge, dtype)] = FastScorer(self, merge=merge, dtype=dtype)
        return cache[(merge, dtype)]

    @torch.no_grad()
    def score_repeated(self, examples: Sequence[Example], candidates: Sequence[str], normalize: bool = False,
                       complete: bool = True) -> torch.Tensor:
        """`score` the slow way: the full prompt repeated once per candidate, one padded batch of B*K."""
        prompts = self.embed_prompts(examples)
        cand_ids = [self.answer_ids(c, complete) for c in candidates]
        cand_emb = [self.embed_tokens(ids) for ids in cand_ids]
        seqs, labels = [], []
        for p in prompts:
            for ids, emb in zip(cand_ids, cand_emb):
                seqs.append(torch.cat([p, emb]))
                labels.append(torch.tensor([IGNORE] * p.shape[0] + ids, device=p.device))
        batch = self.pad(seqs, labels)
        target = batch.pop("labels")
        with self._routed(examples) as model:
            logits = model(**batch).logits[:, :-1].float()  # (B*K, L-1, V)
        target = target[:, 1:]
        logp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        logp = (logp * (target != IGNORE)).sum(-1)
        if normalize:
            logp = logp / torch.tensor([len(i) for i in cand_ids] * len(examples), device=logp.device)
        return logp.view(len(examples), len(candidates))
