"""Per-name LoRA adapters on one frozen LLM, through peft's named adapters.

`AdapterBank` owns the (peft-wrapped) LLM; each adapter is named after its modality (or task).
`save` writes peft's own format (one folder per adapter, loadable with `PeftModel.from_pretrained`).

peft facts this relies on (seen in STACK-NOTES): at tuner level several adapters can be active at
once and their deltas add up; every `set_adapter` call makes all active adapters trainable again,
so the older ones are frozen again after each call.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel


@contextlib.contextmanager
def _peft_wrapping():
    """Wrap a model in a PeftModel without transformers' `is_gradient_checkpointing` FutureWarning.

    PeftModel.__init__ reads `getattr(model, "is_gradient_checkpointing", True)` (peft 0.21.2,
    peft_model.py:184, the newest release), a property transformers >= 5.x deprecates in favour of
    `is_activation_checkpointing`; every command that builds or loads an agent printed it. graft
    never touches the property itself, so only that one message is silenced, only while peft wraps.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield


def lora_config(cfg: Mapping[str, Any]) -> LoraConfig:
    target = cfg.get("target_modules", "all-linear")
    return LoraConfig(task_type="CAUSAL_LM", r=int(cfg.get("r", 8)), lora_alpha=int(cfg.get("alpha", 16)),
                      lora_dropout=float(cfg.get("dropout", 0.0)),
                      target_modules=target if isinstance(target, str) else list(target))


class AdapterBank:
    def __init__(self, llm: PreTrainedModel, lora: Mapping[str, Any]):
        self.base = llm
        self.model: PreTrainedModel | PeftModel = llm
        self.lora = dict(lora)
        self.names: list[str] = []
        self._active: tuple[str, ...] | None = None
        self._trainable: str | None = None

    def add(self, name: str) -> None:
        if name in self.names:
            raise ValueError(f"adapter '{name}' is already grafted (grafted: {self.names})")
        if not self.names:
            with _peft_wrapping():
                self.model = get_peft_model(self.base, lora_config(self.lora), adapter_name=name)
        else:
            self.model.add_adapter(name, lora_config(self.lora))
        self.names.append(name)
        self._active = None

    def load(self, name: str, path: str | Path) -> None:
        """Load an adapter saved in peft format (a folder with adapter_config.json)."""
        if not self.names:
            with _peft_wrapping():
                self.model = PeftModel.from_pretrained(self.base, str(path), adapter_name=name, is_trainable=True)
        else:
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=True)
        self.names.append(name)
        self._active = None

    def copy_weights(self, source: str, target: str) -> int:
        """Start adapter `target` from adapter `source`'s LoRA weights (same config); → tensors copied."""
        for name in (source, target):
            if name not in self.names:
                raise KeyError(f"no adapter '{name}' (grafted: {self.names})")
        params = dict(self.model.named_parameters())
        copied = 0
        with torch.no_grad():
            for name, p in params.items():
                if "lora_" in name and f".{source}." in name + ".":
                    params[(name + ".").replace(f".{source}.", f".{target}.")[:-1]].copy_(p)
                    copied += 1
        return copied

    def lora_parameters(self, name: str):
        return [p for n, p in self.model.named_parameters() if "lora_" in n and f".{name}." in n + "."]

    def route(self, names: Iterable[str], trainable: str | None = None) -> None:
        """Activate exactly `names` (order kept) and let only adapter `trainable` learn."""
        names = tuple(n for n in self.names if n in set(names))
        if trainable is not None and trainable not in names:
            raise ValueError(f"adapter '{trainable}' must be active to train (active: {list(names)})")
        if names == self._active and trainable == self._trainable:
            return
        if names:
            self.model.base_model.set_adapter(list(names))
        for n, p in self.model.named_parameters():
            if "lora_" in n:
                p.requires_grad_(trainable is not None and f".{trainable}." in n)
        self._active, self._trainable = names, trainable

    @property
    def active(self) -> tuple[str, ...]:
        return self._active or ()

    def context(self):
        """Context for a forward pass: with no adapter routed, peft's adapters are switched off."""
        if self.names and not self.active:
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def save(self, folder: str | Path) -> None:
        if self.names:
            self.model.save_pretrained(str(folder), selected_adapters=list(self.names))

    def merged(self, names: Iterable[str] | None = None) -> PreTrainedModel:
        """A deep copy with the given adapters (default: all) merged into the base weights."""
        names = list(names if names is not None else self.names)
        if not names:
            return copy.deepcopy(self.base)
        clone = copy.deepcopy(self.model)
        clone.base_model.set_adapter(names)
        return clone.merge_and_unload(adapter_names=names)
