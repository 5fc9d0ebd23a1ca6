"""The methods the experiment compares, and one (method, seed) cell of it.

Per seed, one supervised checkpoint (cached, shared with train.py's cache) is
the start of every method:

    sft          the aligned base, untouched;
    static       static adversarial training: the defender tuned by supervised
                 learning on a fixed, pre-collected set of attacks in the *seen*
                 families (refused) and benign look-alikes (answered helpfully);
    defender_rl  PPO on the defender only, against the frozen supervised attacker;
    ssp_none     SSP without replay;
    ssp_uniform  SSP, replay sampled uniformly;
    ssp_ucb      SSP, replay sampled by UCB (the paper's method).

Then each final defender is frozen and a fresh attacker (the supervised
checkpoint again) is trained against it by PPO (`adaptive_attack`, no replay);
its ASR on held-out seeds is the "adaptive" ASR. `run_cell` does all of this
for one method and one seed and writes the cell's result.json; the grid
(`experiments.py`) runs the cells, caches them and writes the table.

**Budget of defender updates** (our definition): every trained method gets
`selfplay.iterations` iterations. In each, the defender's loss covers
`selfplay.seeds_per_iteration` defender sequences, `ppo.epochs` times, in
shuffled minibatches of `ppo.minibatch_size`, with the same optimizer (Adam at
`ppo.lr`, gradients clipped to `ppo.max_grad_norm`), every step's loss holding
the same PPO-ptx term (`pipeline.ptx_data`). For `static` those sequences are drawn
from the fixed set (harmful and benign in SSP's `harmful_fraction`) and the
loss is the response-only cross-entropy; for the RL methods they are the
iteration's games. (SSP's PPO batch also holds the attacker's sequences, so it
takes more optimizer steps, each with its PPO-ptx term; the defender's share
is the same.) We chose the PPO optimizer for `static`, not the supervised
stage's, so that only the data and the objective differ between the methods.

Our choice, not the paper's: the methods' details above; defender-only RL and
the adaptive attacker use no replay; the "attack diversity" of a run is that
of the attacker it trained against, rated on held-out seeds (the supervised
attacker for `sft` and `defender_rl`, its own attacker role for SSP, and the
fixed set's templates for `static`). Simplified: every run is much shorter
than the paper's (train.py's 100 iterations).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint
from .config import RunConfig, from_json
from .diversity import distinct_n, self_bleu
from .evaluate import EvalConfig, evaluate_attacker, evaluate_defender
from .judge import Judge
from .model import pick_device
from .pipeline import (frozen_copy, held_out_numbers, make_game, ptx_data, seed_everything, selfplay_stage,
                       supervised_model)
from .ppo import ppo_optimizer
from .sft import encode_example, length_grouped_batches, supervised_step
from .world import DEFENDER, HARMFUL, HELDOUT, SEEN_FAMILIES, TRAIN, World
from .world.corpora import Example, compliant_example, wrap
from .world.intents import refusal

METHODS = {  # name: (title, replay sampler of its self-play; None for the methods without one)
    "sft": ("SFT (aligned base)", None),
    "static": ("static adversarial training", None),
    "defender_rl": ("defender-only RL vs frozen attacker", "none"),
    "ssp_none": ("SSP, no replay", "none"),
    "ssp_uniform": ("SSP, uniform replay", "uniform"),
    "ssp_ucb": ("SSP, UCB replay", "ucb"),
}
SELF_PLAY = ("ssp_none", "ssp_uniform", "ssp_ucb")


# -------------------- the static baseline ----------------------------------

def static_dataset(world: World, rng: random.Random, variants: int) -> tuple[list[Example], list[Example]]:
    """The fixed adversarial set: every training intent in every *seen* family, `variants` times.
    Harmful requests are answered with a refusal, benign and borderline look-alikes helpfully."""
    harmful, benign = [], []
    for intent in world.select(TRAIN):
        for family in SEEN_FAMILIES:
            for _ in range(variants):
                if intent.harmful:
                    harmful.append(Example(DEFENDER, wrap(intent, family, rng), refusal(rng), intent.id, family))
                else:
                    benign.append(compliant_example(intent, family, rng))
    return harmful, benign


def train_static(cfg: RunConfig, model, tokenizer, world: World, metrics_path: str) -> list[dict]:
    """Static adversarial training under the defender budget of self-play (module docstring)."""
    rng = random.Random(cfg.seed)
    harmful, benign = static_dataset(world, rng, cfg.sft.safety_variants)
    harmful = [encode_example(tokenizer, e, loss_on="response") for e in harmful]
    benign = [encode_example(tokenizer, e, loss_on="response") for e in benign]
    ptx = ptx_data(cfg, world, tokenizer) if cfg.selfplay.ptx_coef > 0 else None
    ptx_batches = length_grouped_batches(ptx, cfg.selfplay.ptx_batch_size, rng) if ptx else None
    optimizer = ppo_optimizer(model, cfg.ppo)
    n = cfg.selfplay.seeds_per_iteration
    n_harmful = round(n * cfg.selfplay.harmful_fraction)
    every, history = cfg.selfplay.eval_every, []
    for iteration in tqdm(range(cfg.selfplay.iterations), desc="static", dynamic_ncols=True):
        batch = [rng.choice(harmful) for _ in range(n_harmful)] + [rng.choice(benign) for _ in range(n - n_harmful)]
        losses, ptx_losses = [], []
        for _ in range(cfg.ppo.epochs):
            rng.shuffle(batch)
            for start in range(0, n, cfg.ppo.minibatch_size):
                mb = batch[start:start + cfg.ppo.minibatch_size]
                # the PPO-ptx term joins every step's loss, as it joins every PPO minibatch's
                loss, ptx_loss = supervised_step(model, optimizer, mb, tokenizer.pad_id, cfg.ppo.max_grad_norm,
                                                 next(ptx_batches) if ptx_batches else None, cfg.selfplay.ptx_coef)
                losses.append(loss)
                ptx_losses.append(ptx_loss)
        metrics = {"iteration": iteration, "static/loss": float(np.mean(losses))}
        if ptx_batches is not None:
            metrics["ptx/loss"] = float(np.mean(ptx_losses))
        if every and ((iteration + 1) % every == 0 or iteration + 1 == cfg.selfplay.iterations):
            metrics.update({f"eval/{k}": v for k, v in held_out_numbers(model, tokenizer, world, cfg).items()})
        history.append(metrics)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
    return history


def static_attack_stats(world: World, cfg: EvalConfig) -> dict:
    """Diversity of the fixed set's attacks, written for the held-out seeds the attackers are rated on."""
    rng = random.Random(cfg.seed)
    attacks = [wrap(intent, rng.choice(SEEN_FAMILIES), rng)
               for intent in world.select(HELDOUT, (HARMFUL,)) for _ in range(cfg.attacks_per_seed)]
    return {"attack_distinct2": distinct_n(attacks), "attack_self_bleu": self_bleu(attacks)}


# -------------------- one job = one (method, seed) cell -------------------

@contextlib.contextmanager
def job_context(cfg: RunConfig):
    """A job's setup: its folder, CPU threads, every RNG seeded, and its printed output in log.txt."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    with open(os.path.join(cfg.out_dir, "log.txt"), "w") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def train_supervised(spec: dict) -> str:
    """Job: the seed's supervised checkpoint (trained once, then cached). Returns its path."""
    cfg = from_json(spec["config"])
    with job_context(cfg):
        return supervised_model(cfg, World(cfg.world_seed), pick_device(cfg.device))[2]


def adaptive_attack(cfg: RunConfig, sft_path: str, defender, world: World, judge: Judge, iterations: int) -> dict:
    """A fresh attacker (the supervised checkpoint) trained by PPO against the frozen `defender`."""
    attacker, tokenizer, _ = checkpoint.load_model(sft_path, next(defender.parameters()).device)
    attacker.bf16 = cfg.precision == "bf16"
    before = evaluate_attacker(attacker, tokenizer, world, judge, cfg.eval, defender=defender)
    cfg = copy.deepcopy(cfg)
    cfg.selfplay.replay = "none"
    cfg.selfplay.iterations = iterations
    game = make_game(cfg, attacker, tokenizer, world, frozen_defender=defender)
    history = selfplay_stage(cfg, game, pick_device(cfg.device), evaluate_every=0, checkpoints=False, name="adaptive")
    after = evaluate_attacker(attacker, tokenizer, world, judge, cfg.eval, defender=defender)
    return {"before": before, "after": after, "history": history}


def run_cell(spec: dict) -> dict:
    """Job: train one method from the seed's supervised checkpoint, evaluate it, attack it; cache the result."""
    cfg, method = from_json(spec["config"]), spec["method"]
    with job_context(cfg):
        start = time.time()
        device = pick_device(cfg.device)
        world = World(cfg.world_seed)
        judge = Judge(world)
        model, tokenizer, sft_path = supervised_model(cfg, world, device)
        sft = frozen_copy(model)
        start_eval = held_out_numbers(model, tokenizer, world, cfg)
        metrics_path = os.path.join(cfg.out_dir, "static_metrics.jsonl")
        for name in ("static_metrics.jsonl", "selfplay_metrics.jsonl", "adaptive_metrics.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(cfg.out_dir, name))
        history = []
        if method == "static":
            history = train_static(cfg, model, tokenizer, world, metrics_path)
        elif method != "sft":
            cfg.selfplay.replay = METHODS[method][1]
            game = make_game(cfg, model, tokenizer, world, frozen_attacker=sft if method == "defender_rl" else None)
            history = selfplay_stage(cfg, game, device, checkpoints=False)
        model.eval()
        trained = time.time()
        defender = evaluate_defender(model, tokenizer, world, judge, cfg.eval)
        if method == "static":
            attacker = static_attack_stats(world, cfg.eval)
        else:  # the attacker this defender trained against, rated on held-out seeds
            own = model if method in SELF_PLAY else sft
            attacker = evaluate_attacker(own, tokenizer, world, judge, cfg.eval, defender=model)
        evaluated = time.time()
        adaptive = adaptive_attack(cfg, sft_path, model, world, judge, spec["adaptive_iterations"])
        numbers = {k: v for k, v in defender.items() if isinstance(v, float)}
        numbers.update({
            "asr_adaptive": adaptive["after"]["attacker_asr"],
            "asr_adaptive_start": adaptive["before"]["attacker_asr"],
            "adaptive_distinct2": adaptive["after"]["attack_distinct2"],
            "attack_distinct2": attacker["attack_distinct2"],
            "attack_self_bleu": attacker["attack_self_bleu"],
            # seconds: the whole cell, training (with its held-out checks), final evaluation, adaptive attack
            "time_s": time.time() - start,
            "time_train_s": trained - start,
            "time_eval_s": evaluated - trained,
            "time_adaptive_s": time.time() - evaluated,
        })
        result = {"method": method, "seed": cfg.seed, "fingerprint": spec["fingerprint"], "numbers": numbers,
                  "start_eval": start_eval, "history": history, "adaptive_history": adaptive["history"],
                  "defender": defender, "attacker": attacker,
                  "adaptive": {k: adaptive[k] for k in ("before", "after")}, "sft_checkpoint": sft_path}
        checkpoint.atomic_write_text(os.path.join(cfg.out_dir, "result.json"), json.dumps(result))
    return result
