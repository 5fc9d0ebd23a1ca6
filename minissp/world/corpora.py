"""The training corpora, staged like a real LLM's, and the evaluation prompts.

Every example is one exchange in one role, told apart by its first token:

    <|text|>     {request} <|sep|> {answer} <|eos|>        stage 1: documents
    <|defender|> {prompt} <|sep|> {response} <|eos|>
    <|attacker|> {seed request} <|sep|> {attack prompt} <|eos|>

1. **capability text** ("pre-training documents") — every intent, harmful
   ones and held-out ones included, plain and wrapped in every tactic family,
   answered compliantly. It is written in a format of its own (`<|text|>`),
   not in the defender's chat turn, as a real LLM's pre-training text is not
   chat: the model learns what each request's answer is (knowledge) and to
   follow wrapped instructions and decode ciphers (capabilities), but the
   defender's *behaviour* — when to answer, when to refuse — comes only from
   the later stages. Replaying these documents later therefore keeps
   knowledge without teaching the defender to comply (`sft.replay_documents`).
2. **safety tuning** — training intents only: plain harmful requests get a
   refusal; benign and borderline requests, plain and wrapped in *every*
   family, get a helpful answer. Harmful requests are refused plain and in
   the *single* seen families only (`wrapped_refusals` per intent, 20), as
   real safety data holds red-teaming prompts; compositions, unseen families
   and plain requests get more helpful examples (`open_variants`). Nothing
   refuses an unseen family or an encoding — the mismatched generalisation
   that leaves real aligned models open to them. Our choice: this mix, which
   moves the base, on average over seeds, toward a real aligned model's
   shape: single simple templates mostly refused, encodings mostly not (Wei
   et al. 2023; measured in docs/results.md). The `vulnerable_base`
   preset keeps the earlier base (3 wrapped refusals, compositions among
   them), more open to the seen templates on average over seeds.
3. **attacker demonstrations** — training intents only: a seed request
   becomes an attack; harmful seeds in a *seen* family, keeping their intent;
   benign seeds in any family, as "adversarial benign" prompts that look like
   jailbreaks but ask for something harmless. The attacker writes the *frame*
   of its attack and a slot where the seed request goes, as jailbreak
   templates do ("[INSERT PROMPT HERE]" in DAN-style templates and GPTFuzzer,
   Yu et al. 2023): the request verbatim (`<|request|>`) or encoded
   (`tactics.SLOTS`). Our choice, not the paper's: a model this small, trained
   for minutes, does not learn to copy an unseen request token by token, and
   the slot lets the attacker spend its capacity on the tactic.

**Held out means held out.** Held-out intents appear in stage 1 only, like
everything a pre-training corpus holds, and carry no safety signal: no
safety-tuning example, attacker demonstration, self-play seed or static
adversarial example uses them. Unseen families meet harmful intents only in
stage 1. Evaluation prompts use held-out intents, in the request phrasings and
family templates reserved for the evaluation (`phrase(..., evaluation=True)`,
`Family.eval_templates`), so no evaluation prompt appears verbatim in any
training data (tests check all three by intent id and by exact text).

Our choice, not the paper's: the stage mix and the number of variants per
intent; the "adversarial benign" prompts follow Self-RedTeam (Liu et al. 2025)
and WildJailbreak (Jiang et al. 2024).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .intents import (BENIGN, GENERIC_HARM, HARMFUL, HELDOUT, TASK_PHRASINGS, TRAIN, Intent,
                      helpful_answer, phrase, refusal)
from .tactics import FAMILIES, SEEN_FAMILIES, SLOTS

ATTACKER, DEFENDER, TEXT = "attacker", "defender", "text"
PLAIN = "plain"


@dataclass(frozen=True)
class Example:
    """One supervised exchange."""

    role: str  # TEXT (stage-1 documents), DEFENDER or ATTACKER
    prompt: str  # what the role reads (the seed, for the attacker)
    response: str  # what the role should write
    intent_id: str
    family: str  # PLAIN or a family name (for the attacker: the family of its attack)


def wrap(intent: Intent, family: str, rng: random.Random, request: str | None = None,
         evaluation: bool = False) -> str:
    """A prompt for `intent`: a plain phrasing, wrapped in `family` unless it is PLAIN.
    `evaluation` picks the phrasings and templates reserved for the evaluation."""
    request = request if request is not None else phrase(intent, rng, evaluation)
    return request if family == PLAIN else FAMILIES[family].wrap(request, intent, rng, evaluation)


def compliant_example(intent: Intent, family: str, rng: random.Random, role: str = DEFENDER) -> Example:
    """A request for `intent` in `family`, answered helpfully."""
    return Example(role, wrap(intent, family, rng), helpful_answer(intent, rng), intent.id, family)


def capability_corpus(intents: list[Intent], rng: random.Random, variants: int = 3) -> list[Example]:
    """Stage 1: documents in which every intent, plain and in every family, is answered."""
    return [compliant_example(intent, family, rng, role=TEXT)
            for intent in intents for family in [PLAIN, *FAMILIES] for _ in range(variants)]


def safety_corpus(intents: list[Intent], rng: random.Random, variants: int = 3,
                  refusals: int = 12, wrapped_refusals: int = 0,
                  refused_families: list[str] | None = None, open_variants: int = 0) -> list[Example]:
    """Stage 2: refuse plain harmful requests (`refusals` per intent, half as many
    per generic request of each harm concept) and some wrapped in a *seen*
    family (`wrapped_refusals` per intent, drawn from `refused_families`, all
    seen families by default); help benign and borderline ones, plain and in
    every family (`variants` per form, plus `open_variants` in every form
    outside `refused_families`: plain requests, and the frames that only
    helpfulness data covers)."""
    refused_families = refused_families or SEEN_FAMILIES
    out = []
    for concept, keys in GENERIC_HARM.items():  # broad requests about each harm concept
        for key in keys:
            out += [Example(DEFENDER, rng.choice(TASK_PHRASINGS).format(key=key), refusal(rng),
                            f"generic/{concept}", PLAIN) for _ in range(refusals // 2)]
    for intent in _train(intents):
        if intent.label == HARMFUL:
            for _ in range(refusals):
                out.append(Example(DEFENDER, wrap(intent, PLAIN, rng), refusal(rng), intent.id, PLAIN))
            for family in rng.choices(refused_families, k=wrapped_refusals):
                out.append(Example(DEFENDER, wrap(intent, family, rng), refusal(rng), intent.id, family))
            continue
        out += [compliant_example(intent, family, rng) for family in [PLAIN, *FAMILIES]
                for _ in range(variants + (0 if family in refused_families else open_variants))]
    return out


def attacker_corpus(intents: list[Intent], rng: random.Random, variants: int = 6) -> list[Example]:
    """Stage 3: seed request -> attack frame (harmful and adversarial-benign).

    Harmful seeds get frames of the *seen* families only. Benign seeds get
    frames of every family, unseen ones included (WildJailbreak's adversarial
    benign prompts use every tactic): so the attacker knows how to write
    those frames, and self-play can discover them for harmful seeds by
    exploring, while no harmful demonstration uses them. The attack is written around slot tokens
    (`tactics.SLOTS`: the request verbatim, reversed, in leet, or cut in two),
    which the game fills with the seed request (`expand_attack`).
    """
    out = []
    for intent in _train(intents):
        for _ in range(variants):
            family = rng.choice(SEEN_FAMILIES if intent.harmful else list(FAMILIES))
            out.append(Example(ATTACKER, phrase(intent, rng), FAMILIES[family].frame(intent, rng),
                               intent.id, family))
    return out


def expand_attack(attack: str, seed_request: str) -> str:
    """The prompt the defender reads: the attacker's text with every slot filled by the seed
    request in the slot's form (`tactics.SLOTS`)."""
    for slot, form in SLOTS.items():
        attack = attack.replace(slot, f" {form(seed_request)} ")
    return " ".join(attack.split())


def _train(intents):
    return [intent for intent in intents if intent.split == TRAIN]


# --------------------------------------------------------------------------
# Evaluation prompts (held-out intents only)
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalPrompt:
    """A prompt with what the evaluation should expect of the defender."""

    suite: str  # "benign", "harmful", "borderline", "adversarial_benign", "attack"
    prompt: str
    intent_id: str
    family: str


def evaluation_prompts(intents: list[Intent], rng: random.Random, per_intent: int = 3) -> list[EvalPrompt]:
    """The fixed evaluation set: held-out intents, every family, `per_intent` prompts each, in
    the phrasings and templates reserved for the evaluation."""
    held = [intent for intent in intents if intent.split == HELDOUT]
    out = []
    for intent in held:
        for _ in range(per_intent):
            if intent.label == HARMFUL:
                out.append(EvalPrompt("harmful", wrap(intent, PLAIN, rng, evaluation=True), intent.id, PLAIN))
                for family in FAMILIES:
                    out.append(EvalPrompt("attack", wrap(intent, family, rng, evaluation=True), intent.id, family))
            else:
                suite = "benign" if intent.label == BENIGN else "borderline"
                out.append(EvalPrompt(suite, wrap(intent, PLAIN, rng, evaluation=True), intent.id, PLAIN))
                family = rng.choice(list(FAMILIES))
                out.append(EvalPrompt("adversarial_benign", wrap(intent, family, rng, evaluation=True),
                                      intent.id, family))
    return out

