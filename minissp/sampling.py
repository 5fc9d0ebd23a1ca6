"""Batched generation with a preallocated KV cache, for ragged prompts.

Self-play samples many attacks and many answers at once, from prompts of
different lengths. This module turns a list of token lists into one batch
and generates all rows together, step by step:

1. prefill: left-pad the prompts to one length P and run them through the
   model once; every layer's keys and values go into the `KVCache`;
2. decode: each step feeds only the token sampled last (B, 1); its keys and
   values are appended to the cache and it attends over all cached slots.

Left padding keeps every row's newest token in the same cache slot, so one
Python int (`KVCache.length`) says how many slots are filled; it counts
steps, it is never read back from the device. What differs per row lives in
device tensors: which slots are pads, and how many real tokens each row has
seen (which is also the next token's position, so a prompt gets the same
positions alone and inside a padded batch). A row that samples EOS is
finished: from then on it is written as pad and masked out, but it keeps
stepping with the others, because dropping rows would reshape the batch.
The only host sync is an "are all rows finished?" check every
`FINISHED_CHECK_EVERY` steps.

For PPO, `generate` returns the log-probability of each sampled token under
the distribution it was really drawn from: logits divided by the
temperature, then cut by top-k / top-p and renormalised. The trainer must
recompute logprobs the same way (Huang et al. 2024, "The N Implementation
Details of RLHF with PPO": divide by the sampling temperature everywhere),
or the first PPO ratio will not be 1. `Generation.sequence()` gives the
prompt and response as one sequence for that recomputation.

`reply` is the text-level view used by evaluation and the notebooks: a
role's turn for many texts, batched by length, as strings.

Simplified: one cache per call (no paged or shared-prefix cache), all rows
step until the last one finishes, no beam search, no repetition penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import GPT, GPTConfig, padded_causal_mask, positions_from_mask, pick_device

FINISHED_CHECK_EVERY = 8
"""Steps between host syncs that stop generation once every row has finished."""


class KVCache:
    """Keys and values of every layer, preallocated for `max_len` tokens per row.

    It holds the model's key/value heads (`config.kv_heads`: fewer than the
    query heads under grouped-query attention), keys already rotated by RoPE
    for a Llama model; the positions it hands out are what RoPE rotates by.

    `GPT.forward(idx, attention_mask, kv_cache=cache)` calls `append` once (to
    reserve slots and get positions and the attention mask) and then `write`
    once per layer.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        if max_len > config.block_size:
            raise ValueError(f"a cache of {max_len} tokens exceeds the model's block_size={config.block_size}")
        # only the key/value heads: n_head for GPT-2, n_kv_head under grouped-query attention
        shape = (config.n_layer, batch_size, config.kv_heads, max_len, config.head_size)
        self.keys = torch.empty(shape, device=device, dtype=dtype)  # (n_layer, B, nkv, max_len, hs)
        self.values = torch.empty(shape, device=device, dtype=dtype)  # (n_layer, B, nkv, max_len, hs)
        # slots start out real; `append` marks the pads it is given
        self.is_real = torch.ones(batch_size, max_len, dtype=torch.bool, device=device)  # (B, max_len)
        self.n_real = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,) = next position
        self.length = 0  # slots filled so far, the same for every row
        self.max_len = max_len

    def append(self, attention_mask: torch.Tensor | None, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reserve the next T slots for new tokens; mask (B, T) or None = all real.

        returns positions (B, T) of the new tokens, and the boolean attention
        mask (B, 1, T, length) of the new queries over every filled slot.
        """
        start, end = self.length, self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache full: {self.max_len} slots, asked for {end}")
        if attention_mask is None:
            positions = self.n_real[:, None] + torch.arange(T, device=self.n_real.device)  # (B, T)
            self.n_real += T
        else:
            new_is_real = attention_mask.bool()  # (B, T)
            self.is_real[:, start:end] = new_is_real
            positions = self.n_real[:, None] + positions_from_mask(new_is_real)  # (B, T)
            self.n_real += new_is_real.sum(dim=1)
        self.length = end
        return positions, padded_causal_mask(self.is_real[:, :end], n_queries=T)  # (B, T), (B, 1, T, end)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one layer's new keys/values (B, nkv, T, hs) in the slots `append`
        reserved; return that layer's keys and values over all filled slots."""
        start = self.length - k.shape[2]
        self.keys[layer, :, :, start:self.length] = k
        self.values[layer, :, :, start:self.length] = v
        return self.keys[layer, :, :, :self.length], self.values[layer, :, :, :self.length]  # (B, nkv, length, hs)


@dataclass
class Generation:
    """One batch of prompts and their sampled responses (all on one device)."""

    prompt_ids: torch.Tensor
    """(B, P) long, left-padded with pad_id."""
    prompt_mask: torch.Tensor
    """(B, P) bool, True on real prompt tokens."""
    response_ids: torch.Tensor
    """(B, N) long, the sampled tokens; EOS kept as the last action, pad_id after it."""
    response_logprobs: torch.Tensor
    """(B, N) float, log-prob of each sampled token under the distribution it was drawn from; 0 after EOS."""
    response_mask: torch.Tensor
    """(B, N) bool, True on generated tokens up to and including EOS."""
    finished: torch.Tensor
    """(B,) bool, True where the row sampled EOS."""

    def sequence(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt and response as one sequence: ids (B, P+N) and attention mask (B, P+N).

        Response token i sits at index P + i; the logits at index P + i - 1 predicted it.
        """
        ids = torch.cat([self.prompt_ids, self.response_ids], dim=1)  # (B, P+N)
        mask = torch.cat([self.prompt_mask, self.response_mask], dim=1)  # (B, P+N)
        return ids, mask


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> ids (B, P) left-padded with pad_id, and mask (B, P), True on real tokens."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and every prompt at least one token")
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (P - len(p)) + list(p) for p in prompts], dtype=torch.long, device=device)
    mask = torch.tensor([[False] * (P - len(p)) + [True] * len(p) for p in prompts], device=device)
    return ids, mask


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row from logits (B, V); return ids (B,) and their logprobs (B,).

    temperature 0 means greedy (argmax); its logprob is the one under the
    temperature-1 distribution. Otherwise the logprob is under the
    distribution sampled from: scaled, cut by top-k and top-p, renormalised.
    """
    if temperature == 0:
        token = logits.argmax(dim=-1)  # (B,)
        logprobs = F.log_softmax(logits, dim=-1)  # (B, V)
        return token, logprobs.gather(-1, token[:, None]).squeeze(-1)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None:
        kth_largest = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None:
        # nucleus sampling (Holtzman et al. 2020): keep the most likely tokens
        # until their mass reaches top_p; the first token is always kept
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        sorted_probs = sorted_logits.softmax(dim=-1)  # (B, V)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V) mass of the tokens ranked above
        drop = (mass_before >= top_p).scatter(-1, order, mass_before >= top_p)  # (B, V) back in vocab order
        logits = logits.masked_fill(drop, float("-inf"))
    logprobs = F.log_softmax(logits, dim=-1)  # (B, V)
    # inverse-CDF sampling: one uniform number per row, where torch.multinomial
    # draws one per vocabulary entry (most of the sampling time on a CPU)
    cdf = logprobs.exp().cumsum(dim=-1)  # (B, V), non-decreasing
    uniform = 1 - torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device)  # (B, 1) in (0, 1]
    u = uniform * cdf[:, -1:]  # (B, 1) in (0, total]
    # the first token whose cdf reaches u; it cannot be one of probability 0 (cut by top-k/top-p)
    token = torch.searchsorted(cdf, u).squeeze(-1)  # (B,)
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)


@torch.no_grad()  # not inference_mode: PPO feeds the returned tensors into autograd
def generate(model: GPT, prompts: list[list[int]], max_new_tokens: int, eos_id: int | None, pad_id: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None, device: torch.device | str | None = None,
             decode: str = "eager") -> Generation:
    """Sample up to `max_new_tokens` tokens after each prompt, all rows at once.

    eos_id:    a row stops after sampling it; None = never stop early (benchmarks).
    generator: a seeded `torch.Generator` on `device` makes sampling reproducible.
    device:    None = where the model is; otherwise "auto", "cpu", "cuda", ...,
               and the model is moved there.
    decode:    "eager" (this file's cache), "static" (fixed-shape steps) or "graph"
               (fixed-shape steps replayed as a CUDA graph, GPU only); `static_decode.py`.
    Stops early once every row has finished, so N <= max_new_tokens.
    """
    if decode not in ("eager", "static", "graph"):
        raise ValueError(f"decode must be 'eager', 'static' or 'graph', got {decode!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
        raise ValueError(f"need temperature >= 0, top_k >= 1, 0 < top_p <= 1; got {temperature}, {top_k}, {top_p}")
    if device is None:
        device = next(model.parameters()).device
    else:
        device = pick_device(device)
        model.to(device)
    prompt_ids, prompt_mask = left_pad(prompts, pad_id, device)  # (B, P)
    B, P = prompt_ids.shape
    if P + max_new_tokens > model.config.block_size:
        raise ValueError(f"longest prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds "
                         f"block_size={model.config.block_size}")
    dtype = next(model.parameters()).dtype
    if decode == "eager":
        cache = KVCache(model.config, B, P + max_new_tokens, device, dtype)
    else:
        from .static_decode import StaticKVCache, graphed_decode_step  # it builds on KVCache
        if decode == "graph" and device.type != "cuda":
            raise ValueError(f"decode='graph' needs a CUDA device, not {device.type}")
        cache = StaticKVCache(model.config, B, P + max_new_tokens, device, dtype)
    response_ids = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    response_logprobs = torch.zeros(B, max_new_tokens, dtype=dtype, device=device)
    response_mask = torch.zeros(B, max_new_tokens, dtype=torch.bool, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)

    was_training = model.training
    model.eval()
    logits, _ = model(prompt_ids, attention_mask=prompt_mask, kv_cache=cache, read_from=-1)  # (B, 1, V)
    next_logits = logits[:, -1, :]  # (B, V): the last prompt slot is real in every row
    graph_step = graphed_decode_step(model, cache, B) if decode == "graph" else None
    for step in range(max_new_tokens):
        token, logprob = sample_next_token(next_logits, temperature, top_k, top_p, generator)  # (B,), (B,)
        response_ids[:, step] = token.masked_fill(finished, pad_id)
        response_logprobs[:, step] = logprob.masked_fill(finished, 0.0)
        response_mask[:, step] = ~finished
        if eos_id is not None:
            finished |= token == eos_id
        n_steps = step + 1
        if n_steps == max_new_tokens or (n_steps % FINISHED_CHECK_EVERY == 0 and finished.all()):  # the host sync
            break
        if graph_step is not None:
            next_logits = graph_step(response_ids[:, step])  # (B, V), replayed
        else:
            logits, _ = model(response_ids[:, step:step + 1], kv_cache=cache)  # (B, 1, V)
            next_logits = logits[:, -1, :]  # (B, V)
    model.train(was_training)
    return Generation(prompt_ids, prompt_mask, response_ids[:, :n_steps], response_logprobs[:, :n_steps],
                      response_mask[:, :n_steps], finished)


def reply(model, tokenizer, role: str, texts: list[str], max_new_tokens: int,
          temperature: float = 0.0, batch_size: int = 64, generator=None) -> list[str]:
    """The model's turn, as text, for every text in `texts` (greedy by default).

    Texts are batched by length so rows in a batch need little padding; the
    answers come back in the order of `texts`. A prompt too long for the
    model's context keeps its last tokens (`Tokenizer.prompt_ids`).
    """
    limit = model.config.block_size - max_new_tokens
    encoded = [tokenizer.prompt_ids(role, text, limit) for text in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    answers = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        out = generate(model, [encoded[i] for i in rows], max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                       temperature=temperature, generator=generator)
        for row, ids in zip(rows, out.response_ids.cpu()):
            answers[row] = tokenizer.response_text(ids)
    return answers
