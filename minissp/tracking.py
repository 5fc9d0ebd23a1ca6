"""Optional experiment tracking: the same metrics, also sent to Weights & Biases.

The JSONL files a run writes (`selfplay_metrics.jsonl`, `sft_metrics.jsonl`,
`results.json`) are the source of truth and are written either way. With
`logger=wandb` (an extra: `pip install -e ".[track]"`), a run also sends:

- every supervised metric line, under `sft/` (after the stage, from its file);
- every self-play metric line as it is written (`iteration` is its x-axis);
- the final before/after numbers as the run's summary, and the table as a
  `wandb.Table` named `results`.

The experiment grid sends one run per cell (its history, grouped by the
grid's output folder) and one `grid` run with the summary table, after the
cells have finished, from the process that writes the report.

Offline-safe: with `WANDB_MODE=offline`, or with no API key configured, the
run is written under `out_dir/wandb/` and nothing touches the network
(`wandb sync out_dir/wandb/offline-run-*` uploads it later).

Simplified: no gradients, weights or media are logged (CleanRL's `--track`
and nanochat's wandb logging send metrics too); no TensorBoard writer.
"""

from __future__ import annotations

import json
import os

from .config import ConfigError, RunConfig, to_dict


class Tracker:
    """Tracks nothing: what a run uses with logger=none."""

    def log(self, metrics: dict) -> None:
        pass

    def log_file(self, path: str, prefix: str) -> None:
        pass

    def finish(self, summary: dict | None = None, table: list[list] | None = None,
               columns: list[str] | None = None) -> None:
        pass


class WandbTracker(Tracker):
    """One W&B run."""

    def __init__(self, project: str, name: str, directory: str, config: dict, group: str | None = None,
                 job_type: str | None = None):
        try:
            import wandb
        except ImportError:
            raise ConfigError("logger=wandb needs the wandb package: pip install -e \".[track]\"") from None
        self.wandb = wandb
        os.makedirs(directory, exist_ok=True)
        self.run = wandb.init(project=project, name=name, dir=directory, config=config, group=group,
                              job_type=job_type, mode=_mode(), reinit="create_new")

    def log(self, metrics: dict) -> None:
        self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    def log_file(self, path: str, prefix: str) -> None:
        """Every line of a JSONL metrics file, its keys under `prefix`."""
        if not os.path.exists(path):
            return
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    stage = f"{row.pop('stage')}/" if "stage" in row else ""  # sft_metrics: capability, alignment
                    self.log({prefix + stage + k: v for k, v in row.items()})

    def finish(self, summary: dict | None = None, table: list[list] | None = None,
               columns: list[str] | None = None) -> None:
        if summary:
            self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        if table:
            self.run.log({"results": self.wandb.Table(columns=columns, data=table)})
        self.run.finish()


def _mode() -> str:
    """WANDB_MODE when set; otherwise online only if an API key is configured, so that a
    machine without one never waits for a login prompt or the network."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = os.path.join(os.path.expanduser("~"), ".netrc")
    logged_in = os.path.exists(netrc) and "api.wandb.ai" in open(netrc).read()
    return "online" if os.environ.get("WANDB_API_KEY") or logged_in else "offline"


def start(cfg: RunConfig, name: str | None = None, group: str | None = None, job_type: str = "train") -> Tracker:
    """The tracker `cfg.logger` asks for; its files go under `cfg.out_dir`."""
    if cfg.logger == "none":
        return Tracker()
    return WandbTracker(cfg.wandb_project, name or os.path.basename(os.path.abspath(cfg.out_dir)), cfg.out_dir,
                        to_dict(cfg), group=group, job_type=job_type)


def results_rows(columns: dict[str, dict], keys: tuple[str, ...]) -> tuple[list[str], list[list]]:
    """A before/after results dict as table rows: one row per metric, one column per model."""
    names = list(columns)
    return ["metric", *names], [[key, *(columns[n].get(key) for n in names)] for key in keys]


def log_grid(report: dict, results: dict[str, list[dict]], configs: dict[int, RunConfig], out: str) -> None:
    """The grid after it ran: one run per cell with its history, one `grid` run with the table."""
    group = os.path.basename(os.path.abspath(out))
    directory = os.path.join(out, "jobs")  # git-ignored, like the cells themselves
    for method, cells in results.items():
        for cell in cells:
            cfg = configs[cell["seed"]]
            run = WandbTracker(cfg.wandb_project, f"{method}-seed{cell['seed']}", directory, to_dict(cfg),
                               group=group, job_type=method)
            for metrics in cell["history"]:
                run.log(metrics)
            run.finish(summary=cell["numbers"])
    first = configs[report["seeds"][0]]
    run = WandbTracker(first.wandb_project, "grid", directory, {"command": report["command"],
                       "seeds": report["seeds"], "methods": report["methods"]}, group=group, job_type="grid")
    keys = sorted({k for per in report["summary"].values() for k in per})
    rows = [[method, *(report["summary"][method].get(k, {}).get("mean") for k in keys)]
            for method in report["methods"]]
    run.finish(table=rows, columns=["method", *keys])
