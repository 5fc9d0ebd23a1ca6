"""How varied a set of attacks is: distinct-n and self-BLEU.

Two standard measures of text diversity, used by the red-teaming papers to
spot an attacker that collapses onto one template (Self-RedTeam reports
self-BLEU; curiosity-driven red teaming, Hong et al. 2024, both):

- distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for
  Neural Conversation Models"): distinct n-grams over all n-grams; 1 = nothing
  repeats, near 0 = the same few phrases over and over;
- self-BLEU (Zhu et al. 2018, "Texygen"): the mean BLEU of each text against
  all the others as references; 1 = every text is a copy of the others.

Simplified: whitespace words; BLEU up to 4-grams with uniform weights, clipped
counts, a brevity penalty and +1 smoothing of the n-gram precisions (Lin & Och
2004) so short texts do not zero out.
"""

from __future__ import annotations

import math
import random
from collections import Counter


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct n-grams over all n-grams in `texts` (0 when there are none)."""
    grams = [g for text in texts for g in ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def bleu(hypothesis: list[str], references: list[list[str]], max_n: int = 4) -> float:
    """Smoothed sentence BLEU of one word list against several references."""
    if not hypothesis or not references:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        counts = Counter(ngrams(hypothesis, n))
        best = Counter()  # the most times each n-gram appears in any one reference
        for ref in references:
            for gram, c in Counter(ngrams(ref, n)).items():
                best[gram] = max(best[gram], c)
        clipped = sum(min(c, best[gram]) for gram, c in counts.items())
        log_precision += math.log((clipped + 1) / (sum(counts.values()) + 1)) / max_n
    closest = min((abs(len(r) - len(hypothesis)), len(r)) for r in references)[1]
    brevity = 1.0 if len(hypothesis) > closest else math.exp(1 - closest / len(hypothesis))
    return brevity * math.exp(log_precision)


def self_bleu(texts: list[str], max_texts: int = 100, seed: int = 0) -> float:
    """Mean BLEU of each text against the others (on a seeded sample of at most max_texts)."""
    if len(texts) > max_texts:
        texts = random.Random(seed).sample(texts, max_texts)
    words = [t.split() for t in texts]
    if len(words) < 2:
        return 0.0
    return sum(bleu(w, words[:i] + words[i + 1:]) for i, w in enumerate(words)) / len(words)
