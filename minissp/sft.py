"""The supervised stage: a tokenizer and a GPT trained from scratch on the world's corpora.

Like a real LLM, in two stages (`world.corpora` describes the data):

1. **capability** ("pre-training"): the capability documents — every intent,
   plain and in every tactic family, answered, in the `<|text|>` format of
   documents rather than a chat turn. The loss covers every token, prompts
   included, so the model also learns to *write* every kind of prompt (an
   attacker can later discover the unseen families by exploring).
2. **alignment** ("instruction tuning"): safety tuning and attacker
   demonstrations (training intents only), mixed with a replay of stage-1
   documents so that stage 1 is not forgotten. The loss covers the responses
   only, as in chat fine-tuning; for a replayed document, its answer.

**The replay rule** (`replay_documents`, used here and by PPO-ptx): a uniform
draw from the stage-1 documents, by position in the corpus. It never looks
at an intent's split, label or family, so the prior it keeps is the same for
training and held-out intents and for every method. Since the documents are
not defender turns, replaying them keeps what the model knows (each intent's
content words, which are arbitrary per intent and can only be recalled from
stage 1) without teaching the defender when to answer. Our choice: the
replayed documents train their answers only, not their requests; measured
on the default config (seed 0, 2 threads, supervised model, held-out
intents), a replay that trains every token instead gave helpfulness 68.1%
(74.3% with answers only) and borderline over-refusal 31.5% (17.6%),
plain harmful refused 79.6% in both (docs/log.md, 2026-12-01).

Both roles live in one model; the role token says which one speaks.

From a pretrained chat model (`sft.init_from`), the same two stages
fine-tune it on the same data, through its own tokenizer and chat template
(`chatml.py`): the world's vocabulary, its jailbreak families, its refusals
and the attacker's slot tokens are new to it, and stage 1 is where it meets
the held-out intents.

Simplified: a fixed number of steps per stage, AdamW with warmup and cosine
decay, batches grouped by length to waste less padding. Our choice, not the
paper's: training from scratch at all (the paper starts from a pretrained
chat model, which `sft.init_from` does too).
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
from .model import GPT, GPTConfig, first_marked_column
from .pretrained import load_pretrained
from .tokenizer import Tokenizer
from .world import World
from .world.corpora import Example, attacker_corpus, capability_corpus, safety_corpus
from .world.tactics import SEEN_FAMILIES, STACKABLE


@dataclass
class SFTConfig:
    """The supervised stage."""

    init_from: str = ""
    """"" trains a tokenizer and a GPT from scratch; otherwise the stage starts from a pretrained
    chat model and its own tokenizer: "smollm2", a .gguf file or an HF checkpoint directory
    (`pretrained.load_pretrained`). Then the model.* keys but block_size are the checkpoint's."""
    vocab_size: int = 1024
    """BPE vocabulary size, special tokens included (from scratch only)."""
    capability_variants: int = 3
    """Samples per (intent, family) pair in the capability text."""
    safety_variants: int = 3
    """Samples per (intent, family) pair in the safety-tuning data."""
    refusals_per_intent: int = 30
    """Refusals of plain requests per harmful training intent in the safety data."""
    wrapped_refusals: int = 20
    """Refusals of requests wrapped in a seen family per harmful training intent (see corpora.py)."""
    refuse_stacks: bool = False
    """Whether those wrapped refusals include compositions (two seen families stacked)."""
    open_variants: int = 6
    """Extra helpful examples per benign or borderline intent in every form no wrapped refusal
    uses: plain requests, and the families only helpfulness data covers (compositions unless
    refused, the unseen ones)."""
    attacker_variants: int = 8
    """Attacker demonstrations per training intent."""
    capability_steps: int = 400
    """Optimizer steps of stage 1 (capability text)."""
    alignment_steps: int = 500
    """Optimizer steps of stage 2 (safety tuning + attacker demos + capability replay)."""
    capability_replay: float = 0.5
    """Share of stage-2 examples that are replayed stage-1 documents (`replay_documents`)."""
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
    """Tokenize one exchange; `loss_on` is "all" (every token) or "response" (the response only)."""
    if loss_on not in ("all", "response"):
        raise ValueError(f"loss_on must be 'all' or 'response', got {loss_on!r}")
    ids, response_start = tokenizer.example_ids(example.role, example.prompt, example.response)
    return Encoded(ids, 1 if loss_on == "all" else response_start)


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
    """Mean cross-entropy over the masked target tokens. Right padding needs no attention mask;
    the columns before the first masked target (prompts, when the loss covers responses) are
    read out by no vocabulary projection."""
    start = first_marked_column(loss_mask)
    logits, _ = model(inputs, read_from=start)  # (B, T - start, V)
    losses = F.cross_entropy(logits.flatten(0, 1), targets[:, start:].flatten(), reduction="none")  # (B*T',)
    mask = loss_mask[:, start:].flatten().float()
    return (losses * mask).sum() / mask.sum()


def lm_loss(model: GPT, batch: list[Encoded], pad_id: int) -> torch.Tensor:
    """The mean cross-entropy of encoded examples over the tokens their loss masks cover."""
    inputs, targets, mask = collate(batch, pad_id, next(model.parameters()).device)
    return masked_lm_loss(model, inputs, targets, mask)


def supervised_step(model: GPT, optimizer, batch: list[Encoded], pad_id: int, max_grad_norm: float,
                    ptx_batch: list[Encoded] | None = None, ptx_coef: float = 0.0) -> tuple[float, float]:
    """One optimizer step on CE(batch) + ptx_coef * CE(ptx_batch), gradient norm clipped (the
    static baseline's step). The two terms form one objective, clipped as a whole, so that
    ptx_coef weighs one against the other as in InstructGPT's eq. 2. Returns both losses
    (nan when there is no ptx batch); a non-finite loss raises FloatingPointError before
    any weight changes."""
    model.train()
    loss = lm_loss(model, batch, pad_id)
    if not torch.isfinite(loss):
        raise FloatingPointError("non-finite supervised loss")
    ptx, total = torch.full((), float("nan")), loss
    if ptx_batch:
        ptx = lm_loss(model, ptx_batch, pad_id)
        if not torch.isfinite(ptx):
            raise FloatingPointError("non-finite PPO-ptx loss")
        total = loss + ptx_coef * ptx
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    model.eval()
    return loss.item(), ptx.item()


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


def replay_documents(documents: list[Example], share: float, n_others: int, rng: random.Random) -> list[Example]:
    """Stage-1 documents to mix with `n_others` other examples so that they make `share` of
    the mix: a uniform draw by position, blind to every intent's split, label and family."""
    return sample_share(documents, share, n_others, rng)


def safety_examples(world: World, cfg: SFTConfig, rng: random.Random) -> list[Example]:
    """Stage 2's safety-tuning corpus as `cfg` sizes it (the supervised stage and PPO-ptx both use it)."""
    families = SEEN_FAMILIES if cfg.refuse_stacks else STACKABLE
    return safety_corpus(world.intents, rng, cfg.safety_variants, cfg.refusals_per_intent,
                         cfg.wrapped_refusals, families, cfg.open_variants)


def build_corpora(world: World, cfg: SFTConfig, rng: random.Random) -> dict[str, list[tuple[Example, str]]]:
    """The examples of both stages, each with the tokens its loss covers."""
    capability = capability_corpus(world.intents, rng, cfg.capability_variants)
    # the replay's own generator, seeded before any split-dependent draw: how many numbers the
    # training-intent corpora consume depends on which intents they are, so a shared generator
    # would make the replay's choice depend on the split
    replay_rng = random.Random(rng.getrandbits(64))
    safety = safety_examples(world, cfg, rng)
    demos = attacker_corpus(world.intents, rng, cfg.attacker_variants)
    replay = replay_documents(capability, cfg.capability_replay, len(safety) + len(demos), replay_rng)
    return {
        "capability": [(e, "all") for e in capability],
        "alignment": [(e, "response") for e in safety + demos + replay],
    }


def sft_optimizer(model: GPT, cfg: SFTConfig) -> torch.optim.AdamW:
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
            device="cpu", metrics_path: str | None = None, bf16: bool = False) -> tuple[GPT, Tokenizer]:
    """Train the model (and its tokenizer, from scratch) and save a checkpoint at `out_path`.

    With `cfg.init_from`, both stages fine-tune a pretrained chat model instead, through its
    own tokenizer and chat template; `model_cfg.block_size` is then the context minissp uses
    (at most the checkpoint's), for prompts and answers alike."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    corpora = build_corpora(world, cfg, rng)
    if cfg.init_from:
        model, tokenizer = load_pretrained(cfg.init_from, device)
        model.config.block_size = min(model.config.block_size, model_cfg.block_size)
    else:
        all_texts = [f"{e.prompt} {e.response}" for pairs in corpora.values() for e, _ in pairs]
        tokenizer = Tokenizer.train(all_texts, cfg.vocab_size)
        model_cfg = GPTConfig(**{**model_cfg.__dict__, "vocab_size": tokenizer.vocab_size})
        model = GPT(model_cfg).to(device)
    model.bf16 = bf16
    data = {stage: [encode_example(tokenizer, e, loss_on) for e, loss_on in pairs] for stage, pairs in corpora.items()}
    longest = max(len(e.ids) for stage in data.values() for e in stage)
    if longest > model.config.block_size:
        raise ValueError(f"the corpora hold a {longest}-token example but block_size={model.config.block_size}")

    metrics = open(metrics_path, "a") if metrics_path else None

    def log(record):
        if metrics:
            metrics.write(json.dumps(record) + "\n")

    try:
        for name, steps in (("capability", cfg.capability_steps), ("alignment", cfg.alignment_steps)):
            # a fresh optimizer per stage, as a fine-tuning run would start
            optimizer = sft_optimizer(model, cfg)
            train_stage(model, optimizer, name, data[name], steps, cfg, tokenizer, device, rng, log)
    finally:
        if metrics:
            metrics.close()
    model.eval()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    checkpoint.save_model(out_path, model, tokenizer, world_seed=world.seed, seed=seed)
    return model, tokenizer
