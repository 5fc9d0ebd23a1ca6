"""Sweeps of one replay knob for SSP-UCB: does the replay's benefit depend on it?

    python -m minissp.sweep --knob selfplay.ucb_c --values 0 0.1 0.3 1 1.414 --out results/sweeps
    python -m minissp.sweep --knob selfplay.replay_fraction --values 0.1 0.25 0.5 --out results/sweeps

Each value is an experiment grid of its own (`experiments.run_grid`) with one method, SSP-UCB, at
the given seeds (default 0 1 2), train.py's length and no adaptive attack (the sweep asks about
the defender). The grids go under `OUT/runs/` (git-ignored, like a grid's job cache); a knob's
default value runs in `OUT/runs/default/`, which the sweeps of every knob share. The sweep
writes, for git:

- `OUT/<knob>.md`: per value, the final held-out numbers as mean [95% bootstrap interval] over
  seeds, each value's paired difference from the default value (seed by seed), and how the
  replay chose: `failure_capture` (1 = the k worst failures, what c = 0 does)
  and `rarity_capture` (1 = the k least visited entries, "least visited first"), averaged over
  the run (`replay.selection_capture`);
- `OUT/<knob>.json`: the same numbers per seed;
- `OUT/<knob>.png`: those numbers against the value, and held-out unseen ASR over iterations per
  value, with intervals.

Any `key=value` of minissp/config.py applies to every run of the sweep, as in a grid.
`python -m minissp.sweep --report OUT/<knob>.json` rewrites the .md from the .json alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import checkpoint, plots
from .checkpoint import CheckpointError
from .config import ConfigError, build_config, get_value
from .experiments import GRID, JOBS, ignored_folder, run_grid
from .pipeline import RunStopped
from .stats import bootstrap_mean_ci, paired_difference

METHOD = "ssp_ucb"
PAIRED = ("asr_unseen", "asr_novel", "over_refusal_adversarial_benign", "helpfulness")
"""Columns also compared value by value with the default, seed by seed (every value of a seed starts
from that seed's supervised model, so the seed pairs them)."""
COLUMNS = [  # (title, key in a cell's numbers or history, a percentage)
    ("ASR unseen", "asr_unseen", True), ("ASR seen", "asr_seen", True), ("ASR novel forms", "asr_novel", True),
    ("over-refusal adv. benign", "over_refusal_adversarial_benign", True), ("helpfulness", "helpfulness", True),
    ("failure capture", "replay/failure_capture", False), ("rarity capture", "replay/rarity_capture", False),
]


def run_folder(out: str, knob: str, value: str) -> str:
    """Where one value's grid goes: the default value's is shared by every knob's sweep."""
    name = "default" if default_value(knob, [value]) == value else f"{knob}={value}"
    return os.path.join(ignored_folder(os.path.join(out, "runs"), "the grids of minissp/sweep.py"), name)


def cell_numbers(cell: dict) -> dict[str, float]:
    """A cell's final held-out numbers and its replay's selection capture averaged over the run."""
    out = {key: cell["numbers"][key] for _, key, _ in COLUMNS if key in cell["numbers"]}
    for key in ("replay/failure_capture", "replay/rarity_capture"):
        values = [m[key] for m in cell["history"] if key in m and np.isfinite(m[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


def run_sweep(knob: str, values: list[str], seeds: list[int], out: str, overrides: list[str],
              workers: int = 2, threads: int = 1) -> dict:
    """Run (or resume) one grid per value and write OUT/<knob>.md, .json and .png."""
    if not values:
        raise ConfigError("--values needs at least one value")
    build_config([*overrides, f"{knob}={values[0]}"])  # an unknown knob or a bad value fails now
    cells, per_value = {}, {}
    for value in values:
        folder = run_folder(out, knob, value)
        cfg_overrides = [*overrides, f"{knob}={value}"]
        run_grid(cfg_overrides, seeds, [METHOD], 0, folder, workers, threads, base=GRID,
                 command=f"python -m minissp.sweep --knob {knob} --values {value}", overwrite=True)
        cells[value] = [_read(folder, seed) for seed in seeds]
        per_value[value] = {str(c["seed"]): cell_numbers(c) for c in cells[value]}
    summary = {v: {key: dict(zip(("mean", "low", "high"), bootstrap_mean_ci([n[key] for n in per_seed.values()])))
                   for _, key, _ in COLUMNS} for v, per_seed in per_value.items()}
    report = {"knob": knob, "values": values, "seeds": seeds, "overrides": overrides,
              "per_seed": per_value, "summary": summary}
    base = os.path.join(out, knob.split(".")[-1])
    checkpoint.atomic_write_text(base + ".json", json.dumps(report, indent=1))
    checkpoint.atomic_write_text(base + ".md", format_sweep(report))
    report["plot"] = plots.sweep(knob, summary, cells, base + ".png")
    return report


def _read(folder: str, seed: int) -> dict:
    """A cell's result (numbers and history) from the grid's job cache, which the grid has just written."""
    with open(os.path.join(folder, JOBS, f"{METHOD}-seed{seed}", "result.json")) as f:
        return json.load(f)


def default_value(knob: str, values: list[str]) -> str | None:
    """The value of `values` that is the config's default for `knob` (None: not swept)."""
    default = get_value(build_config([]), knob)
    return next((v for v in values if get_value(build_config([f"{knob}={v}"]), knob) == default), None)


def format_paired(report: dict) -> str:
    """Each value minus the default value, per seed: mean [interval] (seeds where the sign holds / seeds)."""
    base = default_value(report["knob"], report["values"])
    if base is None:
        return ""
    titles = {key: title for title, key, _ in COLUMNS}
    rows = [[f"{report['knob']} − {base}", *(f"{titles[k]} (%)" for k in PAIRED)]]
    rows.append(["---"] * len(rows[0]))
    for value in report["values"]:
        if value == base:
            continue
        row = [value]
        for key in PAIRED:
            d = paired_difference(*({s: n[key] for s, n in report["per_seed"][v].items()} for v in (value, base)))
            row.append(f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] ({d['sign_holds']}/{d['n']})")
        rows.append(row)
    return ("\nPaired with the default value, seed by seed: mean [interval] (seeds on which the mean's sign "
            "holds / seeds).\n\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n")


def format_sweep(report: dict) -> str:
    """The markdown report: one row per value, mean [interval] per column; then each value paired
    with the default."""
    head = [report["knob"], *(f"{t}{' (%)' if pct else ''}" for t, _, pct in COLUMNS)]
    rows = [head, ["---"] * len(head)]
    for value, numbers in report["summary"].items():
        row = [value]
        for _, key, pct in COLUMNS:
            scale, digits = (100, 1) if pct else (1, 2)
            n = numbers[key]
            row.append(f"{scale * n['mean']:.{digits}f} [{scale * n['low']:.{digits}f}, {scale * n['high']:.{digits}f}]")
        rows.append(row)
    seeds = " ".join(map(str, report["seeds"]))
    note = (f"\nSSP-UCB, seeds {seeds}, held-out numbers after self-play: mean [95% bootstrap interval] over "
            f"seeds. Capture: the run's mean over iterations. Command: `python -m minissp.sweep --knob "
            f"{report['knob']} --values {' '.join(report['values'])} --seeds {seeds}"
            f"{''.join(' ' + o for o in report['overrides'])}`\n")
    return "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n" + note + format_paired(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sweep one config knob for SSP-UCB over seeds.")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    parser.add_argument("--knob", help="the config key to sweep, e.g. selfplay.ucb_c")
    parser.add_argument("--values", nargs="+")
    parser.add_argument("--report", metavar="JSON", help="only rewrite the .md of a sweep's .json (no runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="results/sweeps")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        if args.report:
            with open(args.report) as f:
                report = json.load(f)
            checkpoint.atomic_write_text(os.path.splitext(args.report)[0] + ".md", format_sweep(report))
            print(format_sweep(report))
            return 0
        if not args.knob or not args.values:
            raise ConfigError("--knob and --values are needed (or --report JSON)")
        report = run_sweep(args.knob, args.values, args.seeds, args.out, args.overrides, args.workers, args.threads)
    except (ConfigError, CheckpointError, RunStopped, OSError, KeyError, ValueError) as e:
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    print(format_sweep(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
