"""Continual-learning metrics on hand-made accuracy matrices with known answers; Wilson intervals."""
from __future__ import annotations

import pytest
from graft.curricula.metrics import (
    average_accuracy,
    backward_transfer,
    drop_limit,
    forgetting,
    forward_transfer,
    success_cell,
    summarize,
    wilson,
)

# Three stages. Row i: scores on stages 0..2 after training stage i.
R = [
    [0.9, 0.2, 0.1],
    [0.6, 0.8, 0.3],
    [0.5, 0.7, 0.9],
]
BASE = [0.1, 0.1, 0.1]


def test_average_accuracy_is_the_mean_of_the_last_row():
    assert average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)


def test_backward_transfer_compares_final_with_just_trained():
    assert backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)


def test_forward_transfer_compares_before_training_with_baseline():
    assert forward_transfer(R, BASE) == pytest.approx(((0.2 - 0.1) + (0.3 - 0.1)) / 2)


def test_forgetting_uses_the_best_earlier_score():
    # stage 0: best 0.9 -> 0.5 (0.4); stage 1: best 0.8 -> 0.7 (0.1)
    assert forgetting(R) == pytest.approx((0.4 + 0.1) / 2)


def test_forgetting_is_negative_when_later_stages_help_earlier_ones():
    up = [[0.5, 0.0], [0.7, 0.6]]
    assert forgetting(up) == pytest.approx(-0.2) and backward_transfer(up) == pytest.approx(0.2)


def test_single_stage_has_no_transfer():
    one = [[0.7]]
    assert (average_accuracy(one), backward_transfer(one), forward_transfer(one, [0.1]), forgetting(one)) == (
        0.7, 0.0, 0.0, 0.0)


def test_bad_shapes_and_baselines_are_rejected():
    with pytest.raises(ValueError, match="square"):
        average_accuracy([[0.1, 0.2]])
    with pytest.raises(ValueError, match="one score per stage"):
        forward_transfer(R, [0.1])
    with pytest.raises(ValueError, match="square"):
        forgetting([[0.1], [0.2]])


def test_missing_cells_are_left_out_not_read_as_zero():
    # an output stage (column 1) cannot be scored before its head exists
    R = [[0.9, None, 0.1], [0.6, 0.8, 0.3], [0.5, 0.7, 0.9]]
    assert forward_transfer(R, [0.1, None, 0.1]) == pytest.approx(0.3 - 0.1)
    assert forgetting(R) == pytest.approx((0.4 + 0.1) / 2)


def test_wilson_interval_matches_hand_computed_values():
    # 5 of 10 at 95%: centre 0.5, half-width 1.96*sqrt(.025+.0096)/1.384 (Wilson 1927)
    lo, hi = wilson(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 100) == pytest.approx((0.0, 0.0370), abs=1e-4)  # never 0-width at 0 successes
    assert wilson(100, 100) == pytest.approx((0.9630, 1.0), abs=1e-4)
    cell = success_cell(31, 100)
    assert cell["rate"] == 0.31 and cell["episodes"] == 100
    assert cell["ci95"] == pytest.approx([0.2278, 0.4063], abs=1e-4)  # scipy binomtest(31, 100), method="wilson"
    with pytest.raises(ValueError, match="at least one episode"):
        wilson(0, 0)
    with pytest.raises(ValueError, match=r"successes must be in \[0, 4\]"):
        wilson(5, 4)


def test_a_drop_inside_the_noise_is_not_forgetting():
    # 0.6 -> 0.5 on 50 items is ~1 standard error: the z=2 limit (0.196) exceeds the 0.05 budget
    assert drop_limit(0.6, 0.5, 50, 0.05, 2.0) == pytest.approx(2 * (0.24 / 50 + 0.25 / 50) ** 0.5)
    assert drop_limit(0.6, 0.5, 100_000, 0.05, 2.0) == 0.05  # many items: the budget rules


def test_summaries_over_seeds_have_mean_and_sample_std():
    s = summarize([0.2, 0.4, None, 0.6])
    assert s["mean"] == pytest.approx(0.4) and s["std"] == pytest.approx(0.2) and s["values"] == [0.2, 0.4, None, 0.6]
    assert summarize([None])["mean"] is None
