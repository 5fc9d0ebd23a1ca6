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
    assert table.count("\n| 0") == 2 and "--knob selfplay.ucb_c --values 0 0.3 --seeds 0" in table
    assert os.path.getsize(report["plot"]) > 10_000


def test_a_sweep_of_an_unknown_knob_is_one_line(tmp_path, capsys):
    assert sweep.main(["--knob", "selfplay.no_such_knob", "--values", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_knob" in err and len(err.strip().splitlines()) == 1
