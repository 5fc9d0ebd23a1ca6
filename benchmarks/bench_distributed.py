"""Self-play with 1 process against N under torchrun, on the same machine, side by side.

Runs `train.py` with the given overrides once as a plain process and once under
`torchrun --standalone --nproc_per_node=N`, `--repeats` times each, taking turns, each run from
the same cached supervised model, and reports per run:

- the wall time of the whole command (process start to exit: imports, the process group, the
  evaluations rank 0 runs alone);
- the self-play seconds of `selfplay_timing.jsonl` (sampling + judging + PPO, summed over
  iterations), which is what data parallelism divides.

On a CPU, N processes share the cores that one process would use with its threads: give every
process `threads=1` (the default here) for a like-for-like count of cores, and read the figure as
what the overhead of the collectives costs, not as a scaling result.

    python benchmarks/bench_distributed.py                       # tiny preset, 1 vs 2 processes
    python benchmarks/bench_distributed.py --processes 4 preset=gpu selfplay.iterations=20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed_run(launch: list[str], overrides: list[str], out: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run([*launch, "train.py", *overrides, f"out_dir={out}"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(launch)} train.py failed: {done.stderr.strip().splitlines()[-1:]}")
    timing = [json.loads(line) for line in open(os.path.join(out, "selfplay_timing.jsonl"))]
    selfplay = sum(t.get(k, 0.0) for t in timing for k in ("time/sampling", "time/judging", "time/ppo"))
    return {"wall_s": wall, "selfplay_s": selfplay}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="train.py key=value overrides (default: the tiny preset)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    overrides = args.overrides or ["preset=tiny", "selfplay.iterations=20", "selfplay.seeds_per_iteration=32",
                                   "selfplay.eval_every=0"]
    scratch = tempfile.mkdtemp(prefix="bench_distributed_")
    overrides = ["threads=1", f"sft_cache_dir={scratch}/cache", *overrides]
    subprocess.run([sys.executable, "train.py", *overrides, "stage=sft", f"out_dir={scratch}/sft"], cwd=ROOT,
                   check=True, capture_output=True)  # the supervised model, cached for every run
    launches = {"1 process": [sys.executable],
                f"{args.processes} processes": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                f"--nproc_per_node={args.processes}"]}
    runs = {name: [] for name in launches}
    for repeat in range(args.repeats):  # taking turns, so that drift in the machine hits both alike
        for name, launch in launches.items():
            runs[name].append(timed_run(launch, overrides, f"{scratch}/{name.replace(' ', '_')}-{repeat}"))
    report = {"overrides": overrides[2:], "repeats": args.repeats, "runs": runs,
              "median": {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "selfplay_s")}
                         for name, rs in runs.items()}}
    one, many = report["median"].values()
    print(f"{'':14} {'wall (s)':>9} {'self-play (s)':>14}")
    for name, m in report["median"].items():
        print(f"{name:14} {m['wall_s']:9.1f} {m['selfplay_s']:14.1f}")
    print(f"ratio N/1: wall {many['wall_s'] / one['wall_s']:.2f}, self-play {many['selfplay_s'] / one['selfplay_s']:.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
