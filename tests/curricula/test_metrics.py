"""Continual-learning metrics on hand-made accuracy matrices with known answers."""
from __future__ import annotations

import pytest
from graft.curricula.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer

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
