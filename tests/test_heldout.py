"""Held out means held out: what the evaluation measures never leaks into training.

1. held-out intents carry no safety signal: no safety-tuning example, attacker
   demonstration, PPO-ptx safety example, static adversarial example or
   self-play seed uses one (by intent id, and by the judge reading the text);
2. whatever replays the stage-1 documents chooses them blind to the split;
3. no evaluation prompt appears verbatim in any training data, stage 1 included.
"""

import random

import pytest

from minissp.config import build_config
from minissp.evaluate import EvalConfig
from minissp.methods import static_dataset
from minissp.judge import Judge
from minissp.pipeline import ptx_data
from minissp.selfplay import draw_seeds
from minissp.sft import build_corpora, safety_examples
from minissp.world import ATTACKER, DEFENDER, HELDOUT, TEXT, World
from minissp.world.corpora import evaluation_prompts, expand_attack
from minissp.world.intents import phrase

CONFIGS = {"default": [], "tiny": ["preset=tiny"]}


class Texts:
    """Stands in for a tokenizer: ptx_data's examples come back as (example, loss_on) pairs."""


@pytest.fixture(scope="module")
def world():
    return World(0)


def heldout_ids(world):
    return {i.id for i in world.intents if i.split == HELDOUT}


def ptx_examples(cfg, world, monkeypatch):
    """The examples PPO-ptx trains on, before tokenization."""
    import minissp.pipeline as pipeline
    monkeypatch.setattr(pipeline, "encode_example", lambda tokenizer, e, loss_on: (e, loss_on))
    return [e for e, _ in ptx_data(cfg, world, Texts())]


def texts_an_example_shows(example):
    """What the role reads and writes, slots filled (an attacker's frame around its seed)."""
    if example.role == ATTACKER:
        return [example.prompt, expand_attack(example.response, example.prompt)]
    return [example.prompt]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_heldout_intents_carry_no_safety_signal(world, name, monkeypatch):
    cfg = build_config(CONFIGS[name])
    held = heldout_ids(world)
    judge = Judge(world)
    corpora = build_corpora(world, cfg.sft, random.Random(0))
    alignment = [e for e, _ in corpora["alignment"]]
    safety_signal = [e for e in alignment if e.role in (DEFENDER, ATTACKER)]  # the replayed documents aside
    safety_signal += [e for e in ptx_examples(cfg, world, monkeypatch) if e.role != TEXT]
    safety_signal += [e for part in static_dataset(world, random.Random(0), cfg.sft.safety_variants) for e in part]
    assert len(safety_signal) > 100
    assert {e.role for e in alignment} == {DEFENDER, ATTACKER, TEXT}
    for example in safety_signal:
        assert example.intent_id not in held, example
        for text in texts_an_example_shows(example):
            assert not {i.id for i in judge.intents_in(text)} & held, (example, text)
    # self-play seeds, the adaptive attacker's included (the same draw), are training intents
    seeds = draw_seeds(world, 5000, cfg.selfplay.harmful_fraction, random.Random(0))
    assert not {s.id for s in seeds} & held
    # while stage 1, a pre-training corpus, holds every intent
    assert held <= {e.intent_id for e, _ in corpora["capability"]}


def replayed_documents(world_seed, sft_cfg):
    corpora = build_corpora(World(world_seed), sft_cfg, random.Random(7))
    return [(e.prompt, e.response, e.intent_id) for e, _ in corpora["alignment"] if e.role == TEXT]


# blind by construction, not by luck: under a shared generator, how many numbers the training
# intents' corpora consume depends on the split, and the replay would follow it on some configs
BLIND_CONFIGS = [[], ["preset=vulnerable_base"], ["seed=1"], ["seed=2"], ["sft.wrapped_refusals=7"]]


@pytest.mark.parametrize("args", BLIND_CONFIGS)
def test_stage2_replay_is_blind_to_the_split(args):
    """World seeds 0 and 1 hold out different intents; the text of the world is the same.
    A replay rule that never looks at the split picks the same documents from both."""
    cfg = build_config(args).sft
    assert [i.split for i in World(0).intents] != [i.split for i in World(1).intents]
    first, second = replayed_documents(0, cfg), replayed_documents(1, cfg)
    assert len(first) > 1000 and first == second


@pytest.mark.parametrize("args", BLIND_CONFIGS)
def test_ptx_replay_is_blind_to_the_split(args, monkeypatch):
    cfg = build_config(args)
    first = [(e.prompt, e.response) for e in ptx_examples(cfg, World(0), monkeypatch) if e.role == TEXT]
    second = [(e.prompt, e.response) for e in ptx_examples(cfg, World(1), monkeypatch) if e.role == TEXT]
    assert len(first) > 100 and first == second


def test_replay_holds_every_kind_of_document_in_its_stage1_share(world, monkeypatch):
    """Blind means unbiased too: in the stage-2 replay and in the PPO-ptx documents, the
    share of held-out intents, of harmful ones and of plain requests is that of stage 1."""
    cfg = build_config([])
    corpora = build_corpora(world, cfg.sft, random.Random(0))
    stage1 = [e for e, _ in corpora["capability"]]
    replays = {"stage 2": [e for e, _ in corpora["alignment"] if e.role == TEXT],
               "ptx": [e for e in ptx_examples(cfg, world, monkeypatch) if e.role == TEXT]}
    held = heldout_ids(world)
    kinds = {"held out": lambda e: e.intent_id in held,
             "harmful": lambda e: world.by_id[e.intent_id].harmful,
             "plain": lambda e: e.family == "plain"}
    for kind, is_kind in kinds.items():
        p = sum(map(is_kind, stage1)) / len(stage1)
        for name, replay in replays.items():
            n = len(replay)
            assert abs(sum(map(is_kind, replay)) / n - p) < 4 * (p * (1 - p) / n) ** 0.5, (kind, name)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_no_evaluation_prompt_appears_verbatim_in_training(world, name, monkeypatch):
    cfg = build_config(CONFIGS[name])
    corpora = build_corpora(world, cfg.sft, random.Random(0))
    training = {text for pairs in corpora.values() for e, _ in pairs for text in texts_an_example_shows(e)}
    training |= {e.prompt for e in ptx_examples(cfg, world, monkeypatch)}
    training |= {e.prompt for part in static_dataset(world, random.Random(0), cfg.sft.safety_variants) for e in part}
    rng = random.Random(0)
    training |= {phrase(intent, rng) for intent in world.intents for _ in range(50)}  # self-play seed requests
    evaluation = [p.prompt for p in evaluation_prompts(world.intents, random.Random(EvalConfig().seed), 9)]
    rng = random.Random(1)
    evaluation += [phrase(i, rng, evaluation=True) for i in world.select(HELDOUT) for _ in range(20)]
    leaked = [p for p in evaluation if p in training]
    assert not leaked, leaked[:5]


def test_stage1_holds_the_heldout_intents_only_as_documents(world):
    corpora = build_corpora(world, build_config([]).sft, random.Random(0))
    held = heldout_ids(world)
    assert {e.role for pairs in corpora.values() for e, _ in pairs if e.intent_id in held} == {TEXT}
    assert all(e.role == TEXT for e, _ in corpora["capability"])
    assert not {e.intent_id for e in safety_examples(world, build_config([]).sft, random.Random(0))} & held
