"""`graft bench quick=true`: both files written, every figure present and finite (no timed assertions)."""
from __future__ import annotations

import json
import math

import pytest

HEADLINE = ["control_step_speedup_vs_generate", "control_step_hz", "control_step_generate_hz",
            "control_step_times_flop_floor", "control_step_speedup_vs_generate_bf16",
            "control_step_speedup_vs_generate_auto", "control_step_agreement", "control_step_agreement_auto",
            "train_speedup_vs_plain_loop", "train_speedup_vs_plain_loop_tiny_llama", "train_plain_loop_samples_per_s",
            "train_tokens_per_sample", "train_plain_loop_tokens_per_sample", "train_overhead_vs_plain_loop",
            "train_overhead_vs_plain_loop_packed", "train_samples_per_s", "rollout_speedup_8_envs", "replay_insert_us",
            "replay_sample256_ms", "replay_disk_bytes_per_sample", "replay_resident_mb", "server_round_trip_ms_p50",
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


@pytest.mark.slow  # ~70 s: every benchmark once (README's test command runs -m slow too)
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
    assert {"generate", "repeated", "tree", "tree+prefix", "graft", "graft_bf16", "graft_auto"} <= set(variants)
    control = b["control"]["tiny_llama"]
    assert control["same_action_as_repeated"] == 1.0  # the fast path picks the same actions
    assert control["auto"]["dtype"] in ("float32", "bfloat16")
    assert variants["graft_auto"]["dtype"] == control["auto"]["dtype"]
    assert all(0.0 <= control["agreement"][k] <= 1.0 for k in ("graft", "graft_auto"))
    assert control["reference"]["generate"] + control["reference"]["graft_fp32"] == control["observations"]
    assert control["cached_head_tokens"] > control["template_head_tokens"]  # the mission and question are cached too
    assert {"torch", "avx2", "avx512f", "avx512_bf16", "amx_bf16"} <= set(saved["cpu_capability"])
    assert set(b["rollouts"]["tiny_llama"]["num_envs"]) == {"1", "4", "8"}
    train = b["train"]["tiny_llama"]
    for side in ("graft", "graft_packed", "plain", "plain_today", "graft_onboard"):
        assert train[side]["samples_per_s"] > 0 and train[side]["tokens_per_s"] > 0, side
    # the baseline users write today reads all 49 grid cells, graft 16 pooled tokens
    assert train["grid_tokens"] == {"graft": 29, "plain_today": 49}  # grid_words: 5 objects x 5 words + 4 cells
    assert train["plain_today"]["tokens_per_sample"] > train["graft_onboard"]["tokens_per_sample"]
    assert train["prompts"]["graft"].endswith("<grid>") and train["prompts"]["plain_today"].startswith("<grid>\n")
    assert train["graft_onboard"]["precision"] == train["precision"]["dtype"]
    md = (tmp_path / "BENCHMARKS.md").read_text()
    for section in ("## Against what users write today", "## Control step", "## Training throughput",
                    "## Vectorised rollouts", "## Replay memory", "## Policy server round trip", saved["machine"]["versions"]["torch"]):
        assert section in md
    lines = summary_lines(report)
    assert any("control step" in line for line in lines) and str(tmp_path) in lines[-1]
    assert any("users write today" in line for line in lines)


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
