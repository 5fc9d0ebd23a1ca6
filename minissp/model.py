"""The GPT that plays both roles, with a value head for PPO.

A decoder-only transformer in the GPT-2 layout (Radford et al. 2019,
"Language Models are Unsupervised Multitask Learners"), written to be read
top to bottom like nanoGPT's model.py:

- pre-LayerNorm blocks (LayerNorm before attention and before the MLP);
- causal self-attention through `F.scaled_dot_product_attention`;
- a GELU MLP (the tanh approximation GPT-2 was trained with);
- learned absolute position embeddings;
- input and output embeddings tied (Press & Wolf 2017);
- a scalar **value head**: one value per token, read by PPO's critic.

The parameter names follow the HF `GPT2LMHeadModel` state dict, except that
we store `nn.Linear` weights (out, in) where GPT-2 stores `Conv1D` weights
(in, out); `load_gpt2_state_dict` transposes them, so real GPT-2 checkpoints
load and give the same logits (a test checks this against transformers).

Padding. Self-play batches hold prompts of different lengths, left-padded.
`forward` takes an `attention_mask` (1 = real token, 0 = pad): pad keys are
hidden from every query and positions count only real tokens, so a prompt
gives the same logits alone and inside a padded batch.

Simplified on purpose: no dropout by default (PPO wants none, and the world
is small), no flash-attention switches, no weight-decay groups here (the
trainers choose their optimizer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


MAX_PARAMS = 10**9
"""A generous cap on the model's size (a 1e9-parameter model and its Adam state take 16 GB in
float32; the presets have 0.1M to 5M): a shape beyond it is refused before anything is allocated."""


@dataclass
class GPTConfig:
    """Shape of the network. The defaults are the CPU-sized model."""

    vocab_size: int = 2048
    """Tokens in the vocabulary (the tokenizer's size, special tokens included)."""
    block_size: int = 128
    """Longest sequence the model can read (size of the position table)."""
    n_layer: int = 4
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads per block; must divide n_embd."""
    n_embd: int = 128
    """Width of the residual stream."""
    dropout: float = 0.0
    """Dropout in attention and MLP. Keep 0 for RL: PPO's logprobs must be deterministic."""
    bias: bool = True
    """Biases in Linear and LayerNorm layers, as GPT-2 has them."""

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_params() > MAX_PARAMS:
            raise ValueError(f"this shape has {self.n_params():,} parameters, more than the cap of {MAX_PARAMS:,}")

    def n_params(self) -> int:
        """Parameters of `GPT(self)`, the tied embedding counted once (equals `GPT.num_params()`)."""
        C, bias = self.n_embd, int(self.bias)
        block = 12 * C * C + 2 * C + 11 * C * bias  # attention 4C², MLP 8C², two LayerNorm gains; biases
        return (self.vocab_size + self.block_size) * C + self.n_layer * block + (1 + bias) * C + C + 1


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counting only real tokens; pads get position 0.

    (B, T) mask of 1/0 -> (B, T) long positions. With left padding the first
    real token of every row gets position 0, as it would alone.
    """
    mask = attention_mask.long()
    return ((mask.cumsum(dim=1) - 1) * mask).clamp(min=0)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # query, key and value projections for all heads in one matrix (GPT-2's c_attn)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, attn_mask=None, kv_cache=None, layer=0):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if kv_cache is not None:
            # write this step's keys/values into the preallocated cache and
            # attend over everything cached so far (see minissp.sampling)
            k, v = kv_cache.write(layer, k, v)  # (B, nh, T_cache, hs)
        # "Attention Is All You Need" (Vaswani et al. 2017), eq. 1, with a causal mask
        y = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=attn_mask is None,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        # GPT-2's "gelu_new" is the tanh approximation of GELU (Hendrycks & Gimpel 2016)
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask=None, kv_cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), attn_mask, kv_cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying (Press & Wolf 2017)
        # PPO's critic: one scalar per token, read from the final hidden state.
        self.value_head = nn.Linear(config.n_embd, 1)

        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        # "value head initialised to zero" (Huang et al. 2024, The N Implementation
        # Details of RLHF with PPO): the critic starts by predicting 0 everywhere.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Parameter count, the tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, attention_mask=None, kv_cache=None, last_only=False):
        """Logits and values for every position.

        idx:            (B, T) token ids
        attention_mask: (B, T) 1 for real tokens, 0 for pads; None = no pads.
        kv_cache:       a `minissp.sampling.KVCache`, or None. With a cache the
                        T tokens are appended to it and attend to everything
                        cached before them; the cache supplies their positions.
        last_only:      read out the last position only (all that sampling
                        needs; skips the vocabulary projection of the prompt).
        returns (logits (B, T, vocab_size), values (B, T)), T = 1 if last_only
        """
        T = idx.shape[1]
        if kv_cache is not None:
            positions, attn_mask = kv_cache.append(attention_mask, T)  # (B, T), (B, 1, T, T_cache)
        elif attention_mask is not None:
            positions = positions_from_mask(attention_mask)  # (B, T)
            attn_mask = padded_causal_mask(attention_mask)  # (B, 1, T, T)
        else:
            positions = torch.arange(T, device=idx.device)  # (T,), broadcast over the batch
            attn_mask = None  # plain causal attention

        x = self.transformer.wte(idx) + self.transformer.wpe(positions)  # (B, T, C)
        x = self.transformer.drop(x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, attn_mask, kv_cache, layer)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        values = self.value_head(x).squeeze(-1)  # (B, T)
        return logits, values

    # ------------------------------------------------------------------
    # GPT-2 weights
    # ------------------------------------------------------------------
    def load_gpt2_state_dict(self, state_dict: dict) -> None:
        """Load weights laid out like HF `GPT2LMHeadModel.state_dict()`.

        GPT-2 keeps its projections in `Conv1D` modules, whose weight is the
        transpose of `nn.Linear`'s; we transpose those four matrices. The value
        head is not part of GPT-2 and stays as it is (zero unless trained).
        """
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        ours = self.state_dict()
        loaded = {}
        for key, tensor in state_dict.items():
            if key.endswith(".attn.bias") or key.endswith(".attn.masked_bias"):
                continue  # old GPT-2 checkpoints store the causal mask as a buffer
            if key not in ours:
                raise KeyError(f"unexpected GPT-2 key {key!r}: not a parameter of this GPT")
            if key.endswith(transposed):
                tensor = tensor.t()
            if tensor.shape != ours[key].shape:
                raise ValueError(f"shape mismatch for {key}: checkpoint {tuple(tensor.shape)}, model {tuple(ours[key].shape)}")
            loaded[key] = tensor
        missing = [k for k in ours if k not in loaded and not k.startswith("value_head") and k != "lm_head.weight"]
        if missing:
            raise KeyError(f"GPT-2 state dict lacks {missing[0]!r} (and {len(missing) - 1} more)")
        if "lm_head.weight" not in loaded:
            loaded["lm_head.weight"] = loaded["transformer.wte.weight"]
        self.load_state_dict(loaded, strict=False)


def padded_causal_mask(attention_mask: torch.Tensor, n_queries: int | None = None) -> torch.Tensor:
    """Boolean (B, 1, Tq, T) mask: query i sees key j iff j <= i and j is real.

    The queries are the last `n_queries` of the T positions (all of them by
    default; the KV cache asks only for the tokens it is appending).
    A pad query would see no key at all, which makes softmax produce NaN; we
    let every query see itself, so pads compute harmless garbage that the
    losses mask out.
    """
    T = attention_mask.shape[1]
    Tq = T if n_queries is None else n_queries
    query_pos = torch.arange(T - Tq, T, device=attention_mask.device)[:, None]  # (Tq, 1)
    key_pos = torch.arange(T, device=attention_mask.device)[None, :]  # (1, T)
    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    return ((key_pos <= query_pos) & keys) | (key_pos == query_pos)  # (B, 1, Tq, T)


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """Where a model runs: "auto" -> cuda if torch sees a GPU, else cpu; any other name is checked."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} was asked for, but this torch sees no GPU; use device=cpu or device=auto")
    return device
