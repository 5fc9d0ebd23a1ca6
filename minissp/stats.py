"""Confidence intervals over seeds, and the paired comparisons behind the paper's claims.

The experiment grid gives every method one number per seed and column. This module turns them
into what a reader needs to judge a difference:

- per method and column, the mean over seeds with a 95% **percentile bootstrap** interval
  (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13): resample the seeds
  with replacement, take the mean of each resample, read off the 2.5% and 97.5% quantiles;
- for the comparisons that carry the paper's claims (`CLAIMS`: SSP with UCB replay against the
  static set, defender-only RL, uniform replay and no replay), the **paired** per-seed
  differences (every method of a seed starts from that seed's supervised model, so the seed
  is the pair), their mean with its bootstrap interval, and on how many seeds the sign of the
  mean holds.

    python -m minissp.stats results        # results/results.json -> results/stats.md
    python -m minissp.stats results --families   # per-family ASR -> results/families.md

Simplified: with five seeds a bootstrap interval is rough (five numbers have only 126 distinct
resamples) and too narrow rather than too wide; read it beside the per-seed differences, which
the report prints, not instead of them. Our choice: percentile intervals, 10,000 resamples, a
fixed generator seed, so that the same results give the same report; NaN values (a column a
method does not have) are left out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

CLAIMS = [("ssp_ucb", "static"), ("ssp_ucb", "defender_rl"), ("ssp_ucb", "ssp_uniform"), ("ssp_ucb", "ssp_none")]
"""(method, baseline) pairs: SSP-UCB against the static set, defender-only RL, and both ablations of its replay."""
LEVEL = 0.95
RESAMPLES = 10_000


def bootstrap_mean_ci(values, level: float = LEVEL, resamples: int = RESAMPLES,
                      seed: int = 0) -> tuple[float, float, float]:
    """values (n,), one per seed, NaN dropped -> (mean, low, high): the mean and its percentile
    bootstrap interval (all NaN when no value is left)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    draws = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))  # (resamples, n)
    means = x[draws].mean(axis=1)  # (resamples,): the mean of each resample
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(low), float(high)


def paired_difference(a: dict[str, float], b: dict[str, float]) -> dict:
    """a[seed] - b[seed] over the seeds both have (NaN dropped): the differences, their mean,
    its bootstrap interval, and on how many of those seeds the difference has the mean's sign."""
    seeds = sorted((s for s in set(a) & set(b) if not (math.isnan(a[s]) or math.isnan(b[s]))), key=int)
    differences = [a[s] - b[s] for s in seeds]
    mean, low, high = bootstrap_mean_ci(differences)
    same_sign = sum(1 for d in differences if d != 0 and math.copysign(1, d) == math.copysign(1, mean))
    return {"seeds": seeds, "differences": differences, "mean": mean, "low": low, "high": high,
            "sign_holds": same_sign, "n": len(seeds)}


def grid_stats(per_seed: dict[str, dict[str, dict]], keys: list[str]) -> dict:
    """{"intervals": {method: {key: {mean, low, high, n}}}, "comparisons": {"a - b": {key: paired}}}
    from the grid's per-seed numbers (`results.json["per_seed"]`: method -> seed -> key -> value)."""
    intervals = {}
    for method, seeds in per_seed.items():
        intervals[method] = {}
        for key in keys:
            values = [numbers.get(key, math.nan) for numbers in seeds.values()]
            mean, low, high = bootstrap_mean_ci(values)
            intervals[method][key] = {"mean": mean, "low": low, "high": high,
                                      "n": sum(not math.isnan(v) for v in values)}
    comparisons = {}
    for method, baseline in CLAIMS:
        if method in per_seed and baseline in per_seed:
            comparisons[f"{method} - {baseline}"] = {
                key: paired_difference({s: n.get(key, math.nan) for s, n in per_seed[method].items()},
                                       {s: n.get(key, math.nan) for s, n in per_seed[baseline].items()})
                for key in keys}
    return {"level": LEVEL, "resamples": RESAMPLES, "intervals": intervals, "comparisons": comparisons}


def _number(x: float, percent: bool) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}" if percent else f"{x:.3f}"


def _interval(c: dict, percent: bool) -> str:
    """"mean [low, high]" of a {mean, low, high} record."""
    return f"{_number(c['mean'], percent)} [{_number(c['low'], percent)}, {_number(c['high'], percent)}]"


def format_stats(stats: dict, columns: list[tuple[str, str, bool]], titles: dict[str, str]) -> str:
    """Two markdown tables: mean [95% interval] per method, and the paired differences.
    `columns`: (title, key, is a rate) as `experiments.COLUMNS`; `titles`: method -> its name."""
    def header(first: str) -> list[str]:
        titles_row = " | ".join(f"{title}{' (%)' if pct else ''}" for title, _, pct in columns)
        return [f"| {first} | {titles_row} |", "| --- " * (len(columns) + 1) + "|"]

    rows = [f"Mean over seeds [{100 * stats['level']:.0f}% bootstrap interval]:", "", *header("method")]
    for method, numbers in stats["intervals"].items():
        cells = [_interval(numbers[key], pct) for _, key, pct in columns]
        rows.append(f"| {titles.get(method, method)} | " + " | ".join(cells) + " |")
    if stats["comparisons"]:
        rows += ["", "Paired differences, method minus baseline per seed: mean [interval] (seeds on which the "
                 "mean's sign holds / seeds); for ASR and over-refusal negative is better, for helpfulness positive:",
                 "", *header("comparison")]
        for name, numbers in stats["comparisons"].items():
            method, baseline = name.split(" - ")
            cells = [f"{_interval(numbers[key], pct)} ({numbers[key]['sign_holds']}/{numbers[key]['n']})"
                     for _, key, pct in columns]
            rows.append(f"| {titles.get(method, method)} − {titles.get(baseline, baseline)} | "
                        + " | ".join(cells) + " |")
        rows += ["", "Per-seed differences (seed: value), for reading beside the intervals:", ""]
        for name, numbers in stats["comparisons"].items():
            for title, key, pct in columns:
                c = numbers[key]
                per_seed = ", ".join(f"{s}: {_number(d, pct)}" for s, d in zip(c["seeds"], c["differences"]))
                rows.append(f"- {name}, {title}: {per_seed}")
    return "\n".join(rows)


def family_table(per_seed: dict[str, dict[str, dict]], methods: list[str], titles: dict[str, str]) -> str:
    """A markdown table, one row per jailbreak family and novel form (the `asr/` and `asr_novel/`
    keys), one column per method: mean ASR over seeds [95% bootstrap interval]."""
    first = next(iter(per_seed[methods[0]].values()))
    keys = [k for k in first if k.startswith(("asr/", "asr_novel/"))]
    intervals = grid_stats({m: per_seed[m] for m in methods}, keys)["intervals"]
    rows = [f"| family or form | {' | '.join(titles.get(m, m) + ' (%)' for m in methods)} |",
            "| --- " * (len(methods) + 1) + "|"]
    for key in keys:
        name = key.replace("asr_novel/", "novel: ").replace("asr/", "")
        rows.append(f"| {name} | " + " | ".join(_interval(intervals[m][key], True) for m in methods) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import atomic_write_text
    from .experiments import COLUMNS
    from .methods import METHODS
    parser = argparse.ArgumentParser(prog="python -m minissp.stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="a grid's output folder (holding results.json)")
    parser.add_argument("--families", nargs="*", metavar="METHOD",
                        help="write OUT/families.md instead: ASR per family and novel form for these "
                             "methods (default: sft ssp_ucb)")
    args = parser.parse_args(argv)
    path = os.path.join(args.out, "results.json")
    try:
        with open(path) as f:
            report = json.load(f)
        per_seed = report["per_seed"]
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {path} is not a grid report ({e.__class__.__name__}: {e})", file=sys.stderr)
        return 2
    titles = {name: title for name, (title, _) in METHODS.items()}
    if args.families is not None:
        methods = args.families or [m for m in ("sft", "ssp_ucb") if m in per_seed]
        missing = [m for m in methods if m not in per_seed]
        if missing or not methods:
            print(f"error: {path} has no method {missing or 'sft or ssp_ucb'}; it has {sorted(per_seed)}",
                  file=sys.stderr)
            return 2
        text = family_table(per_seed, methods, titles)
        atomic_write_text(os.path.join(args.out, "families.md"), text + "\n")
        print(text)
        return 0
    text = format_stats(grid_stats(per_seed, [key for _, key, _ in COLUMNS]), COLUMNS, titles)
    atomic_write_text(os.path.join(args.out, "stats.md"), text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
