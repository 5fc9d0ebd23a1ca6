"""The whole run, stage by stage: supervised model (cached), self-play, evaluation.

`train.py` is a thin command line over `run`; the experiment grid calls the
same pieces. Outputs of a run, all under `out_dir`:

    config.json              the resolved config
    sft_metrics.jsonl        supervised losses (when the stage ran, not when cached)
    selfplay_metrics.jsonl   one line per self-play iteration
    final.pt                 the self-play model (safe to load: weights and JSON only)
    results.json, results.md the before/after evaluation
"""

from __future__ import annotations

import copy
import json
import os
import random
import resource
import time

import torch

from . import checkpoint
from .config import RunConfig, sft_fingerprint, to_json
from .device import pick_device
from .evaluate import EvalConfig, evaluate, evaluate_defender, format_table
from .judge import Judge
from .ppo import make_optimizer
from .selfplay import SelfPlay, run_selfplay
from .sft import encode_example, run_sft
from .world import World
from .world.corpora import safety_corpus

TRACKED = ("helpfulness", "refusal_harmful", "over_refusal_borderline", "over_refusal_adversarial_benign",
           "asr_seen", "asr_unseen")


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def supervised_model(cfg: RunConfig, world: World, device, log=print):
    """The supervised checkpoint for this config: loaded from the cache, or trained and cached."""
    path = os.path.join(cfg.sft_cache_dir, f"sft-{sft_fingerprint(cfg)}.pt")
    if os.path.exists(path):
        log(f"supervised stage: reusing {path}")
        model, tokenizer, _ = checkpoint.load_model(path, device)
        return model, tokenizer, path
    log(f"supervised stage: training from scratch -> {path}")
    start = time.time()
    metrics = os.path.join(cfg.out_dir, "sft_metrics.jsonl")
    model, tokenizer = run_sft(world, cfg.model, cfg.sft, path, seed=cfg.seed, device=device, metrics_path=metrics)
    log(f"supervised stage: {time.time() - start:.0f} s")
    return model, tokenizer, path


def frozen_copy(model):
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def held_out_tracker(tokenizer, world: World, model, cfg: EvalConfig):
    """evaluate_fn for run_selfplay: the defender's held-out numbers, cheaply."""
    judge = Judge(world)

    def evaluate_fn(iteration: int) -> dict:
        results = evaluate_defender(model, tokenizer, world, judge, cfg)
        return {key: results[key] for key in TRACKED} | {k: v for k, v in results.items() if k.startswith("asr/")}
    return evaluate_fn


def ptx_data(cfg: RunConfig, world: World, tokenizer):
    """The safety-tuning corpus, tokenized for PPO-ptx (defender examples only)."""
    examples = safety_corpus(world.intents, random.Random(cfg.seed), cfg.sft.safety_variants,
                             cfg.sft.refusals_per_intent)
    return [encode_example(tokenizer, e, loss_on="response") for e in examples]


def make_game(cfg: RunConfig, model, tokenizer, world: World, frozen_attacker=None, frozen_defender=None) -> SelfPlay:
    ref = frozen_copy(model)
    optimizer = make_optimizer(model, cfg.ppo)
    ptx = ptx_data(cfg, world, tokenizer) if cfg.selfplay.ptx_coef > 0 and frozen_defender is None else None
    return SelfPlay(model, ref, tokenizer, world, cfg.selfplay, cfg.ppo, optimizer, seed=cfg.seed,
                    frozen_attacker=frozen_attacker, frozen_defender=frozen_defender, ptx_data=ptx)


def timing_split(history: list[dict]) -> dict:
    """Seconds spent in sampling, judging and PPO updates over a run."""
    return {key: sum(m.get(key, 0.0) for m in history) for key in ("time/sampling", "time/judging", "time/ppo")}


def peak_memory_gb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(cfg: RunConfig, log=print) -> dict:
    """Run the stages `cfg.stage` asks for; return the results dict that results.json holds."""
    start = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    os.makedirs(cfg.out_dir, exist_ok=True)
    checkpoint.atomic_write_text(os.path.join(cfg.out_dir, "config.json"), to_json(cfg))
    world = World(cfg.world_seed)

    model, tokenizer, sft_path = supervised_model(cfg, world, device, log)
    columns = {"supervised": evaluate(model, tokenizer, world, cfg.eval)}
    if cfg.stage in ("selfplay", "all"):
        game = make_game(cfg, model, tokenizer, world)
        tracker = held_out_tracker(tokenizer, world, model, cfg.eval)
        metrics_path = os.path.join(cfg.out_dir, "selfplay_metrics.jsonl")
        if os.path.exists(metrics_path):
            os.remove(metrics_path)
        history = run_selfplay(game, cfg.selfplay.iterations, metrics_path, tracker)
        checkpoint.save_model(os.path.join(cfg.out_dir, "final.pt"), model, tokenizer,
                              world_seed=world.seed, seed=cfg.seed)
        columns["self-play"] = evaluate(model, tokenizer, world, cfg.eval)
        columns["self-play"]["timing"] = timing_split(history)

    table = format_table(columns)
    results = {"columns": columns, "table": table, "sft_checkpoint": sft_path,
               "wall_time_s": time.time() - start, "peak_memory_gb": peak_memory_gb(), "device": str(device)}
    checkpoint.atomic_write_text(os.path.join(cfg.out_dir, "results.json"), json.dumps(results, indent=1))
    checkpoint.atomic_write_text(os.path.join(cfg.out_dir, "results.md"), table + "\n")
    log(table)
    if "self-play" in columns:
        split = columns["self-play"]["timing"]
        log("self-play time: " + ", ".join(f"{k.split('/')[1]} {v:.0f} s" for k, v in split.items()))
    log(f"wall time {results['wall_time_s']:.0f} s, peak memory {results['peak_memory_gb']:.2f} GB, "
        f"outputs in {cfg.out_dir}/")
    return results
