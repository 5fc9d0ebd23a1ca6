"""`python -m minissp.chat --ckpt PATH`: chat with a checkpoint's defender and watch the judge score it.

    python -m minissp.chat --ckpt runs/ssp/final.pt [--prompt "how do i bake bread ?"]
    python -m minissp.chat --model smollm2     # pretrained (minissp.pretrained): no world

Every line typed is a defender prompt; the answer comes with the judge's four
labels and both rewards. The rewards need a seed intent: the one the judge
finds in the prompt (a harmful one first), so the attacker's reward is what
the prompt would earn as an attack on that seed. `/attack <seed request>`
plays one self-play exchange: the attacker writes a frame with slot tokens,
the slots take the seed (`expand_attack`), the defender answers. A pretrained
model has no world: only `promptfiles.refuses` labels its answers.

Simplified: one turn at a time, no conversation history (the chat format has
a single user turn), no streaming.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass

import torch

from . import checkpoint, promptfiles
from .evaluate import EvalConfig, load_pretrained_model
from .judge import Judge
from .model import pick_device
from .sampling import reply
from .world import BENIGN, HARMFUL, HELDOUT, World
from .world.corpora import expand_attack
from .world.intents import phrase
from .world.tactics import identify_family

ANSWER_BUDGET, ATTACK_BUDGET = EvalConfig.max_new_tokens, EvalConfig.attack_max_new_tokens  # as the evaluation
YES = {True: "yes", False: "no"}
HELP = """commands:
  /attack <seed request>  the attacker role writes an attack on the seed; the defender answers it
  /help                   this text
  /quit                   leave (so do Ctrl-D and Ctrl-C)
any other line is a defender prompt."""


@dataclass
class Session:
    model: object
    tokenizer: object
    judge: Judge | None  # None for a pretrained model: no world
    answer_budget: int
    attack_budget: int
    temperature: float | None  # None: a greedy defender and an attacker at 1.0
    generator: torch.Generator | None
    about: str  # what the model is, for the banner


def describe(labels, rewards=None, seed=None, why_none="the prompt carries no request of the world") -> str:
    """The judge's verdict in two lines: the four labels, then both rewards or why they are undefined."""
    line = (f"  labels:  prompt harmful {YES[labels.prompt_harmful]} | refusal {YES[labels.response_refusal]}"
            f" | harmful content {YES[labels.response_harmful]} | helpful {YES[labels.response_helpful]}")
    if rewards is None:
        return f"{line}\n  rewards: undefined, {why_none}"
    return (f"{line}\n  rewards: attacker {rewards[0]:+.2f} | defender {rewards[1]:+.2f}"
            f"  (seed {seed.id}, {seed.label}: \"{seed.key}\")")


def seed_of(judge: Judge, text: str):
    """The intent the judge finds in `text`, a harmful one first; None if it carries none."""
    found = judge.intents_in(text)
    return next((i for i in found if i.harmful), found[0] if found else None)


def too_long(session: Session, role: str, text: str, budget: int, what: str) -> str | None:
    """One line if `text` and the answer budget do not fit the model's context, else None."""
    n, block = len(session.tokenizer.prompt_ids(role, text)), session.model.config.block_size
    if n <= block - budget:
        return None
    return (f"{what} is {n} tokens in the chat format; this model reads at most {block - budget} "
            f"(a {block}-token context less {budget} for the answer): not sent")


def turn(session: Session, role: str, text: str, budget: int, temperature: float) -> str:
    return reply(session.model, session.tokenizer, role, [text], budget, temperature=temperature,
                 generator=session.generator if temperature > 0 else None)[0]


def defend(session: Session, prompt: str, seed_text: str, what: str, seed_what: str) -> str:
    """The defender's answer to `prompt` and the verdict on it; the seed is the intent `seed_text` carries
    (`what` and `seed_what` name the two texts in messages)."""
    problem = too_long(session, "defender", prompt, session.answer_budget, what)
    if problem:
        return problem
    response = turn(session, "defender", prompt, session.answer_budget, session.temperature or 0.0)
    if session.judge is None:
        return (f"defender> {response}\n  refusal: {YES[promptfiles.refuses(response)]}"
                f"  (a refusal-phrase string match; no world, no rewards)")
    seed = seed_of(session.judge, seed_text)
    if seed is None:
        why = f"{seed_what} carries no request of the world"
        verdict = describe(session.judge.label(prompt, response), why_none=why)
    else:
        attacker, defender, labels = session.judge.score(seed, prompt, response)
        verdict = describe(labels, (attacker, defender), seed)
    return f"defender> {response}\n{verdict}"


def answer(session: Session, prompt: str) -> str:
    """The defender's answer to a typed prompt; the prompt's own intent is the seed."""
    return defend(session, prompt, prompt, "the prompt", "the prompt")


def attack(session: Session, seed_request: str) -> str:
    """One self-play exchange: the attacker's frame, the expanded attack, the answer and the verdict."""
    if not seed_request:
        return "usage: /attack <seed request>, e.g. /attack how do i bake bread ?"
    problem = too_long(session, "attacker", seed_request, session.attack_budget, "the seed request")
    if problem:
        return problem
    temperature = 1.0 if session.temperature is None else session.temperature
    frame = turn(session, "attacker", seed_request, session.attack_budget, temperature)
    if session.judge is None:  # a pretrained attacker writes the whole attack: no slots
        return f"attack>   {frame}\n" + defend(session, frame, seed_request, "the attack", "the seed request")
    prompt = expand_attack(frame, seed_request)
    return (f"frame>    {frame}\nattack>   {prompt}\nfamily:   {identify_family(prompt)}\n"
            + defend(session, prompt, seed_request, "the attack", "the seed request"))


def handle(session: Session, line: str) -> str | None:
    """What one typed line prints; None means quit."""
    line = line.strip()
    if not line:
        return "(empty line: type a prompt, or /help)"
    if not line.startswith("/"):
        return answer(session, line)
    command, _, rest = line.partition(" ")
    if command == "/quit":
        return None
    if command == "/help":
        return HELP
    if command == "/attack":
        return attack(session, rest.strip())
    return f"unknown command {command}: try /help"


def repl(session: Session) -> int:
    """Read lines until /quit, EOF or Ctrl-C; a line that fails prints one line and the loop goes on."""
    echo = not sys.stdin.isatty()  # piped input: print what was read, so the transcript reads as a chat
    while True:
        try:
            line = input("you> ")
            if echo:
                print(line)
            out = handle(session, line)
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        except (ValueError, RuntimeError) as e:  # e.g. a pretrained tokenizer without a chat template
            out = "error: " + " ".join(str(e).split())
        if out is None:
            return 0
        print(out)


def banner(session: Session) -> str:
    lines = [f"minissp chat: {session.about}"]
    if session.judge is None:
        lines.append("No world: answers get a refusal-phrase string match only, and no rewards.")
    else:
        rng, world = random.Random(0), session.judge.world
        held = [i for label in (HARMFUL, BENIGN) for i in world.select(HELDOUT, (label,))[:1]]
        lines += ["A from-scratch model knows only the safety world's vocabulary: ordinary English gets",
                  "meaningless answers. Prompts of the world (held-out intents) read like:"]
        lines += [f"  ({i.label}) {phrase(i, rng)}" for i in held]
        lines.append("The world's judge labels each answer; the rewards take the prompt's intent as the seed.")
    return "\n".join(lines + [HELP])


def load(args) -> Session:
    """The model, tokenizer and judge the command line asks for; failures raise one-line errors."""
    device = pick_device(args.device)
    if args.model:
        model, tokenizer = load_pretrained_model(args.model, device)
        judge, about = None, f"pretrained model {args.model}"
    else:
        model, tokenizer, meta = checkpoint.load_model(args.ckpt, device)
        world_seed = checkpoint.world_seed_of(meta, args.ckpt)
        judge = Judge(World(world_seed))
        stage = f", self-play iteration {meta['iteration']}" if "iteration" in meta else ""
        about = f"{args.ckpt} (world seed {world_seed}{stage})"
    cfg, n = model.config, args.max_new_tokens
    about += (f": a {cfg.n_layer}-layer GPT ({cfg.arch}) of width {cfg.n_embd}, {cfg.block_size}-token context, "
              f"{model.num_params() / 1e6:.2f}M parameters, on {device}")
    if n is not None and n >= cfg.block_size:
        raise ValueError(f"--max-new-tokens {n} leaves no room for a prompt in a {cfg.block_size}-token context")
    # a default budget too big for a small context shrinks to half of it
    budgets = [n, n] if n is not None else [min(b, cfg.block_size // 2) for b in (ANSWER_BUDGET, ATTACK_BUDGET)]
    generator = None if args.seed is None else torch.Generator(device=device).manual_seed(args.seed)
    return Session(model, tokenizer, judge, *budgets, args.temperature, generator, about)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Chat with a minissp checkpoint's defender, or play /attack.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--ckpt", help="a self-play final.pt, a supervised runs/cache/sft-*.pt or a checkpoint.pt")
    which.add_argument("--model", help="a pretrained chat model for minissp.pretrained.load_pretrained (no world)")
    parser.add_argument("--prompt", help="answer this one line (a prompt or /attack ...) and exit")
    parser.add_argument("--temperature", type=float, help="of both roles (default: greedy defender, attacker 1.0)")
    parser.add_argument("--max-new-tokens", type=int,
                        help=f"of both roles (default {ANSWER_BUDGET}, attacks {ATTACK_BUDGET})")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, help="seed of the sampler (default: unseeded)")
    parser.error = lambda message: parser.exit(2, f"error: {message} (see --help)\n")
    args = parser.parse_args(argv)
    if args.temperature is not None and not 0 <= args.temperature <= 100:  # refuses nan too
        parser.error(f"--temperature must be in [0, 100], got {args.temperature}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    try:
        session = load(args)
        if args.prompt is not None:
            print(handle(session, args.prompt) or "")
            return 0
    except (checkpoint.CheckpointError, ValueError, RuntimeError, OSError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    print(banner(session))
    return repl(session)


if __name__ == "__main__":
    sys.exit(main())
