"""The experiment's figures, from the grid's cached cell results (matplotlib, Agg backend).

`experiments.write_report` draws them from the cells' histories in the job cache
(`out/jobs/`, never committed), so they are redrawn where the grid ran; the
committed results.json holds numbers only, no histories.

Every function takes `results` = {method: [one cell result per seed]} as
written by `experiments.run_cell` and `titles` = {method: legend label}, and
draws the mean over seeds with its 95% bootstrap interval over seeds (`stats.py`) as a band
or error bar:

- `asr_over_iterations`  held-out ASR (seen and unseen families) after each
                         evaluation, from the supervised model at iteration 0;
- `pool_stats`           the replay pool over time (size, mean defender reward,
                         share of harmful seeds) and the ASR on replayed prompts;
- `family_asr`           held-out ASR per tactic family, unseen ones hatched;
- `family_usage`         the families the attacker's harmful attacks use, per
                         iteration (share of fresh attacks), for the self-play runs;
- `discovery`            the unseen-family share of those attacks beside the held-out
                         unseen-family ASR, for the self-play runs and defender-only RL;
- `adaptive_attack`      the adaptive attacker's ASR while it trains against each
                         frozen defender (on its training seeds).

Per-iteration game metrics are noisy (a few dozen games each), so those
curves are smoothed with a trailing moving average; evaluations are not.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .stats import bootstrap_mean_ci  # noqa: E402
from .world import FAMILIES, UNSEEN_FAMILIES  # noqa: E402


def series(history: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(updates done, value) of every history entry that logged `key`."""
    rows = [(m["iteration"] + 1, m[key]) for m in history if key in m]
    return np.array([r[0] for r in rows], dtype=float), np.array([r[1] for r in rows], dtype=float)


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average that ignores NaN (an iteration without harmful seeds, say)."""
    out = np.empty_like(y)
    for i in range(len(y)):
        chunk = y[max(0, i - window + 1): i + 1]
        out[i] = np.nanmean(chunk) if np.isfinite(chunk).any() else np.nan
    return out


def intervals(ys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% bootstrap interval over seeds (rows of ys, (seeds, T)) per column; NaN
    seeds of a column are left out, a column with none stays NaN."""
    columns = [bootstrap_mean_ci(column) for column in np.asarray(ys, dtype=float).T]
    return tuple(np.array([c[i] for c in columns]) for i in range(3))


def band(ax, x, ys, label, **style):
    """Mean over seeds (rows of ys) with its 95% bootstrap interval shaded."""
    ys = np.asarray(ys, dtype=float)
    mean, low, high = intervals(ys)
    line, = ax.plot(x, mean, label=label, **style)
    if len(ys) > 1:
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def over_seeds(cells: list[dict], key: str, history="history", window: int = 1):
    """x and (seeds, T) values of `key`, cut to the shortest seed's length."""
    pairs = [series(c[history], key) for c in cells]
    n = min(len(x) for x, _ in pairs)
    return pairs[0][0][:n], np.stack([smooth(y[:n], window) for _, y in pairs])


def held_out_curve(cells: list[dict], key: str):
    """x from 0 (the supervised model, `start_eval`) and the (seeds, 1 + T) held-out values of `key`."""
    x, ys = over_seeds(cells, f"eval/{key}")
    return np.concatenate([[0], x]), np.column_stack([[c["start_eval"][key] for c in cells], ys])


def asr_over_iterations(results, titles, path):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, key, name in zip(axes, ("asr_seen", "asr_unseen", "asr_novel"),
                             ("seen families", "unseen families", "novel forms")):
        for method, cells in results.items():
            x, ys = held_out_curve(cells, key)
            if len(x) == 1:  # nothing trained: a flat reference line
                ax.axhline(np.mean(ys[:, 0]), linestyle="--", color="gray", label=titles[method])
                continue
            band(ax, x, ys, titles[method], marker="o", ms=3)
        ax.set(title=f"held-out ASR, {name}", ylim=(-0.02, 1.02))
        iteration_axis(ax, "iteration (defender updates)")
    axes[0].set_ylabel("attack success rate")
    axes[-1].legend(fontsize=8)
    return save(fig, path)


def pool_stats(results, titles, path, window=5):
    panels = [("pool/size", "pool size"), ("pool/mean_reward", "mean defender reward in pool"),
              ("pool/share_harmful", "share of harmful seeds"), ("replay/asr", "ASR on replayed prompts")]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.6))
    for ax, (key, title) in zip(axes, panels):
        for method, cells in results.items():
            x, ys = over_seeds(cells, key, window=window if key == "replay/asr" else 1)
            band(ax, x, ys, titles[method])
        ax.set_title(title)
        iteration_axis(ax)
    axes[-1].set_title(f"ASR on replayed prompts (avg of {window})")
    axes[0].legend(fontsize=8)
    return save(fig, path)


def family_asr(results, titles, path):
    families = list(FAMILIES)
    fig, ax = plt.subplots(figsize=(14, 4))
    width = 0.8 / max(1, len(results))
    x = np.arange(len(families))
    for i, (method, cells) in enumerate(results.items()):
        values = np.array([[c["defender"][f"asr/{f}"] for f in families] for c in cells])  # (seeds, F)
        mean, low, high = intervals(values)
        err = np.stack([mean - low, high - mean]) if len(cells) > 1 else None  # (2, F): down, up
        bars = ax.bar(x + (i - (len(results) - 1) / 2) * width, mean, width, yerr=err,
                      label=titles[method], capsize=2)
        for bar, family in zip(bars, families):
            if not FAMILIES[family].seen:
                bar.set_hatch("//")
    ax.set_xticks(x, [f if FAMILIES[f].seen else f"{f}\n(unseen)" for f in families], rotation=45, ha="right",
                  fontsize=8)
    ax.set(ylabel="held-out ASR", title="ASR per tactic family (hatched: unseen families)", ylim=(0, 1.05))
    ax.legend(fontsize=8, ncol=len(results), loc="upper center", bbox_to_anchor=(0.5, -0.4))
    return save(fig, path)


def family_usage(results, titles, path, window=5):
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), sharey=True, squeeze=False)
    names = sorted({k[len("family/"):] for cells in results.values() for c in cells for m in c["history"]
                    for k in m if k.startswith("family/")})
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(1, len(names))))
    for ax, (method, cells) in zip(axes[0], results.items()):
        n = min(len(c["history"]) for c in cells)
        x = np.arange(1, n + 1)
        # a family absent from an iteration's attacks has share 0 there
        shares = [np.mean([[c["history"][t].get(f"family/{name}", 0.0) for t in range(n)] for c in cells], axis=0)
                  for name in names]
        ax.stackplot(x, [smooth(s, window) for s in shares], labels=names, colors=colors)
        ax.set(title=titles[method], ylim=(0, 1))
        iteration_axis(ax)
    axes[0][0].set_ylabel(f"share of harmful attacks (avg of {window})")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return save(fig, path)


def discovery(results, titles, path, window=5):
    """Does the defender improve on the unseen families once its attacker finds them? Left: the
    share of the attacker's fresh harmful attacks written in an unseen family, per iteration;
    right: the defender's held-out unseen-family ASR beside it (from the supervised model at 0)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, cells in results.items():
        n = min(len(c["history"]) for c in cells)
        shares = [smooth(np.array([sum(c["history"][t].get(f"family/{f}", 0.0) for f in UNSEEN_FAMILIES)
                                   for t in range(n)]), window) for c in cells]  # (seeds, n)
        band(axes[0], np.arange(1, n + 1), shares, titles[method])
        band(axes[1], *held_out_curve(cells, "asr_unseen"), titles[method], marker="o", ms=3)
    axes[0].set(title=f"unseen-family share of the attacker's harmful attacks (avg of {window})", ylim=(-0.02, 1.02))
    axes[1].set(title="held-out ASR, unseen families", ylim=(-0.02, 1.02))
    for ax in axes:
        iteration_axis(ax)
    axes[1].legend(fontsize=8)
    return save(fig, path)


def adaptive_attack(results, titles, path, window=3):
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, cells in results.items():
        x, ys = over_seeds(cells, "game/asr", history="adaptive_history", window=window)
        band(ax, x, ys, titles[method])
    ax.set(title=f"adaptive attacker vs each frozen defender (training ASR, avg of {window})",
           ylabel="ASR", ylim=(-0.02, 1.02))
    iteration_axis(ax, "attacker PPO iteration")
    ax.legend(fontsize=8)
    return save(fig, path)


def sweep(knob: str, summary: dict[str, dict], cells: dict[str, list[dict]], path: str) -> str:
    """A knob's sweep: final held-out numbers against the value (95% intervals as error bars), and
    held-out unseen ASR over iterations per value."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    values = list(summary)
    x = np.arange(len(values))
    for offset, (key, name) in zip((-0.15, 0.0, 0.15), (("asr_unseen", "ASR unseen"), ("asr_novel", "ASR novel forms"),
                                                        ("over_refusal_adversarial_benign", "over-refusal adv. benign"))):
        mean = np.array([summary[v][key]["mean"] for v in values])
        err = np.abs(np.array([[summary[v][key]["low"] for v in values], [summary[v][key]["high"] for v in values]]) - mean)
        left.errorbar(x + offset, mean, yerr=err, fmt="o", capsize=3, label=name)
    left.set(xticks=x, xticklabels=values, xlabel=knob, ylabel="after self-play", ylim=(-0.02, 1.02),
             title="held-out numbers (95% interval over seeds)")
    left.legend(fontsize=8)
    for value, runs in cells.items():
        band(right, *held_out_curve(runs, "asr_unseen"), f"{knob.split('.')[-1]} = {value}", marker="o", ms=3)
    right.set(title="held-out ASR, unseen families", ylim=(-0.02, 1.02))
    iteration_axis(right, "iteration (defender updates)")
    right.legend(fontsize=8)
    return save(fig, path)


def iteration_axis(ax, label: str = "iteration"):
    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def make_all(results, titles, out_dir: str, replay: list[str], self_play: list[str]) -> list[str]:
    """Every figure into out_dir; `replay` and `self_play` name the methods the pool and family plots show."""
    pick = lambda names: {m: results[m] for m in names}  # noqa: E731
    paths = [asr_over_iterations(results, titles, os.path.join(out_dir, "asr_over_iterations.png")),
             family_asr(results, titles, os.path.join(out_dir, "family_asr.png")),
             adaptive_attack(results, titles, os.path.join(out_dir, "adaptive_attack.png"))]
    if replay:
        paths.append(pool_stats(pick(replay), titles, os.path.join(out_dir, "pool_stats.png")))
    if self_play:
        paths.append(family_usage(pick(self_play), titles, os.path.join(out_dir, "family_usage.png")))
        attackers = [m for m in ("defender_rl", *self_play) if m in results]  # the frozen attacker for contrast
        paths.append(discovery(pick(attackers), titles, os.path.join(out_dir, "discovery.png")))
    return paths
