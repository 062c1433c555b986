"""Training precision is measured on the host (agent/training.py): bf16 autocast only where it pays."""
from __future__ import annotations

import pytest
import torch
from graft.agent import training
from graft.agent.mmllm import Example
from graft.agent.training import autocast, training_precision


def test_a_given_precision_is_kept_and_an_unknown_one_refused():
    assert training_precision("float32", 576)["dtype"] == "float32"
    assert training_precision("bfloat16", 64)["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="auto, float32 or bfloat16"):
        training_precision("fp8", 576)


def test_auto_picks_bf16_only_when_it_is_clearly_faster(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CPU rule")
    speeds = {torch.float32: 100.0, torch.bfloat16: 200.0}
    monkeypatch.setattr(training, "matmul_speed", lambda width, dtype: speeds[dtype])
    fast = training_precision("auto", 576)
    assert fast["dtype"] == "bfloat16" and fast["gflops"] == {"float32": 100.0, "bfloat16": 200.0}
    speeds[torch.bfloat16] = 120.0  # 1.2x: inside what casts cost, not worth it
    assert training_precision("auto", 576)["dtype"] == "float32"
    speeds[torch.bfloat16] = 1000.0
    assert training_precision("auto", 64)["dtype"] == "float32"  # a tiny model's step is overhead-bound


def test_a_bf16_autocast_step_trains_the_fp32_parameters(tiny_mm, rng):
    mm = tiny_mm()
    params = mm.set_trainable("grid", "it")
    opt = torch.optim.AdamW(params, lr=3e-3)
    batch = [Example("Where is the key?\n<grid>", {"grid": mm.modalities["grid"].sample(rng)}, "ahead")]
    losses = []
    for _ in range(12):
        with autocast("bfloat16"):
            out = mm(batch, pack="auto", logits_at="labels")
        training.optimizer_step(opt, out.loss.float(), params)
        losses.append(out.loss.item())
    assert all(p.dtype == torch.float32 for p in params)  # weights and optimiser stay fp32
    assert losses[-1] < losses[0]
