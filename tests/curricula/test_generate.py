"""`graft generate`: the preset over `graft onboard` for output modalities, and the output metrics."""
from __future__ import annotations

import json

import numpy as np
from graft.curricula.stages.output import chunk_l2, goal_grid, image_errors

TINY = ["backbone=tiny_llama", "steps_scale=0.02", "curriculum.data.episodes=64", "curriculum.expert.train=4", "curriculum.expert.test=3",
        "curriculum.text.train=60", "curriculum.text.test=12", "curriculum.eval.max_examples=3",
        "generators.image.image_size=16", "generators.image.sample_steps=2", "tensorboard=false"]


def test_generate_runs_each_curriculum_and_reports_untrained_and_trained_outputs(compose, tmp_path):
    from graft.curricula.generate import generate, summary_lines
    from PIL import Image

    overrides = "[" + ",".join(f"'{o}'" for o in TINY) + "]"
    report = generate(compose("generate", ["curricula=[babyai_goal_image]", f"overrides={overrides}",
                                           f"run_dir={tmp_path}", "progress=false"]))
    saved = json.loads((tmp_path / "report.json").read_text())
    goal = saved["curricula"]["babyai_goal_image"]["outputs"]["goal_image"]
    for phase in ("untrained", "trained", "final"):
        assert {"score", "mse", "psnr", "reference_error"} <= set(goal[phase])
        assert 0.0 < goal[phase]["score"] < 1.0
    assert saved["curricula"]["babyai_goal_image"]["env"] == "BabyAI-GoToLocal-v0"
    png = Image.open(tmp_path / "babyai_goal_image" / "graft" / "goal_image.png")
    assert png.size == (3 * 64 + 2 * 2, 4 * 64 + 3 * 2)  # 3 test episodes across; first, real, untrained, trained
    md = (tmp_path / "report.md").read_text()
    assert "| goal-image PSNR (dB) |" in md and "goal_image.png" in md
    assert (tmp_path / "babyai_goal_image" / "report.md").exists()  # the onboard run's own report
    assert summary_lines(report)[0].startswith("babyai_goal_image/goal_image: mse ")


def test_image_and_action_errors_on_hand_made_values():
    black, white = np.zeros((1, 8, 8, 3), np.uint8), np.full((1, 8, 8, 3), 255, np.uint8)
    mse, truth = image_errors(black, white, 4)
    assert truth.shape == (1, 4, 4, 3) and mse.tolist() == [1.0]
    a = np.zeros((2, 3, 2))
    b = np.concatenate([np.zeros((1, 3, 2)), np.tile([[3.0, 4.0]], (1, 3, 1))])
    assert chunk_l2(a, b).tolist() == [0.0, 5.0]


def test_the_goal_grid_puts_each_kind_in_its_own_row():
    images = {k: np.full((2, 4, 4, 3), v, np.uint8) for k, v in
              (("first", 10), ("real", 20), ("untrained", 30), ("trained", 40))}
    grid = goal_grid(images, columns=2, size=8, gap=1)
    assert grid.shape == (4 * 8 + 3, 2 * 8 + 1, 3)
    assert [int(grid[r * 9, 0, 0]) for r in range(4)] == [10, 20, 30, 40]


def test_cli_lists_generate_and_prints_its_config(capsys):
    from graft.curricula.cli import main

    assert main(["--help"]) == 0
    assert "generate" in capsys.readouterr().out
    assert main(["generate", "curricula=[mujoco_outputs]", "--cfg"]) == 0
    out = capsys.readouterr().out
    assert "mujoco_outputs" in out and "method: graft" in out
