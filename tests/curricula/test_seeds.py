"""Several seeds as one report: mean ± std per metric, pooled success cells, noise-level differences."""
from __future__ import annotations

import pytest
from graft.curricula.metrics import success_cell
from graft.curricula.seeds import combine


def run(seed: int, graft_acc: float, naive_acc: float) -> dict:
    def method(acc, successes):
        return {"stages": ["grid"], "acc_matrix": [[acc]], "shuffled_matrix": [[acc - 0.1]],
                "imitation_matrix": [[0.5]], "val_matrix": [[acc]], "success_matrix": [[success_cell(successes, 100)]],
                "baseline": [0.2], "gate": [], "text_probes": {}, "avg_acc": acc, "success_rate": successes / 100}
    return {"env": "e", "stages": ["grid"], "seconds": 10.0, "run_dir": f"/runs/seed{seed}",
            "baselines": {"stages": {"grid": {"chance": 0.25, "majority": 0.25 + 0.01 * seed}},
                          "success": {"random": [success_cell(30 + seed, 100)], "expert": [success_cell(100, 100)]}},
            "methods": {"graft": method(graft_acc, 40 + seed), "naive": method(naive_acc, 20)}}


def test_seeds_summarise_to_mean_and_std_and_pool_success_cells():
    report = combine({0: run(0, 0.5, 0.30), 1: run(1, 0.6, 0.31), 2: run(2, 0.7, 0.29)}, "c")
    assert report["seeds"] == [0, 1, 2] and report["runs"]["1"] == "/runs/seed1"
    acc = report["summary"]["graft"]["avg_acc"]
    assert acc["mean"] == pytest.approx(0.6) and acc["std"] == pytest.approx(0.1) and acc["values"] == [0.5, 0.6, 0.7]
    assert report["methods"]["graft"]["acc_matrix"] == [[pytest.approx(0.6)]]
    pooled = report["methods"]["graft"]["success_matrix"][0][0]
    assert pooled["episodes"] == 300 and pooled["rate"] == pytest.approx((40 + 41 + 42) / 300)
    assert report["baselines"]["success"]["random"][0]["episodes"] == 300
    assert report["baselines"]["stages"]["grid"]["majority"] == pytest.approx(0.26)
    assert report["seconds"] == 30.0


def test_a_difference_smaller_than_the_spread_over_seeds_is_marked_as_noise():
    wide = combine({0: run(0, 0.5, 0.55), 1: run(1, 0.7, 0.62), 2: run(2, 0.6, 0.60)}, "c")
    d = wide["differences"]["naive"]["avg_acc"]
    assert d["versus"] == "graft" and d["mean"] == pytest.approx(-0.01) and d["inside_spread"]
    clear = combine({0: run(0, 0.60, 0.30), 1: run(1, 0.61, 0.31), 2: run(2, 0.62, 0.29)}, "c")
    assert not clear["differences"]["naive"]["avg_acc"]["inside_spread"]
