"""A knob's sweep on the tiny preset: one grid per value, the default value's grid shared between
knobs, the value reaching every cell, and the report's numbers, selection capture and plot."""

import json
import os

import pytest

from minissp import sweep
from minissp.config import build_config
from minissp.pipeline import supervised_model
from minissp.world import World

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
TINY = ["preset=tiny", "selfplay.iterations=2", "selfplay.eval_every=1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    cfg = build_config(["preset=tiny", f"sft_cache_dir={cache}", f"out_dir={cache}"])
    supervised_model(cfg, World(cfg.world_seed), "cpu", log=lambda *a: None)
    return cache


def test_a_sweep_runs_one_grid_per_value_and_reports_each(cache, tmp_path):
    out = tmp_path / "sweeps"
    report = sweep.run_sweep("selfplay.ucb_c", ["0", "0.3"], [0], str(out), TINY + [f"sft_cache_dir={cache}"],
                             workers=1)
    runs = sorted(os.listdir(out / "runs"))
    assert runs == [".gitignore", "default", "selfplay.ucb_c=0"]  # 0.3 is the default value
    for folder, c in (("selfplay.ucb_c=0", 0.0), ("default", 0.3)):
        with open(out / "runs" / folder / "results.json") as f:
            assert json.load(f)["config"]["selfplay"]["ucb_c"] == c
    saved = json.loads((out / "ucb_c.json").read_text())
    assert list(saved["per_seed"]) == ["0", "0.3"] and saved["seeds"] == [0]
    for value in ("0", "0.3"):
        numbers = saved["per_seed"][value]["0"]
        assert 0.0 <= numbers["asr_unseen"] <= 1.0 and 0.0 <= numbers["replay/failure_capture"] <= 1.0
    table = (out / "ucb_c.md").read_text()
    assert table.count("\n| 0") == 3 and "--knob selfplay.ucb_c --values 0 0.3 --seeds 0" in table
    paired = table.split("| selfplay.ucb_c − 0.3 |")[1].splitlines()[2]  # c = 0 minus the default, seed 0
    difference = saved["per_seed"]["0"]["0"]["asr_unseen"] - saved["per_seed"]["0.3"]["0"]["asr_unseen"]
    assert paired.startswith(f"| 0 | {100 * difference:+.1f} [")
    assert os.path.getsize(report["plot"]) > 10_000
    (out / "ucb_c.md").unlink()
    assert sweep.main(["--report", str(out / "ucb_c.json")]) == 0 and (out / "ucb_c.md").read_text() == table


def test_a_sweep_of_an_unknown_knob_is_one_line(tmp_path, capsys):
    assert sweep.main(["--knob", "selfplay.no_such_knob", "--values", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_knob" in err and len(err.strip().splitlines()) == 1


def test_each_value_is_paired_with_the_default_seed_by_seed():
    numbers = lambda unseen: {"asr_unseen": unseen, "asr_novel": 0.2, "over_refusal_adversarial_benign": 0.1,  # noqa: E731
                              "helpfulness": 0.8}
    report = {"knob": "selfplay.ucb_c", "values": ["0.3", "1"],
              "per_seed": {"0.3": {"0": numbers(0.30), "1": numbers(0.20)}, "1": {"0": numbers(0.40), "1": numbers(0.25)}}}
    row = sweep.format_paired(report).splitlines()[-1]
    assert row.startswith("| 1 | +7.5 [+5.0, +10.0] (2/2) | +0.0 ")  # (0.10 + 0.05) / 2, value minus default
    assert sweep.format_paired({**report, "values": ["1"]}) == ""  # the default value was not swept
