"""Reflective experience replay: a bounded pool of past attacks, replayed by UCB.

SSP keeps the attack prompts of the whole run in an experience pool and, each
iteration, replays some of them to the defender instead of fresh attacks,
choosing with an Upper Confidence Bound rule that favours the defender's past
failures while still revisiting entries it has seen rarely.

Each entry remembers its prompt, seed, intent, label, attack family, the
iteration it was added, how often the defender answered it (visits n_i) and
the mean defender reward it got (r̄_i, a running mean).

Our choice, not the paper's (its formula is not public). The UCB score is
UCB1's (Auer, Cesa-Bianchi & Fischer 2002, "Finite-time Analysis of the
Multiarmed Bandit Problem") with the reward turned into a failure signal:

    score_i = (1 − r̃_i) + c · sqrt(ln N / n_i)      r̃_i = r̄_i rescaled to [0, 1]

where N = Σ n_i is the pool's total visits and an unvisited entry (n_i = 0)
scores +inf, so it is tried first. The k best scores are taken, distinct,
deterministically; ties (all unvisited entries, say) are broken at random by
the numpy Generator passed in. UCB1's own constant for [0, 1] rewards is
c = sqrt(2); the self-play default is 0.3 (`SelfPlayConfig.ucb_c`), a knob. Why
so small: every fresh attack enters the pool already visited once, and N grows
to hundreds, so with c = 1 the bonus gap between one and two visits
(sqrt(ln N) − sqrt(ln N / 2), about 0.7) outweighs most of the failure term,
which spans [0, 1], and UCB turns into "least visited first" (notebook 4 shows
it). At c = 0.3 failures lead and rarely seen entries still get a turn.

Eviction rule (also ours): when the pool is full, the entry the defender has
*mastered best* goes: the highest r̄ among entries visited at least once,
ties going to the oldest. A new entry competes too, so a fresh attack that the
defender already handles better than everything in the pool is not kept.
Unvisited entries are never evicted while a visited one exists (we know
nothing about them yet); if none is visited, the oldest goes. Why not plain
"oldest first": the replay exists to keep hard failures alive, and an early
attack the defender still fails is the most valuable thing in the pool.

Indices returned by `add` and the samplers stay valid until the next `add`
(an eviction shifts the entries after it). Each iteration, call `update` with
the sampled indices before adding the new attacks.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

LABELS = ("harmful", "benign")


@dataclass
class Experience:
    prompt: str
    """The attack prompt the defender answered (the key: equal prompts are merged)."""
    seed: str
    """The seed request the attacker rewrote."""
    intent: str
    """The seed's intent id in the world."""
    label: str
    """The seed's label: "harmful" or "benign"."""
    family: Optional[str] = None
    """Attack family, if known."""
    iteration: int = 0
    """Self-play iteration in which it entered the pool."""
    visits: int = 0
    """n_i: how many defender answers its mean is over."""
    mean_reward: float = 0.0
    """r̄_i: running mean of the defender rewards it got (0 while unvisited)."""

    def record(self, reward: float) -> None:
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"non-finite defender reward {reward} for prompt {self.prompt[:40]!r}")
        self.visits += 1
        self.mean_reward += (reward - self.mean_reward) / self.visits  # running mean


class ExperiencePool:
    """At most `capacity` past attacks with their visit counts and mean defender reward."""

    def __init__(self, capacity: int, reward_range: tuple[float, float] = (-2.0, 2.0)):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if not reward_range[0] < reward_range[1]:
            raise ValueError(f"reward_range must be (low, high) with low < high, got {reward_range}")
        self.capacity = capacity
        self.reward_range = (float(reward_range[0]), float(reward_range[1]))
        self.entries: list[Experience] = []  # oldest first
        self._index: dict[str, int] = {}  # prompt -> position in entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Experience:
        return self.entries[i]

    def add(self, prompt: str, seed: str, intent: str, label: str, family: Optional[str] = None,
            iteration: int = 0, reward: Optional[float] = None) -> Optional[int]:
        """Add an attack (with its first defender reward, if it was answered).

        A prompt already in the pool is merged: the reward counts as one more
        visit and the first entry's metadata stay. Returns the entry's index,
        or None when the pool was full and the new entry was the one to evict.
        """
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        if prompt in self._index:
            i = self._index[prompt]
            if reward is not None:
                self.entries[i].record(reward)
            return i
        entry = Experience(prompt, seed, intent, label, family, iteration)
        if reward is not None:
            entry.record(reward)
        if len(self.entries) >= self.capacity:
            victim = self._victim(self.entries + [entry])
            if victim == len(self.entries):
                return None
            del self.entries[victim]
            self._index = {e.prompt: i for i, e in enumerate(self.entries)}
        self.entries.append(entry)
        self._index[prompt] = len(self.entries) - 1
        return len(self.entries) - 1

    @staticmethod
    def _victim(candidates: list[Experience]) -> int:
        """Position of the best-mastered visited entry (ties: oldest), else the oldest."""
        visited = [i for i, e in enumerate(candidates) if e.visits > 0]
        if not visited:
            return 0
        return max(visited, key=lambda i: (candidates[i].mean_reward, -i))

    def update(self, indices: Sequence[int], defender_rewards: Sequence[float]) -> None:
        """One more visit for each index, with the defender reward it got this time."""
        if len(indices) != len(defender_rewards):
            raise ValueError(f"{len(indices)} indices but {len(defender_rewards)} rewards")
        for i, r in zip(indices, defender_rewards):
            self.entries[int(i)].record(r)

    def visits(self) -> np.ndarray:
        return np.array([e.visits for e in self.entries], dtype=np.int64)  # (n,)

    def rescaled_rewards(self) -> np.ndarray:
        """r̃: mean rewards mapped from reward_range to [0, 1] (clipped)."""
        low, high = self.reward_range
        r = np.array([e.mean_reward for e in self.entries], dtype=np.float64)  # (n,)
        return np.clip((r - low) / (high - low), 0.0, 1.0)

    def stats(self) -> dict[str, float]:
        """Numbers to log: size, visits, mean reward of visited entries, label and family mix."""
        n = len(self.entries)
        visits = self.visits()
        visited = [e.mean_reward for e in self.entries if e.visits > 0]
        out = {
            "size": float(n),
            "fill": n / self.capacity,
            "total_visits": float(visits.sum()),
            "mean_visits": float(visits.mean()) if n else 0.0,
            "share_unvisited": float((visits == 0).mean()) if n else 0.0,
            "mean_reward": float(np.mean(visited)) if visited else float("nan"),
            "share_harmful": sum(e.label == "harmful" for e in self.entries) / n if n else 0.0,
        }
        for e in self.entries:
            key = f"family/{e.family or 'unknown'}"
            out[key] = out.get(key, 0.0) + 1.0 / n
        return out

    def to_json(self) -> str:
        """Plain JSON (Python floats round-trip exactly through their repr)."""
        return json.dumps({"capacity": self.capacity, "reward_range": list(self.reward_range),
                           "entries": [asdict(e) for e in self.entries]})

    @classmethod
    def from_json(cls, text: str) -> "ExperiencePool":
        data = json.loads(text)
        pool = cls(data["capacity"], tuple(data["reward_range"]))
        pool.entries = [Experience(**e) for e in data["entries"]]
        pool._index = {e.prompt: i for i, e in enumerate(pool.entries)}
        return pool


# -------------------- samplers: which entries to replay ----------------------

UCB_C = 0.3
"""The default exploration constant c (why 0.3 and not UCB1's sqrt(2): the module docstring);
`SelfPlayConfig.ucb_c` takes its default from here."""


class UCBSampler:
    """Top-k by score_i = (1 − r̃_i) + c·sqrt(ln N / n_i); unvisited first; random tie-break."""

    def __init__(self, c: float = UCB_C):
        if c < 0:
            raise ValueError(f"c must be non-negative, got {c}")
        self.c = c

    def scores(self, pool: ExperiencePool) -> np.ndarray:
        n = pool.visits().astype(np.float64)  # (n,)
        log_total = math.log(max(n.sum(), 1.0))  # ln N
        bonus = self.c * np.sqrt(log_total / np.maximum(n, 1.0))  # exploration term
        return np.where(n == 0, np.inf, (1.0 - pool.rescaled_rewards()) + bonus)  # (n,)

    def sample(self, pool: ExperiencePool, k: int, rng: np.random.Generator) -> list[int]:
        scores = self.scores(pool)
        order = np.lexsort((rng.random(len(scores)), -scores))  # by score descending, ties at random
        return order[:min(k, len(pool))].tolist()


class UniformSampler:
    """k distinct entries, each equally likely (the ablation without UCB)."""

    def sample(self, pool: ExperiencePool, k: int, rng: np.random.Generator) -> list[int]:
        return rng.choice(len(pool), size=min(k, len(pool)), replace=False).tolist()


class NoReplay:
    """Replays nothing (the ablation without replay)."""

    def sample(self, pool: ExperiencePool, k: int, rng: np.random.Generator) -> list[int]:
        return []


def make_sampler(name: str, c: float = UCB_C):
    """"ucb", "uniform" or "none"."""
    samplers = {"ucb": lambda: UCBSampler(c), "uniform": UniformSampler, "none": NoReplay}
    if name not in samplers:
        raise ValueError(f"replay sampler must be one of {sorted(samplers)}, got {name!r}")
    return samplers[name]()


def selection_capture(pool: ExperiencePool, picked: Sequence[int]) -> dict[str, float]:
    """How a draw of k entries compares with the two rules UCB blends, before the draw's update:
    `failure_capture`, the picked entries' summed failure (1 − r̃_i) over that of the k worst failures
    (1: greedy on failure, the c = 0 end), and `rarity_capture`, their summed 1 / n_i over that of the
    k least visited entries (1: "least visited first", the large-c end). NaN for an empty draw."""
    k = len(picked)
    if k == 0:
        return {"failure_capture": float("nan"), "rarity_capture": float("nan")}
    failure = 1.0 - pool.rescaled_rewards()  # (n,)
    rarity = 1.0 / np.maximum(pool.visits().astype(np.float64), 1.0)  # (n,) unvisited counts as once
    out = {}
    for name, value in (("failure_capture", failure), ("rarity_capture", rarity)):
        best = np.sort(value)[::-1][:k].sum()
        out[name] = float(value[list(picked)].sum() / best) if best > 0 else 1.0
    return out


def replay_count(batch_size: int, replay_fraction: float, pool_size: Optional[int] = None) -> int:
    """How many of a defender batch come from the pool: batch_size·fraction rounded
    half up, never more than the pool holds."""
    if not 0.0 <= replay_fraction <= 1.0:
        raise ValueError(f"replay_fraction must be in [0, 1], got {replay_fraction}")
    n = math.floor(batch_size * replay_fraction + 0.5)
    return n if pool_size is None else min(n, pool_size)
