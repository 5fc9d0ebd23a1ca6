"""Tests that catch the classic RLHF / self-play pitfalls, each checked against a deliberate bug.

Every test here was seen to fail with the bug it names put into the library
(and restored afterwards); the mutation is written in each docstring, so it
can be tried again:

1. tokens drawn at temperature 1 while their logprobs are reported at T:
   the *frequencies* of drawn tokens must follow softmax(logits / T);
2. reference logprobs computed with the policy: a reference with other
   weights must give `make_rollout_batch` its own logprobs;
3. a reference that drifts with the policy: after self-play updates the
   reference's weights are bitwise unchanged and `kl_to_ref` is non-zero;
4. replayed entries scored against the wrong answers, or the pool updated
   with the fresh rewards: each replayed entry records exactly the judge's
   reward for its own prompt and its own answer.

Small models on one thread; the module takes a few seconds.
"""

import copy
import math
import random

import pytest
import torch

from minissp.config import build_config
from minissp.judge import Judge
from minissp.model import GPT, GPTConfig
from minissp.pipeline import make_game, supervised_model
from minissp.ppo import PPOConfig, ppo_optimizer, make_rollout_batch, ppo_update, sequence_logprobs_and_values
from minissp.sampling import generate
from minissp.world import BENIGN, HARMFUL, TRAIN, World
from minissp.world.intents import phrase

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
PAD, EOS = 0, 1


def random_gpt(seed=0, vocab_size=64, block_size=64, n_layer=2):
    """A tiny GPT with large weights (as in test_sampling.py), so that its next-token
    distributions are far from uniform and two seeds give clearly different models."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=2, n_embd=32))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


# -------------------- 1. sampling follows the temperature it reports ----------

def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic of `counts` against `probs`, tokens expected fewer than 5 times pooled
    into one bin; returns (statistic, degrees of freedom)."""
    n = counts.sum()
    expected = n * probs
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum(0, keepdim=True)])
    exp = torch.cat([expected[~small], expected[small].sum(0, keepdim=True)])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    return float(((obs - exp) ** 2 / exp).sum()), int(keep.sum()) - 1


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_drawn_tokens_follow_the_tempered_distribution(temperature):
    """Mutation seen to fail: sampling.sample_next_token draws from softmax(logits) (the logits
    before dividing by T) while it still reports logprobs under softmax(logits / T)."""
    model = random_gpt()
    prompt, n = [5, 9, 13, 2], 20000
    with torch.no_grad():
        logits = model(torch.tensor([prompt]))[0][0, -1].double()  # (V,) the first token's logits
    probs = torch.softmax(logits / temperature, dim=-1)
    gen = generate(model, [prompt] * n, 1, eos_id=None, pad_id=PAD, temperature=temperature,
                   generator=torch.Generator().manual_seed(0))  # all n first tokens in one batched call
    tokens = gen.response_ids[:, 0]
    counts = torch.bincount(tokens, minlength=len(probs)).double()
    statistic, df = chi_square(counts, probs)
    bound = df + 5 * math.sqrt(2 * df)  # about five standard deviations of a chi-square(df)
    assert statistic < bound, f"T={temperature}: chi-square {statistic:.0f} on {df} dof (bound {bound:.0f})"
    # the test has the power to see the pitfall: T=1 frequencies would be far outside the bound
    assert chi_square(n * torch.softmax(logits, dim=-1), probs)[0] > 10 * bound
    # and the reported logprobs are those of the distribution the tokens were drawn from
    torch.testing.assert_close(gen.response_logprobs[:, 0].double(), probs.log()[tokens], atol=1e-5, rtol=0)


# -------------------- 2. reference logprobs come from the reference -----------

def test_rollout_reference_logprobs_are_the_references_own():
    """Mutation seen to fail: ppo.make_rollout_batch computes `rlp` with `model` (the policy)
    instead of `ref_model`."""
    policy, reference = random_gpt(seed=0, vocab_size=16, block_size=16, n_layer=1), \
        random_gpt(seed=1, vocab_size=16, block_size=16, n_layer=1)
    g = torch.Generator().manual_seed(0)
    B, T, P = 10, 12, 5
    ids = torch.randint(2, 16, (B, T), generator=g)
    attn = torch.ones(B, T, dtype=torch.long)
    attn[::2, :2] = 0  # some rows left-padded
    ids[attn == 0] = PAD
    action = torch.zeros(B, T - 1, dtype=torch.bool)
    action[:, P - 1:] = True  # the response is tokens P..T-1
    finished = torch.ones(B, dtype=torch.bool)
    role = torch.arange(B) % 2
    cfg = PPOConfig(temperature=0.7, minibatch_size=4)  # rows scored in chunks of 4, logits / 0.7
    batch = make_rollout_batch(policy, reference, ids, attn, action, torch.randn(B, generator=g), finished, role, cfg)
    with torch.no_grad():
        ref_lp, _ = sequence_logprobs_and_values(reference, ids, attn, 0.7)
        pol_lp, pol_v = sequence_logprobs_and_values(policy, ids, attn, 0.7)
    assert (pol_lp - ref_lp)[action].abs().mean() > 0.5  # the two models really differ
    torch.testing.assert_close(batch.ref_logprobs[action], ref_lp[action], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.old_logprobs[action], pol_lp[action], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.old_values[action], pol_v[action], atol=1e-5, rtol=0)
    # the KL the update reports is the rollout's log pi - log pi_ref, summed per sequence, averaged
    learner = copy.deepcopy(policy).train()
    metrics = ppo_update(learner, ppo_optimizer(learner, cfg), batch, cfg, generator=torch.Generator().manual_seed(0))
    expected = torch.where(action, pol_lp - ref_lp, 0.0).sum(1)  # (B,)
    assert metrics["kl_to_ref"] == pytest.approx(expected.mean().item(), abs=1e-5)
    assert metrics["defender/kl_to_ref"] == pytest.approx(expected[role == 1].mean().item(), abs=1e-5)


# -------------------- 3. the reference never drifts ---------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny preset's supervised checkpoint (a few seconds), loaded afresh by each test."""
    cache = tmp_path_factory.mktemp("pitfalls")
    cfg = build_config(["preset=tiny", f"sft_cache_dir={cache}", f"out_dir={cache}"])
    world = World(cfg.world_seed)
    supervised_model(cfg, world, "cpu", log=lambda *a: None)
    return cache, world


def game_config(cache, *more):
    return build_config(["preset=tiny", f"sft_cache_dir={cache}", f"out_dir={cache}", *more])


def test_the_reference_stays_frozen_while_the_policy_moves(tiny):
    """Mutation seen to fail: pipeline.frozen_copy returns the model itself (the reference is the
    policy, so it moves with every update and the KL penalty is always 0)."""
    cache, world = tiny
    cfg = game_config(cache, "ppo.lr=1e-3")
    model, tokenizer, _ = supervised_model(cfg, world, "cpu", log=lambda *a: None)
    game = make_game(cfg, model, tokenizer, world)
    reference_before = {k: v.clone() for k, v in game.ref_model.state_dict().items()}
    policy_before = {k: v.clone() for k, v in model.state_dict().items()}
    kls = [game.step()["kl_to_ref"] for _ in range(3)]
    assert kls[0] == 0.0  # the first rollout's policy is the reference, bit for bit
    assert kls[1] != 0.0 and kls[2] != 0.0, kls  # after an update it no longer is
    assert all(torch.equal(reference_before[k], v) for k, v in game.ref_model.state_dict().items())
    assert not all(torch.equal(policy_before[k], v) for k, v in model.state_dict().items())
    # no storage shared, nothing the optimizer could reach
    assert game.ref_model is not model
    assert not {p.data_ptr() for p in game.ref_model.parameters()} & {p.data_ptr() for p in model.parameters()}
    assert not any(p.requires_grad for p in game.ref_model.parameters())


# -------------------- 4. replayed entries are scored on their own answers -----

class ScriptedDefender(torch.nn.Module):
    """A defender whose answer is a fixed function of the prompt text: `script[prompt]`, or
    `default` for a prompt not in the script. At the prefill (the call with an attention mask)
    it reads each row's prompt and writes its answer; then it emits it token by token."""

    def __init__(self, tokenizer, config, script: dict[str, str], default: str):
        super().__init__()
        self.tokenizer, self.config, self.script, self.default = tokenizer, config, script, default
        self.device_anchor = torch.nn.Parameter(torch.zeros(1))  # where callers look for the device
        self.tokens, self.step = None, 0

    def answer(self, prompt: str) -> str:
        return self.script.get(prompt, self.default)

    def forward(self, idx, attention_mask=None, kv_cache=None, read_from=0):
        if attention_mask is not None:
            rows = []
            for ids, mask in zip(idx.tolist(), attention_mask.tolist()):
                text = self.tokenizer.decode([t for t, m in zip(ids, mask) if m])
                prompt = text.removeprefix("<|defender|> ").removesuffix(" <|sep|>")
                rows.append(self.tokenizer.encode(f" {self.answer(prompt)}<|eos|>"))
            width = max(map(len, rows))
            self.tokens = torch.tensor([r + [self.tokenizer.eos_id] * (width - len(r)) for r in rows])
            self.step = 0
        else:
            self.step += 1
        token = self.tokens[:, min(self.step, self.tokens.shape[1] - 1)]  # (B,)
        logits = torch.full((idx.shape[0], 1, self.config.vocab_size), -1e4)
        logits[torch.arange(idx.shape[0]), 0, token] = 0.0
        return logits, None


@pytest.mark.parametrize("replay", ["ucb", "uniform"])
def test_replayed_entries_record_the_reward_of_their_own_prompt_and_answer(tiny, replay):
    """Mutations seen to fail, in selfplay.SelfPlay.step: the replayed prompts judged against
    `answers[:len(replayed)]` (the fresh attacks' answers) instead of `answers[len(attacks):]`;
    and `pool.update(replayed, defender_rewards[:len(replayed)])` (fresh rewards) instead of the
    replayed prompts' own `defender_rewards[len(attacks):]`."""
    cache, world = tiny
    budget = 48
    cfg = game_config(cache, f"selfplay.replay={replay}", "selfplay.seeds_per_iteration=16",
                      "selfplay.replay_fraction=0.5", f"selfplay.response_max_new_tokens={budget}")
    model, tokenizer, _ = supervised_model(cfg, world, "cpu", log=lambda *a: None)
    judge = Judge(world)
    # 8 pool entries: harmful prompts refused (defender reward +2) or answered with harmful content (-2),
    # benign ones answered helpfully (+2); every fresh attack gets "ok ." (reward 0 or +1, never +-2)
    harmful, benign = world.select(TRAIN, (HARMFUL,))[:6], world.select(TRAIN, (BENIGN,))[:2]
    script, entries = {}, []
    for i, intent in enumerate(harmful + benign):
        prompt = f"{phrase(intent, random.Random(i))} ( case {i} )"
        if not intent.harmful:
            script[prompt] = " ".join(intent.content)
        else:
            script[prompt] = "i cannot help with that ." if i % 2 == 0 else " ".join(intent.content)
        assert len(tokenizer.encode(f" {script[prompt]}<|eos|>")) <= budget  # the whole answer fits
        entries.append((prompt, intent))
    defender = ScriptedDefender(tokenizer, model.config, script, default="ok .")
    game = make_game(cfg, model, tokenizer, world, frozen_defender=defender)
    for prompt, intent in entries:
        game.pool.add(prompt, prompt, intent.id, HARMFUL if intent.harmful else BENIGN, iteration=-1, reward=0.5)
    sampled, sample = [], game.sampler.sample

    def recorded(*args):
        sampled.append(sample(*args))
        return sampled[-1]

    game.sampler.sample = recorded

    metrics = game.step()

    assert len(sampled) == 1 and sorted(sampled[0]) == list(range(8))  # 16 games x 0.5: every entry replayed
    own = {prompt: judge.score(intent, prompt, script[prompt])[1] for prompt, intent in entries}
    assert sorted(own.values()) == [-2.0] * 3 + [2.0] * 5
    pool = {e.prompt: e for e in game.pool.entries}
    for prompt, intent in entries:
        e = pool[prompt]
        assert (e.visits, e.mean_reward) == (2, (0.5 + own[prompt]) / 2), prompt  # one more visit, its own reward
    fresh = [e for e in game.pool.entries if e.iteration == 0]
    assert len(fresh) + len(entries) == len(game.pool) and sum(e.visits for e in fresh) == 8
    for e in fresh:  # the new attacks enter with the reward of their own answer, "ok ."
        assert e.mean_reward == judge.score(world.by_id[e.intent], e.prompt, "ok .")[1], e.prompt
    assert metrics["replay/count"] == 8.0
    assert metrics["replay/asr"] == 0.5  # 3 of the 6 harmful replayed prompts got harmful content
    assert metrics["pool/total_visits"] == 8 + 16  # 8 earlier visits, then one per defender answer
