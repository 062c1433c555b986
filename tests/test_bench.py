"""`graft bench quick=true`: both files written, every figure present and finite (no timed assertions)."""
from __future__ import annotations

import json
import math

HEADLINE = ["control_step_speedup_vs_generate", "control_step_hz", "control_step_generate_hz",
            "control_step_times_flop_floor", "control_step_speedup_vs_generate_bf16", "train_overhead_vs_plain_loop",
            "train_samples_per_s", "rollout_speedup_8_envs", "replay_insert_us", "replay_sample256_ms",
            "replay_disk_bytes_per_sample", "replay_resident_mb", "server_round_trip_ms_p50",
            "server_round_trip_over_model"]


def finite_numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from finite_numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from finite_numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_quick_bench_writes_both_files_with_every_figure(compose, tmp_path):
    from graft.curricula.bench import run_bench, summary_lines

    cfg = compose("bench", ["quick=true", f"out_dir={tmp_path}", "progress=false"])
    report = run_bench(cfg)
    saved = json.loads((tmp_path / "bench.json").read_text())
    for key in HEADLINE:
        assert key in saved, key
        assert math.isfinite(saved[key]) and saved[key] > -1, (key, saved[key])
    assert all(math.isfinite(v) for v in finite_numbers(saved))
    b = saved["benchmarks"]
    assert set(b) == {"control", "train", "rollouts", "memory", "server"}
    variants = b["control"]["tiny_llama"]["variants"]
    assert {"generate", "repeated", "tree", "tree+prefix", "graft", "graft_bf16"} <= set(variants)
    assert b["control"]["tiny_llama"]["same_action_as_repeated"] == 1.0  # the fast path picks the same actions
    assert set(b["rollouts"]["tiny_llama"]["num_envs"]) == {"1", "4", "8"}
    for side in ("graft", "plain"):
        assert b["train"]["tiny_llama"][side]["samples_per_s"] > 0 and b["train"]["tiny_llama"][side]["tokens_per_s"] > 0
    md = (tmp_path / "BENCHMARKS.md").read_text()
    for section in ("## Control step", "## Training throughput", "## Vectorised rollouts", "## Replay memory",
                    "## Policy server round trip", saved["machine"]["versions"]["torch"]):
        assert section in md
    lines = summary_lines(report)
    assert any("control step" in line for line in lines) and str(tmp_path) in lines[-1]


def test_only_selects_benchmarks_and_rejects_unknown_names(compose, tmp_path):
    import pytest
    from graft.curricula.bench import run_bench

    with pytest.raises(ValueError, match="unknown benchmarks"):
        run_bench(compose("bench", ["quick=true", f"out_dir={tmp_path}", "progress=false", "only=[warp]"]))


def test_gpu_script_smoke_mode_runs_on_cpu():
    from graft.curricula.bench import bench_module

    out = bench_module("gpu").run(smoke=True, rounds=1)
    assert out["device"] == "cpu (smoke)"
    for figure in (out["control"]["speedup_vs_generate"], out["train"]["overhead"]):
        assert math.isfinite(figure)
