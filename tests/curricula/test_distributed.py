"""`graft onboard` data-parallel over 2 CPU processes (gloo, launched by torchrun; accelerate's
PartialState picks the group up): ranks stay in lock-step."""
from __future__ import annotations

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file


def test_two_ranks_end_a_stage_with_identical_adapter_weights(tmp_path, small_overrides):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "-m", "graft.curricula.cli", "onboard", *small_overrides, "compare=[graft]", "steps_scale=0.1",
           f"run_dir={tmp_path}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [load_file(tmp_path / f"rank{r}" / "graft" / "checkpoint" / "tensors.safetensors") for r in (0, 1)]
    params = [k for k in ranks[0] if k.startswith("param/")]
    assert any("lora_B.rgb" in k for k in params)
    moved = [k for k in params if "lora_B" in k and torch.count_nonzero(ranks[0][k]) > 0]
    assert moved, "training did not change the adapters"
    for k in params:
        assert torch.equal(ranks[0][k], ranks[1][k]), f"ranks disagree on {k}"
    assert (tmp_path / "rank0" / "report.json").exists() and not (tmp_path / "rank1" / "report.json").exists()
