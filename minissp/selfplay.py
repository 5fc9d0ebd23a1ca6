"""Safety Self-Play: one model attacks, defends, and learns from both, with UCB replay.

The loop of SSP (Wang et al. 2026, arXiv 2601.10589), one iteration:

1. draw seeds: training intents, harmful and benign (borderline included);
2. the **attacker** role writes an attack frame for each seed; the seed
   request goes where it wrote a slot token: `<|request|>` verbatim, or
   reversed, in leetspeak, or cut in two (`expand_attack`, `tactics.SLOTS`);
3. the **reflective experience replay** picks past attacks from the pool
   (UCB favours the defender's failures, `replay.py`); they replace a
   fraction of the fresh attacks in the defender's batch;
4. the **defender** role answers fresh and replayed prompts;
5. the **judge** labels every exchange and pays both roles (`judge.py`);
6. the pool records the defender's rewards and keeps the new attacks;
7. **one PPO update** trains both roles of the one shared model, each role's games in a
   rollout batch of their own, advantages whitened per role (`ppo.py`).

`SelfPlay.play` is steps 1-6 (the rollout) and `SelfPlay.learn` step 7 (the
update), kept apart as CleanRL's ppo.py keeps them; the loop that calls them,
evaluates, logs and checkpoints is `pipeline.selfplay_stage`.

Either role can instead be played by a frozen model, which gives the
baselines of the experiment: defender-only RL against a frozen attacker
(`frozen_attacker`), and the adaptive attack, a fresh attacker trained
against a frozen defender (`frozen_defender`).

Our choice, not the paper's: seeds are half harmful and half benign (after
Self-RedTeam); replayed prompts replace fresh ones, so the attacker trains on
fewer sequences than the defender; replayed prompts train only the defender
(their attacker is gone); the pool stores every fresh attack with its first
defender reward.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import python_rng_from_json, python_rng_to_json
from .diversity import distinct_n
from .distributed import REPLAY_STREAM, Ranks, all_reduce_gradients, gather, stream_seed
from .judge import Judge
from .ppo import PPOConfig, make_rollout_batch, ppo_update
from .replay import UCB_C, Experience, ExperiencePool, make_sampler, replay_count, selection_capture
from .sampling import Generation, generate
from .sft import Encoded, lm_loss
from .world import BENIGN, BORDERLINE, HARMFUL, TRAIN, World
from .world.corpora import expand_attack
from .world.intents import Intent, phrase
from .world.tactics import identify_family

ATTACKER_ROLE, DEFENDER_ROLE = 0, 1  # ppo.ROLES order


@dataclass
class SelfPlayConfig:
    """The self-play loop."""

    iterations: int = 100
    """PPO updates (one batch of games each)."""
    seeds_per_iteration: int = 32
    """Games per iteration: the defender answers this many prompts."""
    harmful_fraction: float = 0.5
    """Share of seeds drawn from harmful intents; the rest are benign or borderline."""
    replay: str = "ucb"
    """Replay sampler: "ucb", "uniform" or "none"."""
    replay_fraction: float = 0.25
    """Share of the defender's prompts replayed from the pool instead of freshly attacked."""
    ucb_c: float = UCB_C
    """Exploration constant c of the UCB score (why 0.3 and not UCB1's sqrt(2): `replay.py`)."""
    pool_capacity: int = 512
    """Most attacks the pool holds; the best-mastered one is evicted first."""
    attack_max_new_tokens: int = 64
    """Length budget of an attack frame; no EOS within it costs the attacker the missing-EOS penalty."""
    response_max_new_tokens: int = 40
    """Length budget of a defender answer."""
    eval_every: int = 25
    """Iterations between held-out evaluations logged with the metrics (0 = never)."""
    eval_per_intent: int = 3
    """Prompts per held-out intent and family in those checks (the final evaluation uses
    eval.per_intent): a third of the cost at 9, each plain benign prompt then 2.1 points."""
    ptx_coef: float = 2.0
    """γ of PPO-ptx (InstructGPT's eq. 2): every PPO minibatch's loss adds γ times the
    cross-entropy of a batch of supervised data (`pipeline.ptx_data`); 0 = off. One loss,
    one gradient clip, so γ weighs the two terms against each other."""
    ptx_batch_size: int = 8
    """Supervised examples in the PPO-ptx term of each PPO minibatch."""


@dataclass
class Games:
    """One iteration's games, as `SelfPlay.play` recorded them for `SelfPlay.learn`."""

    iteration: int
    seeds: list[Intent]            # the fresh games' seed intents
    attacks: list[str]             # the fresh attacks, slots filled (one per seed)
    replayed: list[Experience]     # the pool entries replayed to the defender
    attack_gen: Generation         # the attacker's frames, as sampled (len(seeds) rows)
    defense_gen: Generation        # the defender's answers: fresh attacks first, then replayed
    fresh: list[tuple]             # judge.score per fresh game: (attacker reward, defender reward, labels)
    again: list[tuple]             # judge.score per replayed prompt
    timings: dict[str, float]
    selection: dict[str, float]    # replay.selection_capture of the replayed draw

    @property
    def attacker_rewards(self) -> list[float]:
        return [a for a, _, _ in self.fresh]

    @property
    def defender_rewards(self) -> list[float]:
        return [d for _, d, _ in self.fresh + self.again]


def draw_seeds(world: World, n: int, harmful_fraction: float, rng: random.Random) -> list[Intent]:
    """n training intents, round(n * harmful_fraction) of them harmful, in random order."""
    harmful = world.select(TRAIN, (HARMFUL,))
    benign = world.select(TRAIN, (BENIGN, BORDERLINE))
    n_harmful = round(n * harmful_fraction)
    seeds = [rng.choice(harmful) for _ in range(n_harmful)] + [rng.choice(benign) for _ in range(n - n_harmful)]
    rng.shuffle(seeds)
    return seeds


def stack_for_ppo(generations: list[Generation], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Several generations -> one PPO batch: ids (B, T), attention mask (B, T), action mask (B, T-1).

    Prompts are left-padded to the longest prompt and responses right-padded to
    the longest response, so every row reads [pads | prompt | response | pads].
    Action t of the shifted view is token t+1 (see ppo.py): a response token.
    """
    P = max(g.prompt_ids.shape[1] for g in generations)
    N = max(g.response_ids.shape[1] for g in generations)
    ids, mask, actions = [], [], []
    for g in generations:
        B, p = g.prompt_ids.shape
        n = g.response_ids.shape[1]
        device = g.prompt_ids.device
        left = torch.full((B, P - p), pad_id, dtype=torch.long, device=device)
        right = torch.full((B, N - n), pad_id, dtype=torch.long, device=device)
        no_left = torch.zeros(B, P - p, dtype=torch.bool, device=device)
        no_right = torch.zeros(B, N - n, dtype=torch.bool, device=device)
        ids.append(torch.cat([left, g.prompt_ids, g.response_ids, right], dim=1))  # (B, P+N)
        mask.append(torch.cat([no_left, g.prompt_mask, g.response_mask, no_right], dim=1))  # (B, P+N)
        is_response = torch.cat([no_left, torch.zeros_like(g.prompt_mask), g.response_mask, no_right], dim=1)
        actions.append(is_response[:, 1:])  # (B, P+N-1)
    return torch.cat(ids), torch.cat(mask).long(), torch.cat(actions)


class PtxBatches:
    """Endless length-grouped batches of the PPO-ptx data, with a position a checkpoint can hold.

    The same batches, drawn from the same RNG at the same moments, as
    `sft.length_grouped_batches` (a test checks it): take `group` batches' worth
    of examples, sort them by length, split, shuffle the batches. The batches
    of the current group not yet used are kept as indices into `data`, so that
    `SelfPlay.state_dict` can save them and a resumed run draws what the
    uninterrupted one would have.
    """

    def __init__(self, data: list[Encoded], batch_size: int, rng: random.Random, group: int = 16):
        self.data, self.batch_size, self.rng, self.group = data, batch_size, rng, group
        self.pending: list[list[int]] = []  # the current group's unused batches, as indices into data

    def __iter__(self):
        return self

    def __next__(self) -> list[Encoded]:
        if not self.pending:
            pool = self.rng.sample(range(len(self.data)), min(len(self.data), self.batch_size * self.group))
            pool.sort(key=lambda i: len(self.data[i].ids))
            self.pending = [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
            self.rng.shuffle(self.pending)
        return [self.data[i] for i in self.pending.pop(0)]


class SelfPlay:
    """The game state of one run: model, reference, optimizer, pool and the RNGs."""

    def __init__(self, model, ref_model, tokenizer, world: World, cfg: SelfPlayConfig, ppo_cfg: PPOConfig,
                 optimizer, seed: int = 0, frozen_attacker=None, frozen_defender=None, ptx_data=None,
                 ranks: Ranks = Ranks()):
        if frozen_attacker is not None and frozen_defender is not None:
            raise ValueError("at most one role can be frozen: nothing would be trained")
        self.model, self.ref_model, self.tokenizer = model, ref_model, tokenizer
        self.world, self.judge = world, Judge(world)
        self.cfg, self.ppo_cfg, self.optimizer = cfg, ppo_cfg, optimizer
        self.attacker = frozen_attacker if frozen_attacker is not None else model
        self.defender = frozen_defender if frozen_defender is not None else model
        self.train_roles = [r for r, frozen in ((ATTACKER_ROLE, frozen_attacker), (DEFENDER_ROLE, frozen_defender))
                            if frozen is None]
        self.pool = ExperiencePool(cfg.pool_capacity)
        self.sampler = make_sampler(cfg.replay, cfg.ucb_c)
        # with several ranks (torchrun, `distributed.py`): each rank plays its share of the games with its
        # own streams, and all draw the replayed entries from one shared generator
        if cfg.seeds_per_iteration % ranks.world_size:
            raise ValueError(f"selfplay.seeds_per_iteration={cfg.seeds_per_iteration} must be divisible by the "
                             f"{ranks.world_size} ranks")
        self.ranks = ranks
        own = stream_seed(seed, ranks.rank)
        self.rng = random.Random(own)
        self.np_rng = np.random.default_rng(own)
        self.replay_rng = np.random.default_rng([seed, REPLAY_STREAM]) if ranks.active else self.np_rng
        device = next(model.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(own)
        self.iteration = 0
        self.ptx_batches = PtxBatches(ptx_data, cfg.ptx_batch_size, self.rng) if ptx_data else None

    def _generate(self, model, role: str, texts: list[str], max_new_tokens: int) -> Generation:
        limit = model.config.block_size - max_new_tokens
        prompts = [self.tokenizer.prompt_ids(role, t, limit) for t in texts]
        return generate(model, prompts, max_new_tokens, self.tokenizer.eos_id, self.tokenizer.pad_id,
                        temperature=self.ppo_cfg.temperature, generator=self.generator)

    def play(self) -> Games:
        """Steps 1-6 of the loop: play one batch of games and record them in the pool."""
        cfg = self.cfg
        t0 = time.perf_counter()
        # 1-3. seeds, fresh attacks, replayed attacks (with N ranks: N·k drawn alike on every rank, k each)
        ranks = self.ranks
        n_games = cfg.seeds_per_iteration // ranks.world_size
        n_replay = replay_count(n_games, cfg.replay_fraction, len(self.pool) // ranks.world_size)
        drawn = self.sampler.sample(self.pool, n_replay * ranks.world_size, self.replay_rng)
        replayed = drawn[ranks.rank * n_replay:(ranks.rank + 1) * n_replay]
        selection = selection_capture(self.pool, drawn)
        seeds = draw_seeds(self.world, n_games - len(replayed), cfg.harmful_fraction, self.rng)
        seed_texts = [phrase(intent, self.rng) for intent in seeds]
        attack_gen = self._generate(self.attacker, "attacker", seed_texts, cfg.attack_max_new_tokens)
        frames = [self.tokenizer.response_text(ids) for ids in attack_gen.response_ids.cpu()]
        # the attacker wrote a frame; the seed request goes into its slots (reversed, leet, ...)
        attacks = [expand_attack(frame, seed) for frame, seed in zip(frames, seed_texts)]
        replay_entries = [self.pool[i] for i in replayed]
        # 4. the defender answers fresh attacks, then replayed ones, in one batch
        defender_texts = attacks + [e.prompt for e in replay_entries]
        defense_gen = self._generate(self.defender, "defender", defender_texts, cfg.response_max_new_tokens)
        answers = [self.tokenizer.response_text(ids) for ids in defense_gen.response_ids.cpu()]
        t1 = time.perf_counter()

        # 5. judge both roles; a replayed prompt is judged against its own seed intent
        fresh = [self.judge.score(s, a, r) for s, a, r in zip(seeds, attacks, answers)]
        replay_intents = [self.world.by_id[e.intent] for e in replay_entries]
        again = [self.judge.score(s, e.prompt, r)
                 for s, e, r in zip(replay_intents, replay_entries, answers[len(attacks):])]
        defender_rewards = [d for _, d, _ in fresh + again]
        # 6. the pool: update what was replayed, then add the new attacks (indices shift on add); every
        # rank's records, in rank order, so that all ranks' pools stay the same
        added = [(attack, text, seed.id, HARMFUL if seed.harmful else BENIGN, identify_family(attack), reward)
                 for seed, text, attack, reward in zip(seeds, seed_texts, attacks, defender_rewards)]
        records = gather((replayed, defender_rewards[len(attacks):], added), ranks)
        self.pool.update([i for r in records for i in r[0]], [x for r in records for x in r[1]])
        for attack, text, intent, label, family, reward in (entry for r in records for entry in r[2]):
            self.pool.add(attack, text, intent, label, family, self.iteration, reward)
        t2 = time.perf_counter()
        return Games(self.iteration, seeds, attacks, replay_entries, attack_gen, defense_gen, fresh, again,
                     {"time/sampling": t1 - t0, "time/judging": t2 - t1}, selection)

    def learn(self, games: Games) -> dict:
        """Step 7: one PPO update (with the PPO-ptx term) of every trained role on `games`.

        Returns the iteration's metrics: the update's, the games' and the pool's."""
        t0 = time.perf_counter()
        update_metrics = self._update(games)
        timings = {**games.timings, "time/ppo": time.perf_counter() - t0}
        metrics = {"iteration": games.iteration, **update_metrics, **timings, **self._game_metrics(games),
                   **{f"pool/{k}": v for k, v in self.pool.stats().items()}}
        self.iteration += 1
        return metrics

    def step(self) -> dict:
        """One whole iteration: `learn(play())`."""
        return self.learn(self.play())

    def _update(self, games: Games) -> dict:
        # one rollout batch per trained role, each padded to its own longest prompt and response
        # (stacked together, a defender's long prompt and an attacker's long attack make most slots pads)
        batches = []
        for role, gen, rewards in ((ATTACKER_ROLE, games.attack_gen, games.attacker_rewards),
                                   (DEFENDER_ROLE, games.defense_gen, games.defender_rewards)):
            if role in self.train_roles:
                device = gen.prompt_ids.device
                ids, mask, actions = stack_for_ppo([gen], self.tokenizer.pad_id)
                # the rollout policy's and the reference's logprobs, and the critic's values, before any update
                batches.append(make_rollout_batch(self.model, self.ref_model, ids, mask, actions,
                                                  torch.tensor(rewards, device=device), gen.finished,
                                                  torch.full((len(rewards),), role, device=device), self.ppo_cfg))

        def ptx():  # PPO-ptx (InstructGPT, Ouyang et al. 2022, eq. 2): see SelfPlayConfig.ptx_coef
            return lm_loss(self.model, next(self.ptx_batches), self.tokenizer.pad_id)
        with_ptx = self.ptx_batches is not None and self.cfg.ptx_coef > 0
        self.model.train()
        reduce = (lambda: all_reduce_gradients(self.model, self.ranks)) if self.ranks.active else None
        metrics = ppo_update(self.model, self.optimizer, batches, self.ppo_cfg, generator=self.generator_cpu(),
                             ptx_loss=ptx if with_ptx else None, ptx_coef=self.cfg.ptx_coef,
                             reduce_gradients=reduce)
        self.model.eval()
        return metrics

    def generator_cpu(self) -> torch.Generator:
        """A CPU generator for minibatch shuffling, seeded from the run's RNG (reproducible)."""
        return torch.Generator().manual_seed(self.rng.getrandbits(63))

    def state_dict(self) -> dict:
        """Everything the next `step` depends on, as tensors, numbers and JSON text only,
        so that `torch.load(weights_only=True)` reads it back: the model, the reference
        model, the optimizer, the pool, the three RNGs (python's `random.Random`, numpy's
        Generator, the sampler's torch Generator, which also seeds the PPO shuffles through
        `generator_cpu`), the PPO-ptx position and the iteration; with several ranks, also the
        replay generator they share. A frozen attacker or defender is not included: it never
        changes, so its owner rebuilds it."""
        return {
            "model": self.model.state_dict(),
            "ref_model": self.ref_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "pool": self.pool.to_json(),
            **self.rank_state(),
            "iteration": self.iteration,
        } | ({"rng_replay": json.dumps(self.replay_rng.bit_generator.state)} if self.ranks.active else {})

    def rank_state(self) -> dict:
        """This rank's own streams, the part of `state_dict` that differs between ranks."""
        return {
            "rng_python": python_rng_to_json(self.rng.getstate()),
            "rng_numpy": json.dumps(self.np_rng.bit_generator.state),
            "rng_torch": self.generator.get_state(),
            "ptx_pending": json.dumps(self.ptx_batches.pending if self.ptx_batches is not None else []),
        }

    def load_rank_state(self, state: dict) -> None:
        self.rng.setstate(python_rng_from_json(state["rng_python"]))  # in place: PtxBatches shares self.rng
        self.np_rng.bit_generator.state = json.loads(state["rng_numpy"])
        self.generator.set_state(state["rng_torch"].cpu())  # a generator's state lives on the CPU
        if self.ptx_batches is not None:
            self.ptx_batches.pending = json.loads(state["ptx_pending"])

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved; the next `step` then plays what it would have played."""
        self.model.load_state_dict(state["model"])
        self.ref_model.load_state_dict(state["ref_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.pool = ExperiencePool.from_json(state["pool"])
        self.load_rank_state(state)
        if self.ranks.active:
            self.replay_rng.bit_generator.state = json.loads(state["rng_replay"])
        self.iteration = int(state["iteration"])

    def _game_metrics(self, games: Games) -> dict:
        seeds, attacks, fresh, again = games.seeds, games.attacks, games.fresh, games.again
        harmful = [i for i, s in enumerate(seeds) if s.harmful]
        benign = [i for i, s in enumerate(seeds) if not s.harmful]
        labels = [lab for _, _, lab in fresh]
        families = [identify_family(attacks[i]) for i in harmful]
        out = {
            "attacker/reward": float(np.mean(games.attacker_rewards)) if fresh else float("nan"),
            "defender/reward": float(np.mean(games.defender_rewards)),
            "game/asr": _mean(labels[i].response_harmful for i in harmful),
            "game/refusal_harmful": _mean(labels[i].response_refusal for i in harmful),
            "game/over_refusal": _mean(labels[i].response_refusal for i in benign),
            "game/keeps_intent": _mean(self.judge.keeps_seed_label(seeds[i], attacks[i]) for i in range(len(seeds))),
            "game/attack_distinct2": distinct_n([attacks[i] for i in harmful]),
            "replay/asr": _mean(lab.response_harmful for (_, _, lab), e in zip(again, games.replayed)
                                if e.label == HARMFUL),
            "replay/count": float(len(again)),
            **{f"replay/{k}": v for k, v in games.selection.items()},
        }
        for name in set(families):
            out[f"family/{name}"] = families.count(name) / len(families)
        return out


def _mean(flags) -> float:
    flags = list(flags)
    return float(np.mean(flags)) if flags else float("nan")
