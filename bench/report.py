"""BENCHMARKS.md from a `graft bench` report: one table per benchmark, the machine and versions.

Every number comes from the report dict (bench.json); nothing here is measured or hard-coded.
"""
from __future__ import annotations

CONTROL_NOTES = {
    "generate": "baseline: peft model (adapters unmerged), HF `generate()` on the full prompt, greedy, string match",
    "repeated": "graft before: `score_repeated`, full prompt once per action name (B*K rows)",
    "tree": "action names as a token tree after the prompt, one forward, logits only where needed",
    "tree+prefix": "+ cached KV of the prompt's static text (template head, mission, question: all before the observation)",
    "graft": "+ adapters merged into a deployment copy (`Agent(deploy=True)`): graft's path",
    "graft_bf16": "graft's path on a bfloat16 copy (other precision; not the headline)",
}


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def machine_lines(r: dict) -> list[str]:
    m = r["machine"]
    v = ", ".join(f"{k} {val}" for k, val in m["versions"].items())
    return [(f"- Machine: {m['cpu']}, {m['cpus']} logical CPUs, {m['memory_gb']} GiB, GPU: {m['gpu'] or 'none'}; "
             f"torch threads: {m['torch_threads']}; fp32 matmul (1024², measured in this run): "
             f"{r['matmul_gflops_fp32']} GFLOP/s"),
            f"- Versions: Python {m['python']}, {v}", f"- Platform: {m['platform']}",
            (f"- Run: {r['started']}, {'quick mode' if r['quick'] else 'full run'}, {r['seconds']['total']} s "
             f"({', '.join(f'{k} {s} s' for k, s in r['seconds'].items() if k != 'total')})"), ""]


def control_lines(rows: dict) -> list[str]:
    out = ["## Control step (observation → action)", "",
           ("One BabyAI GoToLocal observation in, one of its action names out, batch 1, medians of interleaved "
            "rounds. Tokens: positions run through the transformer per step; FLOP floor: 2 × (body parameters × "
            "tokens + LM-head parameters × logit positions) ÷ the measured matmul rate of the row's precision."), ""]
    for bb, r in rows.items():
        out += [(f"### {bb}: {r['speedup_vs_generate']}× generate() "
                 f"({r['variants']['graft']['hz']} Hz vs {r['variants']['generate']['hz']} Hz)"), "",
                f"Modalities {', '.join(r['modalities'])}; prompt {r['prompt_tokens']} tokens, of which "
                f"{r['cached_head_tokens']} are the cached static text (template head {r.get('template_head_tokens', '?')}); "
                f"{len(r['actions'])} actions = "
                f"{r['tree_tokens']} token-tree nodes; generate() makes {r['generate_new_tokens']} new tokens "
                f"(the longest action name + end token); body {r['params_body'] / 1e6:.2f} M / LM head "
                f"{r['params_head'] / 1e6:.2f} M parameters. Same action as the slow path on "
                f"{r['same_action_as_repeated']:.0%} of the observations"
                + (f"; bf16 copy: {r['bf16_same_action']:.0%}." if r.get("bf16_same_action") is not None else "."), ""]
        rows_ = []
        prev = None
        for name, v in r["variants"].items():
            step = "" if prev is None or name in ("repeated", "graft_bf16") else \
                f"{r['variants'][prev]['ms'] / v['ms']:.2f}×"
            rows_.append([name, v["ms"], v["hz"], f"{v['speedup_vs_generate']}×", step, v["tokens"],
                          v["logit_positions"], v["floor_ms"], f"{v['times_floor']}×", CONTROL_NOTES.get(name, "")])
            if name not in ("generate", "graft_bf16"):
                prev = name
            if name == "generate":
                prev = None
        out += table(["path", "ms", "Hz", "vs generate", "vs previous row", "tokens", "logit positions",
                      "FLOP floor ms", "× floor", "what"], rows_)
        best = r["variants"]["generate"]["ms"] / r["variants"]["graft"]["floor_ms"]
        out += [(f"At this prompt length even a step running exactly at its FLOP floor would be "
                 f"{best:.2f}× faster than generate()."), ""]
    return out


def train_lines(rows: dict) -> list[str]:
    out = ["## Training throughput (an onboarding stage)", "",
           ("MM IT of the grid stage (projector + LoRA), same batches, AdamW, grad clip 1.0. graft: "
            "`MethodRun.train_phase` with replay (SQLite memory) and text mix, checkpoints amortised per step; "
            "graft_packed: the same with `MMLLM.pack=\"auto\"` (padding-free rows where that saves FLOPs) and "
            "`MMLLM.logits_at=\"labels\"` (LM head only where a label is predicted), same loss; plain: a hand-written peft + transformers loop over the "
            "records graft drew. vs plain = time per sample ÷ plain's − 1 (negative: faster than plain)."), ""]
    rows_ = []
    for bb, r in rows.items():
        for side in ("plain", "graft", "graft_packed"):
            v = r[side]
            rows_.append([bb, side, v["step_ms"], v["samples_per_s"], v["tokens_per_s"],
                          f"{v['vs_plain']:+.1%}" if side != "plain" else "baseline",
                          f"{r['checkpoint_ms_per_step']} ms ({r['checkpoint_s']} s every {r['checkpoint_every']})"
                          if side != "plain" else ""])
    out += table(["backbone", "loop", "ms/step", "samples/s", "tokens/s (non-pad)", "vs plain", "checkpoints/step"], rows_)
    for bb, r in rows.items():
        out.append(f"- {bb}: {r['tokens_per_step']} real tokens per step in {r['padded_positions_per_step']} padded "
                   f"positions ({1 - r['tokens_per_step'] / r['padded_positions_per_step']:.0%} padding).")
    return out + [""]


def rollout_lines(rows: dict) -> list[str]:
    out = ["## Vectorised rollouts", "", ("BabyAI GoToLocal, SyncVectorEnv, `Agent(deploy=True)` on the grid "
                                          "modality; one batched forward per vector step. Baseline: one env at a time."), ""]
    rows_ = [[bb, k, v["env_steps_per_s"], f"{v['speedup_vs_one_env']}×"]
             for bb, r in rows.items() for k, v in r["num_envs"].items()]
    return out + table(["backbone", "envs", "env-steps/s", "vs one env"], rows_)


def memory_lines(rows: dict) -> list[str]:
    out = ["## Replay memory", "", ("graft's `ReplayMemory` (reservoir, SQLite file, durable) against a reservoir "
                                    "over a Python list in memory (what a user writes; not durable). Records: grid "
                                    "7×7×3 + rgb 56×56×3 uint8 + strings (9.6 KB of arrays). Resident memory: MB over "
                                    "the imports in a fresh process, graft's buffer reopened from its file (rows stay "
                                    "on disk) vs the list holding every record."), ""]
    rows_ = []
    for n, m in rows.items():
        for key, label, unit in (("insert_us", "insert", "us/sample"), ("sample32_ms", "sample(32)", "ms"),
                                 ("sample256_ms", "sample(256)", "ms"), ("resident_mb", "resident", "MB")):
            v = m[key]
            rows_.append([n, label, f"{v['graft']:.3g} {unit}", f"{v['baseline']:.3g} {unit}", f"{v['ratio']:.3g}×"])
        rows_.append([n, "bytes/sample on disk", f"{m['disk_bytes_per_sample']:.0f}",
                      f"{m['array_bytes_per_sample']} (raw arrays)",
                      f"{m['disk_bytes_per_sample'] / m['array_bytes_per_sample']:.3g}×"])
    return out + table(["samples", "measure", "graft", "baseline", "ratio"], rows_)


def server_lines(r: dict) -> list[str]:
    out = ["## Policy server round trip", "",
           (f"`graft serve checkpoint={r['checkpoint']} env={r['env']}` on loopback, one client, {r['requests']} "
            "back-to-back requests. Baseline: the same agent called in-process (the server's model time for the same "
            "requests)."), ""]
    rows_ = [[k, r["round_trip_ms"][k], r["model_ms"][k], r["beyond_model_ms"][k]] for k in ("p50", "p90", "p99")]
    out += table(["percentile", "round trip ms", "in-process model ms", "beyond model ms"], rows_)
    return out + [f"Round trip / model (p50): {r['round_trip_over_model_p50']}×; sustained {r['sustained_hz']} Hz.", ""]


def optimisation_lines(b: dict) -> list[str]:
    """Each optimisation with its before/after ratio, from the rows measured in this run."""
    steps = [("control", "repeated", "tree",
              "action names scored in one forward as a token tree (was: prompt repeated per action)"),
             ("control", "tree", "tree+prefix", "cached KV of the static text before the observation"),
             ("control", "tree+prefix", "graft", "adapters merged into a deployment copy"),
             ("control", "generate", "graft", "all of it, against the generate() baseline"),
             ("control", "graft", "graft_bf16", "bfloat16 deployment copy (other precision, opt-in: Agent(dtype=...))"),
             ("train", "graft", "graft_packed",
              "padding-free packing (auto) + LM head only at labelled positions (MMLLM.pack / logits_at)")]
    rows = []
    for bench, before, after, what in steps:
        key = "step_ms" if bench == "train" else "ms"
        for bb, r in b.get(bench, {}).items():
            v = r["variants"] if bench == "control" else r
            if before in v and after in v:
                rows.append([what, bb, v[before][key], v[after][key], f"{v[before][key] / v[after][key]:.2f}×"])
    if not rows:
        return []
    return ["## Optimisations: before → after (ms per step, same run)", ""] + table(
        ["optimisation", "backbone", "before ms", "after ms", "speedup"], rows)


def gpu_lines(r: dict) -> list[str]:
    out = ["## GPU (bench/gpu.py)", ""]
    g = r.get("gpu")
    if not g:
        return out + [("Not measured in this run (no GPU result given; this machine's GPU: "
                       f"{r['machine']['gpu'] or 'none'}). On an NVIDIA GPU, `python -m bench.gpu --out gpu.json` "
                       "measures the control step and the training step at a ~0.5 B-parameter random Qwen2 config in "
                       "bf16 (under 5 minutes); `graft bench gpu_json=gpu.json` puts its numbers here."), ""]
    c, t = g["control"], g["train"]
    out += [f"Card: {g['device']}; {g['params'] / 1e6:.0f} M parameters, {g['dtype']}, torch {g['torch']}.", ""]
    return out + table(["figure", "baseline", "graft", "ratio"], [
        ["control step ms", c["generate_ms"], c["graft_ms"], f"{c['speedup_vs_generate']}× generate()"],
        ["training step ms (batch 8)", t["plain_step_ms"], t["graft_step_ms"], f"{t['overhead']:+.1%} vs plain"]])


def markdown(r: dict) -> str:
    out = ["# graft benchmarks", "",
           ("Written by `graft bench` (curricula/bench.py, modules in bench/); the same numbers are in bench.json. "
            "Every figure is a ratio against a baseline measured in the same run on the same machine, absolute "
            "numbers beside it. One torch thread. Timings on a shared CPU are noisy."), ""]
    out += machine_lines(r)
    keys = [k for k in r if k.startswith(("control_", "train_", "rollout_", "replay_", "server_"))]
    out += ["## Headline", ""] + table(["key", "value"], [[k, r[k]] for k in keys])
    b = r["benchmarks"]
    out += optimisation_lines(b)
    sections = (("control", control_lines), ("train", train_lines), ("rollouts", rollout_lines),
                ("memory", memory_lines), ("server", server_lines))
    for name, fn in sections:
        if name in b:
            out += fn(b[name])
    out += gpu_lines(r)
    return "\n".join(out).rstrip() + "\n"
