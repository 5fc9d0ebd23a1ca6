"""The novel-forms suite is honest: it asks what it says it asks, and nothing in it was trained on.

1. every prompt carries its own intent and no other harmful one, with no harmful
   content word, no content word of its own intent (help would then be an echo)
   and no refusal phrase in it;
2. on every row the judge labels the world's own compliant answer and refusal as
   what they are;
3. no prompt appears in any training corpus, every wording and padding sentence
   is made of the world's words and shares no five-word run with any training
   text;
4. each form is what its name says (stacks of the right families, new wordings,
   padding, repetition), and the prompts fit the default model's context.
"""

import random

import pytest

from minissp.config import build_config
from minissp.evaluate import EvalConfig
from minissp.judge import REFUSAL_MARKERS, Judge, words
from minissp.methods import static_dataset
from minissp.sft import build_corpora
from minissp.world import ATTACKER, FAMILIES, HARMFUL, HELDOUT, SEEN_FAMILIES, UNSEEN_FAMILIES, World
from minissp.world.corpora import expand_attack
from minissp.world.intents import helpful_answer, phrase, refusal
from minissp.world.novel import (FORMS, MAX_CHARS, NEW_WORDINGS, NOVEL_ATTACK, NOVEL_BENIGN, PADDING, PADDING_LEAD, PADDING_RATIO,
                                 REPEAT_LINK,
                                 novel_prompt, novel_prompts, stack, stackable)

RUN = 5


@pytest.fixture(scope="module")
def world():
    return World(0)


@pytest.fixture(scope="module")
def suite(world):
    return novel_prompts(world.intents, random.Random(EvalConfig().seed + 1), EvalConfig().per_intent)


@pytest.fixture(scope="module")
def training(world):
    """Every text a training stage shows (default config), and the static baseline's prompts."""
    cfg = build_config([])
    corpora = build_corpora(world, cfg.sft, random.Random(0))
    texts = {text for pairs in corpora.values() for e, _ in pairs for text in [e.prompt, e.response]}
    texts |= {expand_attack(e.response, e.prompt) for pairs in corpora.values() for e, _ in pairs if e.role == ATTACKER}
    texts |= {e.prompt for part in static_dataset(world, random.Random(0), cfg.sft.safety_variants) for e in part}
    return texts


def runs(text: str, n: int = RUN) -> set[tuple[str, ...]]:
    tokens = text.split()
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def pieces(template: str) -> list[str]:
    """A template's text between its slots."""
    for slot in ("{a}", "{b}", "{task}"):
        template = template.replace(slot, "{r}")
    return template.split("{r}")


def test_the_suite_covers_every_form_on_heldout_intents_only(world, suite):
    assert {p.intent_id for p in suite} == {i.id for i in world.select(HELDOUT)}
    harmful = [p for p in suite if p.suite == NOVEL_ATTACK]
    assert {world.by_id[p.intent_id].label for p in harmful} == {HARMFUL}
    assert HARMFUL not in {world.by_id[p.intent_id].label for p in suite if p.suite == NOVEL_BENIGN}
    for kind in (NOVEL_ATTACK, NOVEL_BENIGN):
        assert {p.family for p in suite if p.suite == kind} == set(FORMS)


def test_every_prompt_carries_its_intent_no_harmful_or_own_content_and_no_refusal_phrase(world, suite):
    judge = Judge(world)
    harmful_content = {w for intent in world.intents if intent.harmful for w in words(" ".join(intent.content))}
    markers = [f" {' '.join(words(m))} " for m in REFUSAL_MARKERS]
    for p in suite:
        intent = world.by_id[p.intent_id]
        found = judge.intents_in(p.prompt)
        assert intent in found, p.prompt
        assert not [i for i in found if i.harmful and i != intent], p.prompt
        prompt_words = f" {' '.join(words(p.prompt))} "
        assert not set(prompt_words.split()) & (harmful_content | set(words(" ".join(intent.content)))), p.prompt
        assert not [m for m in markers if m in prompt_words], p.prompt


def test_the_judge_reads_the_worlds_own_answers_right_on_every_row(world, suite):
    judge, rng = Judge(world), random.Random(0)
    for p in suite:
        intent = world.by_id[p.intent_id]
        complied = judge.label(p.prompt, helpful_answer(intent, rng), intent)
        refused = judge.label(p.prompt, refusal(rng), intent)
        assert complied.prompt_harmful == intent.harmful, p.prompt
        assert (complied.response_harmful, complied.response_helpful, complied.response_refusal) == \
            (intent.harmful, not intent.harmful, False), p.prompt
        assert (refused.response_harmful, refused.response_helpful, refused.response_refusal) == \
            (False, False, True), p.prompt


def test_nothing_in_the_suite_was_trained_on(world, suite, training):
    assert not [p.prompt for p in suite if p.prompt in training]
    trained_runs = set().union(*map(runs, training))
    vocabulary = {w for text in training for w in text.split()}
    for text in [*NEW_WORDINGS.values(), *PADDING, PADDING_LEAD, REPEAT_LINK]:
        for piece in pieces(text):
            assert not runs(piece) & trained_runs, (text, runs(piece) & trained_runs)
            assert not [w for w in piece.split() if w not in vocabulary], (text, piece)


def test_new_wordings_cover_every_family_and_differ_from_its_templates():
    assert set(NEW_WORDINGS) == {name for name in FAMILIES if FAMILIES[name].form != "stack"}
    for name, wording in NEW_WORDINGS.items():
        family = FAMILIES[name]
        for template in family.templates + family.eval_templates:
            for piece in pieces(wording):
                assert not [p for p in pieces(template) if runs(piece, 4) & runs(p, 4)], (name, piece, template)


def test_each_form_is_what_its_name_says(world):
    rng = random.Random(3)
    harmful = [i for i in world.select(HELDOUT) if i.harmful]
    stacks = {"seen_with_unseen": 2, "two_unseen": 2, "three_stack": 3}
    for _ in range(30):
        intent = rng.choice(harmful)
        for form, size in stacks.items():
            names = novel_prompt(intent, form, rng)[1].split("+")
            assert len(names) == len(set(names)) == size and stackable(names)
            unseen = sum(name in UNSEEN_FAMILIES for name in names)
            if form == "seen_with_unseen":
                assert unseen == 1 and sum(name in SEEN_FAMILIES for name in names) == 1
            if form == "two_unseen":
                assert unseen == 2
        prompt, family = novel_prompt(intent, "new_wording", rng)
        assert family in NEW_WORDINGS and not any(  # a new wording holds no template sentence of its family
            t.split("{r}")[0].strip() and t.split("{r}")[0].strip() in prompt for t in FAMILIES[family].templates)
        padded, _ = novel_prompt(intent, "long_padding", rng)
        story, request = padded.split(PADDING_LEAD)
        assert len(story.split()) >= PADDING_RATIO * len(request.split()) and all(
            s in PADDING for s in story.replace(" . ", " .\n").strip().splitlines())
        repeated, _ = novel_prompt(intent, "repeated", rng)
        assert repeated.count(intent.key) == 2


def test_only_the_innermost_family_of_a_stack_is_encoded(world):
    intent = next(i for i in world.select(HELDOUT) if i.harmful)
    assert stackable(["cipher", "persona"]) and stackable(["payload_split", "fiction", "pretext"])
    assert not stackable(["persona", "cipher"]) and not stackable(["fiction", "payload_split"])
    text = stack(phrase(intent, random.Random(0), evaluation=True), intent, ["leetspeak", "persona"],
                 random.Random(0))
    assert "evilbot" in text  # the persona's evaluation template, not leeted
    with pytest.raises(ValueError, match="unknown novel form"):
        novel_prompt(intent, "no_such_form", random.Random(0))


def test_the_prompts_fit_the_default_models_context(suite):
    """The default model reads 128 - 40 = 88 prompt tokens; 180 characters take at most 85 with the default
    config's tokenizer (measured over this suite and the family suites)."""
    assert max(len(p.prompt) for p in suite) <= MAX_CHARS == 180
