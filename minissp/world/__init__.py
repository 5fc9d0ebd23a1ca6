"""The synthetic safety world: intents, tactic families and staged corpora.

No pretrained weights can be downloaded, so the model learns its whole language
here. The world is built to make safety hard in the way it is hard for real
LLMs (Wei et al. 2023): see `tactics` for the families, `intents` for what can
be asked, `corpora` for the training stages. Harmful content is placeholders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .corpora import ATTACKER, DEFENDER, PLAIN, TEXT, EvalPrompt, Example
from .intents import BENIGN, BORDERLINE, HARMFUL, HELDOUT, TRAIN, Intent, build_intents
from .tactics import FAMILIES, SEEN_FAMILIES, UNSEEN_FAMILIES, decoded_views, normalize


@dataclass
class World:
    """All intents of one world (a seed fixes the train/held-out split)."""

    seed: int = 0
    intents: list[Intent] = field(init=False)

    def __post_init__(self):
        self.intents = build_intents(self.seed)
        self.by_id = {intent.id: intent for intent in self.intents}

    def select(self, split: str | None = None, labels=(HARMFUL, BENIGN, BORDERLINE)) -> list[Intent]:
        """Intents of a split (None = both) with one of the given labels, in table order."""
        return [i for i in self.intents if (split is None or i.split == split) and i.label in labels]


__all__ = [
    "World", "Intent", "Example", "EvalPrompt", "FAMILIES", "SEEN_FAMILIES", "UNSEEN_FAMILIES",
    "HARMFUL", "BENIGN", "BORDERLINE", "TRAIN", "HELDOUT", "ATTACKER", "DEFENDER", "TEXT", "PLAIN",
    "decoded_views", "normalize",
]
