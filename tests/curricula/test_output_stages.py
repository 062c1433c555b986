"""Output modalities as curriculum stages: `graft onboard curriculum=mujoco_outputs` on tiny budgets.

One module-scoped run (graft and ewc) is read by most tests; the resume test interrupts a second
run (graft only) right after an in-stage checkpoint of the action-chunk stage and resumes it in-process.
"""
from __future__ import annotations

import json

import pytest
import torch
from graft.curricula import engine
from graft.curricula.onboard import onboard
from graft.curricula.stages import OutputStage

TINY = [
    "curriculum=mujoco_outputs", "steps_scale=0.03", "curriculum.data.episodes=16", "curriculum.expert.train=4",
    "curriculum.expert.test=2", "curriculum.text.train=60", "curriculum.text.test=12", "curriculum.eval.max_examples=6",
    "curriculum.stages.2.rollout={episodes: 2, num_envs: 2, execute: 8}", "generators.image.image_size=16",
    "generators.image.sample_steps=2", "generators.action.sample_steps=2", "progress=false", "tensorboard=false",
    "checkpoint_every=2",
]
STAGES = ["proprio", "objects", "action_chunk", "rgb", "goal_image"]
TIMING = ("seconds", "seconds_by_part", "seconds_per_sample", "seconds_per_chunk",
          "reused_evaluations")  # how many cells a process did not re-measure: a resumed one starts counting afresh


def _untimed(x):
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in TIMING and k != "agent"}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The onboarding run, and what each output stage's training changed (spied on)."""
    from graft.curricula.config import compose_config

    out = tmp_path_factory.mktemp("outputs")
    seen, train = {}, engine.train

    def spy(run, stage, phase, steps, first_step=0):
        if not isinstance(stage, OutputStage):
            return train(run, stage, phase, steps, first_step)
        generator = run.generators[stage.name]
        mm_before = {n: p.detach().clone() for n, p in run.mm.named_parameters()}
        frozen = {n: p.detach().clone() for n, p in generator.named_parameters() if not n.startswith("unet.")}
        denoiser = {n: p.detach().clone() for n, p in generator.denoiser.named_parameters()}
        train(run, stage, phase, steps, first_step)
        seen[(run.name, stage.name)] = {
            "moved": {n for n, p in run.mm.named_parameters() if not torch.equal(mm_before[n], p)},
            "frozen_kept": all(torch.equal(frozen[n], p) for n, p in generator.named_parameters() if n in frozen),
            "denoiser_moved": any(not torch.equal(denoiser[n], p) for n, p in generator.denoiser.named_parameters()),
            "grad_after": [n for n, p in run.mm.named_parameters() if p.requires_grad]
            + [n for n, p in generator.named_parameters() if p.requires_grad],
        }

    engine.train = spy
    try:
        report = onboard(compose_config("onboard", [*TINY, "compare=[graft,ewc]", f"run_dir={out}"]))
    finally:
        engine.train = train
    return report, out, seen


def test_output_stages_fill_the_matrices_and_the_report(run):
    _, out, _ = run
    saved = json.loads((out / "report.json").read_text())
    for name in ("graft", "ewc"):
        r = saved["methods"][name]
        assert r["stages"] == STAGES and len(r["pre_scores"]) == 5 and len(r["baseline"]) == 5
        R = r["acc_matrix"]
        assert all(R[i][j] is not None and 0.0 <= R[i][j] <= 1.0 for i in range(5) for j in range(i + 1))
        assert all(R[i][j] > 0.0 for i in range(5) for j in (2, 4) if j <= i)  # an output's score is never 0
        assert R[2][2] == r["outputs"]["action_chunk"]["after"]["action_chunk"]["score"]  # the output's own row entry
        assert R[4][2] == r["outputs"]["action_chunk"]["final"]["score"]  # ... and after later stages: forgetting
        assert R[4][4] == r["outputs"]["goal_image"]["final"]["score"]
        success = [row[2] for row in r["success_matrix"]]  # action success after its stage and each later one
        assert success[:2] == [None, None] and None not in success[2:]
        assert success[-1]["rate"] == r["outputs"]["action_chunk"]["final"]["success_rate"]
        assert success[-1]["episodes"] == 2 and success[-1]["ci95"][0] <= success[-1]["rate"] <= success[-1]["ci95"][1]
        assert r["shuffled_matrix"][2][2] is not None  # the chunk scored with observations permuted
        goal, chunk = r["outputs"]["goal_image"], r["outputs"]["action_chunk"]
        for phase in ("untrained", "trained", "final"):
            assert {"score", "mse", "psnr", "seconds_per_sample"} <= set(goal[phase])
            assert {"score", "l2", "success_rate", "seconds_per_chunk"} <= set(chunk[phase])
        assert goal["untrained"]["score"] == r["pre_scores"][4] and chunk["untrained"]["score"] == r["pre_scores"][2]
        assert r["fwt"] is not None and r["forgetting"] is not None
    md = (out / "report.md").read_text()
    assert "**Output modalities**" in md and "| goal_image | PSNR (dB) |" in md and "| action_chunk | success rate |" in md


def test_an_output_stage_trains_only_its_head_its_adapter_and_its_denoiser(run):
    _, _, seen = run
    for stage in ("goal_image", "action_chunk"):
        s = seen[("graft", stage)]
        assert s["moved"] and all(n.startswith(f"outputs.{stage}.") or f".{stage}." in n for n in s["moved"])
        assert any("lora_" in n for n in s["moved"]) and s["denoiser_moved"], (stage, sorted(s["moved"])[:4])
        assert s["frozen_kept"] and not s["grad_after"]  # text encoder stays; everything frozen afterwards
    shared = seen[("ewc", "goal_image")]["moved"]  # a shared-adapter method trains the shared LoRA instead
    assert any(".shared." in n for n in shared) and not any(".rgb." in n for n in shared)


def test_the_saved_agent_carries_the_generators_and_reproduces_the_final_scores(run):
    from graft.agent.build import load_generators, load_mmllm
    from graft.curricula.config import compose_config
    from graft.curricula.stages import build_stages
    from graft.curricula.stages.output import evaluate_output
    from omegaconf import OmegaConf

    report, out, _ = run
    mm, generators = load_mmllm(out / "graft" / "agent"), load_generators(out / "graft" / "agent")
    assert set(generators) == {"goal_image", "action_chunk"} and set(mm.outputs) == {"goal_image", "action_chunk"}
    chunk = mm.norm_stats["action_chunk"]  # the action scaling travels with the head, equal to its generator's
    assert chunk["normalizer"]["low"] == pytest.approx(generators["action_chunk"].normalizer.low.tolist())
    assert chunk["action"]["space"]["type"] == "box" and "normalizer" not in mm.norm_stats["goal_image"]
    cfg = compose_config("onboard", [*TINY, f"run_dir={out}"])
    stages, _ = build_stages(cfg, OmegaConf.to_container(cfg.env, resolve=True), out)
    final = report["methods"]["graft"]["outputs"]
    for stage in [s for s in stages if isinstance(s, OutputStage)]:
        again = evaluate_output(mm, stage.name, generators[stage.name], stage.test, seed=0)
        assert again["score"] == pytest.approx(final[stage.name]["final"]["score"], rel=1e-5)


def test_resume_inside_an_output_stage_gives_the_same_numbers(run, tmp_path, monkeypatch):
    from graft.curricula.config import compose_config
    from graft.curricula.strategy import MethodRun

    _, out, _ = run
    save = MethodRun.save

    class Killed(Exception):
        pass

    def save_then_die(self, stage, phase, step):
        save(self, stage, phase, step)
        if (stage, phase, step) == (2, "it", 4):  # the action-chunk stage's second in-stage checkpoint
            raise Killed

    monkeypatch.setattr(MethodRun, "save", save_then_die)
    with pytest.raises(Killed):
        onboard(compose_config("onboard", [*TINY, "compare=[graft]", f"run_dir={tmp_path}"]))
    state = json.loads((tmp_path / "graft" / "checkpoint" / "state.json").read_text())
    assert (state["stage"], state["phase"], state["step"]) == (2, "it", 4)
    monkeypatch.setattr(MethodRun, "save", save)
    onboard(compose_config("onboard", [f"resume={tmp_path}", "progress=false"]))
    straight, resumed = (json.loads((d / "report.json").read_text())["methods"]["graft"] for d in (out, tmp_path))
    assert _untimed(resumed) == _untimed(straight)


def test_an_output_stage_must_read_inputs_grafted_before_it(run):
    from graft.curricula.config import compose_config
    from graft.curricula.stages import build_stages
    from omegaconf import OmegaConf

    _, out, _ = run
    cfg = compose_config("onboard", [*TINY, "curriculum.stages.2.inputs=[depth]"])
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    with pytest.raises(ValueError, match=r"reads inputs \['depth'\]; each must be grafted by an earlier stage"):
        build_stages(cfg, env_cfg, out)


def test_a_rolled_back_output_stage_gets_its_untrained_head_adapter_and_denoiser_back(tmp_path):
    from graft.curricula.config import compose_config

    two = ("curriculum.stages=[{name: rgb, modality: rgb}, {name: goal_image, output: goal_image, generator: image, "
           "inputs: [rgb], it_steps: 200, batch_size: 4}]")
    small = [o for o in TINY if not o.startswith("curriculum.stages.")]
    cfg = compose_config("onboard", [*small, two, "compare=[graft]", f"run_dir={tmp_path}",
                                     "methods.graft.gate.max_forgetting=-1.0", "methods.graft.gate.significance_z=0"])
    r = onboard(cfg)["methods"]["graft"]
    # the first stage is judged by the text probes only (promoted); the output stage by forgetting too
    assert [(g["stage"], g["decision"]) for g in r["gate"]] == [("rgb", "promoted"), ("goal_image", "rolled_back")]
    goal = r["outputs"]["goal_image"]
    assert goal["trained"]["score"] == goal["untrained"]["score"] == r["acc_matrix"][1][1] == r["pre_scores"][1]
