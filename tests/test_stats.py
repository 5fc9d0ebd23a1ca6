"""Tests for minissp.stats: the bootstrap interval covers the mean as often as it says, the paired
comparisons, the report, and the command line."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from minissp.plots import intervals
from minissp.stats import CLAIMS, bootstrap_mean_ci, format_stats, grid_stats, main, paired_difference

COLUMNS = [("ASR seen", "asr_seen", True), ("distinct-2", "attack_distinct2", False)]


def test_bootstrap_interval_holds_the_mean_and_collapses_on_constants():
    mean, low, high = bootstrap_mean_ci([0.2, 0.4, 0.3, 0.9, 0.1])
    assert mean == pytest.approx(0.38) and 0.1 <= low < mean < high <= 0.9
    assert bootstrap_mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    assert bootstrap_mean_ci([0.7]) == (0.7, 0.7, 0.7)
    assert all(math.isnan(v) for v in bootstrap_mean_ci([]))
    assert bootstrap_mean_ci([1.0, float("nan"), 3.0])[0] == 2.0  # NaN left out
    assert bootstrap_mean_ci([0.2, 0.4, 0.9]) == bootstrap_mean_ci([0.2, 0.4, 0.9])  # a fixed generator


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(300):
        sample = rng.normal(1.0, 2.0, size=40)
        _, low, high = bootstrap_mean_ci(sample, resamples=2000, seed=trial)
        hits += low <= 1.0 <= high
    assert 0.89 <= hits / 300 <= 0.99  # the percentile interval is a little narrow at small n


def test_the_figures_bands_are_one_interval_per_column_without_its_nan_seeds():
    values = np.array([[0.1, 1.0], [0.5, float("nan")], [0.3, 4.0], [0.8, 3.0]])  # (seeds, columns)
    mean, low, high = intervals(values)
    assert (mean[0], low[0], high[0]) == bootstrap_mean_ci(values[:, 0])
    assert (mean[1], low[1], high[1]) == bootstrap_mean_ci([1.0, 4.0, 3.0])
    assert np.isnan(intervals(np.full((3, 1), np.nan))).all()


def test_paired_difference_counts_the_seeds_that_agree_and_drops_missing_ones():
    a = {"0": 0.2, "1": 0.3, "2": 0.5, "3": float("nan"), "4": 0.1}
    b = {"0": 0.4, "1": 0.6, "2": 0.4, "3": 0.2, "4": 0.3}
    d = paired_difference(a, b)
    assert d["seeds"] == ["0", "1", "2", "4"] and d["n"] == 4
    assert d["differences"] == pytest.approx([-0.2, -0.3, 0.1, -0.2])
    assert d["mean"] == pytest.approx(-0.15) and d["sign_holds"] == 3
    assert d["low"] <= d["mean"] <= d["high"] < 0.1


def fake_per_seed():
    rng = np.random.default_rng(1)
    methods = {"sft": 0.6, "static": 0.5, "defender_rl": 0.45, "ssp_none": 0.4, "ssp_uniform": 0.35, "ssp_ucb": 0.2}
    return {m: {str(s): {"asr_seen": level + rng.normal(0, 0.03), "attack_distinct2": 0.3} for s in range(5)}
            for m, level in methods.items()}


def test_grid_stats_compares_ssp_ucb_with_each_baseline_seed_by_seed():
    per_seed = fake_per_seed()
    stats = grid_stats(per_seed, ["asr_seen", "attack_distinct2"])
    assert set(stats["comparisons"]) == {f"{a} - {b}" for a, b in CLAIMS}
    vs_static = stats["comparisons"]["ssp_ucb - static"]["asr_seen"]
    assert vs_static["differences"] == pytest.approx(
        [per_seed["ssp_ucb"][s]["asr_seen"] - per_seed["static"][s]["asr_seen"] for s in map(str, range(5))])
    assert vs_static["sign_holds"] == 5 and vs_static["high"] < 0
    assert stats["intervals"]["ssp_ucb"]["asr_seen"]["n"] == 5
    text = format_stats(stats, COLUMNS, {"ssp_ucb": "SSP, UCB replay", "static": "static"})
    row = next(line for line in text.splitlines() if line.startswith("| SSP, UCB replay − static |"))
    assert row.count("|") == len(COLUMNS) + 2 and "(5/5)" in row
    assert "- ssp_ucb - static, ASR seen: 0: " in text


def test_the_command_writes_stats_md_and_refuses_what_is_not_a_report(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"per_seed": fake_per_seed()}))
    assert main([str(tmp_path)]) == 0
    assert "Paired differences" in (tmp_path / "stats.md").read_text()
    (tmp_path / "results.json").write_text("{}")
    capsys.readouterr()
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a grid report" in err and err.count("\n") == 1
    run = subprocess.run([sys.executable, "-m", "minissp.stats", str(tmp_path / "nowhere")], capture_output=True,
                         text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


def test_the_family_table_gives_each_family_its_mean_and_interval_per_method(tmp_path, capsys):
    per_seed = {m: {str(s): {"asr/cipher": 0.2 * s + (0.1 if m == "sft" else 0.0), "asr_novel/repeated": 0.5,
                             "asr_seen": 0.9} for s in range(3)} for m in ("sft", "ssp_ucb", "static")}
    (tmp_path / "results.json").write_text(json.dumps({"per_seed": per_seed}))
    assert main([str(tmp_path), "--families"]) == 0
    lines = (tmp_path / "families.md").read_text().splitlines()
    assert lines[0].count("|") == 4 and "SFT" in lines[0] and "UCB" in lines[0]  # the default methods
    assert lines[2] == "| cipher | 30.0 [10.0, 50.0] | 20.0 [0.0, 40.0] |"
    assert lines[3] == "| novel: repeated | 50.0 [50.0, 50.0] | 50.0 [50.0, 50.0] |"
    assert len(lines) == 4  # family and form keys only
    assert main([str(tmp_path), "--families", "static"]) == 0
    assert (tmp_path / "families.md").read_text().splitlines()[2] == "| cipher | 20.0 [0.0, 40.0] |"
    capsys.readouterr()
    assert main([str(tmp_path), "--families", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and err.count("\n") == 1
