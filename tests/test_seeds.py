"""The seed studies: every committed study record matches its seed records, and its spread over seeds is
the one NumPy and SciPy compute."""

import json

import numpy as np
import pytest
import scipy.stats

import seeds
from conftest import run_python


def test_the_committed_seed_studies_are_current():
    result = run_python(["scripts/seeds.py", "--check"])
    assert result.returncode == 0, result.stderr[-2000:]


def test_spread_is_the_sample_mean_sd_and_t_statistic():
    differences = [-1.8, -1.1, -1.6, -0.9]
    result = seeds.spread([{"difference": d} for d in differences])
    assert result["num_seeds"] == 4
    assert result["mean"] == pytest.approx(np.mean(differences))
    assert result["sd"] == pytest.approx(np.std(differences, ddof=1))
    assert result["t"] == pytest.approx(scipy.stats.ttest_1samp(differences, 0.0).statistic)


def test_a_study_gathers_each_seeds_paired_differences(tmp_path, monkeypatch):
    def record(path, difference):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"results": {"paired": {"b_vs_a": {"difference": difference, "stderr": 0.1}}}}))

    record(tmp_path / "zero.json", -1.0)
    for seed, difference in [(1, -1.4), (2, -0.8), (10, -1.1)]:
        record(tmp_path / "toy" / f"seed-{seed}" / "r.json", difference)
    (tmp_path / "toy" / "seed-3").mkdir()  # a run that has not written its record yet
    monkeypatch.setitem(seeds.STUDIES, "toy", (str(tmp_path / "zero.json"), "r.json", "results.paired", "cmd"))
    study = seeds.gather("toy", tmp_path)
    assert study["seeds"] == [0, 1, 2, 10]
    per_seed = study["comparisons"]["b_vs_a"]["per_seed"]
    assert [(entry["seed"], entry["difference"]) for entry in per_seed] == [(0, -1.0), (1, -1.4), (2, -0.8), (10, -1.1)]
    assert study["comparisons"]["b_vs_a"]["mean"] == pytest.approx(-1.075)
