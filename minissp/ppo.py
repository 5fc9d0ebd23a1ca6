"""PPO for language models, hand-written, one sequence batch at a time.

Proximal Policy Optimization (Schulman et al. 2017, arXiv 1707.06347) with
Generalized Advantage Estimation (Schulman et al. 2016, arXiv 1506.02438),
following the checklists of "The N Implementation Details of RLHF with PPO"
(Huang et al. 2024, ICLR blog track; "N details" below) and "The 37
Implementation Details of PPO" (Huang et al. 2022; "37 details" below).
The `# [..]` comments point at the source of each checklist item.

Alignment convention (the only one used in this file)
----------------------------------------------------
A sequence is `input_ids (B, T)` = [left pads | prompt | response ... EOS | pads].
We work on the shifted next-token view: `logits[:, t]` predicts
`input_ids[:, t + 1]`. Every per-token tensor has length L = T - 1, and
index t means "the action `input_ids[:, t + 1]`, taken in the state
`input_ids[:, :t + 1]`":

    logprobs[:, t]    = log pi(input_ids[:, t + 1] | input_ids[:, :t + 1])
    values[:, t]      = V(input_ids[:, :t + 1])   (the state before the action)
    action_mask[:, t] = True iff input_ids[:, t + 1] is a response token, EOS included

Masked slots (prompt, pads) may hold anything, NaN included: inputs go
through `torch.where(mask, x, 0)` before use (multiplying by 0 keeps NaN).
The forward passes read out the logits of columns `s..` only, `s` the first
column where any row acts (`model.first_marked_column`): the prompt still runs
through every block, but the vocabulary projection of the prompt is skipped,
and inside the update every per-token tensor is cut to those columns.

Simplified:
1. no adaptive KL controller (β is fixed);
2. no reward whitening or score clipping;
3. no separate critic network (the value head shares the trunk);
4. advantages are whitened once per rollout batch, not per minibatch;
5. GAE with the learned critic is the only advantage estimator: there is no
   group-baseline estimator (RLOO, GRPO), since self-play draws one sample per seed.

Our choice, not the paper's (SSP publishes no PPO details):
- advantages are whitened per role, so attacker and defender rewards never
  share a scale; `whiten_advantages_per_role=False` whitens the batch as one;
- the loss is a token-level mean over the minibatch, both roles mixed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from .model import first_marked_column

ROLES = ("attacker", "defender")  # role id 0, role id 1


@dataclass
class PPOConfig:
    kl_coef: float = 0.4
    """β of the per-token KL penalty −β(logπ − logπ_ref) added to the reward."""
    gamma: float = 1.0
    """Discount factor; 1 for language ([N details]: γ = 1)."""
    lam: float = 0.95
    """GAE λ: 1 = Monte-Carlo advantages (high variance), 0 = one-step TD (high bias)."""
    clip_range: float = 0.2
    """ε of the clipped surrogate: the ratio ρ is clipped to [1 − ε, 1 + ε]."""
    clip_range_value: float = 0.2
    """How far a new value may move from the rollout's value before its error is clipped."""
    vf_coef: float = 0.1
    """Weight of the value loss in the total loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus (0: the KL penalty already keeps the policy spread)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip ([37 details])."""
    epochs: int = 1
    """Passes over the rollout batch per update (each a shuffled pass in minibatches)."""
    minibatch_size: int = 16
    """Sequences per gradient step; the last minibatch of an epoch may be smaller."""
    lr: float = 3e-5
    """Adam learning rate (see `ppo_optimizer`)."""
    adam_eps: float = 1e-5
    """Adam ε ([37 details]: 1e-5 instead of PyTorch's 1e-8)."""
    temperature: float = 1.0
    """Sampling temperature; every logprob recomputation divides the logits by it."""
    missing_eos_penalty: float = -2.5
    """Score that replaces the judge's for a response that never emitted EOS. Below the judge's
    lowest score (−2), so that running out of budget is never a way out of a bad answer (our
    choice; Self-RedTeam's format penalty is −1 on a smaller reward range)."""
    whiten_advantages_per_role: bool = True
    """Whiten advantages separately for attacker and defender tokens."""

    def __post_init__(self):
        # written as `not (ok)` so that NaN fails too
        for name in ("epochs", "minibatch_size", "lr", "temperature", "max_grad_norm", "adam_eps", "clip_range_value"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("kl_coef", "vf_coef", "ent_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.clip_range < 1:
            raise ValueError(f"clip_range must be in (0, 1), got {self.clip_range}")


@dataclass
class RolloutBatch:
    """One batch of sampled sequences and what the rollout policy said about them."""

    input_ids: torch.Tensor       # (B, T) long
    attention_mask: torch.Tensor  # (B, T) 1 = real token, 0 = pad
    action_mask: torch.Tensor     # (B, L) bool, L = T - 1: response tokens incl. EOS
    old_logprobs: torch.Tensor    # (B, L) rollout policy, temperature-scaled
    ref_logprobs: torch.Tensor    # (B, L) reference policy, same temperature
    old_values: torch.Tensor      # (B, L) rollout critic
    scores: torch.Tensor          # (B,) judge's score per sequence
    finished: torch.Tensor        # (B,) bool: the response emitted EOS
    role: torch.Tensor            # (B,) long: 0 attacker, 1 defender

    def __post_init__(self):
        B, T = self.input_ids.shape
        self.action_mask = self.action_mask.bool()
        self.finished = self.finished.bool()
        if self.action_mask.shape != (B, T - 1):
            raise ValueError(f"action_mask must be (B, T-1) = {(B, T - 1)}, got {tuple(self.action_mask.shape)}")
        if not self.action_mask.any(dim=1).all():
            raise ValueError("every sequence needs at least one action token")
        if (self.action_mask & (self.attention_mask[:, 1:] == 0)).any():
            raise ValueError("action_mask marks a pad token (attention_mask is 0 there)")
        if not ((self.role == 0) | (self.role == 1)).all():
            raise ValueError("role must be 0 (attacker) or 1 (defender)")

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def join_rows(batches: list[RolloutBatch]) -> RolloutBatch:
    """Several rollout batches as one, each right-padded to the widest: (sum of B, max T).

    For statistics over all rows (advantage whitening, rollout metrics), which ignore
    masked slots; the update itself runs each batch at its own width (`ppo_update`)."""
    if len(batches) == 1:
        return batches[0]
    T = max(b.input_ids.shape[1] for b in batches)

    def cat(name: str) -> torch.Tensor:
        parts = [getattr(b, name) for b in batches]
        if parts[0].dim() == 1:  # per row: scores, finished, role
            return torch.cat(parts)
        width = T if name in ("input_ids", "attention_mask") else T - 1
        return torch.cat([nn.functional.pad(x, (0, width - x.shape[1])) for x in parts])  # pads: 0 / False

    return RolloutBatch(**{f.name: cat(f.name) for f in dataclasses.fields(RolloutBatch)})


def ppo_optimizer(model: nn.Module, cfg: PPOConfig) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)  # [37 details] Adam ε


# -------------------- logprobs, values and entropy in the shifted view -----

def shifted_logits_and_values(model, input_ids, attention_mask, temperature, start=0):
    """(B, T) ids -> logits (B, L - start, V) divided by the temperature and values (B, L - start):
    columns start.. of the shifted view (the whole sequence still runs through the model)."""
    logits, values = model(input_ids, attention_mask=attention_mask, read_from=start)  # (B, T - start, ...)
    # [N details] divide by the sampling temperature in every recomputation, else KL grows too fast
    return logits[:, :-1].float() / temperature, values[:, :-1].float()


def logprobs_of(logits, tokens):
    """logits (B, L, V), tokens (B, L) -> log-probabilities of those tokens (B, L)."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_of(logits):
    """logits (B, L, V) -> entropy of each next-token distribution (B, L)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def sequence_logprobs_and_values(model, input_ids, attention_mask, temperature=1.0, start=0):
    """Logprobs of the taken tokens (B, L) and values (B, L), in the shifted view; with `start`,
    the columns before it (no action there) are 0 and cost no vocabulary projection."""
    logits, values = shifted_logits_and_values(model, input_ids, attention_mask, temperature, start)
    logprobs = logprobs_of(logits, input_ids[:, start + 1:])  # (B, L - start)
    return nn.functional.pad(logprobs, (start, 0)), nn.functional.pad(values, (start, 0))


@torch.no_grad()
def make_rollout_batch(model, ref_model, input_ids, attention_mask, action_mask, scores,
                       finished, role, cfg: PPOConfig) -> RolloutBatch:
    """Score sampled sequences with the rollout policy/critic and the reference.

    Runs in chunks of `cfg.minibatch_size` rows so memory stays bounded.
    """
    old_lp, old_v, ref_lp = [], [], []
    # no row acts before column `start`: its logits are never needed (self-play's prompts are long);
    # ppo_update reads out the same columns, so its forward passes have the rollout's shapes
    start = first_marked_column(action_mask)
    for rows in torch.arange(input_ids.shape[0]).split(cfg.minibatch_size):
        lp, v = sequence_logprobs_and_values(model, input_ids[rows], attention_mask[rows], cfg.temperature, start)
        rlp, _ = sequence_logprobs_and_values(ref_model, input_ids[rows], attention_mask[rows], cfg.temperature,
                                              start)
        old_lp.append(lp), old_v.append(v), ref_lp.append(rlp)
    return RolloutBatch(input_ids, attention_mask, action_mask, torch.cat(old_lp), torch.cat(ref_lp),
                        torch.cat(old_v), scores.float(), finished, role)


# -------------------- rewards and advantages -------------------------------

def masked_mean(x, mask):
    """Mean of x over mask; NaN in masked slots is ignored (where, not multiply)."""
    mask = mask.bool()
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


def masked_var(x, mask):
    """Population variance of x over mask."""
    return masked_mean((x - masked_mean(x, mask)) ** 2, mask)


def masked_whiten(x, mask, eps=1e-8):
    """(x − mean) / std over mask; masked slots become 0."""
    return torch.where(mask.bool(), (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + eps), 0.0)


def whiten_per_role(advantages, action_mask, role):
    """Whiten each role's action tokens on their own: (B, L), (B, L), (B,) -> (B, L)."""
    out = torch.zeros_like(advantages)
    for r in range(len(ROLES)):
        m = action_mask.bool() & (role == r)[:, None]  # (B, L)
        if m.any():
            out = torch.where(m, masked_whiten(advantages, m), out)
    return out


def last_action_index(action_mask):
    """(B, L) bool -> (B,) index of each row's last action token (EOS if it finished)."""
    L = action_mask.shape[1]
    positions = torch.arange(1, L + 1, device=action_mask.device)  # (L,)
    return (action_mask.long() * positions).argmax(dim=1)


def kl_shaped_rewards(scores, finished, logprobs, ref_logprobs, action_mask, kl_coef, missing_eos_penalty):
    """Per-token rewards (B, L): −β·k1 on every action token, the score on the last one."""
    mask = action_mask.bool()
    # [N details] per-token KL penalty with the k1 estimator logπ − logπ_ref (unbiased in expectation)
    kl = torch.where(mask, logprobs - ref_logprobs, 0.0)  # (B, L)
    rewards = -kl_coef * kl
    # [N details] a response without EOS gets a fixed penalty instead of the judge's score
    scores = torch.where(finished.bool(), scores.to(rewards.dtype), missing_eos_penalty)
    # [N details] the score lands on the last response token (EOS), never on a pad slot
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_action_index(mask)] += scores
    return rewards


def gae(rewards, values, action_mask, gamma, lam):
    """Generalized Advantage Estimation (Schulman et al. 2016, eq. 16) over action tokens.

    rewards, values, action_mask: (B, L). Returns (advantages, returns), both
    (B, L), zero on masked slots. The state after the last action is terminal:
    its value is taken as 0, so nothing after EOS bootstraps into the response.
    """
    mask = action_mask.bool()
    rewards = torch.where(mask, rewards, 0.0)
    values = torch.where(mask, values, 0.0)
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # (B, L), 0 past the end
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_values[:, t] - values[:, t]
        lastgaelam = torch.where(mask[:, t], delta + gamma * lam * lastgaelam, 0.0)
        advantages[:, t] = lastgaelam
    return advantages, advantages + values  # [N details] returns = advantages + values


# -------------------- losses and metrics, per token (callers take masked means) 

def clipped_surrogate(logprobs, old_logprobs, advantages, clip_range):
    """Per-token PPO-clip loss max(−Aρ, −A·clip(ρ, 1 ± ε)) (Schulman et al. 2017, eq. 7) and ρ."""
    ratio = torch.exp(logprobs - old_logprobs)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.max(pg_losses, pg_losses2), ratio


def clipped_value_loss(values, old_values, returns, clip_range_value):
    """Per-token ½·max((V − R)², (V_clip − R)²) ([37 details], [N details] value clipping)."""
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    return 0.5 * torch.max((values - returns) ** 2, (values_clipped - returns) ** 2)


def approx_kl(ratio):
    """Per-token k3 = (ρ − 1) − log ρ: estimates KL(old ‖ new), never negative, low variance.
    John Schulman, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html"""
    return (ratio - 1) - torch.log(ratio)


def explained_variance(values, returns, mask):
    """1 − Var[R − V] / Var[R] over mask: 1 = perfect critic, 0 = no better than the mean."""
    var_r = masked_var(returns, mask)
    return float("nan") if var_r == 0 else float(1 - masked_var(returns - values, mask) / var_r)


# -------------------- the update -------------------------------------------

def by_role(role):
    """(B,) role ids -> [("", all rows), ("attacker/", its rows), ("defender/", its rows)] as (B,) bool."""
    return [("", torch.ones_like(role, dtype=torch.bool))] + [(f"{n}/", role == r) for r, n in enumerate(ROLES)]


def _check_finite(where: str, **tensors):
    for name, x in tensors.items():
        if not torch.isfinite(x).all():
            raise FloatingPointError(f"non-finite {name} in {where}")


def advantages_and_returns(batch: RolloutBatch, cfg: PPOConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token advantages and value targets of a rollout batch, both (B, L).

    The score becomes a reward at each response's last token (minus the KL penalty at
    every token, `kl_shaped_rewards`), GAE turns rewards into advantages, and the
    advantages are whitened: per role by default, because the two roles share a batch
    but not a reward scale (our choice; [N details] whitens the whole batch)."""
    mask = batch.action_mask
    with torch.no_grad():
        rewards = kl_shaped_rewards(batch.scores, batch.finished, batch.old_logprobs, batch.ref_logprobs, mask,
                                    cfg.kl_coef, cfg.missing_eos_penalty)  # (B, L)
        advantages, returns = gae(rewards, batch.old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages_per_role:
            advantages = whiten_per_role(advantages, mask, batch.role)
        else:
            advantages = masked_whiten(advantages, mask)
    return advantages, returns


class TokenMeans:
    """Running per-token means of minibatch statistics, overall ("") and per role ("<role>/").

    Sums stay on the device; `means` reads them back once, at the end of the update,
    instead of one host sync per minibatch."""

    def __init__(self):
        self.sums, self.counts = {}, {}  # {(prefix, name): token sum}, {prefix: token count}

    def add(self, stats: dict[str, torch.Tensor], mask: torch.Tensor, role: torch.Tensor) -> None:
        for prefix, rows in by_role(role):
            sel = mask & rows[:, None]  # (b, L)
            self.counts[prefix] = self.counts.get(prefix, 0) + sel.sum()
            for name, x in stats.items():
                self.sums[prefix, name] = self.sums.get((prefix, name), 0.0) + torch.where(sel, x, 0.0).sum()

    def means(self) -> dict[str, float]:
        return {prefix + name: (total / self.counts[prefix]).item()
                for (prefix, name), total in self.sums.items() if self.counts[prefix] > 0}


def rollout_stats(batch: RolloutBatch, returns: torch.Tensor, cfg: PPOConfig) -> dict[str, float]:
    """What the rollout looked like, overall and per role, before the update changed anything.

    kl_to_ref is the per-response *sum* over response tokens of log pi_rollout - log pi_ref
    (the k1 estimator, summed, not averaged); score is what the judge paid, the missing-EOS
    penalty in place of the score of a response that never ended."""
    mask = batch.action_mask
    kl_seq = torch.where(mask, batch.old_logprobs - batch.ref_logprobs, 0.0).sum(1)  # (B,)
    scores = torch.where(batch.finished, batch.scores, cfg.missing_eos_penalty)
    out = {}
    for prefix, rows in by_role(batch.role):
        if rows.any():
            out[prefix + "kl_to_ref"] = kl_seq[rows].mean().item()
            out[prefix + "score"] = scores[rows].mean().item()
            out[prefix + "response_length"] = mask[rows].sum(1).float().mean().item()
            out[prefix + "eos_rate"] = batch.finished[rows].float().mean().item()
            out[prefix + "explained_variance"] = explained_variance(batch.old_values, returns, mask & rows[:, None])
    return out


def ppo_update(model, optimizer, batch: RolloutBatch | list[RolloutBatch], cfg: PPOConfig, generator=None,
               ptx_loss: Optional[Callable[[], torch.Tensor]] = None, ptx_coef: float = 0.0,
               reduce_gradients: Optional[Callable[[], None]] = None) -> dict:
    """Several epochs of clipped-PPO minibatch steps on one rollout batch, or on several.

    Several batches (self-play gives one per role, each padded to its own width) are one
    rollout: advantages are whitened and metrics averaged over all their rows, and each
    epoch takes every row once, in minibatches drawn within one batch, the minibatches
    of all batches in a shuffled order. A minibatch never mixes widths, so its forward
    pass has the shape the rollout's had (the first ratio is exactly 1) and no row pays
    for another role's padding.

    `ptx_loss`, when given, returns a supervised loss on a fresh batch of supervised data;
    every minibatch adds `ptx_coef` times it to its loss before the one backward pass and
    the one gradient clip (PPO-ptx, InstructGPT's eq. 2), so the coefficient weighs it
    against the PPO terms.

    `reduce_gradients`, when given, runs after each backward pass and before the clip: the
    data-parallel ranks' all-reduce (`distributed.all_reduce_gradients`).

    Returns float metrics, overall and per role ("attacker/clipfrac", ...).
    Raises FloatingPointError at the first non-finite input, loss or gradient.
    """
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        raise ValueError("PPO needs dropout off: logprobs must be the rollout's ([N details])")
    # masked slots may hold anything (NaN included): zero them before any arithmetic
    batches = [dataclasses.replace(b, old_logprobs=torch.where(b.action_mask, b.old_logprobs, 0.0),
                                   ref_logprobs=torch.where(b.action_mask, b.ref_logprobs, 0.0),
                                   old_values=torch.where(b.action_mask, b.old_values, 0.0))
               for b in ([batch] if isinstance(batch, RolloutBatch) else batch)]
    for b in batches:
        _check_finite("the RolloutBatch given to ppo_update", old_logprobs=b.old_logprobs,
                      ref_logprobs=b.ref_logprobs, old_values=b.old_values, scores=b.scores[b.finished])
    joined = join_rows(batches)  # (sum of B, max L) for whitening and statistics
    joined_advantages, joined_returns = advantages_and_returns(joined, cfg)
    advantages, returns, first_row = [], [], 0
    for b in batches:  # back to each batch's own (B, L)
        rows, L = slice(first_row, first_row + len(b)), b.action_mask.shape[1]
        advantages.append(joined_advantages[rows, :L])
        returns.append(joined_returns[rows, :L])
        first_row += len(b)

    starts = [first_marked_column(b.action_mask) for b in batches]  # as make_rollout_batch reads them out

    token_means, ptx_losses, grad_norms, metrics = TokenMeans(), [], [], {}
    for epoch in range(cfg.epochs):
        # [37 details] each epoch is a shuffled pass over every sample exactly once
        minibatches = [(i, idx) for i, b in enumerate(batches)
                       for idx in torch.randperm(len(b), generator=generator).split(cfg.minibatch_size)]
        if len(batches) > 1:
            minibatches = [minibatches[j] for j in torch.randperm(len(minibatches), generator=generator)]
        for mb, (i, idx) in enumerate(minibatches):
            where = f"ppo_update (epoch {epoch + 1}, minibatch {mb + 1})"
            b, s = batches[i], starts[i]  # every per-token tensor below is columns s.. of the shifted view
            m = b.action_mask[idx, s:]  # (b, L - s)
            # the current policy's view of the rollout: recomputed with gradients, at the sampling temperature
            logits, values = shifted_logits_and_values(
                model, b.input_ids[idx], b.attention_mask[idx], cfg.temperature, s)  # (b, L - s, V), (b, L - s)
            logprobs = logprobs_of(logits, b.input_ids[idx, s + 1:])  # (b, L - s)
            pg_tok, ratio = clipped_surrogate(logprobs, b.old_logprobs[idx, s:], advantages[i][idx, s:],
                                              cfg.clip_range)
            vf_tok = clipped_value_loss(values, b.old_values[idx, s:], returns[i][idx, s:], cfg.clip_range_value)
            ent_tok = entropy_of(logits)
            pg_loss, vf_loss, entropy = masked_mean(pg_tok, m), masked_mean(vf_tok, m), masked_mean(ent_tok, m)
            _check_finite(where, **{"policy loss": pg_loss, "value loss": vf_loss, "entropy": entropy})
            loss = pg_loss + cfg.vf_coef * vf_loss - cfg.ent_coef * entropy
            if ptx_loss is not None:  # [InstructGPT eq. 2] one objective: RL terms + γ · supervised term
                ptx = ptx_loss()
                _check_finite(where, **{"PPO-ptx loss": ptx})
                loss = loss + ptx_coef * ptx
                ptx_losses.append(ptx.detach())

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if reduce_gradients is not None:  # data-parallel ranks: average the gradients first
                reduce_gradients()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)  # [37 details]
            _check_finite(where, **{"gradient norm": grad_norm})
            optimizer.step()

            with torch.no_grad():
                if epoch == 0 and mb == 0:  # [N details] must be exactly 0: same logprobs as the rollout
                    first_dev = torch.where(m, (ratio - 1).abs(), 0.0).max()
                    metrics["first_minibatch/max_abs_ratio_minus_1"] = first_dev.item()
                token_means.add({"policy_loss": pg_tok, "value_loss": vf_tok, "entropy": ent_tok, "ratio": ratio,
                                 "approx_kl": approx_kl(ratio),
                                 "clipfrac": ((ratio - 1).abs() > cfg.clip_range).float()}, m, b.role[idx])
            grad_norms.append(grad_norm)

    metrics.update(token_means.means())
    metrics["grad_norm"] = torch.stack(grad_norms).mean().item()
    if ptx_losses:
        metrics["ptx/loss"] = torch.stack(ptx_losses).mean().item()
    metrics.update(rollout_stats(joined, joined_returns, cfg))
    return metrics
