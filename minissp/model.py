"""The GPT that plays both roles, with a value head for PPO.

A decoder-only transformer, written to be read top to bottom like nanoGPT's
model.py, in one of two layouts chosen by `GPTConfig.arch`:

**"gpt2"** (the default, what minissp trains from scratch), the GPT-2 layout
(Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"):

- pre-LayerNorm blocks (LayerNorm before attention and before the MLP);
- causal self-attention through `F.scaled_dot_product_attention`;
- a GELU MLP (the tanh approximation GPT-2 was trained with);
- learned absolute position embeddings;
- input and output embeddings tied (Press & Wolf 2017).

**"llama"**, the Llama family's layout (Touvron et al. 2023, "LLaMA"; SmolLM2
and most small open models use it), for pretrained weights
(`minissp.pretrained`):

- RMSNorm instead of LayerNorm (Zhang & Sennrich 2019), computed in float32;
- rotary position embeddings (RoPE, Su et al. 2021, "RoFormer") on queries
  and keys, in the "rotate half" layout HF's Llama checkpoints are stored in:
  dimension i is paired with i + head_size/2, not with its neighbour;
- grouped-query attention (Ainslie et al. 2023): `n_kv_head` key/value heads
  shared by groups of query heads (and the KV cache stores only those);
- a SwiGLU MLP (Shazeer 2020, "GLU Variants Improve Transformer");
- no biases, no learned position table, embeddings tied or not.

Both layouts end in a scalar **value head**: one value per token, read by
PPO's critic, initialised to zero (also on top of a pretrained trunk).

The parameter names follow the HF `GPT2LMHeadModel` state dict, except that
we store `nn.Linear` weights (out, in) where GPT-2 stores `Conv1D` weights
(in, out); `load_gpt2_state_dict` transposes them, so real GPT-2 checkpoints
load and give the same logits (tests check this against transformers). Llama
blocks keep that module tree with HF Llama's projection names inside
(`transformer.h[i].attn.q_proj`, `.mlp.gate_proj`); `load_llama_state_dict`
maps HF `LlamaForCausalLM` names.

Padding. Self-play batches hold prompts of different lengths, left-padded.
`forward` takes an `attention_mask` (1 = real token, 0 = pad): pad keys are
hidden from every query and positions count only real tokens (the position
table's index for GPT-2, the rotation angle for RoPE), so a prompt gives the
same logits alone and inside a padded batch.

Simplified on purpose: no dropout by default (PPO wants none, and the world
is small), no flash-attention switches, no weight-decay groups here (the
trainers choose their optimizer); for Llama no RoPE scaling (Llama 3's long
context variant), no per-layer head counts, head_size = n_embd / n_head; the
shared key/value heads are copied out to every query head (`repeat_interleave`)
except in a one-token decode step, where each group's queries read their head
as it is cached.
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
    """Longest sequence the model can read (GPT-2: the size of its position table)."""
    n_layer: int = 4
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads per block; must divide n_embd."""
    n_embd: int = 128
    """Width of the residual stream."""
    dropout: float = 0.0
    """Dropout in attention and MLP. Keep 0 for RL: PPO's logprobs must be deterministic."""
    bias: bool = True
    """Biases in Linear and LayerNorm layers, as GPT-2 has them (GPT-2 only: the Llama layout has none)."""
    arch: str = "gpt2"
    """"gpt2" (LayerNorm, GELU MLP, learned positions) or "llama" (RMSNorm, SwiGLU, RoPE, grouped-query attention)."""
    n_kv_head: int = 0
    """Key/value heads (grouped-query attention, llama only); 0 = n_head. Must divide n_head."""
    mlp_hidden: int = 0
    """Width of the MLP's hidden layer; 0 = 4 * n_embd."""
    rope_theta: float = 10000.0
    """Base of the rotary angles (llama only): pair i turns by position * rope_theta^(-2i / head_size)."""
    norm_eps: float = 1e-5
    """Epsilon of every LayerNorm / RMSNorm."""
    tie_embeddings: bool = True
    """The output projection is the input embedding (Press & Wolf 2017)."""

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.arch not in ("gpt2", "llama"):
            raise ValueError(f"arch={self.arch!r} must be 'gpt2' or 'llama'")
        if self.n_kv_head < 0 or (self.n_kv_head and self.n_head % self.n_kv_head != 0):
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head} (0 = n_head)")
        if self.arch == "gpt2" and self.kv_heads != self.n_head:
            raise ValueError(f"n_kv_head={self.n_kv_head} needs arch='llama': GPT-2 has n_head={self.n_head} "
                             f"key/value heads (0 = n_head)")
        if self.arch == "llama" and self.head_size % 2 != 0:
            raise ValueError(f"n_embd / n_head = {self.head_size} must be even for rotary embeddings (arch='llama')")
        if self.mlp_hidden < 0 or not (self.rope_theta > 0 and self.norm_eps > 0):
            raise ValueError(f"mlp_hidden={self.mlp_hidden} must be >= 0, rope_theta={self.rope_theta} and "
                             f"norm_eps={self.norm_eps} > 0")
        if self.n_params() > MAX_PARAMS:
            raise ValueError(f"this shape has {self.n_params():,} parameters, more than the cap of {MAX_PARAMS:,}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_kv_head, or n_head when it is 0."""
        return self.n_kv_head or self.n_head

    @property
    def hidden(self) -> int:
        """Width of the MLP's hidden layer."""
        return self.mlp_hidden or 4 * self.n_embd

    def n_params(self) -> int:
        """Parameters of `GPT(self)`, a tied embedding counted once (equals `GPT.num_params()`)."""
        C, H, V, bias = self.n_embd, self.hidden, self.vocab_size, int(self.bias)
        head = 0 if self.tie_embeddings else V * C  # an untied output projection
        if self.arch == "llama":
            kv = self.kv_heads * self.head_size
            block = 2 * C * C + 2 * C * kv + 3 * C * H + 2 * C  # q, o; k, v; gate, up, down; two RMSNorm gains
            return V * C + self.n_layer * block + C + head + C + 1
        # attention 4C², MLP 2CH, two LayerNorm gains; biases: qkv 3C, proj C, fc H, proj C, LayerNorms 2C
        block = 4 * C * C + 2 * C * H + 2 * C + (7 * C + H) * bias
        return (V + self.block_size) * C + self.n_layer * block + (1 + bias) * C + head + C + 1


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counting only real tokens; pads get position 0.

    (B, T) mask of 1/0 -> (B, T) long positions. With left padding the first
    real token of every row gets position 0, as it would alone.
    """
    mask = attention_mask.long()
    return ((mask.cumsum(dim=1) - 1) * mask).clamp(min=0)


def first_marked_column(mask: torch.Tensor) -> int:
    """(B, T) bool -> the first column where any row is marked (0 if none is): a loss over the
    marked tokens needs the logits from there on only (`GPT.forward(read_from=...)`)."""
    return int(mask.any(0).int().argmax())


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

    def forward(self, x, attn_mask=None, kv_cache=None, layer=0, rope=None):
        # rope is unused: GPT-2's positions were added to the embeddings
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
        self.c_fc = nn.Linear(config.n_embd, config.hidden, bias=config.bias)
        self.c_proj = nn.Linear(config.hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        # GPT-2's "gelu_new" is the tanh approximation of GELU (Hendrycks & Gimpel 2016)
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): x / rms(x) * gain, no centring, no bias;
    in float32, cast back before the gain (as HF's Llama), so bfloat16 normalises like float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., C)
        return self.weight * x.to(dtype)


def rotary_cos_sin(positions: torch.Tensor, head_size: int, theta: float, dtype: torch.dtype):
    """cos and sin of the rotary angles (RoFormer, Su et al. 2021, eq. 34), in float32, then cast.

    positions (T,) or (B, T) -> cos, sin (T, hs) or (B, T, hs). Pair i of a head
    (dimensions i and i + hs/2, the "rotate half" layout) turns by
    position * theta^(-2i / hs); both halves hold the same angles.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_size, 2, device=positions.device).float() / head_size))
    angles = positions.float()[..., None] * inv_freq  # (..., T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)  # (..., T, hs)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x, cos, sin):
    """Rotate each pair of x (B, nh, T, hs) by its angle; cos, sin are (T, hs) or (B, T, hs)."""
    cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)  # (1, T, hs) or (B, 1, T, hs): the same for every head
    return x * cos + rotate_half(x) * sin


class GroupedQueryAttention(nn.Module):
    """Llama's attention: RoPE on queries and keys, no biases; query head j reads key/value
    head j // (n_head / n_kv_head) (GQA, Ainslie et al. 2023; n_kv_head = n_head is plain MHA)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.kv_heads, config.head_size
        C, kv = config.n_embd, config.kv_heads * config.head_size
        self.q_proj = nn.Linear(C, C, bias=False)
        self.k_proj = nn.Linear(C, kv, bias=False)
        self.v_proj = nn.Linear(C, kv, bias=False)
        self.o_proj = nn.Linear(C, C, bias=False)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, attn_mask=None, kv_cache=None, layer=0, rope=None):
        B, T, C = x.shape
        nh, nkv, hs = self.n_head, self.n_kv_head, self.head_size
        q = self.q_proj(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        cos, sin = rope
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.write(layer, k, v)  # (B, nkv, T_cache, hs): the cache keeps the shared heads
        dropout = self.dropout if self.training else 0.0
        if nkv != nh and kv_cache is not None and T == 1:
            # a decode step: the nh/nkv query heads sharing a key/value head become nh/nkv queries
            # of that head, (B, nh, 1, hs) -> (B, nkv, nh/nkv, hs): the cache is read, not copied
            y = F.scaled_dot_product_attention(q.view(B, nkv, nh // nkv, hs), k, v, attn_mask=attn_mask,
                                               dropout_p=dropout)  # (B, nkv, nh/nkv, hs)
            y = y.view(B, nh, 1, hs)  # (B, nh, T=1, hs)
        else:
            if nkv != nh:
                k = k.repeat_interleave(nh // nkv, dim=1)  # (B, nh, T_cache, hs)
                v = v.repeat_interleave(nh // nkv, dim=1)  # (B, nh, T_cache, hs)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout,
                                               is_causal=attn_mask is None)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.o_proj(y))


class SwiGLU(nn.Module):
    """Llama's MLP (Shazeer 2020): down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.hidden, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.hidden, bias=False)
        self.down_proj = nn.Linear(config.hidden, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


def make_norm(config: GPTConfig) -> nn.Module:
    """The block's normalisation: RMSNorm for llama, LayerNorm for GPT-2."""
    if config.arch == "llama":
        return RMSNorm(config.n_embd, config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)).

    GPT-2: LayerNorm, fused-qkv attention, GELU MLP. Llama: RMSNorm, rotary
    grouped-query attention, SwiGLU MLP.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        llama = config.arch == "llama"
        self.ln_1 = make_norm(config)
        self.attn = GroupedQueryAttention(config) if llama else CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = SwiGLU(config) if llama else MLP(config)

    def forward(self, x, attn_mask=None, kv_cache=None, layer=0, rope=None):
        x = x + self.attn(self.ln_1(x), attn_mask, kv_cache, layer, rope)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        llama = config.arch == "llama"
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if not llama:  # Llama's positions are rotations inside attention, not a table
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.transformer = nn.ModuleDict(dict(
            **modules,
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # weight tying (Press & Wolf 2017)
        # PPO's critic: one scalar per token, read from the final hidden state.
        self.value_head = nn.Linear(config.n_embd, 1)

        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer) (Llama's are o_proj, down_proj)
        for name, p in self.named_parameters():
            if name.endswith(("c_proj.weight", "o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        # "value head initialised to zero" (Huang et al. 2024, The N Implementation
        # Details of RLHF with PPO): the critic starts by predicting 0 everywhere.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.bf16 = False  # run the forward pass under bf16 autocast (config `precision=bf16`)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Parameter count, a tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, attention_mask=None, kv_cache=None, read_from=0):
        """Logits and values for every position from `read_from` on.

        idx:            (B, T) token ids
        attention_mask: (B, T) 1 for real tokens, 0 for pads; None = no pads.
        kv_cache:       a `minissp.sampling.KVCache`, or None. With a cache the
                        T tokens are appended to it and attend to everything
                        cached before them; the cache supplies their positions.
        read_from:      the first position read out; -1 = the last one only (all that
                        sampling needs). The positions before it still run through
                        every block, but skip the vocabulary projection: a loss that
                        covers the response only does not pay for the prompt's logits.
        returns (logits (B, T', vocab_size), values (B, T')), T' = T - read_from (1 for -1),
        in float32

        With `self.bf16` the forward pass runs under bf16 autocast (matmuls in
        bfloat16, weights and their gradients stay float32: mixed precision).
        """
        with torch.autocast(idx.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits, values = self._forward(idx, attention_mask, kv_cache, read_from)
        return logits.float(), values.float()  # log-softmax, the PPO ratio and the losses want float32

    def _forward(self, idx, attention_mask, kv_cache, read_from):
        T = idx.shape[1]
        if kv_cache is not None:
            positions, attn_mask = kv_cache.append(attention_mask, T)  # (B, T), (B, 1, T, T_cache)
        elif attention_mask is not None:
            positions = positions_from_mask(attention_mask)  # (B, T)
            attn_mask = padded_causal_mask(attention_mask)  # (B, 1, T, T)
        else:
            positions = torch.arange(T, device=idx.device)  # (T,), broadcast over the batch
            attn_mask = None  # plain causal attention

        if self.config.arch == "llama":
            x = self.transformer.wte(idx)  # (B, T, C)
            # cos, sin (T, hs) or (B, T, hs): every layer rotates by the same angles
            rope = rotary_cos_sin(positions, self.config.head_size, self.config.rope_theta, x.dtype)
        else:
            x = self.transformer.wte(idx) + self.transformer.wpe(positions)  # (B, T, C)
            rope = None
        x = self.transformer.drop(x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, attn_mask, kv_cache, layer, rope)
        x = self.transformer.ln_f(x[:, read_from:])  # (B, T', C)
        logits = self.lm_head(x)  # (B, T', vocab_size)
        values = self.value_head(x).squeeze(-1)  # (B, T')
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

    # ------------------------------------------------------------------
    # Llama weights
    # ------------------------------------------------------------------
    def load_llama_state_dict(self, state_dict: dict) -> None:
        """Load weights laid out like HF `LlamaForCausalLM.state_dict()`.

        HF stores q_proj / k_proj in the rotate-half layout our RoPE uses, so
        only names change (`LLAMA_RENAMES`). A tied model ignores `lm_head.weight`;
        the value head is not part of Llama and stays as it is (zero unless trained).
        """
        if self.config.arch != "llama":
            raise ValueError(f"load_llama_state_dict needs arch='llama', this GPT has arch={self.config.arch!r}")
        ours = self.state_dict()
        loaded = {}
        for key, tensor in state_dict.items():
            if key.endswith("rotary_emb.inv_freq") or (key == "lm_head.weight" and self.config.tie_embeddings):
                continue  # old checkpoints store the rotary frequencies; a tied head is the embedding
            name = key
            for theirs, ours_part in LLAMA_RENAMES:
                name = name.replace(theirs, ours_part)
            if name not in ours:
                raise KeyError(f"unexpected Llama key {key!r}: not a parameter of this GPT")
            if tensor.shape != ours[name].shape:
                raise ValueError(f"shape mismatch for {key}: checkpoint {tuple(tensor.shape)}, "
                                 f"model {tuple(ours[name].shape)}")
            loaded[name] = tensor
        missing = [k for k in ours if k not in loaded and not k.startswith("value_head")
                   and not (k == "lm_head.weight" and self.config.tie_embeddings)]
        if missing:
            raise KeyError(f"Llama state dict lacks {missing[0]!r} (and {len(missing) - 1} more)")
        self.load_state_dict(loaded, strict=False)


LLAMA_RENAMES = (("model.embed_tokens.", "transformer.wte."), ("model.norm.", "transformer.ln_f."),
                 ("model.layers.", "transformer.h."), (".input_layernorm.", ".ln_1."),
                 (".post_attention_layernorm.", ".ln_2."), (".self_attn.", ".attn."))
"""HF Llama name parts -> ours: model.layers.3.self_attn.q_proj.weight -> transformer.h.3.attn.q_proj.weight."""


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
