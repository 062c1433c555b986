"""Plugins edit batches and losses the way their methods say, and checkpoint their state."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graft.curricula.plugins import EWCPlugin, LwFPlugin, ReplayPlugin, TextMixPlugin
from graft.curricula.stages import Stage, to_example
from graft.memory.replay import ReplayMemory


def stage(modality="grid", **settings):
    base = {"pt_steps": 1, "it_steps": 1, "batch_size": 8, "lr": 1e-3, "replay_size": 16, "replay_ratio": 0.25,
            "text_mix": 0.5}
    rows = [{"prompt": "<grid> q", "response": f"a{i}", "modalities": ["grid"], "kind": "qa",
             "grid": np.zeros((7, 7, 3), np.uint8)} for i in range(10)]
    return Stage(1, modality or "text", modality, {**base, **settings}, it=rows)


def test_text_mix_replaces_its_share_in_instruction_batches_only():
    pool = [{"prompt": "say hi", "response": "hi", "modalities": [], "kind": "text"}]
    plugin, s, rng = TextMixPlugin(pool), stage(), np.random.default_rng(0)
    batch = s.it[:8]
    mixed = plugin.compose(None, s, "it", batch, rng)
    assert len(mixed) == 8 and sum(r["kind"] == "text" for r in mixed) == 4
    assert plugin.compose(None, s, "pt", batch, rng) == batch
    assert plugin.compose(None, stage(modality=None), "it", batch, rng) == batch  # the text stage itself


def test_replay_mixes_memory_after_a_stage_was_added(tmp_path):
    memory = ReplayMemory("reservoir", max_size=16, store_path=tmp_path / "m.sqlite", seed=0)
    plugin, s, rng = ReplayPlugin(memory), stage(), np.random.default_rng(0)
    fresh = [dict(r, response="new") for r in s.it[:8]]
    assert plugin.compose(None, s, "it", fresh, rng) == fresh  # empty memory: nothing to replay
    plugin.after_stage(None, s)
    assert len(memory) == 10
    mixed = plugin.compose(None, s, "it", fresh, rng)
    assert sum(r["response"] != "new" for r in mixed) == 2  # 25 % of 8
    memory.close()


def test_replay_and_text_mix_together_keep_both_shares(tmp_path):
    memory = ReplayMemory("reservoir", max_size=16, store_path=tmp_path / "m.sqlite", seed=0)
    pool = [{"prompt": "say hi", "response": "hi", "modalities": [], "kind": "text"}]
    replay, mix, s, rng = ReplayPlugin(memory), TextMixPlugin(pool), stage(text_mix=0.25), np.random.default_rng(0)
    replay.after_stage(None, s)
    fresh = [dict(r, response="new") for r in s.it[:8]]
    batch = mix.compose(None, s, "it", replay.compose(None, s, "it", fresh, rng), rng)
    kinds = ["text" if r["kind"] == "text" else "new" if r["response"] == "new" else "replay" for r in batch]
    assert (kinds.count("replay"), kinds.count("text"), kinds.count("new")) == (2, 2, 4)
    memory.close()


class _Run:
    def __init__(self, mm):
        self.mm, self.seed = mm, 0


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_when_weights_move(tiny_mm):
    mm = tiny_mm(modalities=("grid",))
    s = stage()
    plugin = EWCPlugin(strength=10.0, fisher_batches=2)
    plugin.after_stage(_Run(mm), s)
    assert plugin.fisher and all(torch.all(f >= 0) for f in plugin.fisher.values())
    assert plugin.penalty(_Run(mm), None, None).item() == pytest.approx(0.0)
    with torch.no_grad():
        for name, p in mm.named_parameters():
            if name in plugin.fisher:
                p.add_(0.1)
    assert plugin.penalty(_Run(mm), None, None).item() > 0
    restored = EWCPlugin(10.0)
    restored.load_tensors(plugin.tensors())
    assert restored.penalty(_Run(mm), None, None).item() == pytest.approx(plugin.penalty(_Run(mm), None, None).item())


def test_lwf_distillation_is_zero_for_an_unchanged_model_and_positive_after_a_change(tiny_mm):
    mm = tiny_mm(modalities=("grid",))
    with torch.no_grad():
        for n, p in mm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.2)
    plugin, s = LwFPlugin(alpha=1.0), stage()
    plugin.before_stage(_Run(mm), s)
    examples = [to_example(r) for r in s.it[:2]]
    assert plugin.penalty(_Run(mm), examples, mm(examples)).item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for n, p in mm.named_parameters():
            if "lora_B" in n:
                p.add_(0.3)
    assert plugin.penalty(_Run(mm), examples, mm(examples)).item() > 1e-4
