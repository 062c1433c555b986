"""The hallucination row of a real tiny agent, and the negative-probe instructions of the mitigation."""
from __future__ import annotations

from collections import Counter

import pytest


@pytest.fixture(scope="module")
def views(babyai_views):
    """Real BabyAI views as stage question records of the grid."""
    return [{"grid": v["grid"], "rgb": v["rgb"], "kind": "qa", "modalities": ["grid"], "response": "ball",
             "prompt": "Which object is closest to you?\n<grid>", "episode_seed": v["seed"], "step": v["step"]}
            for v in babyai_views]


def test_negative_probes_are_a_balanced_share_of_the_pool(views):
    from graft.curricula.hallucination import negative_probe_records

    added = negative_probe_records(views, "rgb", share=0.2, seed=0)
    assert len(added) == pytest.approx(0.2 / 0.8 * len(views), abs=2)
    assert Counter(r["response"] for r in added) == {"yes": len(added) // 2, "no": len(added) // 2}
    assert {r["probe"] for r in added} == {"existence", "attribute", "relation"}
    for r in added:
        assert r["kind"] == "qa" and r["modalities"] == ["rgb"] and r["prompt"].endswith("?\n<rgb>")
        assert r["rgb"].shape == (56, 56, 3) and r["grid"].shape == (7, 7, 3)
    assert [r["prompt"] for r in negative_probe_records(views, "rgb", 0.2, 0)] == [r["prompt"] for r in added]
    with pytest.raises(ValueError, match=r"share of the MM IT pool in \(0, 1\)"):
        negative_probe_records(views, "rgb", share=1.0, seed=0)


def test_a_tiny_agent_gets_a_row_with_its_controls(views, tiny_mm):
    from graft.curricula.hallucination import hallucination

    row = hallucination(tiny_mm(), "grid", views[60:], views[:60], seed=0, max_scenes=8, caption_tokens=8)
    assert row["scenes"] == 8 and row["pope"]["probes"] >= 16 and len(row["examples"]) == 3
    assert row["pope"]["yes_ratio"] == row["yes_ratio"] and 0 <= row["pope_f1"] <= 1
    assert row["controls"]["pope_f1_always_yes"] == pytest.approx(2 / 3, abs=1e-3)  # balanced probes
    assert set(row["chair"]) == {"chair_i", "chair_s", "mentions", "descriptions", "described_nothing"}
    assert row["chair"]["descriptions"] == 8


def test_the_mitigation_mixes_negative_probes_into_each_input_stage(tmp_path, compose, small_overrides):
    from graft.curricula.stages import build_stages
    from omegaconf import OmegaConf

    cfg = compose("onboard", [*small_overrides, "curriculum.negative_probes=0.2", f"run_dir={tmp_path}"])
    stages, _ = build_stages(cfg, OmegaConf.to_container(cfg.env, resolve=True), tmp_path)
    for stage in stages:
        probes = [r for r in stage.it if "probe" in r]
        if stage.modality is None:  # the text stage: no views, no probes
            assert not probes
            continue
        assert len(probes) / len(stage.it) == pytest.approx(0.2, abs=0.01), stage.name
        assert all(r["modalities"] == [stage.modality] for r in probes)
        test_seeds = {r["episode_seed"] for r in stage.test}
        assert not test_seeds & {r["episode_seed"] for r in probes}  # probes of training views only
