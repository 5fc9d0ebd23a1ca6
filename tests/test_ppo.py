"""Tests for minissp.ppo: hand-computed GAE, the clip cases by autograd,
reward placement, masking, per-role whitening, and two bandits that PPO must solve."""

import copy
import dataclasses
import math

import pytest
import torch

from minissp.model import GPT, GPTConfig
from minissp.ppo import (
    PPOConfig, RolloutBatch, clipped_surrogate, clipped_value_loss, gae, kl_shaped_rewards,
    ppo_optimizer, make_rollout_batch, masked_mean, masked_whiten, ppo_update,
    sequence_logprobs_and_values, whiten_per_role,
)

V = 16  # vocab of the tiny test models


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
PAD, EOS = 0, 1


def tiny_gpt(seed=0, n_layer=1):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=n_layer, n_head=2, n_embd=32))


def ragged_batch(B=12, T=12, seed=0):
    """Left-padded prompts of 2-4 tokens, responses of 2-6 tokens, some ending in EOS, then pads.

    Returns input_ids (B, T), attention_mask (B, T), action_mask (B, T-1), finished (B,).
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((B, T), PAD)
    attn = torch.zeros(B, T, dtype=torch.long)
    action = torch.zeros(B, T - 1, dtype=torch.bool)
    finished = torch.zeros(B, dtype=torch.bool)
    P = 5  # prompt region is columns [0, P)
    for b in range(B):
        plen = int(torch.randint(2, 5, (1,), generator=g))
        rlen = int(torch.randint(2, 7, (1,), generator=g))
        ids[b, P - plen:P + rlen] = torch.randint(2, V, (plen + rlen,), generator=g)
        attn[b, P - plen:P + rlen] = 1
        finished[b] = b % 4 != 3
        if finished[b]:
            ids[b, P + rlen - 1] = EOS
        action[b, P - 1:P + rlen - 1] = True  # shifted view: column t is token t + 1
    return ids, attn, action, finished


def rollout(model, cfg, seed=0, B=12):
    ids, attn, action, finished = ragged_batch(B=B, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    return make_rollout_batch(model, copy.deepcopy(model), ids, attn, action, torch.randn(B, generator=g),
                              finished, torch.arange(B) % 2, cfg)


# ---------------------------------------------------------------------------- GAE

@pytest.mark.parametrize("gamma,lam,expected", [
    (1.0, 0.95, [0.45125, 0.475, 0.5]),
    (1.0, 1.0, [0.5, 0.5, 0.5]),
    (0.9, 0.95, [0.2727625, 0.3775, 0.5]),
])
def test_gae_matches_hand_computed_numbers(gamma, lam, expected):
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    adv, ret = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), gamma, lam)
    torch.testing.assert_close(adv, torch.tensor([expected]))
    torch.testing.assert_close(ret, torch.tensor([expected]) + 0.5)


def test_gae_ignores_everything_outside_the_action_tokens():
    mask = torch.tensor([[False, True, True, True, False, False]])  # prompt | 3 actions | pads
    rewards = torch.tensor([[7.0, 0.0, 0.0, 1.0, float("nan"), 1e6]])
    values = torch.tensor([[float("nan"), 0.5, 0.5, 0.5, 100.0, float("inf")]])
    adv, ret = gae(rewards, values, mask, 1.0, 0.95)
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.45125, 0.475, 0.5, 0.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.0, 0.95125, 0.975, 1.0, 0.0, 0.0]]))


# ---------------------------------------------------------------------------- rewards

def test_score_lands_on_eos_not_on_a_pad_and_kl_on_every_action_token():
    mask = torch.tensor([[False, True, True, True, False, False]])  # EOS is column 3, pads after
    logprobs = torch.tensor([[-9.0, -1.0, -2.0, -3.0, -9.0, -9.0]])
    ref = torch.tensor([[-1.0, -2.0, -2.0, -1.0, 0.0, 0.0]])
    r = kl_shaped_rewards(torch.tensor([2.0]), torch.tensor([True]), logprobs, ref, mask, 0.1, -1.0)
    torch.testing.assert_close(r, torch.tensor([[0.0, -0.1, 0.0, 2.0 + 0.2, 0.0, 0.0]]))


def test_missing_eos_gets_the_penalty_instead_of_the_score():
    mask = torch.tensor([[True, True, True], [True, True, False]])
    zeros = torch.zeros(2, 3)
    r = kl_shaped_rewards(torch.tensor([5.0, 5.0]), torch.tensor([False, True]), zeros, zeros, mask, 0.05, -1.0)
    torch.testing.assert_close(r, torch.tensor([[0.0, 0.0, -1.0], [0.0, 5.0, 0.0]]))


def test_kl_reward_is_zero_when_policy_equals_reference():
    model = tiny_gpt()
    batch = rollout(model, PPOConfig(temperature=0.7))
    assert torch.equal(batch.old_logprobs, batch.ref_logprobs)
    r = kl_shaped_rewards(batch.scores, batch.finished, batch.old_logprobs, batch.ref_logprobs,
                          batch.action_mask, 0.05, -1.0)
    expected = torch.zeros_like(r)
    last = (batch.action_mask * torch.arange(r.shape[1])).argmax(1)  # each row's last action token
    expected[torch.arange(len(batch)), last] = torch.where(batch.finished, batch.scores, -1.0)
    assert torch.equal(r, expected)  # nothing but the scores: the KL part is exactly 0


def test_logprobs_use_the_sampling_temperature():
    model = tiny_gpt()
    ids, attn, _, _ = ragged_batch()
    lp, _ = sequence_logprobs_and_values(model, ids, attn, temperature=0.7)
    logits, _ = model(ids, attention_mask=attn)
    expected = torch.log_softmax(logits[:, :-1] / 0.7, -1).gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(lp, expected)
    lp1, _ = sequence_logprobs_and_values(model, ids, attn, temperature=1.0)
    assert not torch.allclose(lp, lp1)


# ---------------------------------------------------------------------------- losses by autograd

@pytest.mark.parametrize("adv,ratio,clipped", [
    (1.0, 1.5, True),    # good action already made much likelier: no more push
    (1.0, 0.5, False),   # good action made less likely: push it back up
    (-1.0, 1.5, False),  # bad action made likelier: push it back down
    (-1.0, 0.5, True),   # bad action already made much rarer: no more push
])
def test_policy_loss_clip_cases_by_autograd(adv, ratio, clipped):
    logprobs = torch.tensor([math.log(ratio)], requires_grad=True)
    loss, rho = clipped_surrogate(logprobs, torch.zeros(1), torch.tensor([adv]), 0.2)
    loss.sum().backward()
    torch.testing.assert_close(rho, torch.tensor([ratio]))
    expected = 0.0 if clipped else -adv * ratio  # d(−Aρ)/d logπ = −Aρ
    torch.testing.assert_close(logprobs.grad, torch.tensor([expected]))


@pytest.mark.parametrize("value,ret,expected_grad", [
    (0.5, 1.0, 0.0),    # moved +0.5 from old 0: clipped error (0.2 − 1)² is larger -> no gradient
    (-0.5, -1.0, 0.0),  # the same, downwards
    (0.5, 0.1, 0.4),    # unclipped error is the larger one -> gradient V − R
    (0.1, 1.0, -0.9),   # inside the clip range -> ordinary squared error
])
def test_value_loss_clip_by_autograd(value, ret, expected_grad):
    values = torch.tensor([value], requires_grad=True)
    clipped_value_loss(values, torch.zeros(1), torch.tensor([ret]), 0.2).sum().backward()
    torch.testing.assert_close(values.grad, torch.tensor([expected_grad]))


# ---------------------------------------------------------------------------- masking and whitening

def test_masked_slots_with_nan_change_neither_loss_nor_gradients():
    cfg = PPOConfig(epochs=1, minibatch_size=12)
    model_a = tiny_gpt()
    model_b = copy.deepcopy(model_a)
    clean = rollout(model_a, cfg)
    dirty = copy.deepcopy(clean)
    outside = ~dirty.action_mask
    dirty.old_logprobs[outside] = float("nan")
    dirty.ref_logprobs[outside] = 1e6
    dirty.old_values[outside] = float("inf")
    m_a = ppo_update(model_a, ppo_optimizer(model_a, cfg), clean, cfg, torch.Generator().manual_seed(0))
    m_b = ppo_update(model_b, ppo_optimizer(model_b, cfg), dirty, cfg, torch.Generator().manual_seed(0))
    assert m_a == m_b
    for p_a, p_b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p_a, p_b)
    assert not torch.equal(model_a.transformer.wte.weight, tiny_gpt().transformer.wte.weight)  # it did step


def test_masked_mean_and_whiten_ignore_masked_nan():
    x = torch.tensor([1.0, 2.0, 3.0, float("nan")])
    mask = torch.tensor([True, True, True, False])
    assert masked_mean(x, mask).item() == 2.0
    w = masked_whiten(x, mask)
    assert torch.isfinite(w).all() and w[3] == 0
    torch.testing.assert_close(masked_mean(w, mask), torch.tensor(0.0))


def test_advantages_are_whitened_per_role():
    g = torch.Generator().manual_seed(0)
    adv = torch.randn(8, 5, generator=g)
    mask = torch.rand(8, 5, generator=g) > 0.3
    role = torch.tensor([0, 1] * 4)
    loud = torch.where((role == 0)[:, None], adv * 100 + 50, adv)  # the attacker's rewards on another scale
    w = whiten_per_role(adv, mask, role)
    w_loud = whiten_per_role(loud, mask, role)
    torch.testing.assert_close(w, w_loud)  # neither role's advantages depend on the other's scale
    for r in (0, 1):
        m = mask & (role == r)[:, None]
        torch.testing.assert_close(masked_mean(w[m] ** 2, torch.ones_like(w[m], dtype=torch.bool)),
                                   torch.tensor(1.0), atol=1e-4, rtol=0)
    # whitening the batch as one would let the loud role drown the other
    assert masked_whiten(loud, mask)[mask & (role == 1)[:, None]].std() < 0.1


# ---------------------------------------------------------------------------- the update

def test_first_minibatch_ratio_is_exactly_one():
    cfg = PPOConfig(epochs=1, minibatch_size=12, temperature=0.7)
    model = tiny_gpt(n_layer=2)
    batch = rollout(model, cfg)
    metrics = ppo_update(model, ppo_optimizer(model, cfg), batch, cfg, torch.Generator().manual_seed(0))
    assert metrics["first_minibatch/max_abs_ratio_minus_1"] == 0.0
    assert metrics["clipfrac"] == 0.0 and metrics["approx_kl"] == 0.0
    for role in ("attacker", "defender"):
        assert {f"{role}/{k}" for k in ("approx_kl", "clipfrac", "policy_loss", "value_loss", "entropy",
                                        "explained_variance", "kl_to_ref", "score", "response_length")} <= set(metrics)
    # with several minibatches of several epochs, only the very first is guaranteed to be on-policy
    cfg = PPOConfig(epochs=2, minibatch_size=5, temperature=0.7)
    batch = rollout(model, cfg, seed=3)
    metrics = ppo_update(model, ppo_optimizer(model, cfg), batch, cfg, torch.Generator().manual_seed(0))
    assert metrics["first_minibatch/max_abs_ratio_minus_1"] == 0.0
    assert metrics["approx_kl"] > 0


def test_the_rollout_reads_out_the_response_columns_only_and_gets_the_same_numbers():
    cfg = PPOConfig(temperature=0.7)
    model = tiny_gpt(n_layer=2)
    ids, attn, action, finished = ragged_batch(B=12)
    batch = make_rollout_batch(model, model, ids, attn, action, torch.zeros(12), finished, torch.arange(12) % 2, cfg)
    with torch.no_grad():
        full_lp, full_v = sequence_logprobs_and_values(model, ids, attn, cfg.temperature)  # every column
    torch.testing.assert_close(batch.old_logprobs[action], full_lp[action], atol=1e-6, rtol=0)
    torch.testing.assert_close(batch.old_values[action], full_v[action], atol=1e-6, rtol=0)
    reads = []
    model.register_forward_hook(lambda module, args, kwargs, out: reads.append(out[0].shape[1]), with_kwargs=True)
    make_rollout_batch(model, model, ids, attn, action, torch.zeros(12), finished, torch.arange(12) % 2, cfg)
    assert reads and all(n == ids.shape[1] - 4 for n in reads)  # responses start at column 5: read from 4


class RecordingGPT(torch.nn.Module):
    """Wraps a GPT and remembers the first token id of every row it reads."""

    def __init__(self, gpt):
        super().__init__()
        self.gpt, self.seen = gpt, []

    def forward(self, idx, attention_mask=None, read_from=0):
        self.seen.append(idx[:, 0].tolist())
        return self.gpt(idx, attention_mask=attention_mask, read_from=read_from)


def test_each_epoch_is_a_shuffled_pass_over_every_sample_once():
    cfg = PPOConfig(epochs=3, minibatch_size=4)
    model = RecordingGPT(tiny_gpt())
    ids, attn, action, finished = ragged_batch(B=10)
    ids[:, 0], attn[:, 0] = torch.arange(10) + 2, 1  # a distinct first token identifies each row
    batch = make_rollout_batch(model, model, ids, attn, action, torch.zeros(10), finished,
                               torch.zeros(10, dtype=torch.long), cfg)
    model.seen.clear()
    ppo_update(model, ppo_optimizer(model, cfg), batch, cfg, torch.Generator().manual_seed(0))
    epochs = [sum(model.seen[i:i + 3], []) for i in (0, 3, 6)]  # 3 minibatches (4 + 4 + 2) per epoch
    for seen in epochs:
        assert sorted(seen) == list(range(2, 12))
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]


def cut(batch: RolloutBatch, rows: torch.Tensor) -> RolloutBatch:
    """The rows `rows` of a rollout batch, cut to the columns they use (as self-play stacks one role)."""
    used = batch.attention_mask[rows].bool().any(0).nonzero().squeeze(1)
    first, end = int(used[0]), int(used[-1]) + 1
    fields = {}
    for f in dataclasses.fields(RolloutBatch):
        x = getattr(batch, f.name)[rows]
        if f.name in ("input_ids", "attention_mask"):  # (B, T)
            x = x[:, first:end]
        elif x.dim() == 2:  # (B, L), L = T - 1: the shifted view
            x = x[:, first:end - 1]
        fields[f.name] = x
    return RolloutBatch(**fields)


@pytest.mark.parametrize("per_role", [True, False])
def test_batches_by_role_are_one_rollout_for_whitening_and_metrics(per_role):
    """With a learning rate of 0 every minibatch sees the rollout's policy, so each role's mean
    policy loss is minus its mean whitened advantage: split by role or not, the same numbers."""
    cfg = PPOConfig(whiten_advantages_per_role=per_role, minibatch_size=4)
    model = tiny_gpt()
    batch = rollout(model, cfg, seed=3, B=12)
    batch.scores[batch.role == 0] = batch.scores[batch.role == 0] * 10 + 5  # the roles on other scales
    parts = [cut(batch, (batch.role == r).nonzero().squeeze(1)) for r in (0, 1)]
    assert [p.input_ids.shape[1] for p in parts] == [10, 8]  # two widths: statistics need join_rows
    still = torch.optim.SGD(model.parameters(), lr=0.0)
    split = ppo_update(model, still, parts, cfg, torch.Generator().manual_seed(0))
    whole = ppo_update(model, still, batch, cfg, torch.Generator().manual_seed(0))
    assert split.keys() == whole.keys()
    for key in split.keys() - {"grad_norm"}:  # (gradient norms are per minibatch, and minibatches differ)
        assert split[key] == pytest.approx(whole[key], rel=1e-5, abs=1e-5), key
    if per_role:  # each role's advantages have mean 0 on their own
        assert abs(split["attacker/policy_loss"]) < 1e-5
    else:  # whitened together, the attacker's higher scores give it advantages above the mean
        assert split["attacker/policy_loss"] < -0.1


class ShapeRecordingGPT(RecordingGPT):
    """Also remembers the width of every batch it reads."""

    def forward(self, idx, attention_mask=None, read_from=0):
        self.widths = getattr(self, "widths", []) + [idx.shape[1]]
        return super().forward(idx, attention_mask, read_from)


def test_batches_by_role_are_updated_in_minibatches_of_one_width_each():
    cfg = PPOConfig(epochs=2, minibatch_size=4)
    model = ShapeRecordingGPT(tiny_gpt())
    parts = []
    for role, (B, T, first_id) in enumerate(((6, 12, 2), (7, 11, 8))):  # two widths; distinct first tokens
        ids, attn, action, finished = ragged_batch(B=B, T=T, seed=role)
        ids[:, 0], attn[:, 0] = torch.arange(B) + first_id, 1
        parts.append(make_rollout_batch(model, copy.deepcopy(model.gpt), ids, attn, action,
                                        torch.randn(B), finished, torch.full((B,), role), cfg))
    model.seen.clear(), model.widths.clear()
    metrics = ppo_update(model, ppo_optimizer(model, cfg), parts, cfg, torch.Generator().manual_seed(0))
    assert metrics["first_minibatch/max_abs_ratio_minus_1"] == 0.0  # each minibatch has its rollout's shape
    minibatches = list(zip(model.seen, model.widths))
    assert len(minibatches) == 2 * (2 + 2)  # per epoch: 4 + 2 attacker rows, 4 + 3 defender rows
    for rows, width in minibatches:  # one role, at that role's width
        assert width == (12 if rows[0] < 8 else 11) and all((r < 8) == (rows[0] < 8) for r in rows)
    for epoch in (minibatches[:4], minibatches[4:]):
        assert sorted(sum((rows for rows, _ in epoch), [])) == list(range(2, 15))
    roles = [int(rows[0] >= 8) for rows, _ in minibatches]
    assert roles[:4] != sorted(roles[:4]) or roles[4:] != sorted(roles[4:])  # the roles' minibatches interleave
    assert {"attacker/clipfrac", "defender/clipfrac", "attacker/kl_to_ref", "defender/kl_to_ref"} <= set(metrics)


def test_nan_guard_names_where_it_happened():
    cfg = PPOConfig(epochs=1)
    model = tiny_gpt()
    batch = rollout(model, cfg)
    with torch.no_grad():
        model.transformer.wpe.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite policy loss in ppo_update \(epoch 1, minibatch 1\)"):
        ppo_update(model, ppo_optimizer(model, cfg), batch, cfg)
    batch.scores[batch.finished.nonzero()[0]] = float("inf")
    with pytest.raises(FloatingPointError, match="non-finite scores"):
        ppo_update(tiny_gpt(), ppo_optimizer(model, cfg), batch, cfg)


def test_rollout_batch_rejects_an_action_on_a_pad():
    ids, attn, action, finished = ragged_batch()
    action[0, -1] = True  # the last column of row 0 is a pad
    z = torch.zeros_like(action, dtype=torch.float)
    with pytest.raises(ValueError, match="pad"):
        RolloutBatch(ids, attn, action, z, z, z, torch.zeros(12), finished, torch.zeros(12, dtype=torch.long))


# ---------------------------------------------------------------------------- bandits

def train_bandit(role, targets, iterations=50, B=64, seed=0):
    """One sampled token after a 3-token prompt [role token, 7, 8]; reward 1 if it is the role's target.

    Returns P(target | prompt) of each role before and after training.
    """
    model = tiny_gpt(seed)
    ref = copy.deepcopy(model).requires_grad_(False)
    # the KL-regularised optimum is p ∝ p_ref · exp(reward / β): P(target) ≈ 0.91 at β = 0.2 (V = 16)
    cfg = PPOConfig(lr=1e-3, epochs=4, minibatch_size=16, kl_coef=0.2)
    optimizer = ppo_optimizer(model, cfg)
    g = torch.Generator().manual_seed(seed)
    prompt = torch.stack([role + 2, torch.full((B,), 7), torch.full((B,), 8)], 1)  # (B, 3)
    target = torch.tensor(targets)[role]  # (B,)
    action_mask = torch.zeros(B, 3, dtype=torch.bool)
    action_mask[:, -1] = True  # the shifted view: column 2 is the sampled token at position 3

    def p_target():
        with torch.no_grad():
            probs = torch.softmax(model(prompt)[0][:, -1] / cfg.temperature, -1)  # (B, V)
        return probs, [probs[role == r, targets[r]].mean().item() for r in sorted(set(role.tolist()))]

    before = p_target()[1]
    for _ in range(iterations):
        probs, p = p_target()
        if min(p) > 0.9:
            break
        action = torch.multinomial(probs, 1, generator=g)  # (B, 1)
        ids = torch.cat([prompt, action], 1)  # (B, 4)
        batch = make_rollout_batch(model, ref, ids, torch.ones_like(ids), action_mask,
                                   (action[:, 0] == target).float(), torch.ones(B, dtype=torch.bool), role, cfg)
        ppo_update(model, optimizer, batch, cfg, g)
    return before, p_target()[1]


def test_token_bandit_learns_the_target():
    before, after = train_bandit(torch.zeros(64, dtype=torch.long), targets=[5])
    assert before[0] < 0.15  # about 1/V
    assert after[0] > 0.9


def test_two_role_bandit_one_model_learns_both_targets():
    before, after = train_bandit(torch.arange(64) % 2, targets=[5, 9])
    assert max(before) < 0.15
    assert min(after) > 0.9


# ---------------------------------------------------------------------------- PPO-ptx

def ptx_update(coef, max_grad_norm=0.5):
    """One ppo_update with a PPO-ptx term of weight `coef`; returns the change of every weight."""
    model = tiny_gpt()
    cfg = PPOConfig(epochs=1, minibatch_size=12, max_grad_norm=max_grad_norm, lr=1e-3)
    batch = rollout(model, cfg)
    ids = torch.randint(2, V, (4, 10), generator=torch.Generator().manual_seed(5))

    def ptx_loss():  # next-token cross-entropy on a fixed "supervised" batch
        logits, _ = model(ids[:, :-1])
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())

    before = [p.detach().clone() for p in model.parameters()]
    metrics = ppo_update(model, ppo_optimizer(model, cfg), batch, cfg, torch.Generator().manual_seed(0),
                         ptx_loss=ptx_loss if coef else None, ptx_coef=coef)
    return torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)]), metrics


def test_ptx_coefficient_changes_the_update_although_the_gradient_is_clipped():
    """PPO-ptx is one objective with PPO's (InstructGPT eq. 2), clipped as a whole, so the
    weight decides how much of the step is the supervised term. Adding coef * ptx as a step of
    its own and then clipping would make coef 3 and 6 the same update whenever the clip binds."""
    none, _ = ptx_update(0.0)
    three, metrics = ptx_update(3.0)
    six, _ = ptx_update(6.0)
    assert metrics["grad_norm"] > 0.5  # the clip binds
    assert math.isfinite(metrics["ptx/loss"]) and metrics["ptx/loss"] > 0
    # cosine to the pure-PPO update falls as the weight grows: the mix really shifts
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(a, b, dim=0))  # noqa: E731
    assert cos(three, none) > cos(six, none) + 0.01
    assert not torch.allclose(three, six)
