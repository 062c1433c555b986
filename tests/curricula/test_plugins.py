"""Plugins edit batches and losses the way their methods say, and checkpoint their state."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from graft.curricula.plugins import EWCPlugin, LwFPlugin, ReplayPlugin, TextMixPlugin
from graft.curricula.stages import Batch, InputStage, OutputStage, StepLoss, TextStage, to_example
from graft.memory.replay import ReplayMemory

TEXT = [{"prompt": "say hi", "response": "hi", "modalities": [], "kind": "text"}]


def stage(modality="grid", **settings):
    base = {"pt_steps": 1, "it_steps": 1, "batch_size": 8, "lr": 1e-3, "replay_size": 16, "replay_ratio": 0.25,
            "text_mix": 0.5}
    rows = [{"prompt": "<grid> q", "response": f"a{i}", "modalities": ["grid"], "kind": "qa",
             "grid": np.zeros((7, 7, 3), np.uint8)} for i in range(10)]
    s = (InputStage(1, {"name": modality, "modality": modality}, {**base, **settings}) if modality else
         TextStage(1, {"name": "text"}, {**base, **settings}))
    s.it = rows
    return s


def fresh_batch(s, replace=True):
    return Batch([dict(r, response="new") for r in s.it[:8]], replace=replace)


def test_text_mix_replaces_its_share_in_instruction_batches_only():
    plugin, s, rng = TextMixPlugin(TEXT), stage(), np.random.default_rng(0)
    batch = fresh_batch(s)
    plugin.compose(None, s, "it", batch, rng)
    assert len(batch.rows) == 8 and sum(r["kind"] == "text" for r in batch.rows) == 4
    assert [r["kind"] for r in batch.rows[-4:]] == ["text"] * 4  # the tail
    for phase, other in (("pt", s), ("it", stage(modality=None))):  # PT, and the text stage itself
        untouched = fresh_batch(s)
        plugin.compose(None, other, phase, untouched, rng)
        assert untouched.rows == fresh_batch(s).rows and not untouched.mixed


def test_replay_mixes_memory_after_a_stage_was_added(tmp_path):
    memory = ReplayMemory("reservoir", max_size=16, store_path=tmp_path / "m.sqlite", seed=0)
    plugin, s, rng = ReplayPlugin(memory), stage(), np.random.default_rng(0)
    batch = fresh_batch(s)
    plugin.compose(None, s, "it", batch, rng)
    assert batch.rows == fresh_batch(s).rows  # empty memory: nothing to replay
    plugin.after_stage(None, s)
    assert len(memory) == 10
    plugin.compose(None, s, "it", batch, rng)
    assert [r["response"] != "new" for r in batch.rows] == [True] * 2 + [False] * 6  # 25 % of 8, at the head
    memory.close()


def test_replay_and_text_mix_together_keep_both_shares(tmp_path):
    memory = ReplayMemory("reservoir", max_size=16, store_path=tmp_path / "m.sqlite", seed=0)
    replay, mix, s, rng = ReplayPlugin(memory), TextMixPlugin(TEXT), stage(text_mix=0.25), np.random.default_rng(0)
    replay.after_stage(None, s)
    batch = fresh_batch(s)
    replay.compose(None, s, "it", batch, rng)
    mix.compose(None, s, "it", batch, rng)
    kinds = ["text" if r["kind"] == "text" else "new" if r["response"] == "new" else "replay" for r in batch.rows]
    assert (kinds.count("replay"), kinds.count("text"), kinds.count("new")) == (2, 2, 4)
    memory.close()


def test_an_output_stage_keeps_its_rows_and_gets_the_mixed_ones_as_an_extra_text_loss(tmp_path):
    memory = ReplayMemory("reservoir", max_size=16, store_path=tmp_path / "m.sqlite", seed=0)
    replay, mix = ReplayPlugin(memory), TextMixPlugin(TEXT)
    replay.after_stage(None, stage())
    out = OutputStage(2, {"name": "goal_image", "output": "goal_image", "inputs": ["grid"]},
                      {"pt_steps": 0, "it_steps": 1, "batch_size": 8, "lr": 1e-3, "replay_size": 16,
                       "replay_ratio": 0.25, "text_mix": 0.25})
    own = [{"prompt": "<grid> imagine", "obs": {}, "target": np.zeros(2)} for _ in range(8)]
    batch, rng = Batch(list(own), replace=False), np.random.default_rng(0)
    replay.compose(None, out, "it", batch, rng)
    mix.compose(None, out, "it", batch, rng)
    assert batch.rows == own
    assert [r["kind"] for r in batch.mixed] == ["qa", "qa", "text", "text"]  # replay first, then text mix
    replay.after_stage(None, out)  # output records hold targets, not answers: nothing to replay
    assert memory.adds == ["grid"]
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
    assert plugin.penalty(_Run(mm), s, StepLoss({}, examples, mm(examples))).item() == pytest.approx(0.0, abs=1e-6)
    assert plugin.penalty(_Run(mm), s, StepLoss({})) is None  # a step without a text loss: nothing to distil
    with torch.no_grad():
        for n, p in mm.named_parameters():
            if "lora_B" in n:
                p.add_(0.3)
    assert plugin.penalty(_Run(mm), s, StepLoss({}, examples, mm(examples))).item() > 1e-4


def test_mixed_rows_are_read_with_the_trained_adapter_and_own_rows_as_they_are():
    from graft.curricula.stages.base import Batch, to_example

    own = [{"prompt": "<rgb> what?", "modalities": ["rgb"], "rgb": 0, "response": "a"} for _ in range(4)]
    batch = Batch(list(own), replace=True)
    batch.mix([{"prompt": "<grid> what?", "modalities": ["grid"], "grid": 0, "response": "b"}], at="head")
    batch.mix([{"prompt": "hi", "modalities": [], "response": "c"}], at="tail")
    routes = [to_example(r, "rgb").routes for r in batch.rows]
    assert routes == [("rgb",), (), (), ("rgb",)] and "mixed" not in own[0]
    assert to_example(batch.rows[0]).routes == ()  # a text stage trains no modality adapter
