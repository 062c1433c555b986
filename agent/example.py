"""`Example`: one prompt with its observations (and, for training, its response) — what the MM-LLM reads.

The prompt holds one `<name>` placeholder per observation. `checked` says the observations were
already validated at the boundary (a policy's entry, the policy server), so the MM-LLM encodes them
without checking them again. `routes` names modalities whose adapters the example is read with
besides its own observations' (gated routing): a replayed or text-mix row in a training batch is
read with the adapter being trained, so that adapter learns to leave it as it was. A leaf module,
so the MM-LLM's helpers can name the type.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Example:
    prompt: str
    obs: Mapping[str, np.ndarray] = field(default_factory=dict)
    response: str | None = None
    checked: bool = False
    routes: tuple[str, ...] = ()
