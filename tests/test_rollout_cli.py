"""`graft rollout` with expert, random and checkpoint policies writes its reports."""
from __future__ import annotations

import json
import math

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


def test_a_checkpoint_with_an_action_generator_executes_its_chunks(tmp_path, compose, chunk_agent):
    from graft.agent.build import save_mmllm

    mm, generator = chunk_agent(inputs=["proprio"], execute=4)  # recorded: inputs [proprio], execute 4
    folder = save_mmllm(mm, tmp_path / "agent", generators={"action_chunk": generator})
    run = tmp_path / "run"
    assert main(["rollout", "env=mujoco_reach", f"policy={folder}", "episodes=2", "num_envs=2", "env.max_steps=9",
                 f"run_dir={run}", "frames=0"]) == 0
    summary = json.loads((run / "rollout.json").read_text())
    assert summary["policy"] == "action_chunks" and summary["policy_stats"]["execute"] == 4
    steps = [r["length"] for r in summary["records"]]
    if steps == [9, 9]:  # no early success: each sub-env planned at steps 0, 4 and 8
        assert summary["env_steps"] == 18 and summary["policy_stats"]["planned_chunks"] == 2 * math.ceil(9 / 4)
    assert summary["policy_stats"]["planned_chunks"] < summary["env_steps"] / 2  # chunks executed, not re-planned
    assert "Action chunks:" in (run / "rollout.md").read_text()
    text = compose("rollout", [f"policy={folder}", "+output=none", "env=mujoco_reach", "episodes=1", "num_envs=1",
                               "env.max_steps=2", f"run_dir={tmp_path / 'text'}", "frames=0"])
    from graft.curricula.rollout import run_rollout

    assert run_rollout(text)["policy"] == "checkpoint"


def test_unknown_policy_is_a_clear_error(tmp_path, compose):
    from graft.curricula.rollout import run_rollout

    with pytest.raises(ValueError, match="'expert', 'random' or a graft checkpoint folder"):
        run_rollout(compose("rollout", ["policy=nowhere", f"run_dir={tmp_path}"]))
