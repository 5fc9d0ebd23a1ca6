"""Data-parallel self-play under torchrun, on CPU with gloo and 2 processes (tiny preset).

1. a 2-rank run finishes with the same weights and replay pool on both ranks after
   every update (`distributed.check_in_sync` stops the run otherwise);
2. 2 ranks x B/2 games and 1 rank x B games give alike metrics: for the defender's
   and the attacker's mean reward and the share of attacks that keep their seed's
   intent, the means over iterations differ by less than 3 standard errors, and
   both replay the same number of prompts per iteration;
3. a 2-rank run killed after a checkpoint and started again with the same command
   ends with the same metrics bytes as an uninterrupted one;
4. another number of processes is refused in one line; torchrun with one process
   is train.py as it is without torchrun (the same metrics bytes).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minissp import checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
ITERATIONS = 8


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The tiny preset's supervised checkpoint, shared by every run here."""
    cache = tmp_path_factory.mktemp("cache")
    done = subprocess.run([sys.executable, "train.py", "preset=tiny", "stage=sft", "threads=1", f"sft_cache_dir={cache}",
                           f"out_dir={cache / 'sft'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return cache


def command(processes: int | None, cache, out, *more) -> list[str]:
    """train.py under torchrun with `processes` processes (None: plain python)."""
    launch = [sys.executable, "train.py"] if processes is None else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "train.py"]
    return [*launch, "preset=tiny", "threads=1", f"sft_cache_dir={cache}", f"out_dir={out}",
            f"selfplay.iterations={ITERATIONS}", "checkpoint_every=3", "selfplay.seeds_per_iteration=16", *more]


def train(*args) -> subprocess.CompletedProcess:
    done = subprocess.run(command(*args), cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, (done.stdout[-1500:], done.stderr[-3000:])
    return done


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in open(out / "selfplay_metrics.jsonl")]


@pytest.fixture(scope="module")
def two_ranks(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "run"
    train(2, cache, out)
    return out


def test_two_ranks_finish_with_the_same_model_and_pool_after_every_update(two_ranks):
    lines = metrics(two_ranks)
    assert [m["iteration"] for m in lines] == list(range(ITERATIONS))
    assert all(m["dist/ranks"] == 2.0 and m["dist/in_sync"] == 1.0 for m in lines)
    assert (two_ranks / "results.json").exists() and (two_ranks / "final.pt").exists()
    assert checkpoint.load(str(two_ranks / "checkpoint.pt"))["world_size"] == 2


def test_two_ranks_with_half_the_games_each_are_alike_one_rank_with_all(cache, tmp_path):
    more = ("selfplay.seeds_per_iteration=32", "selfplay.eval_every=0")
    train(None, cache, tmp_path / "one", *more)
    train(2, cache, tmp_path / "two", *more)
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [m["replay/count"] for m in one] == [m["replay/count"] for m in two]
    assert all(m["pool/size"] <= 32 for m in (one[0], two[0]))  # one iteration: at most 32 fresh attacks
    for key in ("defender/reward", "attacker/reward", "game/keeps_intent"):
        a, b = (np.array([m[key] for m in run]) for run in (one, two))
        error = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        assert abs(a.mean() - b.mean()) < 3 * error + 1e-9, (key, a.mean(), b.mean(), error)


def kill_every_process_of(out) -> None:
    """SIGKILL every process whose command line names `out` (Linux: read from /proc)."""
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"out_dir={out}".encode() in f.read().split(b"\0"):
                    os.kill(pid, signal.SIGKILL)
        except OSError:  # gone already, or not ours to read
            pass


def test_a_killed_two_rank_run_resumes_to_the_same_metrics(cache, two_ranks, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(command(2, cache, out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines, deadline = out / "selfplay_metrics.jsonl", time.time() + 300
    try:  # after iteration 4 is logged, the checkpoint of iteration 3 exists and self-play is still going
        while not (lines.exists() and len(lines.read_bytes().splitlines()) >= 4):
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.005)
    finally:
        kill_every_process_of(out)  # torchrun and both ranks (killing torchrun's process group alone left them running)
        proc.wait()
    assert not (out / "results.json").exists(), "the run finished before the kill"
    killed_at = checkpoint.load(str(out / "checkpoint.pt"))["iteration"]
    assert 3 <= killed_at < ITERATIONS
    done = train(2, cache, out)
    assert f"resuming from {out}/checkpoint.pt at iteration {killed_at}" in done.stdout
    assert lines.read_bytes() == (two_ranks / "selfplay_metrics.jsonl").read_bytes()


def test_another_number_of_processes_is_refused_in_one_line(cache, two_ranks):
    done = subprocess.run(command(None, cache, two_ranks), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "written by 2 rank(s) but this run has 1" in done.stderr


def test_torchrun_with_one_process_is_train_py_as_it_is(cache, tmp_path):
    train(None, cache, tmp_path / "plain")
    train(1, cache, tmp_path / "torchrun")
    plain = (tmp_path / "plain" / "selfplay_metrics.jsonl").read_bytes()
    assert (tmp_path / "torchrun" / "selfplay_metrics.jsonl").read_bytes() == plain
    assert b"dist/" not in plain


def test_each_rank_has_its_own_streams_and_all_share_the_replay_draws():
    import torch
    from minissp.distributed import Ranks, stream_seed
    from minissp.model import GPT, GPTConfig
    from minissp.ppo import PPOConfig
    from minissp.selfplay import SelfPlay, SelfPlayConfig
    from minissp.world import World

    def game(rank, world_size=2):
        model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8))
        return SelfPlay(model, model, None, World(0), SelfPlayConfig(), PPOConfig(),
                        torch.optim.SGD(model.parameters(), lr=0.0), seed=5, ranks=Ranks(rank, world_size))

    zero, one, alone = game(0), game(1), game(0, 1)
    assert stream_seed(5, 0) == 5 and zero.rng.random() == alone.rng.random()  # rank 0 is the one-process run
    assert zero.rng.random() != one.rng.random() and zero.np_rng.random() != one.np_rng.random()
    assert zero.replay_rng.random() == one.replay_rng.random()  # every rank draws the same replayed entries
    assert alone.replay_rng is alone.np_rng  # one process: the replay draws come from its own stream, as always
    with pytest.raises(ValueError, match="divisible"):
        game(0, 3)


def test_more_processes_than_gpus_is_refused_in_one_line(monkeypatch):
    import torch
    from minissp.distributed import Ranks, rank_device
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match=r"2 processes, one GPU each, but this machine has 1 GPU\(s\)"):
        rank_device(torch.device("cuda"), Ranks(1, 2, 1))
    assert rank_device(torch.device("cpu"), Ranks(1, 2, 1)) == torch.device("cpu")
