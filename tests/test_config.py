import pytest

from minissp import config
from minissp.config import PRESETS, ConfigError, RunConfig, build_config, from_json, keys, sft_fingerprint, to_json


def test_defaults_and_overrides():
    cfg = build_config(["ppo.lr=3e-4", "selfplay.replay=uniform", "seed=3"])
    assert cfg.ppo.lr == 3e-4 and cfg.selfplay.replay == "uniform" and cfg.seed == 3
    assert build_config([]).ppo.lr == RunConfig().ppo.lr


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds(preset, tmp_path):
    needs = [f"sft.init_from={tmp_path}"] if preset == "pretrained_smoke" else []  # it names no model itself
    build_config([f"preset={preset}", *needs])


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'ppo.lr'"):
        build_config(["ppo.lrr=1"])


@pytest.mark.parametrize("arg, message", [
    ("ppo.lr=fast", "not a valid float"),
    ("selfplay.iterations=1.5", "not a valid int"),
    ("selfplay.replay_fraction=1.5", "must be in"),
    ("selfplay.replay=sometimes", "must be ucb"),
    ("model.n_head=3", "model.n_head=3 must divide model.n_embd=128"),
    ("model.n_head=0", r"model.n_head=0 must be in \[1, 1024\]"),
    ("selfplay.iterations=0", "selfplay.iterations=0 must be >= 1"),
    ("eval.max_new_tokens=128", "eval.max_new_tokens=128 must be < model.block_size=128"),
    ("model.n_embd=16384", "parameters, more than the cap"),
    ("device=gpu", "device='gpu' must be"),
    ("preset=huge", "unknown preset"),
    ("justaword", "key=value"),
    ("ppo.lr=nan", "not a valid float"),
])
def test_bad_values_are_refused_with_their_field_named(arg, message):
    with pytest.raises(ConfigError, match=message):
        build_config([arg])


def test_json_round_trip():
    cfg = build_config(["preset=tiny", "ppo.kl_coef=0.2"])
    assert from_json(to_json(cfg)) == cfg
    assert "ppo.kl_coef" in keys()


def test_sft_fingerprint_sees_config_and_source_edits(tmp_path, monkeypatch):
    base = sft_fingerprint(RunConfig())
    assert sft_fingerprint(RunConfig()) == base
    assert sft_fingerprint(build_config(["threads=1", "out_dir=elsewhere"])) == base  # not shaping
    assert sft_fingerprint(build_config(["sft.alignment_steps=901"])) != base
    source = tmp_path / "world.py"
    source.write_text("A = 1\n")
    monkeypatch.setattr(config, "_SFT_SOURCES", [*config._SFT_SOURCES, str(source)])
    edited = sft_fingerprint(RunConfig())
    assert edited != base
    source.write_text("A = 2\n")
    assert sft_fingerprint(RunConfig()) != edited
