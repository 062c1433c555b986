"""What the LLM keeps of its own language while modalities are grafted: the text probes and retention.

A `TextProbes` measures a model on a split ("val" for the gate, "test" for the report):

    language   (pretrained backbones) perplexity on held-out natural English, multiple-choice
               general knowledge and instruction items, and the divergence of the next-token
               distributions from the original LLM (curricula/language_probes.py); none of these
               items come from the text mix
    templates  (random-weight backbones, no text stage) accuracy on the synthetic template tasks
               (envs/text_tasks.py), the only language such a model was taught

With a text stage in the curriculum (random-weight backbones) there are no probes: the text
stage's column of R is the text score, counted once.

Retention, per stage: knowledge after ÷ before, perplexity before ÷ after (1.0 is "nothing lost" for
both), and knowledge chance-corrected, (now − chance) ÷ (before − chance).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graft.curricula.evaluate import accuracy, chance
from graft.curricula.metrics import drop_limit

SPLITS = ("val", "test")


class TextProbes:
    """Text-only measurements of a model; `before` holds the base model's, per split."""

    def __init__(self, kind: str, items: Mapping[str, Sequence[dict]] | None = None, base_vocab: int | None = None,
                 passages: int = 32, max_items: int | None = None):
        """`passages` (perplexity) and `max_items` (knowledge, every k-th item so every family stays)
        size the language probes; a smoke run shrinks them, a real run keeps the defaults."""
        if kind not in ("language", "templates"):
            raise ValueError(f"text probes are 'language' or 'templates', got {kind!r}")
        self.kind, self.items, self.base_vocab, self.passages = kind, dict(items or {}), base_vocab, int(passages)
        self.before: dict[str, dict] = {}
        if kind == "language":
            from graft.curricula.language_probes import knowledge_chance, knowledge_items

            def cap(rows: list[dict]) -> list[dict]:
                return rows if not max_items or len(rows) <= max_items else rows[:: -(-len(rows) // max_items)]

            self.items = {split: cap(knowledge_items(split)) for split in SPLITS}
            self.chance = knowledge_chance(self.items["test"])
        else:
            self.chance = chance(self.items["test"])

    @property
    def label(self) -> str:
        return ("perplexity on held-out English (pydoc topics), general-knowledge multiple choice and "
                "next-token divergence from the original LLM" if self.kind == "language" else
                "template text tasks (a random-weight backbone's only language)")

    def measure(self, mm, split: str, adapters_on: bool = False) -> dict[str, Any]:
        """The probes on `split`; `adapters_on`: with every grafted input modality's adapter switched
        on, as in a prompt that carries observations (under gated routing a text-only prompt
        otherwise runs none of them)."""
        if adapters_on:
            with mm.adapters_on(list(mm.modalities)):
                return self.measure(mm, split)
        if self.kind == "templates":
            return {"knowledge": accuracy(mm, self.items[split]), "items": len(self.items[split])}
        from graft.curricula.language_probes import (
            divergence,
            divergence_prompts,
            heldout_passages,
            knowledge_accuracy,
            perplexity,
        )

        out = {"perplexity": perplexity(mm, heldout_passages(split, count=self.passages)),
               "knowledge": knowledge_accuracy(mm, self.items[split]), "items": len(self.items[split])}
        if split == "test":
            out["divergence"] = divergence(mm, divergence_prompts(), base_vocab=self.base_vocab)
        return out

    def measure_before(self, mm) -> None:
        self.before = {split: self.measure(mm, split) for split in SPLITS}

    def retention(self, now: Mapping[str, Any], split: str = "test") -> dict[str, float | None]:
        before = self.before.get(split) or {}
        out = {"knowledge_retention": _ratio(now.get("knowledge"), before.get("knowledge")),
               "knowledge_retention_cc": _ratio(_minus(now.get("knowledge"), self.chance),
                                                _minus(before.get("knowledge"), self.chance))}
        if "perplexity" in before:
            out["perplexity_retention"] = _ratio(before.get("perplexity"), now.get("perplexity"))
        return out

    def gate_check(self, now: Mapping[str, Any], budget: Mapping[str, Any]) -> tuple[bool, str]:
        """(ok, reason) of the validation probes against the budget: knowledge may drop by
        (1 − min_text_retention) × before, or by z standard errors when that is larger; perplexity
        retention must stay at or above min_text_retention."""
        before, floor = self.before["val"], float(budget["min_text_retention"])
        z = float(budget.get("significance_z", 2.0))
        limit = drop_limit(before["knowledge"], now["knowledge"], int(now["items"]), (1 - floor) * before["knowledge"], z)
        drop = before["knowledge"] - now["knowledge"]
        ok = drop <= limit
        reason = f"text knowledge {before['knowledge']:.3f}→{now['knowledge']:.3f} (may drop {limit:.3f})"
        if "perplexity" in before:
            kept = before["perplexity"] / now["perplexity"]
            ok = ok and kept >= floor
            reason += f", perplexity retention {kept:.3f} (min {floor})"
        return ok, reason


def _minus(a, b):
    return None if a is None or b is None else a - b


def _ratio(a, b):
    return None if a is None or not b else a / b
