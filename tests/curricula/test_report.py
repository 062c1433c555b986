"""The run report: report.json, report.md, plots/*.png and the terminal table, on a hand-made report."""
from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
from graft.curricula.report import comparison_table, write_report

STAGES = ["text", "grid", "rgb"]


def cell(rate, n=100):
    return {"rate": rate, "ci95": [round(rate - 0.08, 3), round(rate + 0.09, 3)], "episodes": n}


def method(avg, bwt, fwt, forgetting, retention, success, seconds, *, R, text_scores, gate=(), notes=None):
    m = {
        "stages": list(STAGES),
        "acc_matrix": R,
        "shuffled_matrix": [[None] * 3, [None, 0.4, None], [None, 0.45, 0.5]],
        "pre_scores": [None, None, None],
        "baseline": [0.1, 0.25, 0.25],
        "text_probes": {"knowledge": text_scores, "perplexity": [20.0, 21.5, 23.0]},
        "success_matrix": [[None, None, None], [None, cell(0.2), None], [None, cell(0.15), cell(0.3)]],
        "avg_acc": avg, "avg_shuffled": 0.45, "perception_gain": avg - 0.45, "bwt": bwt, "fwt": fwt,
        "forgetting": forgetting, "imitation": 0.55, "text_retention": retention, "success_rate": success,
        "trainable_params": {"grid": {"projector": 6272, "lora": 16384, "share": 0.088},
                             "rgb": {"projector": 12544, "lora": 16384, "share": 0.121}},
        "gate": list(gate),
        "loss_curves": {s: {"pt": [2.1, 1.9, 1.7, 1.6], "it": [1.5, 1.2, 1.1, 0.9]} for s in STAGES[1:]},
        "seconds": seconds,
    }
    if notes:
        m["notes"] = notes
    return m


def make_report() -> dict:
    lower = [[0.6, 0.3, 0.25], [0.55, 0.7, 0.26], [0.5, 0.65, 0.8]]
    return {
        "curriculum": "babyai_modalities",
        "config": {"curriculum": {"name": "babyai_modalities"}, "train": {"lr": 1e-4, "steps": 200}},
        "seeds": {"seed": 0},
        "versions": {"graft": "0.1.0", "torch": "2.5.1", "numpy": "2.1.0"},
        "started": "2026-11-26T05:30:00",
        "seconds": 312.5,
        "baselines": {"stages": {"text": {"chance": 0.25, "majority": 0.3, "blind": 0.1, "questions": 128},
                                 "grid": {"chance": 0.2, "majority": 0.22, "blind": 0.25, "questions": 96},
                                 "rgb": {"chance": 0.2, "majority": 0.21, "blind": 0.25, "questions": 96}},
                      "success": {"random": [None, cell(0.31), cell(0.31)], "expert": [None, cell(1.0), cell(1.0)]},
                      "text_probes": {"knowledge": 0.6, "perplexity": 20.0, "chance": 0.3}},
        "methods": {
            "graft": method(0.65, -0.07, 0.05, 0.075, 0.83, 0.3, 140.2, R=lower,
                            text_scores=[0.6, 0.55, 0.5],
                            gate=[{"stage": "grid", "decision": "promoted", "reason": "forgetting 0.05 <= 0.2"},
                                  {"stage": "rgb", "decision": "rolled_back",
                                   "reason": "text retention 0.61 < 0.7"}]),
            "naive": method(0.412, -0.3, 0.02, 0.31, 0.42, 0.1, 90.0,
                            R=[[0.6, None, None], [0.3, 0.72, None], [0.2, 0.25, 0.79]],
                            text_scores=[0.6, 0.4, 0.25]),
            "joint": method(0.71, None, None, None, 0.95, None, 55.5,
                            R=[[None, None, None], [None, None, None], [0.68, 0.7, 0.75]],
                            text_scores=[None, None, 0.57],
                            notes=["joint trains once on all stages: bwt/fwt/forgetting are None"]),
        },
    }


@pytest.fixture
def report():
    return make_report()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One report written once, shared read-only by the tests that only inspect the output."""
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, write_report(run_dir, make_report())


def table_row(md: str, name: str) -> list[str]:
    rows = [line for line in md.splitlines() if line.startswith(f"| {name} |")]
    assert rows, f"no table row for {name}"
    return [c.strip() for c in rows[0].strip("|").split("|")]


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
    assert len(data) > 5000, f"{path} is suspiciously small ({len(data)} bytes)"


def test_report_json_round_trips(written):
    run_dir, paths = written
    assert paths["json"] == run_dir / "report.json"
    assert json.loads(paths["json"].read_text()) == make_report()


def test_numpy_values_are_written_as_plain_json(tmp_path, report):
    report["methods"] = {"graft": report["methods"]["graft"]}
    given = copy.deepcopy(report)
    given["methods"]["graft"]["avg_acc"] = np.float64(0.65)
    given["methods"]["graft"]["acc_matrix"][2] = np.array([0.5, 0.65, 0.8])
    given["seeds"]["seed"] = np.int64(0)
    write_report(tmp_path, given)
    assert json.loads((tmp_path / "report.json").read_text()) == report


def test_comparison_table_in_markdown_has_the_formatted_numbers(written):
    md = written[1]["md"].read_text()
    assert md.startswith("# graft report: babyai_modalities")
    assert "2026-11-26 05:30" in md and "5 min 12 s" in md
    assert table_row(md, "method")[1:] == ["avg acc", "shuffled", "perception gain", "BWT", "FWT", "forgetting",
                                            "imitation", "text retention", "success rate", "seconds"]
    assert table_row(md, "graft") == ["graft", "0.650", "0.450", "0.200", "-0.070", "0.050", "0.075", "0.550",
                                      "0.830", "0.300", "140.2"]
    assert table_row(md, "naive") == ["naive", "0.412", "0.450", "-0.038", "-0.300", "0.020", "0.310", "0.550",
                                      "0.420", "0.100", "90.0"]
    assert table_row(md, "joint") == ["joint", "0.710", "0.450", "0.260", "–", "–", "–", "0.550", "0.950", "–", "55.5"]


def test_markdown_has_matrices_gate_params_notes_and_versions(written):
    md = written[1]["md"].read_text()
    assert "| | text | grid | rgb |" in md.replace("|  |", "| |")
    assert "| after text | 0.600 | 0.300 blind | 0.250 blind |" in md
    assert "| after grid | 0.550 | 0.700 (0.400) | 0.260 blind |" in md
    assert "| after rgb | 0.500 | 0.650 (0.450) | 0.800 (0.500) |" in md
    assert "| after rgb | 0.200 | 0.250 (0.450) | 0.790 (0.500) |" in md
    assert "| untrained blind (b_j) | 0.100 | 0.250 | 0.250 |" in md
    assert "| after rgb | – | 0.150 [0.07, 0.24] n=100 | 0.300 [0.22, 0.39] n=100 |" in md
    assert "| random | – | 0.310 [0.23, 0.40] n=100 | 0.310 [0.23, 0.40] n=100 |" in md
    assert "| grid | 96 | 0.200 | 0.220 | 0.250 |" in md
    assert "| after rgb | 23.000 | 0.500 |" in md  # text probes: perplexity, knowledge
    assert "- grid: **promoted** — forgetting 0.05 <= 0.2" in md
    assert "- rgb: **rolled_back** — text retention 0.61 < 0.7" in md
    assert "| grid | 6,272 | 16,384 | 0.088 |" in md
    assert "joint trains once on all stages" in md
    assert "| torch | 2.5.1 |" in md and "seed 0" in md
    assert md.index("## graft") < md.index("## naive") < md.index("## joint") < md.index("## Plots")


def test_markdown_image_links_exist(written):
    run_dir, paths = written
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", paths["md"].read_text())
    expected = {f"plots/{n}.png" for n in ["stage_curves", "text_retention", "acc_matrix_graft", "acc_matrix_naive",
                                           "acc_matrix_joint", "loss_graft", "loss_naive", "loss_joint"]}
    assert set(links) == expected
    for link in links:
        assert (run_dir / link).is_file(), link


def test_every_plot_is_a_real_png(written):
    run_dir, paths = written
    pngs = sorted((run_dir / "plots").glob("*.png"))
    assert len(pngs) == 8
    assert sorted(p for k, p in paths.items() if k not in ("json", "md")) == pngs
    for png in pngs:
        assert_png(png)
    assert (run_dir / "plots").stat().st_mode & 0o777 == 0o755


def test_terminal_table_lists_every_method_with_its_numbers(report):
    table = comparison_table(report)
    lines = table.splitlines()
    assert len(lines) == 2 + len(report["methods"])
    assert lines[0].split()[:3] == ["method", "avg", "acc"]
    assert lines[2].split() == ["graft", "0.650", "0.450", "0.200", "-0.070", "0.050", "0.075", "0.550", "0.830",
                                "0.300", "140.2"]
    assert lines[4].split() == ["joint", "0.710", "0.450", "0.260", "–", "–", "–", "0.550", "0.950", "–", "55.5"]
    assert len({len(line) for line in lines}) == 1, "columns are not fixed-width"


def test_single_method_single_stage(tmp_path):
    one = {
        "curriculum": "tiny", "seeds": {"seed": 1}, "versions": {"graft": "0.1.0"},
        "started": "2026-11-26T06:00:00", "seconds": 3.0,
        "methods": {"naive": {
            "stages": ["grid"], "acc_matrix": [[0.4]], "pre_scores": [0.2], "baseline": [0.2],
            "text_probes": {"knowledge": [0.5]}, "success_matrix": [[None]],
            "avg_acc": 0.4, "bwt": 0.0, "fwt": 0.0, "forgetting": 0.0, "text_retention": 1.0,
            "success_rate": None, "trainable_params": {}, "gate": [], "loss_curves": {"grid": {"it": [1.0, 0.8]}},
            "seconds": 2.5,
        }},
    }
    one["baselines"] = {"stages": {"grid": {"chance": 0.5}}, "success": {}, "text_probes": {"knowledge": 0.5}}
    paths = write_report(tmp_path, one)
    md = paths["md"].read_text()
    assert table_row(md, "naive") == ["naive", "0.400", "–", "–", "0.000", "0.000", "0.000", "–", "1.000", "–", "2.5"]
    assert "| after grid | 0.400 |" in md
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {
        "acc_matrix_naive.png", "stage_curves.png", "text_retention.png", "loss_naive.png"}
    for png in (tmp_path / "plots").iterdir():
        assert_png(png)
    assert "naive" in comparison_table(one)


def test_plots_without_data_are_skipped_not_linked(tmp_path, report):
    del report["baselines"]["text_probes"]
    for m in report["methods"].values():
        m["loss_curves"] = {}
    paths = write_report(tmp_path, report)
    assert not any(k.startswith("loss_") for k in paths) and "text_retention" not in paths
    assert "text_retention.png" not in paths["md"].read_text()
    assert not (tmp_path / "plots" / "text_retention.png").exists()


def test_writes_are_atomic_and_rewrites_replace(tmp_path, report):
    write_report(tmp_path, report)
    del report["methods"]["naive"]
    write_report(tmp_path, report)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    assert not (tmp_path / "plots" / "acc_matrix_naive.png").exists()
    assert "naive" not in json.loads((tmp_path / "report.json").read_text())["methods"]
