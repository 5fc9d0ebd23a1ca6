"""Configs: one dataclass per stage, presets, and `key=value` overrides from the command line.

    python train.py                                  # the "cpu" preset
    python train.py preset=gpu                       # the single-GPU preset
    python train.py selfplay.iterations=50 ppo.lr=3e-4 out_dir=runs/short

Every field is documented where its stage defines it (`GPTConfig` in model.py,
`SFTConfig` in sft.py, `PPOConfig` in ppo.py, `SelfPlayConfig` in selfplay.py,
`EvalConfig` in evaluate.py). Overrides are parsed by the field's type; an
unknown key is refused with the closest valid key suggested, and a value of
the wrong type or out of range is refused with its field named. No `exec`,
no `eval`: a config file is JSON.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field, fields, is_dataclass

from .evaluate import EvalConfig
from .model import GPTConfig
from .ppo import PPOConfig
from .selfplay import SelfPlayConfig
from .sft import SFTConfig


class ConfigError(ValueError):
    """A config key or value is wrong; the message names it."""


@dataclass
class RunConfig:
    """A whole run: supervised stage, self-play and evaluation."""

    out_dir: str = "runs/ssp"
    """Where the run writes its config, metrics, checkpoints and results."""
    stage: str = "all"
    """"sft" (supervised stage only), "selfplay" (from the cached SFT checkpoint) or "all"."""
    seed: int = 0
    """Seeds the model init, sampling, seeds drawn and PPO shuffles."""
    world_seed: int = 0
    """Fixes the world's train / held-out split (keep it fixed across seeds to compare runs)."""
    device: str = "auto"
    """"auto" (cuda when present), "cpu", "cuda" or "cuda:N"."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    sft_cache_dir: str = "runs/cache"
    """Supervised checkpoints are cached here by a hash of everything that shapes them."""
    checkpoint_every: int = 10
    """Self-play iterations between checkpoints of the run, out_dir/checkpoint.pt (0 = only at the end)."""
    resume: bool = True
    """Continue from out_dir/checkpoint.pt when it exists (false: start over and overwrite it)."""
    model: GPTConfig = field(default_factory=GPTConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    selfplay: SelfPlayConfig = field(default_factory=SelfPlayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> "RunConfig":
        if self.stage not in ("sft", "selfplay", "all"):
            raise ConfigError(f"stage must be 'sft', 'selfplay' or 'all', got {self.stage!r}")
        checks = [
            ("selfplay.replay_fraction", 0 <= self.selfplay.replay_fraction < 1, "must be in [0, 1)"),
            ("selfplay.harmful_fraction", 0 <= self.selfplay.harmful_fraction <= 1, "must be in [0, 1]"),
            ("selfplay.replay", self.selfplay.replay in ("ucb", "uniform", "none"), "must be ucb, uniform or none"),
            ("ppo.kl_coef", self.ppo.kl_coef >= 0, "must be >= 0"),
            ("ppo.clip_range", 0 < self.ppo.clip_range < 1, "must be in (0, 1)"),
            ("sft.capability_replay", 0 <= self.sft.capability_replay < 1, "must be in [0, 1)"),
            ("threads", self.threads >= 0, "must be >= 0"),
            ("checkpoint_every", self.checkpoint_every >= 0, "must be >= 0"),
            ("selfplay.eval_every", self.selfplay.eval_every >= 0, "must be >= 0"),
            ("selfplay.ucb_c", self.selfplay.ucb_c >= 0, "must be >= 0"),
            ("selfplay.ptx_coef", self.selfplay.ptx_coef >= 0, "must be >= 0"),
            ("model.dropout", self.model.dropout == 0 or self.stage == "sft", "must be 0 for self-play (PPO)"),
        ]
        for key, ok, why in checks:
            if not ok:
                raise ConfigError(f"{key}={_get(self, key)!r} {why}")
        for key in ("selfplay.iterations", "selfplay.seeds_per_iteration", "selfplay.pool_capacity",
                    "sft.batch_size", "selfplay.attack_max_new_tokens", "selfplay.response_max_new_tokens",
                    "selfplay.ptx_batch_size", "eval.per_intent", "eval.max_new_tokens",
                    "eval.attack_max_new_tokens", "eval.attacks_per_seed", "eval.batch_size"):
            if _get(self, key) <= 0:
                raise ConfigError(f"{key}={_get(self, key)!r} must be positive")
        # re-run the stage configs' own checks (PPOConfig, GPTConfig) on the overridden values
        for section in (self.model, self.ppo):
            try:
                type(section)(**dataclasses.asdict(section))
            except ValueError as e:
                raise ConfigError(str(e)) from None
        return self


PRESETS: dict[str, dict[str, object]] = {
    # the default: the whole pipeline in about 9 minutes on a 2-core laptop CPU
    "cpu": {},
    # one GPU: a wider model trained longer, bigger self-play batches
    "gpu": {
        "model.n_layer": 6, "model.n_embd": 256, "model.n_head": 8,
        "sft.capability_steps": 3000, "sft.alignment_steps": 3000, "sft.batch_size": 128,
        "selfplay.iterations": 400, "selfplay.seeds_per_iteration": 128, "ppo.minibatch_size": 64,
    },
    # seconds, for tests and smoke runs: nothing it learns means anything
    "tiny": {
        "model.n_layer": 1, "model.n_embd": 32, "model.n_head": 2, "model.block_size": 256, "sft.vocab_size": 400,
        "sft.capability_variants": 1, "sft.safety_variants": 1, "sft.refusals_per_intent": 2,
        "sft.wrapped_refusals": 0,  # 3 would outnumber the 2 plain refusals per intent
        "sft.attacker_variants": 1, "sft.capability_steps": 6, "sft.alignment_steps": 6,
        "sft.batch_size": 8, "sft.eval_every": 5,
        "selfplay.iterations": 3, "selfplay.seeds_per_iteration": 8, "selfplay.eval_every": 2,
        "selfplay.attack_max_new_tokens": 16, "selfplay.response_max_new_tokens": 8,
        "ppo.epochs": 1, "ppo.minibatch_size": 8,
        "eval.per_intent": 1, "eval.attacks_per_seed": 1, "eval.max_new_tokens": 8,
        "eval.attack_max_new_tokens": 16,
    },
}


def keys(cfg=None, prefix: str = "") -> list[str]:
    """Every settable key, dotted ("ppo.lr")."""
    cfg = cfg if cfg is not None else RunConfig()
    out = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        out += keys(value, f"{prefix}{f.name}.") if is_dataclass(value) else [f"{prefix}{f.name}"]
    return out


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _parse(text: str, current, key: str):
    """Turn an override's text into the type of the field's current value."""
    kind = type(current)
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        return text
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not a valid {kind.__name__}") from None


def set_value(cfg: RunConfig, key: str, text: str) -> None:
    """Set one dotted key from its text form, or raise ConfigError naming the problem."""
    valid = keys(cfg)
    if key not in valid:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else "; see README.md for the keys"
        raise ConfigError(f"unknown config key {key!r}{hint}")
    *path, last = key.split(".")
    target = cfg
    for part in path:
        target = getattr(target, part)
    setattr(target, last, _parse(str(text), getattr(target, last), key))


def build_config(args: list[str]) -> RunConfig:
    """A RunConfig from `key=value` arguments; `preset=NAME` picks the base preset."""
    pairs = []
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"arguments are key=value, got {arg!r} (e.g. selfplay.iterations=50)")
        key, value = arg.split("=", 1)
        pairs.append((key.strip(), value.strip()))
    presets = [v for k, v in pairs if k == "preset"]
    preset = presets[-1] if presets else "cpu"
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {sorted(PRESETS)}")
    cfg = RunConfig()
    for key, value in PRESETS[preset].items():
        set_value(cfg, key, str(value))
    for key, value in pairs:
        if key != "preset":
            set_value(cfg, key, value)
    return cfg.validate()


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def to_json(cfg: RunConfig) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_json(text: str) -> RunConfig:
    """The inverse of to_json: unknown keys are refused like overrides are."""
    cfg = RunConfig()
    data = json.loads(text)

    def walk(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                set_value(cfg, f"{prefix}{k}", json.dumps(v) if isinstance(v, bool) else str(v))

    walk(data)
    return cfg.validate()


# The modules whose source shapes a supervised checkpoint (hashed by sft_fingerprint).
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_SFT_SOURCES = sorted(
    [os.path.join(_PACKAGE, name) for name in ("model.py", "tokenizer.py", "chat.py", "sft.py")]
    + [os.path.join(_PACKAGE, "world", name) for name in os.listdir(os.path.join(_PACKAGE, "world"))
       if name.endswith(".py")])


def sft_fingerprint(cfg: RunConfig) -> str:
    """A short hash of everything that shapes the supervised checkpoint.

    That is the configs and seeds, and also the source of the modules the
    supervised stage runs, so that editing the world or the trainer never
    reuses a stale cached checkpoint.
    """
    shaping = {"model": dataclasses.asdict(cfg.model), "sft": dataclasses.asdict(cfg.sft),
               "seed": cfg.seed, "world_seed": cfg.world_seed}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode())
    for path in _SFT_SOURCES:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]

