"""`graft rollout` with expert, random and checkpoint policies writes its reports."""
from __future__ import annotations

import json

import pytest
from graft.curricula.cli import main


def test_expert_rollout_on_babyai_succeeds_and_writes_reports(tmp_path, capsys):
    assert main(["rollout", "episodes=6", "num_envs=2", f"run_dir={tmp_path}"]) == 0
    summary = json.loads((tmp_path / "rollout.json").read_text())
    assert summary["episodes"] == 6 and summary["success_rate"] >= 0.8
    assert "| 6 | 2 |" in (tmp_path / "rollout.md").read_text()
    assert (tmp_path / "episode0.png").exists()


def test_checkpoint_policy_runs_batched_over_vector_envs(tmp_path, compose):
    from graft.agent.build import build_mmllm, save_mmllm
    from graft.curricula.rollout import run_rollout

    save_mmllm(build_mmllm(compose("chat", ["+modality@modalities.rgb=rgb"])), tmp_path / "ckpt")
    cfg = compose("rollout", [f"policy={tmp_path / 'ckpt'}", "episodes=2", "num_envs=2", "env.max_steps=5",
                              f"run_dir={tmp_path / 'run'}", "frames=0"])
    summary = run_rollout(cfg)
    assert summary["policy"] == "checkpoint" and summary["episodes"] == 2
    assert all(r["length"] <= 5 for r in summary["records"])


def test_unknown_policy_is_a_clear_error(tmp_path, compose):
    from graft.curricula.rollout import run_rollout

    with pytest.raises(ValueError, match="'expert', 'random' or a graft checkpoint folder"):
        run_rollout(compose("rollout", ["policy=nowhere", f"run_dir={tmp_path}"]))
