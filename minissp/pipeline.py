"""The whole run, stage by stage: supervised model (cached), self-play, evaluation.

`train.py` is a thin command line over `run`; the experiment grid calls the
same pieces. Outputs of a run, all under `out_dir`:

    config.json              the resolved config
    sft_metrics.jsonl        supervised losses (when the stage ran, not when cached)
    selfplay_metrics.jsonl   one line per self-play iteration (the same config and seed
                             on the same machine write the same bytes)
    selfplay_timing.jsonl    seconds spent per iteration in sampling, judging and PPO
    checkpoint.pt            the self-play run so far, every `checkpoint_every` iterations
                             and at the end; `run` resumes from it (`resume.py`)
    final.pt                 the self-play model (safe to load: weights and JSON only)
    results.json, results.md the before/after evaluation

Every checkpoint is written atomically and loaded with `weights_only=True`
(checkpoint.py). A NaN or inf in a loss, a gradient or a reward stops the run
with `RunStopped`, naming where it appeared; the last good checkpoint stays.

Under torchrun (`distributed.py`) every rank runs `run`: rank 0 trains or loads the supervised
model, evaluates and writes every file; the others wait for its cached checkpoint, then play and
learn their share of self-play.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import resource
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint, distributed, tracking
from .config import ConfigError, RunConfig, sft_fingerprint, to_json
from .distributed import Ranks
from .evaluate import SUMMARY, evaluate, evaluate_defender, format_table, safe_set_over_refusal
from .judge import Judge
from .model import pick_device
from .ppo import ppo_optimizer
from .pretrained import load_pretrained
from .resume import restore, resume_point, save_run
from .selfplay import SelfPlay
from .sft import encode_example, replay_documents, run_sft, safety_examples
from .world import World
from .world.corpora import capability_corpus

TRACKED = ("helpfulness", "refusal_harmful", "over_refusal_borderline", "over_refusal_adversarial_benign",
           "asr_seen", "asr_unseen", "asr_novel", "over_refusal_novel")
class RunStopped(RuntimeError):
    """Self-play met a non-finite loss, gradient or reward; the message says where."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def supervised_model(cfg: RunConfig, world: World, device, log=print, tracker: tracking.Tracker | None = None):
    """The supervised checkpoint for this config: loaded from the cache, or trained and cached
    (and then its metric lines also sent to `tracker`)."""
    path = os.path.join(cfg.sft_cache_dir, f"sft-{sft_fingerprint(cfg)}.pt")
    if os.path.exists(path):
        log(f"supervised stage: reusing {path}")
        model, tokenizer, _ = checkpoint.load_model(path, device, expected=cfg.model)
        model.bf16 = cfg.precision == "bf16"
        return model, tokenizer, path
    log(f"supervised stage: training from scratch -> {path}")
    start = time.time()
    metrics = os.path.join(cfg.out_dir, "sft_metrics.jsonl")
    try:
        model, tokenizer = run_sft(world, cfg.model, cfg.sft, path, seed=cfg.seed, device=device,
                                   metrics_path=metrics, bf16=cfg.precision == "bf16")
    except ValueError as e:  # the config does not fit the data: sft.vocab_size or model.block_size too small
        raise ConfigError(f"supervised stage: {e}") from None
    log(f"supervised stage: {time.time() - start:.0f} s")
    if tracker is not None:
        tracker.log_file(metrics, "sft/")
    return model, tokenizer, path


def frozen_copy(model):
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def held_out_numbers(model, tokenizer, world: World, cfg: RunConfig) -> dict:
    """The defender's held-out numbers, logged under eval/ during training: `evaluate_defender`
    with `selfplay.eval_per_intent` prompts per intent (cheaper than `evaluate`)."""
    checks = dataclasses.replace(cfg.eval, per_intent=cfg.selfplay.eval_per_intent)
    results = evaluate_defender(model, tokenizer, world, Judge(world), checks)
    return {key: results[key] for key in TRACKED} | {k: v for k, v in results.items() if k.startswith("asr/")}


def ptx_data(cfg: RunConfig, world: World, tokenizer):
    """The supervised data of PPO-ptx, tokenized (InstructGPT's "ptx" term, Ouyang et al. 2022).

    Stage 2's safety corpus and stage-1 documents replayed by the same rule
    and in the same share as stage 2 (`sft.replay_documents`: uniform, blind
    to split and label), the loss on the responses as in stage 2. Our choice,
    not the paper's (InstructGPT replays pre-training data only): the safety
    corpus is part of it, so the term keeps the supervised defender's
    behaviour as well as its knowledge.
    """
    rng = random.Random(cfg.seed)
    documents_rng = random.Random(rng.getrandbits(64))  # drawn before the split-dependent safety corpus
    safety = safety_examples(world, cfg.sft, rng)
    documents = replay_documents(capability_corpus(world.intents, documents_rng, cfg.sft.capability_variants),
                                 cfg.sft.capability_replay, len(safety), documents_rng)
    return [encode_example(tokenizer, e, loss_on="response") for e in safety + documents]


def make_game(cfg: RunConfig, model, tokenizer, world: World, frozen_attacker=None, frozen_defender=None,
              ranks: Ranks = Ranks()) -> SelfPlay:
    distributed.broadcast_model(model, ranks)  # every rank starts from rank 0's weights
    ref = frozen_copy(model)
    optimizer = ppo_optimizer(model, cfg.ppo)
    ptx = ptx_data(cfg, world, tokenizer) if cfg.selfplay.ptx_coef > 0 and frozen_defender is None else None
    return SelfPlay(model, ref, tokenizer, world, cfg.selfplay, cfg.ppo, optimizer, seed=cfg.seed,
                    frozen_attacker=frozen_attacker, frozen_defender=frozen_defender, ptx_data=ptx, ranks=ranks)


def timing_split(history: list[dict]) -> dict:
    """Seconds spent in sampling, judging and PPO updates over a run."""
    return {key: sum(m.get(key, 0.0) for m in history) for key in ("time/sampling", "time/judging", "time/ppo")}


def peak_memory_gb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_metrics(out_dir: str, history: list[dict], mode: str = "w", name: str = "selfplay") -> None:
    """Metrics to {name}_metrics.jsonl, their time/* fields to {name}_timing.jsonl.

    Keys are sorted and timings kept apart, so that the metrics file of a run
    is the same bytes whenever the run is repeated or resumed."""
    with open(os.path.join(out_dir, f"{name}_metrics.jsonl"), mode) as metrics, \
         open(os.path.join(out_dir, f"{name}_timing.jsonl"), mode) as timing:
        for m in history:
            metrics.write(json.dumps({k: v for k, v in m.items() if not k.startswith("time/")}, sort_keys=True) + "\n")
            timing.write(json.dumps({k: v for k, v in m.items() if k == "iteration" or k.startswith("time/")}) + "\n")


def _non_finite(e: Exception) -> bool:
    """A NaN/inf guard fired: ppo.py and SelfPlay raise FloatingPointError, the pool's reward check a ValueError."""
    return isinstance(e, FloatingPointError) or (isinstance(e, ValueError) and str(e).startswith("non-finite"))


def selfplay_stage(cfg: RunConfig, game: SelfPlay, device, history: list[dict] | None = None,
                   evaluate_every: int | None = None, checkpoints: bool = True, name: str = "selfplay",
                   tracker: tracking.Tracker | None = None) -> list[dict]:
    """The self-play loop, up to `cfg.selfplay.iterations`: play, learn, evaluate, log, checkpoint.

    `history` holds the metrics of the iterations already played (a restored game's).
    Held-out numbers join the metrics every `evaluate_every` iterations (default
    `cfg.selfplay.eval_every`; 0 = never) and after the last one. With `checkpoints`,
    out_dir/checkpoint.pt is written every `cfg.checkpoint_every` iterations and at the end.
    Returns every iteration's metrics; `name` names the metrics files (`write_metrics`);
    `tracker` also receives each line (logger=wandb).
    """
    tracker = tracker or tracking.Tracker()
    ranks = game.ranks  # with several (torchrun): metrics averaged over them, rank 0 writes
    path = os.path.join(cfg.out_dir, "checkpoint.pt")
    history = history or []
    total = cfg.selfplay.iterations
    every = cfg.selfplay.eval_every if evaluate_every is None else evaluate_every
    saved_at = game.iteration if history else None  # a restored game sits at its checkpoint
    if ranks.main:
        write_metrics(cfg.out_dir, history, name=name)  # a resumed run drops the lines written after its checkpoint
    label = "self-play" if name == "selfplay" else name.replace("_", " ")
    progress = tqdm(range(game.iteration, total), desc=label, dynamic_ncols=True,
                    initial=game.iteration, total=total, disable=not ranks.main)
    try:
        for _ in progress:
            games = game.play()  # seeds, attacks, replay, answers, judge, pool
            metrics = game.learn(games)  # one PPO update of both roles (and the PPO-ptx term)
            if ranks.active:
                metrics = distributed.reduce_metrics(metrics, ranks)
                distributed.check_in_sync(game.model, game.pool.to_json(), ranks)  # raises if they differ
                metrics.update({"dist/ranks": float(ranks.world_size), "dist/in_sync": 1.0})
            if ranks.main and every and (game.iteration % every == 0 or game.iteration == total):
                held_out = held_out_numbers(game.model, game.tokenizer, game.world, cfg)
                metrics.update({f"eval/{k}": v for k, v in held_out.items()})
            history.append(metrics)
            if ranks.main:
                write_metrics(cfg.out_dir, [metrics], mode="a", name=name)
                tracker.log(metrics)
            progress.set_postfix(asr=f"{metrics['game/asr']:.2f}", over_refusal=f"{metrics['game/over_refusal']:.2f}",
                                 kl=f"{metrics.get('defender/kl_to_ref', float('nan')):.2f}")
            if checkpoints and ((cfg.checkpoint_every and game.iteration % cfg.checkpoint_every == 0)
                                or game.iteration == total):
                states = distributed.gather(distributed.rank_state_json(game.rank_state()), ranks)
                if ranks.main:
                    save_run(path, cfg, game, history, device, states if ranks.active else None)  # atomic
                saved_at = game.iteration
    except (FloatingPointError, ValueError) as e:
        if not _non_finite(e):
            raise
        last = f"the last good checkpoint is {path} (iteration {saved_at})" if saved_at is not None else \
            "no checkpoint was written yet"
        raise RunStopped(f"{label} stopped at iteration {game.iteration}: {e}; {last}") from None
    return history


def run(cfg: RunConfig, log=print) -> dict:
    """Run the stages `cfg.stage` asks for; return the results dict that results.json holds.

    A self-play run continues from `out_dir/checkpoint.pt` when there is one
    (see `resume_point`); the resumed run ends with the same metrics, model and
    results as an uninterrupted one on the same machine.
    """
    start = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    ranks = distributed.from_environment()  # rank 0 of 1 unless torchrun started this process
    if cfg.selfplay.seeds_per_iteration % ranks.world_size:
        raise ConfigError(f"selfplay.seeds_per_iteration={cfg.selfplay.seeds_per_iteration} must be divisible by "
                          f"the number of processes, {ranks.world_size}")
    try:
        device = distributed.rank_device(pick_device(cfg.device), ranks)
    except RuntimeError as e:
        raise ConfigError(str(e)) from None
    state = resume_point(cfg, device, ranks)
    distributed.start(ranks, device)
    if not ranks.main:
        log = lambda *a: None  # noqa: E731  rank 0 prints
    os.makedirs(cfg.out_dir, exist_ok=True)
    world = World(cfg.world_seed)

    tracker = tracking.start(cfg) if ranks.main else tracking.Tracker()
    if not ranks.main:  # the supervised stage runs on rank 0; the others then read its cached checkpoint
        distributed.barrier(ranks)
    model, tokenizer, sft_path = supervised_model(cfg, world, device, log, tracker)
    if ranks.main:
        distributed.barrier(ranks)
        checkpoint.atomic_write_text(os.path.join(cfg.out_dir, "config.json"), to_json(cfg))

    def evaluated(model) -> dict:
        """`evaluate` on held-out intents; for a pretrained start, the real-text safe set too."""
        results = evaluate(model, tokenizer, world, cfg.eval)
        if cfg.sft.init_from:
            results["safe_set_over_refusal"] = safe_set_over_refusal(model, tokenizer, cfg.eval)
        return results

    columns = {}
    if cfg.sft.init_from and ranks.main:  # the pretrained model as it came, on real text only (it knows no world)
        base, base_tokenizer = load_pretrained(cfg.sft.init_from, device)
        base.bf16 = cfg.precision == "bf16"
        columns["pretrained"] = {"safe_set_over_refusal": safe_set_over_refusal(base, base_tokenizer, cfg.eval)}
        del base
    if ranks.main:
        columns["supervised"] = evaluated(model)
    if cfg.stage in ("selfplay", "all"):  # every rank plays and learns
        game, history = make_game(cfg, model, tokenizer, world, ranks=ranks), []
        if state:
            history = restore(game, state, os.path.join(cfg.out_dir, "checkpoint.pt"))
            log(f"self-play: resuming from {cfg.out_dir}/checkpoint.pt at iteration {game.iteration}")
        history = selfplay_stage(cfg, game, device, history, tracker=tracker)
        if ranks.main:
            checkpoint.save_model(os.path.join(cfg.out_dir, "final.pt"), model, tokenizer,
                                  world_seed=world.seed, seed=cfg.seed)
            columns["self-play"] = evaluated(model)
            columns["self-play"]["timing"] = timing_split(history)
    if not ranks.main:  # rank 0 evaluates and writes the results
        distributed.stop(ranks)
        return {}

    table = format_table(columns)
    results = {"columns": columns, "table": table, "sft_checkpoint": sft_path,
               "wall_time_s": time.time() - start, "peak_memory_gb": peak_memory_gb(), "device": str(device)}
    checkpoint.atomic_write_text(os.path.join(cfg.out_dir, "results.json"), json.dumps(results, indent=1))
    checkpoint.atomic_write_text(os.path.join(cfg.out_dir, "results.md"), table + "\n")
    header, rows = tracking.results_rows(columns, tuple(key for key, _ in SUMMARY))
    tracker.finish(summary={f"{name}/{k}": v for name, col in columns.items() for k, v in col.items()},
                   table=rows, columns=header)
    log(table)
    if "self-play" in columns:
        split = columns["self-play"]["timing"]
        log("self-play time: " + ", ".join(f"{k.split('/')[1]} {v:.0f} s" for k, v in split.items()))
    log(f"wall time {results['wall_time_s']:.0f} s, peak memory {results['peak_memory_gb']:.2f} GB, "
        f"outputs in {cfg.out_dir}/")
    distributed.stop(ranks)
    return results
