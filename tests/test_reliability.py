"""Reliability: resume after a kill, determinism, safe loading, one-line errors, NaN guards.

Every run here uses the tiny preset on one thread. The uninterrupted reference
run is shared by the module; the SIGKILL test starts train.py as a subprocess,
kills it in the middle of self-play, runs the same command again and compares
the metrics file byte for byte.
"""

import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from minissp import checkpoint, evaluate, ppo
from minissp.config import build_config, sft_fingerprint
from minissp.judge import Judge
from minissp.pipeline import make_game, run
from minissp.selfplay import PtxBatches, SelfPlay
from minissp.sft import Encoded, length_grouped_batches
from minissp.world import World

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402  (the repository's train.py)

ITERATIONS = 8


def args(tmp, out, *more):
    return ["preset=tiny", "threads=1", f"out_dir={out}", f"sft_cache_dir={tmp / 'cache'}",
            f"selfplay.iterations={ITERATIONS}", "checkpoint_every=3", *more]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py; the runs here use threads=1 anyway


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def reference(tmp):
    """An uninterrupted run (it also fills the supervised cache for the other tests)."""
    out = tmp / "reference"
    run(build_config(args(tmp, out)), log=lambda *a: None)
    return out


def digests(*roots) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(pathlib.Path(root).rglob("*")) if p.is_file()}


def model_tensors(path):
    return checkpoint.load(str(path))["model"]


# -------------------- resume and determinism --------------------------------

def test_same_seed_twice_gives_identical_metrics_files(tmp, reference):
    again, other = tmp / "again", tmp / "other-seed"
    run(build_config(args(tmp, again)), log=lambda *a: None)
    run(build_config(args(tmp, other, "seed=1")), log=lambda *a: None)
    metrics = (reference / "selfplay_metrics.jsonl").read_bytes()
    assert len(metrics.splitlines()) == ITERATIONS
    assert (again / "selfplay_metrics.jsonl").read_bytes() == metrics
    assert (other / "selfplay_metrics.jsonl").read_bytes() != metrics  # the comparison can tell runs apart
    assert not any(k.startswith("time/") for k in json.loads(metrics.splitlines()[0]))
    timing = [json.loads(line) for line in open(reference / "selfplay_timing.jsonl")]
    assert [t["iteration"] for t in timing] == list(range(ITERATIONS)) and "time/ppo" in timing[0]


def test_killed_run_resumes_to_the_same_metrics(tmp, reference):
    out = tmp / "killed"
    command = [sys.executable, "train.py", *args(tmp, out)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "selfplay_metrics.jsonl"
    deadline = time.time() + 120
    try:  # after iteration 4 is logged, the checkpoint of iteration 3 exists and self-play is still going
        while not (metrics.exists() and len(metrics.read_bytes().splitlines()) >= 4):
            assert proc.poll() is None and time.time() < deadline, "train.py ended before it could be killed"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "results.json").exists(), "the run finished before the kill"
    killed_at = checkpoint.load(str(out / "checkpoint.pt"))["iteration"]
    assert 3 <= killed_at < ITERATIONS

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from {out}/checkpoint.pt at iteration {killed_at}" in done.stdout
    assert metrics.read_bytes() == (reference / "selfplay_metrics.jsonl").read_bytes()
    final, expected = model_tensors(out / "final.pt"), model_tensors(reference / "final.pt")
    assert all(torch.equal(final[k], expected[k]) for k in expected)


def test_selfplay_state_dict_round_trips_through_a_safe_load(tmp, reference):
    cfg = build_config(args(tmp, tmp / "unused"))
    cache = next((tmp / "cache").glob("sft-*.pt"))
    world = World(cfg.world_seed)

    def game():
        model, tokenizer, _ = checkpoint.load_model(str(cache))
        return make_game(cfg, model, tokenizer, world)

    def untimed(metrics):
        return {k: v for k, v in metrics.items() if not k.startswith("time/")}

    a = game()
    for _ in range(2):
        a.step()
    assert a.ptx_batches.pending, "the PPO-ptx group should be part-used, so that its position matters"
    path = str(tmp / "game.pt")
    checkpoint.save(path, a.state_dict())
    b = game()
    b.load_state_dict(checkpoint.load(path))  # weights_only=True inside
    assert b.iteration == 2 and len(b.pool) == len(a.pool)
    for _ in range(3):
        assert json.dumps(untimed(a.step())) == json.dumps(untimed(b.step()))


def test_ptx_batches_draw_what_length_grouped_batches_draws():
    rng = random.Random(0)
    data = [Encoded(list(range(rng.randint(2, 40))), 1) for _ in range(200)]
    ours_rng, theirs_rng = random.Random(7), random.Random(7)
    ours, theirs = PtxBatches(data, 6, ours_rng), length_grouped_batches(data, 6, theirs_rng)
    for step in range(80):  # several groups, with other draws from the shared RNG in between
        assert [id(e) for e in next(ours)] == [id(e) for e in next(theirs)], step
        assert ours_rng.random() == theirs_rng.random()


# -------------------- safe loading ------------------------------------------

class Touch:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.mark.parametrize("payload", ["os.system", "reduce"])
def test_a_checkpoint_holding_a_pickled_callable_is_refused(tmp_path, payload):
    marker = tmp_path / "code-ran"
    path = str(tmp_path / "evil.pt")
    torch.save({"x": os.system} if payload == "os.system" else {"model": Touch(marker)}, path)
    with pytest.raises(checkpoint.CheckpointError, match="refusing to load"):
        checkpoint.load(path)
    with pytest.raises(checkpoint.CheckpointError, match="refusing to load"):
        checkpoint.load_model(path)
    assert not marker.exists()


def test_every_torch_load_in_the_repository_is_weights_only():
    sources = [p for p in ROOT.rglob("*.py") if not any(part.startswith(".") or part in ("tests", "site-packages")
                                                        for part in p.relative_to(ROOT).parts)]
    calls = [(p, call) for p in sources for call in p.read_text().split("torch.load(")[1:]]
    assert calls, "no torch.load found: the scan is looking in the wrong place"
    for path, call in calls:
        assert "weights_only=True" in call.split(")")[0], f"{path}: torch.load without weights_only=True"
    assert [p.name for p in sources if "import pickle" in p.read_text()] == ["checkpoint.py"]  # for its error class


# -------------------- one-line errors, files untouched ----------------------

def evil(path):
    torch.save({"x": os.system}, str(path))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def plant_small_model(tmp, out):
    """The tiny supervised checkpoint, cached under the name a wider model's config would use."""
    wide = build_config(args(tmp, out, "model.n_embd=64"))
    shutil.copy(next((tmp / "cache").glob("sft-*.pt")), tmp / "cache" / f"sft-{sft_fingerprint(wide)}.pt")


TRAIN_CASES = {
    "unknown key": (["selfplay.iteratons=5"], None, "unknown config key 'selfplay.iteratons'; did you mean "
                                                    "'selfplay.iterations'?"),
    "wrong type": (["ppo.lr=fast"], None, "ppo.lr='fast' is not a valid float"),
    "out of range": (["selfplay.replay_fraction=1.5"], None, "selfplay.replay_fraction=1.5 must be in [0, 1)"),
    "negative checkpoint_every": (["checkpoint_every=-1"], None, "checkpoint_every=-1 must be >= 0"),
    "block_size too small for the data": (["model.block_size=32", "resume=false"], None,
                                          "-token example but block_size=32"),
    "truncated checkpoint": ([], lambda tmp, out: truncate(out / "checkpoint.pt"), "truncated or not a checkpoint"),
    "pickled callable": ([], lambda tmp, out: evil(out / "checkpoint.pt"), "refusing to load"),
    "config differs from the checkpoint's": (["ppo.epochs=2"], None, "was written with ppo.epochs=1 but this run "
                                                                     "has ppo.epochs=2"),
    "model shape does not match": (["model.n_embd=64", "resume=false"], plant_small_model,
                                   "checkpoint model has n_embd=32 but the config asks for n_embd=64"),
    "cuda without a GPU": (["device=cuda"], None, "no GPU"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_py_bad_input_one_line_nonzero_exit_files_untouched(tmp, reference, tmp_path, capsys, case):
    extra, damage, message = TRAIN_CASES[case]
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    if damage:
        damage(tmp, out)
    before = digests(out, tmp / "cache")
    capsys.readouterr()
    code = train.main(args(tmp, out, *extra))
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert message in err, err
    assert digests(out, tmp / "cache") == before


def missing(out):
    return ["--ckpt", str(out / "nowhere.pt")], "checkpoint not found"


def truncated(out):
    truncate(out / "final.pt")
    return ["--ckpt", str(out / "final.pt")], "truncated or not a checkpoint"


def pickled(out):
    evil(out / "evil.pt")
    return ["--ckpt", str(out / "evil.pt")], "refusing to load"


def malformed_prompts(out):
    (out / "bad.jsonl").write_text('{"prompt": "how do i bake bread ?", "label": "benign"}\n{"prompt": "unclosed\n')
    argv = ["--ckpt", str(out / "final.pt"), "--prompts", str(out / "bad.jsonl"), "--out", str(out / "results.json")]
    return argv, "bad.jsonl:2: not valid JSON"


def unlabelled_prompts(out):
    (out / "bad.jsonl").write_text('{"prompt": "how do i bake bread ?"}\n')
    return ["--ckpt", str(out / "final.pt"), "--prompts", str(out / "bad.jsonl")], 'bad.jsonl:1: needs "label"'


EVAL_CASES = {"missing checkpoint": missing, "truncated checkpoint": truncated, "pickled callable": pickled,
              "malformed prompt file": malformed_prompts, "prompt without a label": unlabelled_prompts}


@pytest.mark.parametrize("case", list(EVAL_CASES))
def test_evaluate_bad_input_one_line_nonzero_exit_files_untouched(reference, tmp_path, capsys, case):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    argv, message = EVAL_CASES[case](out)
    before = digests(out)
    capsys.readouterr()
    code = evaluate.main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert digests(out) == before


def test_train_py_subprocess_exits_nonzero_with_one_line_and_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "train.py", "preset=tiny", "selfplay.iteratons=5",
                           f"out_dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == "error: unknown config key 'selfplay.iteratons'; did you mean 'selfplay.iterations'?\n"
    assert not (tmp_path / "run").exists()


# -------------------- numerical guards --------------------------------------

@pytest.fixture
def poison_from(monkeypatch):
    """poison_from(where, it): a NaN in the defender's reward or in the PPO entropy from self-play iteration `it`."""
    current = {"iteration": -1}
    play = SelfPlay.play

    def tracked_play(self):
        current["iteration"] = self.iteration
        return play(self)
    monkeypatch.setattr(SelfPlay, "play", tracked_play)

    def poison(where, it):
        bad = lambda: current["iteration"] >= it  # noqa: E731
        if where == "reward":
            score = Judge.score

            def nan_score(self, *a):
                attacker, defender, labels = score(self, *a)
                return attacker, float("nan") if bad() else defender, labels
            monkeypatch.setattr(Judge, "score", nan_score)
        else:
            entropy_of = ppo.entropy_of
            monkeypatch.setattr(ppo, "entropy_of", lambda logits: entropy_of(logits) * (float("nan") if bad() else 1))
    return poison


@pytest.mark.parametrize("where, message", [("reward", "non-finite defender reward nan"),
                                            ("loss", "non-finite entropy in ppo_update (epoch 1, minibatch 1)")])
def test_a_nan_stops_the_run_and_the_last_checkpoint_still_loads(tmp, reference, tmp_path, capsys, poison_from,
                                                                 where, message):
    out = tmp_path / "run"
    poison_from(where, 3)
    capsys.readouterr()
    code = train.main(args(tmp, out, "checkpoint_every=2"))
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err, err
    last = err.splitlines()[-1]  # above it, the progress bar, which tqdm writes to stderr too
    assert err.endswith("\n") and [line for line in err.splitlines() if "error" in line] == [last], err
    assert last.startswith("error: self-play stopped at iteration 3: ") and message in last, err
    assert last.endswith(f"; the last good checkpoint is {out}/checkpoint.pt (iteration 2)")
    state = checkpoint.load(str(out / "checkpoint.pt"))
    assert state["iteration"] == 2 and len(json.loads(state["history"])) == 2
    checkpoint.load_model(str(out / "checkpoint.pt"))
    assert len((out / "selfplay_metrics.jsonl").read_bytes().splitlines()) == 3  # iterations 0, 1, 2
    assert not (out / "final.pt").exists()
