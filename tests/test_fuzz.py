"""Fuzz tests of the README's promise: bad input ends in one line on stderr, "error: ...", and
exit status 2, never a traceback, and before any training starts.

(a) Every config key given bad values (0, negative, nan, inf, huge, the wrong type): all of
    them through `build_config` and `train.main` in this process, a representative few
    through the real command `python train.py KEY=VALUE`. Which values a key accepts is
    read from `config.LIMITS` (the table `RunConfig.validate` checks), not written here;
    accepted edge values are then run on the tiny preset, to show that what validation
    lets through does not crash later.
(b) Files that are not checkpoints (random bytes, text, an empty file, a truncated zip, a
    pickle holding code) given to every command that loads a checkpoint: evaluate --ckpt,
    train.py resuming from out_dir/checkpoint.pt, and train.py's supervised cache.

Subprocesses are few (each imports torch, about 2 s) and run in parallel.
"""

import concurrent.futures
import io
import os
import pathlib
import pickle
import random
import subprocess
import sys

import pytest
import torch

from minissp import checkpoint, config, evaluate
from minissp.config import LIMITS, PRESETS, ConfigError, Limit, RunConfig, build_config, keys, sft_fingerprint
from minissp.model import GPT, GPTConfig
from minissp.tokenizer import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402  (the repository's train.py)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

BASE = ["preset=tiny", "threads=1"]
HUGE_INT = "1" + "0" * 30
BAD_VALUES = ["0", "-1", "nan", "inf", "-inf", "1e30", HUGE_INT, "abc", "1.5", ""]
CHOICES = {"stage": {"sft", "selfplay", "all"}, "device": {"auto", "cpu", "cuda", "cuda:0"},
           "selfplay.replay": {"ucb", "uniform", "none"}, "logger": {"none", "wandb"}}
"""The string keys that take one of a few values; sft.init_from takes "", "smollm2" or a path that
exists; wandb_project any name; the others (out_dir, sft_cache_dir) are directories."""
BOOLS = {"1", "true", "yes", "on", "0", "false", "no", "off"}
DEFAULTS = RunConfig()


def default(key):
    value = DEFAULTS
    for part in key.split("."):
        value = getattr(value, part)
    return value


def expected_verdict(key: str, text: str) -> bool | None:
    """True: validation must accept `text`; False: it must refuse it; None: the key's own range
    admits it, but a check tying it to another key may refuse it (n_head must divide n_embd, ...)."""
    kind = type(default(key))
    if kind is bool:
        return text.lower() in BOOLS
    if kind is str and key == "sft.init_from":
        return True if text in ("", "smollm2") else (None if os.path.exists(text) else False)
    if kind is str:
        return text in CHOICES[key] if key in CHOICES else (None if text else False)
    try:
        value = int(text) if kind is int else float(text)
    except ValueError:
        return False
    if value != value or value in (float("inf"), float("-inf")):
        return False
    return None if Limit.parse(LIMITS[key]).admits(value) else False


def one_line_error(err: str) -> bool:
    return err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err


# ============================================================ (a) config values

def test_every_number_has_a_range_and_every_range_a_key():
    numbers = {k for k in keys() if type(default(k)) in (int, float)}
    assert numbers == set(LIMITS), (numbers ^ set(LIMITS))
    for key, text in LIMITS.items():
        assert Limit.parse(text).admits(default(key)), f"{key}: the default {default(key)!r} is outside {text}"
    for preset in PRESETS:  # pretrained_smoke names no model of its own
        build_config([f"preset={preset}"] + (["sft.init_from=."] if preset == "pretrained_smoke" else []))


@pytest.mark.parametrize("key", keys())
def test_every_key_refuses_bad_values_in_one_line(key, tmp_path, capsys):
    """Every bad value of every key: refused with a one-line ConfigError naming the key, and
    train.main prints exactly that line and returns 2; a value the key's LIMITS range refuses is
    never accepted, and one it admits is refused only by a check tying keys together."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    values = BAD_VALUES + ([f"{a_file}/sub", str(a_file)] if type(default(key)) is str else [])
    for text in values:
        verdict = False if text.startswith(str(a_file)) and key != "sft.init_from" else expected_verdict(key, text)
        argv = BASE + [f"out_dir={tmp_path / 'out'}", f"sft_cache_dir={tmp_path / 'cache'}", f"{key}={text}"]
        try:
            build_config(argv)
        except ConfigError as e:
            message = str(e)
            assert verdict is not True, f"{key}={text!r} refused but should be accepted: {message}"
            assert "\n" not in message and key in message, f"{key}={text!r}: {message!r}"
            capsys.readouterr()
            assert train.main(argv) == 2
            err = capsys.readouterr().err
            assert one_line_error(err) and err == f"error: {message}\n", err
        else:
            assert verdict is not False, f"{key}={text!r} accepted, but it is bad"
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


USED_TO_FAIL = [
    # (override, what `python train.py preset=tiny OVERRIDE` did before validation caught it)
    ("model.n_head=0", "ZeroDivisionError in GPTConfig"),
    ("ppo.advantage_estimator=rloo", "a traceback after the supervised stage (RLOO, removed)"),
    ("sft.eval_every=0", "ZeroDivisionError in the supervised stage"),
    ("sft.capability_steps=0", "UnboundLocalError after the stage"),
    ("sft.capability_variants=0", "an endless loop over an empty corpus"),
    ("seed=-1", "numpy's ValueError"),
    ("threads=1000000", "a segmentation fault at exit"),
    ("selfplay.replay_fraction=0.95", "ValueError in generate once the pool replaced every prompt"),
    ("eval.attack_temperature=-1", "ValueError in generate, after the supervised stage"),
    ("eval.attack_max_new_tokens=256", "ValueError in generate: no room left for the prompt"),
    ("ppo.temperature=1e-40", "non-finite logits: an IndexError in the sampler"),
    ("sft.weight_decay=1e30", "weights decayed to NaN: an IndexError in the sampler"),
    ("model.n_layer=1000000", "an allocation of some 800 GB"),
    ("sft.vocab_size=100", "refused only after the corpora were built"),
]


@pytest.mark.parametrize("override, before", USED_TO_FAIL, ids=[o for o, _ in USED_TO_FAIL])
def test_values_that_used_to_fail_late_are_refused_up_front(override, before, tmp_path):
    with pytest.raises(ConfigError) as info:
        build_config(BASE + [f"out_dir={tmp_path}", override])
    assert override.split("=")[0] in str(info.value) and "\n" not in str(info.value)


SUBPROCESS_CASES = {
    # one bad value per section, the ones that used to end in a traceback, and each kind of bad type
    "run: seed": ("seed=-1", "seed=-1 must be in [0, 4294967295]"),
    "run: device": ("device=tpu", "device='tpu' must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    "run: out_dir under a file": ("out_dir={file}/run", "out_dir='{file}/run' cannot be created: {file} is not a"),
    "model: n_head=0": ("model.n_head=0", "model.n_head=0 must be in [1, 1024]"),
    "sft: eval_every=0": ("sft.eval_every=0", "sft.eval_every=0 must be >= 1"),
    "ppo: rloo is gone": ("ppo.advantage_estimator=rloo", "unknown config key 'ppo.advantage_estimator'"),
    "selfplay: 1.5 for an int": ("selfplay.iterations=1.5", "selfplay.iterations='1.5' is not a valid int"),
    "eval: nan": ("eval.per_intent=nan", "eval.per_intent='nan' is not a valid int"),
    "selfplay: no fresh attack": ("selfplay.replay_fraction=0.95", "would replay all 8 prompts"),
    "eval: negative temperature": ("eval.attack_temperature=-1", "eval.attack_temperature=-1.0 must be in [0, 100]"),
}


def run_train(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def a_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "a-file"
    path.write_text("not a directory\n")
    return path


@pytest.fixture(scope="module")
def subprocess_runs(a_file, tmp_path_factory):
    """Every SUBPROCESS_CASES command, run in parallel once for the module."""
    tmp = tmp_path_factory.mktemp("sub")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = {case: pool.submit(run_train, *BASE, f"out_dir={tmp / 'out'}", f"sft_cache_dir={tmp / 'cache'}",
                                     override.format(file=a_file))
                   for case, (override, _) in SUBPROCESS_CASES.items()}
        runs = {case: future.result() for case, future in futures.items()}
    assert not (tmp / "out").exists() and not (tmp / "cache").exists(), "a run started"
    return runs


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_train_py_refuses_a_bad_value_in_one_line_with_status_2(case, subprocess_runs, a_file):
    done = subprocess_runs[case]
    message = SUBPROCESS_CASES[case][1].format(file=a_file)
    assert done.returncode == 2 and one_line_error(done.stderr), done.stderr[-2000:]
    assert message in done.stderr, done.stderr


# Accepted edge values (0 where 0 is allowed, the caps, huge where there is no cap) on the tiny
# preset, grouped into three short runs. A run may still stop on a non-finite number (exit 2 and
# one line, RunStopped); it must not crash. Run lengths (steps, iterations, epochs) are left out:
# huge ones are valid and only cost time.
EDGE_RUNS = {
    "self-play and evaluation at their lower edges": [
        "checkpoint_every=0", "selfplay.eval_every=0", "selfplay.harmful_fraction=0", "selfplay.replay_fraction=0",
        "selfplay.ucb_c=0", "selfplay.ptx_coef=0", "selfplay.pool_capacity=1", "selfplay.seeds_per_iteration=1",
        "selfplay.attack_max_new_tokens=1", "selfplay.response_max_new_tokens=1", "selfplay.ptx_batch_size=1",
        "ppo.kl_coef=0", "ppo.gamma=0", "ppo.lam=0", "ppo.vf_coef=0", "ppo.missing_eos_penalty=0",
        "ppo.minibatch_size=1", "ppo.temperature=0.01", "eval.attack_temperature=0", "eval.seed=0",
        "eval.per_intent=1", "eval.attacks_per_seed=1", "eval.max_new_tokens=1", "eval.attack_max_new_tokens=1",
        "selfplay.eval_per_intent=1",
    ],
    "self-play at its caps and huge where nothing caps it": [
        f"checkpoint_every={HUGE_INT}", f"selfplay.eval_every={HUGE_INT}", f"selfplay.pool_capacity={HUGE_INT}",
        "selfplay.harmful_fraction=1", "selfplay.replay_fraction=0.8", "selfplay.ucb_c=1000", "selfplay.ptx_coef=1000",
        "ppo.kl_coef=1000", "ppo.vf_coef=1000", "ppo.ent_coef=1000", "ppo.missing_eos_penalty=-1000",
        "ppo.max_grad_norm=1e30", "ppo.clip_range_value=1e30", "ppo.lr=1", "ppo.adam_eps=1", "ppo.temperature=100",
        "ppo.gamma=1", "ppo.lam=1", "eval.attack_temperature=100", "eval.seed=4294967295",
        "selfplay.replay=uniform",
    ],
    "the supervised stage at its edges": [
        "stage=sft", "seed=4294967295", "world_seed=4294967295", "model.n_head=1", "model.bias=false",
        "sft.safety_variants=0", "sft.refusals_per_intent=0", "sft.attacker_variants=1", "sft.capability_replay=0",
        "sft.min_lr_ratio=0", "sft.warmup_steps=0", "sft.weight_decay=1", "sft.lr=1", "sft.eval_fraction=0",
        "sft.capability_steps=1", "sft.alignment_steps=1", "sft.eval_every=1", "sft.batch_size=1",
        "sft.grad_clip=1e30", "model.vocab_size=1",
    ],
}


@pytest.mark.parametrize("name", list(EDGE_RUNS))
def test_accepted_edge_values_run_on_the_tiny_preset(name, tmp_path_factory, capsys):
    cache = tmp_path_factory.getbasetemp() / "edge-cache"  # shared: the first two runs train one model
    out = tmp_path_factory.mktemp("edge")
    argv = BASE + [f"out_dir={out}", f"sft_cache_dir={cache}", *EDGE_RUNS[name]]
    build_config(argv)  # every value is accepted
    threads = torch.get_num_threads()
    capsys.readouterr()
    try:
        code = train.main(argv)  # an exception here is the crash this test is after
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code != 0:  # stopped on a non-finite number: the one "error:" line is the last (tqdm writes above it)
        assert code == 2 and [line for line in err.splitlines() if "error" in line] == [err.splitlines()[-1]], err
        assert err.splitlines()[-1].startswith("error: self-play stopped"), err
    else:
        assert (out / "results.json").exists()


# ============================================================ (b) files that are not checkpoints

class RunsCode:
    """Unpickling this would run `touch MARKER`; weights-only loading must refuse it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _torch_saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def truncated_checkpoint() -> bytes:
    """The first half of a real checkpoint (`checkpoint.save_model`'s payload) of a tiny model."""
    tokenizer = Tokenizer.train(["a small world of words", "ask and answer"] * 4, config.MIN_VOCAB)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32))
    data = _torch_saved(checkpoint.model_payload(model, tokenizer))
    return data[: len(data) // 2]


BAD_FILES = {
    "random bytes": (lambda marker: random.Random(0).randbytes(4096), "truncated or not a checkpoint"),
    "text": (lambda marker: b"hello, this is not a checkpoint\nsecond line\n", "truncated or not a checkpoint"),
    "empty": (lambda marker: b"", "truncated or not a checkpoint"),
    "truncated zip": (lambda marker: truncated_checkpoint(), "truncated or not a checkpoint"),
    "pickle holding code": (lambda marker: _torch_saved({"model": RunsCode(marker)}), "refusing to load"),
    "plain pickle holding code": (lambda marker: pickle.dumps(RunsCode(marker), protocol=2), "refusing to load"),
}


def plant(kind: str, path: pathlib.Path) -> pathlib.Path:
    """Write the bad file `kind` at `path`; return the marker file its code would create."""
    marker = path.parent / f"code-ran-{path.name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BAD_FILES[kind][0](marker))
    return marker


def command(where: str, bad: pathlib.Path, tmp: pathlib.Path):
    """(argv, main) for the command `where` that loads the bad file at `bad`."""
    if where == "evaluate --ckpt":
        return ["--ckpt", str(bad)], evaluate.main
    if where == "train.py resuming":  # out_dir/checkpoint.pt
        return BASE + [f"out_dir={bad.parent}", f"sft_cache_dir={tmp / 'cache'}"], train.main
    if where == "train.py supervised cache":  # sft_cache_dir/sft-<fingerprint>.pt
        return BASE + [f"out_dir={tmp / 'out'}", f"sft_cache_dir={bad.parent}"], train.main
    raise KeyError(where)


def bad_path(where: str, tmp: pathlib.Path) -> pathlib.Path:
    if where == "evaluate --ckpt":
        return tmp / "given" / "model.pt"
    if where == "train.py resuming":
        return tmp / "run" / "checkpoint.pt"
    cfg = build_config(BASE + [f"out_dir={tmp / 'out'}", f"sft_cache_dir={tmp / 'cache-dir'}"])
    return tmp / "cache-dir" / f"sft-{sft_fingerprint(cfg)}.pt"


COMMANDS = ["evaluate --ckpt", "train.py resuming", "train.py supervised cache"]


@pytest.mark.parametrize("kind", list(BAD_FILES))
@pytest.mark.parametrize("where", COMMANDS)
def test_a_file_that_is_not_a_checkpoint_gets_one_line_and_status_2(where, kind, tmp_path, capsys):
    bad = bad_path(where, tmp_path)
    marker = plant(kind, bad)
    before = bad.read_bytes()
    argv, main = command(where, bad, tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and one_line_error(err), err
    assert BAD_FILES[kind][1] in err and str(bad) in err, err
    assert not marker.exists(), "unpickling ran the file's code"
    assert bad.read_bytes() == before


SUBPROCESS_FILES = [("evaluate --ckpt", "text"), ("evaluate --ckpt", "pickle holding code"),
                    ("train.py resuming", "random bytes"), ("train.py supervised cache", "truncated zip")]


def test_the_real_commands_refuse_bad_files_in_one_line(tmp_path):
    """A few of the cases above through `python -m minissp.evaluate` and `python train.py` (in parallel)."""
    jobs = []
    for where, kind in SUBPROCESS_FILES:
        tmp = tmp_path / f"{where}-{kind}".replace(" ", "_")
        bad = bad_path(where, tmp)
        marker = plant(kind, bad)
        argv, main = command(where, bad, tmp)
        head = ["-m", "minissp.evaluate"] if main is evaluate.main else ["train.py"]
        jobs.append((where, kind, bad, marker, [sys.executable, *head, *argv]))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda job: subprocess.run(job[4], cwd=ROOT, capture_output=True, text=True,
                                                        timeout=240), jobs))
    for (where, kind, bad, marker, _), done in zip(jobs, runs):
        assert done.returncode == 2 and one_line_error(done.stderr), (where, kind, done.stderr[-2000:])
        assert BAD_FILES[kind][1] in done.stderr and str(bad) in done.stderr, (where, kind, done.stderr)
        assert not marker.exists()
