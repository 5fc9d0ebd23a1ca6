"""The paper's table in miniature: baselines, ablations and an adaptive attack, over several seeds.

    python -m minissp.experiments                        # the full grid: 6 methods x 3 seeds
    python -m minissp.experiments --quick                # a reduced grid for a first look
    python -m minissp.experiments --seeds 0 1 2 3 --workers 2 --out results selfplay.iterations=60

Every `key=value` of minissp/config.py applies to every run of the grid (after
`GRID`, or `QUICK` with --quick). The methods, the adaptive attack and the
budget of defender updates they share are defined in `methods.py`:

    sft, static, defender_rl, ssp_none, ssp_uniform, ssp_ucb  (x seeds 0 1 2)

Each cell's table numbers are measured on held-out intents; `--out` gets a
table (mean ± std over seeds), results.json, examples.json and plots.

**Caching and determinism**: each (method, seed) cell is one job, run in its
own worker process (spawn, `--threads` torch threads each) and cached as
`out/jobs/<method>-seed<s>/result.json` with a fingerprint (`cell_fingerprint`)
of its config, method and adaptive budget *and of the source of every module
that runs in a cell* (`CELL_SOURCES`: every `minissp/*.py` and
`minissp/world/*.py` but `plots.py`), so that an edit to the judge, PPO, the
replay pool, self-play, the world or this file reruns every cell instead of
rebuilding the table from stale ones. Paths and `threads` are not part of it.
A rerun skips cells whose fingerprint matches, so an interrupted grid resumes
where it stopped. (An edit to minissp/ while the grid runs is flagged: a warning,
and `sources_changed_during_run` in results.json; the next run reruns every
cell.) Every job seeds every RNG from its seed, so the same seeds
give the same numbers on the same machine, whatever the worker count or the
order in which jobs finish.

**What is committed**: the job cache `out/jobs/` (every cell's full histories,
logs and metrics, megabytes) is scratch, never committed: the repository's
.gitignore ignores `results/jobs/`, and the grid writes a `.gitignore` of `*`
into `out/jobs/` so that git ignores it wherever `--out` points. What the grid
writes next to it is compact and meant for git: `table.md`, `results.json`
(config, hardware, per-seed numbers and their summary; no histories),
`examples.json` (a few prompts and answers of the last method's first seed,
for notebook 05) and the plots (drawn from the job cache at report time).

A grid refuses to write its report into a folder that holds the report of
another grid (other seeds, methods, budget or config), so that a partial run
never silently replaces the committed table; `--overwrite` replaces it.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint, plots, stats, tracking
from .checkpoint import CheckpointError
from .config import (ConfigError, RunConfig, build_config, from_json, sft_fingerprint, source_digest, to_dict,
                     to_json)
from .methods import METHODS, SELF_PLAY, run_cell, train_supervised
from .pipeline import RunStopped
from .resume import RESUMABLE_KEYS

# The grid's settings on top of the config's defaults: every trained method runs train.py's
# self-play length (selfplay.iterations) with held-out checks every 25 iterations; the quick
# grid also rates on fewer prompts.
GRID = {"selfplay.eval_every": 25}
GRID_ADAPTIVE_ITERATIONS = 20
QUICK = {"selfplay.eval_every": 25, "eval.per_intent": 1, "selfplay.eval_per_intent": 1}
QUICK_ADAPTIVE_ITERATIONS = 10
QUICK_METHODS = ["sft", "static", "ssp_ucb"]

# The table: (column title, key in a cell's numbers, shown as a percentage)
COLUMNS = [
    ("ASR seen", "asr_seen", True),
    ("ASR unseen", "asr_unseen", True),
    ("ASR adaptive", "asr_adaptive", True),
    ("ASR novel forms", "asr_novel", True),
    ("over-refusal borderline", "over_refusal_borderline", True),
    ("over-refusal adv. benign", "over_refusal_adversarial_benign", True),
    ("over-refusal novel forms", "over_refusal_novel", True),
    ("helpfulness", "helpfulness", True),
    ("attack distinct-2", "attack_distinct2", False),
    ("attack self-BLEU", "attack_self_bleu", False),
]


# -------------------- the grid --------------------------------------------

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
REPORT_ONLY = ("plots.py", "stats.py", "tracking.py", "chat.py", "sweep.py")
"""Modules of the package that never run inside a cell: the figures, the intervals and the W&B
upload happen at report time, a sweep only runs grids, and the terminal chat is for people."""


def package_sources(exclude: tuple[str, ...] = REPORT_ONLY) -> list[str]:
    """Every .py file of minissp/ and minissp/world/ but `exclude`, sorted by path."""
    paths = [os.path.join(folder, name) for folder in (_PACKAGE, os.path.join(_PACKAGE, "world"))
             for name in os.listdir(folder) if name.endswith(".py") and not name.startswith(".")]
    return sorted(p for p in paths if os.path.relpath(p, _PACKAGE) not in exclude)


CELL_SOURCES = package_sources()
"""The modules whose source shapes a cell's numbers, hashed by `cell_fingerprint`: the judge, PPO,
replay, self-play, sampling, the model, tokenizer, supervised stage, pipeline, the methods,
evaluation, diversity, config, checkpoints, this file and the world; every module but
REPORT_ONLY, so that a new module is covered without anyone remembering to list it."""

NOT_SHAPING = RESUMABLE_KEYS
"""Config keys left out of a cell's fingerprint, those a resumed train.py run may change: where
files go, torch's thread count (the cache treats a cell run on 1 or 4 threads as the same cell)
and train.py's checkpointing, which cells do not use."""

JOBS = "jobs"
"""The job cache's folder under the grid's `--out` folder (git-ignored, see the module docstring)."""


def cell_fingerprint(cfg: RunConfig, method: str, adaptive_iterations: int, sources: str | None = None) -> str:
    """A hash of everything that shapes a cell's numbers: the config but NOT_SHAPING, the method,
    the adaptive budget and the source of CELL_SOURCES (`sources`: their `source_digest`, when
    the caller already has it)."""
    shaping = {k: v for k, v in to_dict(cfg).items() if k not in NOT_SHAPING}
    sources = source_digest(CELL_SOURCES) if sources is None else sources
    text = json.dumps({"config": shaping, "method": method, "adaptive": adaptive_iterations, "sources": sources},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached(spec: dict) -> dict | None:
    """The cell's earlier result, if it was run with the same fingerprint (same config and code)."""
    path = os.path.join(from_json(spec["config"]).out_dir, "result.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        result = json.load(f)
    return result if result.get("fingerprint") == spec["fingerprint"] else None


def ignored_folder(path: str, what: str) -> str:
    """`path`, created with a `.gitignore` of `*` in it (saying it holds `what`), so that git never
    picks it up wherever it lies."""
    os.makedirs(path, exist_ok=True)
    ignore = os.path.join(path, ".gitignore")
    if not os.path.exists(ignore):
        checkpoint.atomic_write_text(ignore, f"# {what}: never committed\n*\n")
    return path


def jobs_dir(out: str) -> str:
    """`out/jobs/`, the job cache, git-ignored (`ignored_folder`)."""
    return ignored_folder(os.path.join(out, JOBS), "the job cache of minissp/experiments.py")


def cell_spec(cfg: RunConfig, method: str, adaptive_iterations: int, out: str, sources: str) -> dict:
    """The job of one (method, seed) cell; `sources` is the source_digest of CELL_SOURCES."""
    cell = copy.deepcopy(cfg)
    cell.out_dir = os.path.join(out, JOBS, f"{method}-seed{cfg.seed}")
    return {"config": to_json(cell), "method": method, "adaptive_iterations": adaptive_iterations,
            "fingerprint": cell_fingerprint(cell, method, adaptive_iterations, sources)}


def execute(supervised: dict[int, dict | None], cells: dict[int, list[dict]], workers: int) -> None:
    """Run the jobs. supervised[seed] makes the seed's checkpoint (None: it is cached already);
    a seed's cells start as soon as its checkpoint exists."""
    total = sum(spec is not None for spec in supervised.values()) + sum(map(len, cells.values()))
    progress = tqdm(total=total, desc="grid jobs", dynamic_ncols=True)
    if workers <= 1:  # in this process, one job after another
        for seed, spec in supervised.items():
            for job, arg in ([(train_supervised, spec)] if spec else []) + [(run_cell, c) for c in cells[seed]]:
                job(arg)
                progress.update()
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        running = {pool.submit(train_supervised, spec): seed for seed, spec in supervised.items() if spec}
        for seed, spec in supervised.items():
            if spec is None:
                running.update({pool.submit(run_cell, cell): None for cell in cells[seed]})
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                seed = running.pop(future)
                future.result()  # a worker's exception is raised here
                if seed is not None:  # a supervised job: its seed's cells can start
                    running.update({pool.submit(run_cell, cell): None for cell in cells[seed]})
                progress.update()
    finally:
        pool.shutdown(cancel_futures=True)
        progress.close()


CELL_GPU_MEMORY_GB = 4.0
"""What one cell is allowed on a shared GPU when choosing the worker count (the default model needs
far less; the gpu preset and a 135M pretrained model in bf16 fit in it)."""


def default_workers(device: str = "auto") -> int:
    """Worker processes when --workers is not given: on a GPU, as many cells as its free memory
    holds at CELL_GPU_MEMORY_GB each, at most one per CPU core; on a CPU, 2."""
    if device in ("auto", "cuda") or device.startswith("cuda:"):
        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info()
            return max(1, min(os.cpu_count() or 1, int(free / 2**30 // CELL_GPU_MEMORY_GB)))
    return 2


def hardware() -> dict:
    """What the numbers were measured on."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def summarize(results: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """{method: {number: {"mean", "std", "values"}}} over seeds; std uses n − 1 (0 for one seed)."""
    out = {}
    for method, cells in results.items():
        keys = sorted({k for c in cells for k in c["numbers"]})
        out[method] = {}
        for key in keys:
            values = [c["numbers"].get(key, float("nan")) for c in cells]
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out[method][key] = {"mean": float(np.mean(values)), "std": std, "values": values}
    return out


def format_grid_table(summary: dict[str, dict[str, dict]]) -> str:
    """The markdown table: one row per method, mean ± std over seeds per column."""
    rows = [["method", *(f"{title}{' (%)' if pct else ''}" for title, _, pct in COLUMNS)]]
    for method, numbers in summary.items():
        cells = []
        for _, key, pct in COLUMNS:
            mean, std = numbers[key]["mean"], numbers[key]["std"]
            cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}" if pct else f"{mean:.3f} ± {std:.3f}")
        rows.append([METHODS[method][0], *cells])
    rows.insert(1, ["---"] * len(rows[0]))
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def plan(configs: dict[int, RunConfig], methods: list[str], adaptive_iterations: int, out: str, workers: int,
         sources: str | None = None):
    """The jobs still to run: per seed, the uncached cells and the job that makes the seed's supervised
    checkpoint (None when it is cached). Supervised jobs share the cores between them (at least one thread
    each); the cache key ignores threads, like train.py's. `sources`: the source_digest of CELL_SOURCES
    (default: read now)."""
    supervised, cells = {}, {}
    sources = source_digest(CELL_SOURCES) if sources is None else sources
    for seed, cfg in configs.items():
        cells[seed] = []
        for method in sorted(methods, key=lambda m: (m not in SELF_PLAY, m == "sft")):  # the longest first
            spec = cell_spec(cfg, method, adaptive_iterations, out, sources)
            if cached(spec) is None:
                cells[seed].append(spec)
        if cells[seed]:
            path = os.path.join(cfg.sft_cache_dir, f"sft-{sft_fingerprint(cfg)}.pt")
            supervised[seed] = None if os.path.exists(path) else copy.deepcopy(cfg)
    to_train = [sft for sft in supervised.values() if sft is not None]
    for sft in to_train:
        sft.threads = max(sft.threads, workers * sft.threads // len(to_train))
        sft.out_dir = os.path.join(out, JOBS, f"supervised-seed{sft.seed}")
    return {seed: None if sft is None else {"config": to_json(sft)} for seed, sft in supervised.items()}, cells


EXAMPLES_PER_SUITE = 8
"""examples.json keeps the first this many defender examples of each evaluation suite."""
ATTACK_EXAMPLES = 5
"""... and the first this many attacks of the attacker the defender trained against."""


def examples(cell: dict) -> dict:
    """A compact record of one cell's examples (what notebook 05 shows): the final defender's answers to
    the first EXAMPLES_PER_SUITE held-out prompts of each suite, in their order, and the first
    ATTACK_EXAMPLES attacks of its attacker with the defender's answers."""
    kept, count = [], {}
    for e in cell["defender"].get("examples", []):
        count[e["suite"]] = count.get(e["suite"], 0) + 1
        if count[e["suite"]] <= EXAMPLES_PER_SUITE:
            kept.append(e)
    return {"method": cell["method"], "title": METHODS[cell["method"]][0], "seed": cell["seed"],
            "fingerprint": cell["fingerprint"], "defender": kept,
            "attacks": cell["attacker"].get("attack_examples", [])[:ATTACK_EXAMPLES]}


def write_report(results: dict[str, list[dict]], configs: dict[int, RunConfig], adaptive_iterations: int,
                 out: str, workers: int, threads: int, start: float, fresh: int, command: str,
                 sources: str | None = None, sources_changed: bool = False) -> dict:
    """table.md, results.json, examples.json and the plots, from every cell's result.

    results.json holds numbers only (per seed and summarised), no histories: the plots are drawn
    here from the cells' histories in the job cache, and only they and this compact report are
    committed. `sources`: the source_digest the cells were run with (default: read now);
    `sources_changed`: minissp/ was edited while the grid ran (flagged in results.json)."""
    seeds, methods = list(configs), list(results)
    summary = summarize(results)
    table = format_grid_table(summary)
    report = {
        "command": command, "seeds": seeds, "methods": methods, "adaptive_iterations": adaptive_iterations,
        "hardware": hardware(), "workers": workers, "threads_per_worker": threads,
        "wall_time_s": time.time() - start, "jobs_run": fresh, "jobs_cached": len(seeds) * len(methods) - fresh,
        "job_time_s": sum(c["numbers"]["time_s"] for cells in results.values() for c in cells),
        "config": {k: v for k, v in to_dict(configs[seeds[0]]).items() if k not in ("seed", "out_dir")},
        "sources": source_digest(CELL_SOURCES) if sources is None else sources,
        "sources_changed_during_run": sources_changed,
        "fingerprints": {m: {str(c["seed"]): c["fingerprint"] for c in cells} for m, cells in results.items()},
        "summary": summary,
        "per_seed": {m: {str(c["seed"]): c["numbers"] for c in cells} for m, cells in results.items()},
        "table": table,
    }
    report["stats"] = stats.grid_stats(report["per_seed"], [key for _, key, _ in COLUMNS])  # intervals, paired
    hw = report["hardware"]
    note = (f"Held-out intents; mean ± std over seeds {', '.join(map(str, seeds))}; adaptive attacker: "
            f"{adaptive_iterations} PPO iterations against the frozen defender.\n\n"
            f"Command: `{command}`  \nHardware: {hw['cpu']}, {hw['cores']} cores, torch {hw['torch']}; "
            f"{workers} worker(s) x {threads} thread(s).  \nWall time of this invocation: "
            f"{report['wall_time_s'] / 60:.1f} min ({fresh} of {len(seeds) * len(methods)} cells run, "
            f"the rest cached; {report['job_time_s'] / 60:.1f} worker-minutes in all cells).\n")
    os.makedirs(out, exist_ok=True)
    checkpoint.atomic_write_text(os.path.join(out, "table.md"), table + "\n\n" + note)
    checkpoint.atomic_write_text(os.path.join(out, "stats.md"),
                                 stats.format_stats(report["stats"], COLUMNS, {m: METHODS[m][0] for m in methods}) + "\n")
    checkpoint.atomic_write_text(os.path.join(out, "results.json"), json.dumps(report, indent=1))
    checkpoint.atomic_write_text(os.path.join(out, "examples.json"),
                                 json.dumps(examples(results[methods[-1]][0]), indent=1))
    report["plots"] = plots.make_all(results, {m: METHODS[m][0] for m in methods}, out,
                                     replay=[m for m in methods if METHODS[m][1] in ("ucb", "uniform")],
                                     self_play=[m for m in methods if m in SELF_PLAY])
    return report


def another_grid(out: str, seeds: list[int], methods: list[str], adaptive_iterations: int,
                 configs: dict[int, RunConfig]) -> str | None:
    """What differs between this grid and the one whose report `out` already holds (None: the same
    grid, or no report), so that a partial or changed grid never silently replaces a report."""
    try:
        with open(os.path.join(out, "results.json")) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return None
    def shaping(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in ("seed", *NOT_SHAPING)}
    for name, then, now in (("seeds", old.get("seeds"), seeds), ("methods", old.get("methods"), methods),
                            ("adaptive_iterations", old.get("adaptive_iterations"), adaptive_iterations),
                            ("config", shaping(old.get("config", {})), shaping(to_dict(configs[seeds[0]])))):
        if then != now:
            return f"{name} {then!r}" if name != "config" else "another config"
    return None


def run_grid(overrides: list[str], seeds: list[int], methods: list[str], adaptive_iterations: int,
             out: str, workers: int = 2, threads: int = 1, base: dict | None = None, command: str = "",
             overwrite: bool = False) -> dict:
    """Run (or resume) the grid and write out/table.md, out/results.json, out/examples.json and the
    plots; the cells are cached under out/jobs/ (git-ignored). A report of another grid already in
    `out` is refused (ConfigError) unless `overwrite`."""
    start = time.time()
    if adaptive_iterations < 0:
        raise ConfigError(f"--adaptive-iterations must be 0 or more, got {adaptive_iterations}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}: choose from {list(METHODS)}")
    methods = [m for m in METHODS if m in methods]  # rows in the table's order
    base = GRID if base is None else base
    configs = {}
    for seed in seeds:
        configs[seed] = build_config([f"{k}={v}" for k, v in base.items()] + list(overrides) + [f"seed={seed}"])
        configs[seed].threads = threads
    other = None if overwrite else another_grid(out, seeds, methods, adaptive_iterations, configs)
    if other:
        raise ConfigError(f"{out}/ holds the report of another grid ({other}); give this one its own --out DIR, "
                          f"or pass --overwrite to replace that report")
    jobs_dir(out)
    sources = source_digest(CELL_SOURCES)  # the code as it is now, which the jobs import and run
    supervised, cells = plan(configs, methods, adaptive_iterations, out, workers, sources)
    fresh = sum(map(len, cells.values()))
    execute(supervised, cells, workers)
    results = {m: [] for m in methods}
    for method in methods:
        for seed in seeds:
            result = cached(cell_spec(configs[seed], method, adaptive_iterations, out, sources))
            if result is None:
                raise RuntimeError(f"{method}, seed {seed}: the grid ran but left no matching result in "
                                   f"{os.path.join(out, JOBS)}")
            results[method].append(result)
    changed = source_digest(CELL_SOURCES) != sources
    if changed:  # a worker started after the edit may have run the new code under the old fingerprint
        print("warning: minissp/ was edited while the grid ran; the table is labelled with the code at its start "
              "(results.json: sources_changed_during_run), and the next run reruns every cell", file=sys.stderr)
    report = write_report(results, configs, adaptive_iterations, out, workers, threads, start, fresh, command,
                          sources, changed)
    if configs[seeds[0]].logger == "wandb":
        tracking.log_grid(report, results, configs, out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the SSP experiment grid (baselines, ablations, "
                                                 "adaptive attacks) and write the results table and plots.")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for every run (preset=NAME too)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (--quick: 0)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="default: all (--quick: fewer)")
    parser.add_argument("--adaptive-iterations", type=int, help=f"default: {GRID_ADAPTIVE_ITERATIONS} "
                                                                f"(--quick: {QUICK_ADAPTIVE_ITERATIONS})")
    parser.add_argument("--quick", action="store_true", help="a reduced grid for a first look")
    parser.add_argument("--out", default="results", help="where the table, results.json, examples.json and plots go; "
                                                         "the job cache goes to OUT/jobs/ (git-ignored)")
    parser.add_argument("--overwrite", action="store_true", help="replace a report of another grid in OUT")
    parser.add_argument("--workers", type=int, help="parallel job processes (1 = in this process); default: 2 on a "
                                                     "CPU, on a GPU as many as its free memory holds (they share it)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    methods = args.methods or (QUICK_METHODS if args.quick else list(METHODS))
    adaptive = args.adaptive_iterations
    if adaptive is None:  # 0 is a valid choice (no adaptive training), so not `or`
        adaptive = QUICK_ADAPTIVE_ITERATIONS if args.quick else GRID_ADAPTIVE_ITERATIONS
    command = "python -m minissp.experiments " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        workers = args.workers if args.workers is not None else default_workers(build_config(args.overrides).device)
        report = run_grid(args.overrides, seeds, methods, adaptive, args.out, workers, args.threads,
                          base=QUICK if args.quick else GRID, command=command.strip(), overwrite=args.overwrite)
    except (ConfigError, CheckpointError, RunStopped, OSError) as e:
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    print(report["table"])
    print(f"wall time {report['wall_time_s'] / 60:.1f} min; table, results.json and plots in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
