"""Byte-level BPE for the safety world, trained with HF `tokenizers`.

Byte-pair encoding (Sennrich et al. 2016, "Neural Machine Translation of Rare
Words with Subword Units") over bytes, as GPT-2 does it (Radford et al. 2019):
every string is first turned into UTF-8 bytes, so any text can be encoded and
decoded back exactly, and BPE merges frequent byte pairs into tokens.

Pre-tokenization, our choice. GPT-2 cuts text with a regex into letters,
digits and punctuation before BPE, so a merge never crosses a class border.
Our world text is different: lowercase words separated by single spaces, with
punctuation as separate words and placeholders such as `[wpn-3.1]`. We cut only
at whitespace, keeping the whitespace in front of the word that follows
(`"a [wpn-3.1] ?"` -> `"a"`, `" [wpn-3.1]"`, `" ?"`), so BPE can learn a whole
word, brackets and digits included, as one token. Runs of spaces, newlines and
trailing whitespace stay in the pieces, which is why arbitrary text still
round-trips exactly.

Special tokens are added to the vocabulary as *special* tokens: the library
cuts them out of the text before pre-tokenization, so `<|eos|>` written in a
text never splits and always becomes its single id. Their ids are looked up
by name, never hard-coded; pad is a token of its own, never eos (with pad ==
eos a policy trained on padded batches never learns to stop).

The chat format. One model, two roles, told apart by the first token:

    <|attacker|> {seed request} <|sep|> {attack prompt} <|eos|>
    <|defender|> {prompt} <|sep|> {response} <|eos|>

Only the tokens after `<|sep|>` are the role's actions; the rest is context.
A third first token, `<|text|>`, marks the pre-training documents of the
supervised stage (`world.corpora`): the same layout, but not a turn of
either role, so the model can know an answer without being a defender that
gives it. Every stage (supervised training, self-play, evaluation) goes
through `prompt_ids`, `example_ids` and `response_text`, so the format is
written down once, and a tokenizer with another chat template (a pretrained
model's) only has to provide those three methods.

Simplified: no normalization (the world is already lowercase ASCII), no
truncation or padding inside the tokenizer (the sampler and the trainers pad).
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from .world.tactics import REQUEST_SLOT, SLOTS

PAD, EOS, SEP = "<|pad|>", "<|eos|>", "<|sep|>"
ATTACKER, DEFENDER, TEXT = "<|attacker|>", "<|defender|>", "<|text|>"
REQUEST = REQUEST_SLOT
SPECIAL_TOKENS = [PAD, EOS, SEP, ATTACKER, DEFENDER, TEXT, *SLOTS]
"""pad fills batches; eos ends a turn; sep separates parts of a prompt;
attacker/defender say which role speaks next, text marks a pre-training
document (not a chat turn); the slots are where the
attacker's frame takes the seed request, verbatim or encoded (see
minissp.world.tactics.SLOTS)."""

ROLE_TOKENS = {"attacker": ATTACKER, "defender": DEFENDER, "text": TEXT}

WORD_WITH_LEADING_SPACE = r"\s*\S+|\s+"
"""A word with the whitespace before it, or trailing whitespace on its own."""


def prompt_text(role: str, text: str) -> str:
    """`<|role|> text <|sep|>`: what the model reads before it acts."""
    if role not in ROLE_TOKENS:
        raise ValueError(f"unknown role {role!r}: expected one of {sorted(ROLE_TOKENS)}")
    return f"{ROLE_TOKENS[role]} {text} {SEP}"


class Tokenizer:
    """A thin wrapper over `tokenizers.Tokenizer` with our special tokens."""

    def __init__(self, hf_tokenizer: HFTokenizer):
        self.hf = hf_tokenizer
        missing = [t for t in SPECIAL_TOKENS if hf_tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer lacks the special tokens {missing}")

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> "Tokenizer":
        """Learn BPE merges on `texts` until the vocabulary has `vocab_size` tokens.

        The vocabulary always holds the special tokens and all 256 bytes, so
        `vocab_size` must be at least 267 (11 special tokens, 256 bytes); it may end smaller than asked when
        the texts offer no more pairs to merge.
        """
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(SPECIAL_TOKENS) + len(alphabet):
            raise ValueError(f"vocab_size={vocab_size} is too small: the special tokens and the 256 bytes "
                             f"alone take {len(SPECIAL_TOKENS) + len(alphabet)}")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(WORD_WITH_LEADING_SPACE), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),  # bytes -> printable chars
        ])
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
            initial_alphabet=alphabet,  # every byte is a token, so no text is ever unknown
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer, length=len(texts))
        return cls(hf)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` over many texts, in parallel threads inside the library."""
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of `ids` (a list or a 1-D tensor of ints). Pads are always
        dropped; other special tokens are written out (`<|eos|>`) unless
        `skip_special_tokens`."""
        pad_id = self.pad_id
        ids = [i for i in map(int, ids) if i != pad_id]
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def save(self, path: str) -> None:
        """Write the library's standard `tokenizer.json`."""
        self.hf.save(path)

    @classmethod
    def load(cls, path: str) -> "Tokenizer":
        return cls(HFTokenizer.from_file(path))

    # ---- the chat format (see the module docstring) ----

    def prompt_text(self, role: str, text: str) -> str:
        return prompt_text(role, text)

    def prompt_ids(self, role: str, text: str, limit: int | None = None) -> list[int]:
        """Token ids of `prompt_text`; with `limit`, a longer prompt keeps its role token
        and its last `limit - 1` tokens (the end of a prompt is what the answer follows)."""
        ids = self.encode(self.prompt_text(role, text))
        return ids if limit is None or len(ids) <= limit else ids[:1] + ids[len(ids) - limit + 1:]

    def example_ids(self, role: str, prompt: str, response: str) -> tuple[list[int], int]:
        """Token ids of a whole exchange and the index where the response starts.

        The response is written with a leading space and closed by `<|eos|>`, as
        the model will be asked to write it."""
        context = self.prompt_ids(role, prompt)
        return context + self.encode(f" {response}{EOS}"), len(context)

    def response_text(self, response_ids) -> str:
        """The text of a generated response: everything before the first `<|eos|>`, trimmed."""
        ids = list(map(int, response_ids))
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        # special tokens stay: the attacker's slots (<|request|>, ...) are among them
        return self.decode(ids).strip()

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self.hf.token_to_id(PAD)

    @property
    def eos_id(self) -> int:
        return self.hf.token_to_id(EOS)

    @property
    def sep_id(self) -> int:
        return self.hf.token_to_id(SEP)

    @property
    def attacker_id(self) -> int:
        return self.hf.token_to_id(ATTACKER)

    @property
    def defender_id(self) -> int:
        return self.hf.token_to_id(DEFENDER)

    @property
    def request_id(self) -> int:
        return self.hf.token_to_id(REQUEST)
