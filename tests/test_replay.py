"""Tests for minissp.replay: UCB preferences, eviction, merging, running means, JSON, samplers."""

import json
import math

import numpy as np
import pytest

from minissp.selfplay import SelfPlayConfig
from minissp.replay import (
    ExperiencePool, NoReplay, UCBSampler, UniformSampler, make_sampler, replay_count, selection_capture,
)


def pool_with(rewards, capacity=100, visits=1):
    """A pool whose entry i has `visits` visits, all with reward rewards[i] (None = unvisited)."""
    pool = ExperiencePool(capacity)
    for i, r in enumerate(rewards):
        pool.add(f"attack {i}", f"seed {i}", f"intent-{i % 3}", "harmful" if i % 2 == 0 else "benign",
                 family="persona", iteration=i)
        if r is not None:
            pool.update([i] * visits, [r] * visits)
    return pool


def test_ucb_prefers_low_reward_among_equally_visited():
    pool = pool_with([2.0, -2.0, 0.5, -1.0, 1.0], visits=3)
    rng = np.random.default_rng(0)
    assert UCBSampler(c=1.0).sample(pool, 2, rng) == [1, 3]  # the defender's worst failures
    assert UCBSampler(c=1.0).sample(pool, 5, rng) == [1, 3, 2, 4, 0]


def test_ucb_tries_unvisited_entries_first():
    pool = pool_with([-2.0, None, -2.0, None], visits=1)
    rng = np.random.default_rng(0)
    scores = UCBSampler(c=1.0).scores(pool)
    assert np.isinf(scores[[1, 3]]).all()
    np.testing.assert_allclose(scores[[0, 2]], 1.0 + math.sqrt(math.log(2)))  # r̃ = 0, N = 2, n = 1
    assert sorted(UCBSampler(c=1.0).sample(pool, 2, rng)) == [1, 3]


def test_ucb_exploration_term_grows_for_rarely_visited_entries():
    pool = pool_with([0.0, 0.0])
    pool.update([0] * 9, [0.0] * 9)  # entry 0: 10 visits, entry 1: 1 visit, same mean
    scores = UCBSampler(c=1.0).scores(pool)
    exploit = 1 - 0.5  # r̄ = 0 is the middle of (-2, 2)
    np.testing.assert_allclose(scores, exploit + np.sqrt(math.log(11) / np.array([10, 1])))
    assert scores[1] > scores[0]
    # an entry with a higher mean reward can still win if it is rarely visited
    pool.update([1], [2.0])  # entry 1: 2 visits, r̄ = 1
    assert UCBSampler(c=1.0).sample(pool, 1, np.random.default_rng(0)) == [1]
    assert UCBSampler(c=0.0).sample(pool, 1, np.random.default_rng(0)) == [0]


def test_ucb_breaks_ties_at_random():
    pool = pool_with([None] * 6)
    picks = {tuple(UCBSampler().sample(pool, 2, np.random.default_rng(s))) for s in range(20)}
    assert len(picks) > 5


def test_pool_never_exceeds_capacity_and_evicts_the_best_mastered_entry():
    pool = ExperiencePool(capacity=3)
    for i, r in enumerate([-1.0, 1.5, 1.5]):
        pool.add(f"p{i}", "s", "i", "harmful", iteration=i, reward=r)
    assert pool.add("p3", "s", "i", "harmful", iteration=3, reward=0.0) == 2
    assert len(pool) == 3
    assert [e.prompt for e in pool.entries] == ["p0", "p2", "p3"]  # p1 and p2 tied at 1.5: the older went
    assert pool.add("p2", "s", "i", "harmful", reward=1.5) == 1 and pool[1].visits == 2  # merged at its new index
    assert pool.add("p4", "s", "i", "harmful", iteration=4, reward=2.0) is None  # better mastered than all
    assert [e.prompt for e in pool.entries] == ["p0", "p2", "p3"]
    pool.add("p5", "s", "i", "benign", iteration=5)  # unvisited newcomer: the best-mastered visited goes
    assert [e.prompt for e in pool.entries] == ["p0", "p3", "p5"]
    for i in range(6, 40):
        pool.add(f"p{i}", "s", "i", "benign", iteration=i, reward=float(i % 5) - 2)  # rewards -2 .. 2
        assert len(pool) == 3  # full from the start, never more
    # the defender's hardest failures (r = -2, the newest two of the ties) and the untried entry remain
    assert [(e.prompt, e.mean_reward) for e in pool.entries] == [("p5", 0.0), ("p30", -2.0), ("p35", -2.0)]


def test_unvisited_pool_evicts_the_oldest():
    pool = ExperiencePool(capacity=2)
    for i in range(4):
        pool.add(f"p{i}", "s", "i", "harmful", iteration=i)
    assert [e.prompt for e in pool.entries] == ["p2", "p3"]


def test_duplicates_merge_and_running_means_are_exact():
    pool = ExperiencePool(capacity=10)
    i = pool.add("same attack", "seed a", "intent-a", "harmful", family="persona", iteration=1, reward=1.0)
    j = pool.add("same attack", "seed b", "intent-b", "benign", family="cipher", iteration=7, reward=-2.0)
    assert i == j and len(pool) == 1
    e = pool[i]
    assert (e.seed, e.intent, e.label, e.family, e.iteration) == ("seed a", "intent-a", "harmful", "persona", 1)
    pool.update([i, i], [0.5, 2.0])
    assert e.visits == 4
    assert e.mean_reward == pytest.approx(np.mean([1.0, -2.0, 0.5, 2.0]))
    pool.add("same attack", "s", "i", "harmful")  # no reward: nothing to count
    assert e.visits == 4 and len(pool) == 1
    with pytest.raises(ValueError, match="non-finite"):
        pool.update([i], [float("nan")])


def test_json_round_trip_is_exact():
    pool = pool_with([0.1, None, -1.0 / 3.0, 2.0], capacity=7, visits=3)
    pool.add("odd \"quoted\" prompt\nwith ünïcode", "s", "i", "benign", family=None, iteration=9, reward=1e-17)
    text = pool.to_json()
    json.loads(text)  # plain JSON
    back = ExperiencePool.from_json(text)
    assert back.entries == pool.entries
    assert (back.capacity, back.reward_range) == (pool.capacity, pool.reward_range)
    assert back.to_json() == text
    assert back.add("attack 2", "s", "i", "harmful") == 2  # the prompt index was rebuilt


def test_uniform_sampler_covers_entries_evenly():
    pool = pool_with([-2.0] * 5 + [2.0] * 5)  # rewards must not matter
    rng = np.random.default_rng(0)
    counts = np.zeros(10)
    for _ in range(2000):
        picks = UniformSampler().sample(pool, 3, rng)
        assert len(set(picks)) == 3
        counts[picks] += 1
    np.testing.assert_allclose(counts / counts.sum(), 0.1, atol=0.015)


def test_no_replay_and_small_pools():
    pool = pool_with([0.0, None])
    rng = np.random.default_rng(0)
    assert NoReplay().sample(pool, 5, rng) == []
    assert sorted(UCBSampler().sample(pool, 5, rng)) == [0, 1]  # k larger than the pool: all of it
    assert sorted(UniformSampler().sample(pool, 5, rng)) == [0, 1]
    empty = ExperiencePool(3)
    assert UCBSampler().sample(empty, 2, rng) == [] and UniformSampler().sample(empty, 2, rng) == []
    assert isinstance(make_sampler("ucb", c=2.0), UCBSampler) and make_sampler("ucb", c=2.0).c == 2.0
    # one default for c, wherever a sampler is made
    assert UCBSampler().c == make_sampler("ucb").c == SelfPlayConfig().ucb_c == 0.3
    with pytest.raises(ValueError):
        make_sampler("greedy")


@pytest.mark.parametrize("fraction,expected", [(0.0, 0), (0.25, 4), (1.0, 16)])
def test_replay_count(fraction, expected):
    assert replay_count(16, fraction) == expected
    assert replay_count(16, fraction, pool_size=2) == min(expected, 2)


def test_replay_count_rounds_and_validates():
    assert replay_count(10, 0.25) == 3  # 2.5 rounds half up
    assert replay_count(100, 0.29) == 29  # no floating-point floor surprise
    with pytest.raises(ValueError):
        replay_count(10, 1.5)


def test_stats():
    pool = pool_with([1.0, -1.0, None, None])
    s = pool.stats()
    assert s["size"] == 4 and s["total_visits"] == 2 and s["mean_visits"] == 0.5
    assert s["share_unvisited"] == 0.5 and s["mean_reward"] == 0.0 and s["share_harmful"] == 0.5
    assert s["family/persona"] == 1.0
    assert math.isnan(ExperiencePool(2).stats()["mean_reward"])


def test_selection_capture_tells_greedy_failure_from_least_visited_first():
    """c = 0 takes the worst failures (failure capture 1); a large c takes the least visited (rarity
    capture 1); a draw of the best-handled, most visited entries scores low on both."""
    pool = ExperiencePool(100)
    for i, (reward, visits) in enumerate([(-2.0, 8), (-1.5, 6), (2.0, 1), (1.5, 1), (0.0, 4)]):
        pool.add(f"attack {i}", "seed", "intent", "harmful", iteration=i)
        pool.update([i] * visits, [reward] * visits)
    rng = np.random.default_rng(0)
    greedy = selection_capture(pool, UCBSampler(c=0.0).sample(pool, 2, rng))
    rare = selection_capture(pool, UCBSampler(c=100.0).sample(pool, 2, rng))
    assert greedy["failure_capture"] == 1.0 and greedy["rarity_capture"] < 0.5
    assert rare["rarity_capture"] == 1.0 and rare["failure_capture"] < 0.2
    worst = selection_capture(pool, [4, 2])
    assert worst["failure_capture"] == pytest.approx((0.5 + 0.0) / (1.0 + 0.875))
    assert math.isnan(selection_capture(pool, [])["failure_capture"])
