"""logger=wandb, offline: what a run and a grid send to Weights & Biases, read back from the run files."""

import glob
import json
import os
import struct

import pytest

from minissp import tracking
from minissp.config import ConfigError, build_config
from minissp.pipeline import run

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def records(path: str) -> list:
    """The protobuf records of an offline `run-*.wandb` file: a 7-byte header, then 32 KiB blocks of
    records, each [crc32, length (2 bytes), type (1 = whole, 2/3/4 = first/middle/last piece)]."""
    data, out, pos, piece = open(path, "rb").read(), [], 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        piece, pos = piece + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(piece)
            out.append(record)
            piece = b""
    return out


def logged(directory: str) -> list[tuple[list[dict], dict]]:
    """(history rows, final summary) of every offline run under `directory`, oldest first."""
    runs = []
    for path in sorted(glob.glob(os.path.join(directory, "**", "offline-run-*", "run-*.wandb"), recursive=True)):
        history, summary = [], {}
        for r in records(path):
            kind = r.WhichOneof("record_type")
            if kind == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item
                                if not (i.key or i.nested_key[0]).startswith("_")})
            elif kind == "summary":
                summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
        runs.append((history, summary))
    return runs


def test_a_run_with_logger_wandb_sends_every_metric_line_and_the_final_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    cfg = build_config(["preset=tiny", f"out_dir={out}", f"sft_cache_dir={tmp_path / 'cache'}", "logger=wandb"])
    results = run(cfg, log=lambda *a: None)
    [(history, summary)] = logged(str(out))

    sft_lines = [json.loads(line) for line in open(out / "sft_metrics.jsonl")]
    selfplay_lines = [json.loads(line) for line in open(out / "selfplay_metrics.jsonl")]
    sent_sft = [h for h in history if any(k.startswith("sft/") for k in h)]
    sent_selfplay = [h for h in history if "iteration" in h]
    assert len(sent_sft) == len(sft_lines) > 0 and len(sent_selfplay) == len(selfplay_lines) == cfg.selfplay.iterations
    first = sft_lines[0]
    assert sent_sft[0][f"sft/{first['stage']}/loss"] == pytest.approx(first["loss"])
    for sent, line in zip(sent_selfplay, selfplay_lines):  # the JSONL line, every key, same values (and time/*)
        assert set(line) <= set(sent) and {k: sent[k] for k in line} == pytest.approx(line, nan_ok=True)
        assert {"time/sampling", "time/ppo"} <= set(sent)
    for name, column in results["columns"].items():
        assert summary[f"{name}/asr_seen"] == pytest.approx(column["asr_seen"])
    assert summary["results/_type"] == "table-file" and summary["results/nrows"] > 5


def test_the_default_logger_sends_nothing_and_an_unknown_one_is_refused(tmp_path):
    cfg = build_config(["preset=tiny", f"out_dir={tmp_path}"])
    assert type(tracking.start(cfg)) is tracking.Tracker
    with pytest.raises(ConfigError, match="logger='tensorboard' must be none or wandb"):
        build_config(["logger=tensorboard"])


def test_a_grid_sends_one_run_per_cell_and_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = build_config(["preset=tiny", "logger=wandb"])
    cells = {m: [{"seed": 0, "history": [{"iteration": i, "game/asr": 0.1 * i} for i in range(3)],
                  "numbers": {"asr_seen": 0.25 if m == "ssp_ucb" else 0.5}}] for m in ("sft", "ssp_ucb")}
    report = {"seeds": [0], "command": "python -m minissp.experiments", "methods": ["sft", "ssp_ucb"],
              "summary": {m: {"asr_seen": {"mean": c[0]["numbers"]["asr_seen"], "std": 0.0}} for m, c in cells.items()}}
    tracking.log_grid(report, cells, {0: cfg}, str(tmp_path))
    runs = logged(str(tmp_path))  # run folders are named by time and a random id: tell them apart by content
    grid_runs = [r for r in runs if "results/nrows" in r[1]]
    cell_runs = [r for r in runs if "results/nrows" not in r[1]]
    assert len(grid_runs) == 1 and len(cell_runs) == 2
    for history, summary in cell_runs:
        assert [h["game/asr"] for h in history] == pytest.approx([0.0, 0.1, 0.2])
    assert sorted(s["asr_seen"] for _, s in cell_runs) == [0.25, 0.5]
    table = grid_runs[0][1]
    assert table["results/nrows"] == 2 and table["results/ncols"] == 2
    path = glob.glob(str(tmp_path / "jobs" / "**" / table["results/path"]), recursive=True)[0]
    rows = json.load(open(path))["data"]
    assert rows == [["sft", 0.5], ["ssp_ucb", 0.25]]
