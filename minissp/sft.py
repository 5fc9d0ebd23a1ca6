"""The supervised stage: a tokenizer and a GPT trained from scratch on the world's corpora.

Like a real LLM, in two stages (DESIGN.md §3):

1. **capability** ("pre-training"): the capability text — every intent, plain
   and in every tactic family, answered compliantly. The loss covers every
   token, prompts included, so the model also learns to *write* every kind of
   prompt (an attacker can later discover the unseen families by exploring).
2. **alignment** ("instruction tuning"): safety tuning and attacker
   demonstrations, mixed with a share of capability text so stage 1 is not
   forgotten. The loss covers only the responses, as in chat fine-tuning.
   Replayed capability text never holds a plain harmful request (refusing
   those is safety tuning's job), and for harmful intents it trains only the
   answer's content words, not the lead-in that decides to comply: replay
   keeps what the model knows without teaching it when to answer. Benign
   replay trains whole answers, so the model stays helpful on every topic.

Both roles live in one model; the role token says which one speaks.

Simplified: a fixed number of steps per stage, AdamW with warmup and cosine
decay, batches grouped by length to waste less padding. Our choice, not the
paper's: everything here — the paper starts from a pretrained chat model.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import checkpoint
from .chat import example_ids, prompt_text
from .model import GPT, GPTConfig
from .tokenizer import Tokenizer
from .world import HARMFUL, HELDOUT, PLAIN, World
from .world.corpora import Example, attacker_corpus, capability_corpus, safety_corpus


@dataclass
class SFTConfig:
    """The supervised stage."""

    vocab_size: int = 1024
    """BPE vocabulary size, special tokens included."""
    capability_variants: int = 3
    """Samples per (intent, family) pair in the capability text."""
    safety_variants: int = 3
    """Samples per (intent, family) pair in the safety-tuning data."""
    refusals_per_intent: int = 30
    """Refusals of plain requests per harmful training intent in the safety data."""
    wrapped_refusals: int = 3
    """Refusals of requests wrapped in a seen family per harmful training intent (see corpora.py)."""
    attacker_variants: int = 8
    """Attacker demonstrations per training intent."""
    capability_steps: int = 750
    """Optimizer steps of stage 1 (capability text)."""
    alignment_steps: int = 900
    """Optimizer steps of stage 2 (safety tuning + attacker demos + capability replay)."""
    capability_replay: float = 0.5
    """Share of stage-2 examples drawn from the capability text (plain harmful left out)."""
    batch_size: int = 48
    lr: float = 3e-3
    """Peak learning rate; stage 2 restarts warmup and cosine decay from it."""
    min_lr_ratio: float = 0.1
    """The cosine schedule ends at lr * min_lr_ratio."""
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200
    """Steps between evaluations of the held-out loss."""
    eval_fraction: float = 0.05
    """Share of each stage's examples kept aside to measure the held-out loss."""


@dataclass
class Encoded:
    """One training sequence and where its loss starts."""

    ids: list[int]
    loss_start: int  # first *target* index whose prediction is trained (1 = every token)


def encode_example(tokenizer: Tokenizer, example: Example, loss_on: str) -> Encoded:
    """Tokenize one exchange; `loss_on` is "all" (every token), "response", or
    "content" (only the answer's words after its lead-in "sure , here is how :")."""
    ids, response_start = example_ids(tokenizer, example.role, example.prompt, example.response)
    if loss_on == "all":
        return Encoded(ids, 1)
    if loss_on == "response":
        return Encoded(ids, response_start)
    lead = example.response.rsplit(":", 1)[0] + ":"  # the content follows the answer's last colon
    return Encoded(ids, len(tokenizer.encode(f"{prompt_text(example.role, example.prompt)} {lead}")))


def length_grouped_batches(data: list[Encoded], batch_size: int, rng: random.Random, group: int = 16):
    """Endless batches of similar lengths: draw `group` batches' worth, sort by length, split, shuffle."""
    while True:
        pool = rng.sample(data, min(len(data), batch_size * group))
        pool.sort(key=lambda e: len(e.ids))
        batches = [pool[i:i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(batches)
        yield from batches


def collate(batch: list[Encoded], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded inputs, next-token targets and the loss mask. Each (B, T-1)."""
    T = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    loss_mask = torch.zeros(len(batch), T, dtype=torch.bool)
    for row, example in enumerate(batch):
        ids[row, : len(example.ids)] = torch.tensor(example.ids)
        loss_mask[row, example.loss_start: len(example.ids)] = True
    ids = ids.to(device)
    # predict token t from tokens < t: inputs drop the last column, targets the first
    return ids[:, :-1], ids[:, 1:], loss_mask[:, 1:].to(device)


def masked_lm_loss(model: GPT, inputs, targets, loss_mask) -> torch.Tensor:
    """Mean cross-entropy over the masked target tokens. Right padding needs no attention mask."""
    logits, _ = model(inputs)  # (B, T, V)
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")  # (B*T,)
    mask = loss_mask.flatten().float()
    return (losses * mask).sum() / mask.sum()


def supervised_step(model: GPT, optimizer, batch: list[Encoded], pad_id: int, max_grad_norm: float,
                    coef: float = 1.0, what: str = "supervised loss") -> float:
    """One optimizer step of `coef` x cross-entropy on encoded examples (their loss masks say
    which tokens count), gradient norm clipped; used by PPO-ptx and the static baseline.
    A non-finite loss raises FloatingPointError before any weight changes."""
    device = next(model.parameters()).device
    inputs, targets, mask = collate(batch, pad_id, device)
    model.train()
    loss = masked_lm_loss(model, inputs, targets, mask)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite {what}")
    optimizer.zero_grad(set_to_none=True)
    (coef * loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    model.eval()
    return loss.item()


def lr_at(step: int, total: int, cfg: SFTConfig) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate_loss(model: GPT, data: list[Encoded], pad_id: int, device, batch_size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        inputs, targets, mask = collate(data[i:i + batch_size], pad_id, device)
        n = mask.sum().item()
        total += masked_lm_loss(model, inputs, targets, mask).item() * n
        count += n
    model.train()
    return total / max(count, 1)


def sample_share(pool: list, share: float, n_others: int, rng: random.Random) -> list:
    """Draw from `pool` so that the draw makes `share` of a mix with `n_others` other
    examples: share / (1 - share) * n_others of them, or the whole pool if it is smaller."""
    return rng.sample(pool, min(int(share / (1 - share) * n_others), len(pool)))


def safety_examples(world: World, cfg: SFTConfig, rng: random.Random) -> list[Example]:
    """Stage 2's safety-tuning corpus as `cfg` sizes it (the supervised stage and PPO-ptx both use it)."""
    return safety_corpus(world.intents, rng, cfg.safety_variants, cfg.refusals_per_intent, cfg.wrapped_refusals)


def build_corpora(world: World, cfg: SFTConfig, rng: random.Random) -> dict[str, list[Encoded]]:
    """The examples of both stages, each with the tokens its loss covers."""
    capability = capability_corpus(world.intents, rng, cfg.capability_variants)
    safety = safety_examples(world, cfg, rng)
    demos = attacker_corpus(world.intents, rng, cfg.attacker_variants)
    harmful = {intent.id for intent in world.intents if intent.label == HARMFUL}
    replayable = [e for e in capability if not (e.family == PLAIN and e.intent_id in harmful)]
    replay = sample_share(replayable, cfg.capability_replay, len(safety) + len(demos), rng)
    heldout_harmful = {i.id for i in world.intents if i.split == HELDOUT and i.label == HARMFUL}
    return {
        "capability": [(e, "all") for e in capability],
        "alignment": ([(e, "response") for e in safety + demos]
                      + [(e, "content" if e.intent_id in heldout_harmful else "response") for e in replay]),
    }


def make_optimizer(model: GPT, cfg: SFTConfig) -> torch.optim.AdamW:
    """AdamW that decays matrices and embeddings only, not biases or LayerNorm gains (as nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def train_stage(model, optimizer, name, data, steps, cfg, tokenizer, device, rng, log):
    """One supervised stage: `steps` AdamW steps on `data`, with held-out loss checks."""
    rng.shuffle(data)
    n_eval = max(1, int(len(data) * cfg.eval_fraction))
    eval_data, train_data = data[:n_eval], data[n_eval:]
    batches = length_grouped_batches(train_data, cfg.batch_size, rng)
    progress = tqdm(range(steps), desc=f"sft:{name}", dynamic_ncols=True)
    start = time.time()
    tokens = 0
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, cfg)
        inputs, targets, mask = collate(next(batches), tokenizer.pad_id, device)
        loss = masked_lm_loss(model, inputs, targets, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        tokens += inputs.numel()
        record = {"stage": name, "step": step, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == steps:
            record["eval_loss"] = evaluate_loss(model, eval_data, tokenizer.pad_id, device, 4 * cfg.batch_size)
            record["tokens_per_s"] = tokens / (time.time() - start)
            progress.set_postfix(loss=f"{record['loss']:.3f}", eval=f"{record['eval_loss']:.3f}")
        log(record)
    return record


def run_sft(world: World, model_cfg: GPTConfig, cfg: SFTConfig, out_path: str, seed: int = 0,
            device="cpu", metrics_path: str | None = None) -> tuple[GPT, Tokenizer]:
    """Train the tokenizer and the model from scratch and save a checkpoint at `out_path`."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    corpora = build_corpora(world, cfg, rng)
    all_texts = [f"{e.prompt} {e.response}" for pairs in corpora.values() for e, _ in pairs]
    tokenizer = Tokenizer.train(all_texts, cfg.vocab_size)
    model_cfg = GPTConfig(**{**model_cfg.__dict__, "vocab_size": tokenizer.vocab_size})
    model = GPT(model_cfg).to(device)
    data = {stage: [encode_example(tokenizer, e, loss_on) for e, loss_on in pairs] for stage, pairs in corpora.items()}
    longest = max(len(e.ids) for stage in data.values() for e in stage)
    if longest > model_cfg.block_size:
        raise ValueError(f"the corpora hold a {longest}-token example but block_size={model_cfg.block_size}")

    metrics = open(metrics_path, "a") if metrics_path else None

    def log(record):
        if metrics:
            metrics.write(json.dumps(record) + "\n")

    try:
        for name, steps in (("capability", cfg.capability_steps), ("alignment", cfg.alignment_steps)):
            # a fresh optimizer per stage, as a fine-tuning run would start
            optimizer = make_optimizer(model, cfg)
            train_stage(model, optimizer, name, data[name], steps, cfg, tokenizer, device, rng, log)
    finally:
        if metrics:
            metrics.close()
    model.eval()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    checkpoint.save_model(out_path, model, tokenizer, world_seed=world.seed, seed=seed)
    return model, tokenizer
