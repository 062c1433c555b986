"""MM PT and MM IT steps: the right parameter groups train, loss falls, frozen parts stay bit-identical."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from graft.agent.mmllm import Example
from graft.agent.training import StageTrainer, trainable_report


def caption_batch(mm, n=4, seed=0):
    rng = np.random.default_rng(seed)
    colours = ["red", "green", "blue", "purple"]
    return [Example("<grid> describe the view", {"grid": mm.modalities["grid"].sample(rng)}, f"a {colours[i % 4]} ball")
            for i in range(n)]


def snapshot(mm):
    return {n: p.detach().clone() for n, p in mm.named_parameters()}


def changed(before, mm):
    return {n for n, p in mm.named_parameters() if not torch.equal(before[n], p)}


def test_pt_trains_only_the_projector_and_lowers_the_loss(tiny_mm):
    mm = tiny_mm(modalities=("grid",))
    batch = caption_batch(mm)
    trainer = StageTrainer(mm, "grid", "pt", lr=3e-3)
    assert {n.split(".")[0] for n, p in mm.named_parameters() if p.requires_grad} == {"projectors"}
    before = snapshot(mm)
    losses = [trainer.step(batch) for _ in range(8)]
    assert losses[-1] < losses[0] - 0.1
    assert changed(before, mm) and all(n.startswith("projectors.grid.") for n in changed(before, mm))


def test_it_trains_projector_and_own_lora_only(tiny_mm):
    mm = tiny_mm()
    batch = caption_batch(mm)
    before = snapshot(mm)
    trainer = StageTrainer(mm, "grid", "it", lr=3e-3)
    names = {n for n, p in mm.named_parameters() if p.requires_grad}
    assert names == {n for n in before if n.startswith("projectors.grid.") or ("lora_" in n and ".grid." in n)}
    losses = [trainer.step(batch) for _ in range(6)]
    assert losses[-1] < losses[0]
    moved = changed(before, mm)
    assert any("lora_B.grid" in n for n in moved) and any(n.startswith("projectors.grid.") for n in moved)
    frozen = [n for n in before if n not in names]
    assert not moved & set(frozen), f"frozen parameters moved: {sorted(moved & set(frozen))[:5]}"
    assert any(n.startswith("modalities.") for n in frozen) and any(".rgb." in n for n in frozen)


def test_task_adapter_has_no_pt_stage(tiny_mm):
    from graft.agent.build import graft_task

    mm = tiny_mm(modalities=("grid",))
    graft_task(mm, "text")
    with pytest.raises(ValueError, match="nothing to train"):
        StageTrainer(mm, "text", "pt")
    StageTrainer(mm, "text", "it").step([Example("say yes", {}, "yes")])


def test_trainable_report_counts_projector_and_lora(tiny_mm):
    mm = tiny_mm()
    report = trainable_report(mm)
    assert set(report) == {"grid", "rgb"}
    assert report["grid"]["projector"] == sum(p.numel() for p in mm.projectors["grid"].parameters())
    assert report["grid"]["lora"] > 0 and 0 < report["grid"]["share"] < 0.5
