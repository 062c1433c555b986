"""`graft generate` end to end on tiny settings, and the output-stage functions a curriculum calls."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from graft.curricula.output_stage import (
    chunk_l2,
    evaluate_output,
    goal_records,
    image_errors,
    train_output_stage,
)

TINY = ["progress=false", "png_columns=3", "generators.goal_image.image_size=16", "generators.goal_image.sample_steps=2",
        "generators.action_chunk.sample_steps=2",
        "tasks.babyai_goal.episodes={train: 4, test: 3}", "tasks.babyai_goal.steps=2", "tasks.babyai_goal.batch_size=2",
        "tasks.reach_action.episodes={train: 2, test: 1}", "tasks.reach_action.steps=2", "tasks.reach_action.batch_size=4",
        "tasks.reach_action.rollout.episodes=2", "tasks.reach_action.rollout.num_envs=2"]


def test_generate_writes_the_report_the_png_and_checkpoints_that_reproduce_it(compose, tmp_path):
    from graft.agent.build import load_mmllm
    from graft.agent.generators import load_generator
    from graft.curricula.generate import generate
    from graft.curricula.output_stage import chunk_records
    from graft.envs.trajectories import expert_splits
    from PIL import Image

    report = generate(compose("generate", ["run=[babyai_goal,reach_action]", f"run_dir={tmp_path}", *TINY]))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert set(saved["tasks"]) == {"babyai_goal", "reach_action"} and "partial" not in saved
    goal, act = saved["tasks"]["babyai_goal"], saved["tasks"]["reach_action"]
    for key in ("mse", "psnr", "score", "seconds_per_sample"):
        assert goal["untrained"][key] is not None and goal["trained"][key] is not None
    assert set(goal["references"]) == {"mean_training_goal", "first_view"}
    assert 0.0 <= act["trained"]["success_rate"] <= 1.0 and act["references"]["expert"]["success_rate"] == 1.0
    assert 0.0 < act["trained"]["score"] <= 1.0 and act["trained"]["rollout"]["seconds_per_chunk"] > 0
    assert set(act["loss"]) == {"diffusion", "readout", "total"} and set(goal["loss"]) == {"diffusion", "align", "total"}
    png = Image.open(tmp_path / goal["png"])
    assert png.size == (3 * 64 + 2 * 2, 4 * 64 + 3 * 2)  # 3 episodes across; first, real, untrained, trained
    md = (tmp_path / "report.md").read_text()
    assert "| goal-image MSE |" in md and "| success rate |" in md and "ms per generated sample" in md
    assert report["run_dir"] == str(tmp_path)
    # the saved MM-LLM + generator reproduce the reported action L2 exactly (same data seeds, same sampling seed)
    mm, gen = load_mmllm(tmp_path / "reach_action" / "mmllm"), load_generator(tmp_path / "reach_action" / "generator")
    test = expert_splits("mujoco_reach", {"train": 2, "test": 1}, seed=0)["test"]
    again = evaluate_output(mm, "action_chunk", gen, chunk_records(test, ["rgb", "proprio"], gen.horizon), seed=0)
    assert again["l2"] == pytest.approx(act["trained"]["l2"], rel=1e-5)


def test_an_output_stage_trains_only_its_own_parts_and_scores_in_unit_range(tiny_mm, compose):
    from graft.agent.build import graft_output
    from graft.agent.generators import build_generator
    from graft.agent.mmllm import Example
    from graft.envs.trajectories import expert_splits

    mm = tiny_mm(modalities=("grid", "rgb"))
    cfg = compose("generate", ["generators.goal_image.image_size=16", "generators.goal_image.sample_steps=2"])
    gen = build_generator(cfg.generators.goal_image)
    graft_output(mm, "goal_image", cfg.generators.goal_image.output, gen.cond_tokens, gen.cond_dim)
    records = goal_records(expert_splits("babyai_goto", {"train": 4}, seed=0)["train"], ["rgb", "grid"])
    before = {n: p.detach().clone() for n, p in mm.named_parameters()}
    encoder = {n: p.detach().clone() for n, p in gen.text_encoder.named_parameters()}
    replay = [Example("<grid>\nWhat is ahead?", {"grid": mm.modalities["grid"].sample(np.random.default_rng(1))}, "a wall")]
    result = train_output_stage(mm, "goal_image", gen, records, steps=3, batch_size=2, mix=lambda rng: replay)
    assert len(result["losses"]["total"]) == 3 and set(result["losses"]) == {"align", "diffusion", "text", "total"}
    moved = {n for n, p in mm.named_parameters() if not torch.equal(before[n], p)}
    assert moved and all(n.startswith("outputs.goal_image.") or ".goal_image." in n for n in moved)
    assert any("lora_" in n for n in moved)
    assert all(torch.equal(encoder[n], p) for n, p in gen.text_encoder.named_parameters())
    assert not any(p.requires_grad for p in mm.parameters()) and not gen.trainable_parameters()  # frozen afterwards
    scored = evaluate_output(mm, "goal_image", gen, records[:2])
    assert 0.0 < scored["score"] < 1.0 and scored["generated"].shape == (2, 16, 16, 3)


def test_image_and_action_errors_on_hand_made_values():
    black, white = np.zeros((1, 8, 8, 3), np.uint8), np.full((1, 8, 8, 3), 255, np.uint8)
    mse, truth = image_errors(black, white, 4)
    assert truth.shape == (1, 4, 4, 3) and mse.tolist() == [1.0]
    a = np.zeros((2, 3, 2))
    b = np.concatenate([np.zeros((1, 3, 2)), np.tile([[3.0, 4.0]], (1, 3, 1))])
    assert chunk_l2(a, b).tolist() == [0.0, 5.0]


def test_cli_lists_generate_and_prints_its_config(capsys):
    from graft.curricula.cli import main

    assert main(["--help"]) == 0
    assert "generate" in capsys.readouterr().out
    assert main(["generate", "run=[reach_action]", "--cfg"]) == 0
    out = capsys.readouterr().out
    assert "ConditionalUnet1D" not in out and "ActionGenerator.build" in out and "TransformerOutputProjector" in out
