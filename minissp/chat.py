"""The chat format: how one role's turn becomes tokens, and tokens become text again.

One model, two roles, told apart by the first token:

    <|attacker|> {seed request} <|sep|> {attack prompt} <|eos|>
    <|defender|> {prompt} <|sep|> {response} <|eos|>

Only the tokens after `<|sep|>` are the role's actions; the rest is context.
A third first token, `<|text|>`, marks the pre-training documents of the
supervised stage (`world.corpora`): the same layout, but not a turn of
either role, so the model can know an answer without being a defender that
gives it.
Every stage (supervised training, self-play, evaluation) goes through the
functions below, so the format is written down once.
"""

from __future__ import annotations

from .sampling import generate
from .tokenizer import ATTACKER, DEFENDER, EOS, SEP, TEXT, Tokenizer

ROLE_TOKENS = {"attacker": ATTACKER, "defender": DEFENDER, "text": TEXT}


def prompt_text(role: str, text: str) -> str:
    """`<|role|> text <|sep|>`: what the model reads before it acts."""
    if role not in ROLE_TOKENS:
        raise ValueError(f"unknown role {role!r}: expected one of {sorted(ROLE_TOKENS)}")
    return f"{ROLE_TOKENS[role]} {text} {SEP}"


def prompt_ids(tokenizer: Tokenizer, role: str, text: str) -> list[int]:
    return tokenizer.encode(prompt_text(role, text))


def example_ids(tokenizer: Tokenizer, role: str, prompt: str, response: str) -> tuple[list[int], int]:
    """Token ids of a whole exchange and the index where the response starts.

    The response is written with a leading space and closed by `<|eos|>`, as
    the model will be asked to write it.
    """
    context = prompt_ids(tokenizer, role, prompt)
    return context + tokenizer.encode(f" {response}{EOS}"), len(context)


def response_text(tokenizer: Tokenizer, response_ids) -> str:
    """The text of a generated response: everything before the first `<|eos|>`, trimmed."""
    ids = list(map(int, response_ids))
    if tokenizer.eos_id in ids:
        ids = ids[: ids.index(tokenizer.eos_id)]
    # special tokens stay: the attacker's slots (<|request|>, ...) are among them
    return tokenizer.decode(ids).strip()


def reply(model, tokenizer: Tokenizer, role: str, texts: list[str], max_new_tokens: int,
          temperature: float = 0.0, batch_size: int = 64, generator=None) -> list[str]:
    """The model's turn, as text, for every text in `texts` (greedy by default).

    Texts are batched by length so rows in a batch need little padding; the
    answers come back in the order of `texts`. A prompt too long for the
    model's context keeps its last tokens (after the role token).
    """
    limit = model.config.block_size - max_new_tokens
    encoded = [fit_prompt(prompt_ids(tokenizer, role, text), limit) for text in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    answers = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        out = generate(model, [encoded[i] for i in rows], max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                       temperature=temperature, generator=generator)
        for row, ids in zip(rows, out.response_ids.cpu()):
            answers[row] = response_text(tokenizer, ids)
    return answers


def fit_prompt(ids: list[int], limit: int) -> list[int]:
    """Keep the role token and the last `limit - 1` tokens of a prompt that is too long."""
    return ids if len(ids) <= limit else ids[:1] + ids[len(ids) - limit + 1:]
