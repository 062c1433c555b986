"""Text retention from the probes: ratios that read 1.0 as "nothing lost", chance correction, the gate's text check."""
from __future__ import annotations

import pytest
from graft.curricula.retention import TextProbes


def probes(before: dict) -> TextProbes:
    items = [{"kind": "text", "family": "add", "prompt": f"{i}+1?", "response": str(i + 1)} for i in range(4)]
    p = TextProbes("templates", {"val": items, "test": items})
    p.before = {"val": before, "test": before}
    return p


def test_retention_is_after_over_before_and_chance_corrected():
    p = probes({"knowledge": 0.6, "perplexity": 20.0})
    assert p.chance == 0.25  # four distinct answers in the family
    kept = p.retention({"knowledge": 0.45, "perplexity": 25.0})
    assert kept["knowledge_retention"] == pytest.approx(0.75)
    assert kept["knowledge_retention_cc"] == pytest.approx((0.45 - 0.25) / (0.6 - 0.25))
    assert kept["perplexity_retention"] == pytest.approx(0.8)  # before ÷ after: higher perplexity is a loss


def test_the_text_gate_tolerates_noise_and_catches_a_real_loss():
    p = probes({"knowledge": 0.6, "perplexity": 20.0, "items": 100})
    budget = {"min_text_retention": 0.9, "significance_z": 2.0}
    ok, why = p.gate_check({"knowledge": 0.52, "perplexity": 20.5, "items": 100}, budget)
    assert ok and "may drop 0.140" in why  # 0.08 is inside 2 * sqrt((.6*.4 + .52*.48) / 100) = 0.140
    ok, _ = p.gate_check({"knowledge": 0.35, "perplexity": 20.5, "items": 100}, budget)
    assert not ok
    ok, why = p.gate_check({"knowledge": 0.6, "perplexity": 30.0, "items": 100}, budget)
    assert not ok and "perplexity retention 0.667" in why
