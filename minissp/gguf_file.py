"""GGUF files (llama.cpp's single-file format) in minissp's own GPT, read with the `gguf` package.

hyperparameters and the tokenizer come from the metadata, every tensor is
dequantized to float32 (`gguf.quants.dequantize`, so a Q4 file gives the
Q4-rounded weights, exactly the ones llama.cpp and transformers compute
with). GGUF lists a tensor's dimensions innermost first, so numpy's shape
is the reversed list. llama.cpp's converter reorders the rows of every
Llama q/k head for its own rotary layout (adjacent pairs); we undo that
(`unpermute_rope_rows`) to get HF's.

The tokenizer of a GGUF is rebuilt from `tokenizer.ggml.*` as a byte-level
BPE `tokenizers.Tokenizer`: the vocabulary, the merges, control tokens as
special tokens, and the pre-tokenizer named by `tokenizer.ggml.pre` (GPT-2's
regex; "smollm" splits every digit first, as SmolLM's own tokenizer does).

`load_gguf` is called by `pretrained.load_pretrained` for "smollm2" and for any `.gguf` path.

Simplified: Llama and GPT-2 architectures, GPT-2-style byte-level BPE
tokenizers only; every tensor dequantized to float32 in memory.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from .chatml import PretrainedError, PretrainedTokenizer, _one_line, make_tokenizer
from .model import GPT, GPTConfig
from .pretrained import build_model, check_vocab

GGUF_MAGIC = b"GGUF"
CONTROL, USER_DEFINED = 3, 4
"""llama.cpp's token types: control tokens are special (<|im_start|>), user-defined ones are added tokens."""

GPT2_SPLIT = None  # ByteLevel's own regex is GPT-2's
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _pre_tokenizer(name: str | None, source: str):
    """The pre-tokenizer that `tokenizer.ggml.pre` names (llama.cpp's list), for the ones we know."""
    if name in (None, "default", "gpt2", "gpt-2"):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if name in ("smollm", "starcoder", "refact"):  # every digit on its own, then GPT-2's regex
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if name in ("llama-bpe", "llama3", "llama-v3"):
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise PretrainedError(f"{source}: unknown pre-tokenizer tokenizer.ggml.pre={name!r} (minissp knows gpt2, "
                          f"smollm, starcoder, refact, llama-bpe)")


def _gguf_value(field):
    """A metadata field's value, read from the reader's parts (works across gguf versions)."""
    from gguf import GGUFValueType

    def one(part, kind):
        return bytes(part).decode("utf-8") if kind == GGUFValueType.STRING else part.tolist()[0]

    if field.types[0] == GGUFValueType.ARRAY:
        return [one(field.parts[i], field.types[-1]) for i in field.data]
    return one(field.parts[field.data[0]], field.types[0])


def _gguf_tokenizer(meta: dict, source: str) -> PretrainedTokenizer:
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise PretrainedError(f"{source}: tokenizer.ggml.model={kind!r} is not supported (minissp rebuilds "
                              f"byte-level BPE tokenizers, 'gpt2', only)")
    tokens, merges = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise PretrainedError(f"{source}: the metadata lacks tokenizer.ggml.tokens or tokenizer.ggml.merges")
    vocab = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)  # a repeated token keeps its first id, as llama.cpp does
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    try:
        bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                         ignore_merges=meta.get("tokenizer.ggml.pre") in ("llama-bpe", "llama3", "llama-v3"))
        hf = HFTokenizer(bpe)
    except Exception as e:  # noqa: BLE001  tokenizers raises a bare Exception for a merge of unknown tokens
        raise PretrainedError(f"{source}: the vocabulary and merges do not make a BPE ({_one_line(e)})") from None
    hf.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre"), source)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t, kind in zip(tokens, types) if kind == CONTROL])
    hf.add_tokens([AddedToken(t, special=False, normalized=False) for t, kind in zip(tokens, types)
                   if kind == USER_DEFINED])

    def token(key: str) -> str | None:
        token_id = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[token_id] if isinstance(token_id, int) and 0 <= token_id < len(tokens) else None

    return make_tokenizer(hf, token("eos"), token("padding"), token("bos"), meta.get("tokenizer.chat_template"),
                          bool(meta.get("tokenizer.ggml.add_bos_token", False)), source)


def _gguf_config(meta: dict, vocab_size: int, has_output: bool, source: str) -> GPTConfig:
    arch = meta.get("general.architecture")
    if arch not in ("llama", "gpt2"):
        raise PretrainedError(f"{source}: unknown architecture general.architecture={arch!r} (minissp loads "
                              f"'llama' and 'gpt2')")

    def get(key, default=None):
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise PretrainedError(f"{source}: the metadata lacks {arch}.{key}")
        if isinstance(value, list):
            raise PretrainedError(f"{source}: {arch}.{key} differs between layers, which minissp does not support")
        return value

    try:
        if arch == "gpt2":
            return GPTConfig(arch="gpt2", vocab_size=vocab_size, block_size=get("context_length"),
                             n_layer=get("block_count"), n_head=get("attention.head_count"),
                             n_embd=get("embedding_length"), mlp_hidden=get("feed_forward_length", 0),
                             norm_eps=get("attention.layer_norm_epsilon", 1e-5), tie_embeddings=not has_output)
        if get("expert_count", 0):
            raise PretrainedError(f"{source}: a mixture of experts ({arch}.expert_count) is not supported")
        if get("rope.scaling.type", "none") not in ("none", "linear") or get("rope.scaling.factor", 1.0) != 1.0:
            raise PretrainedError(f"{source}: RoPE scaling ({arch}.rope.scaling.*) is not supported")
        n_embd, n_head = get("embedding_length"), get("attention.head_count")
        head_size = n_embd // n_head
        for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
            if get(key, head_size) != head_size:
                raise PretrainedError(f"{source}: {arch}.{key}={get(key)} is not embedding_length / head_count "
                                      f"= {head_size}")
        return GPTConfig(arch="llama", vocab_size=vocab_size, block_size=get("context_length"),
                         n_layer=get("block_count"), n_head=n_head, n_embd=n_embd,
                         n_kv_head=get("attention.head_count_kv", n_head), mlp_hidden=get("feed_forward_length"),
                         rope_theta=float(get("rope.freq_base", 10000.0)),
                         norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
                         tie_embeddings=not has_output, bias=False)
    except (TypeError, ValueError) as e:
        if isinstance(e, PretrainedError):
            raise
        raise PretrainedError(f"{source}: its hyperparameters do not fit minissp's GPT ({_one_line(e)})") from None


def unpermute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of a q or k projection (rows = n_heads * head_size).

    HF's RoPE pairs dimension j of a head with j + hs/2; llama.cpp's (GGML's
    "normal" rope) pairs 2j with 2j + 1, so its converter moves HF row
    r * hs/2 + j of every head to row 2j + r. We move them back:
    (n_heads, hs/2, 2, in) -> (n_heads, 2, hs/2, in).
    """
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


LLAMA_GGUF_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                    "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                    "ffn_down": "mlp.down_proj"}
GPT2_GGUF_NAMES = {"attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2",
                   "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}


def _gguf_to_hf(name: str, arch: str) -> str | None:
    """A GGUF tensor name -> the HF name (LlamaForCausalLM / GPT2LMHeadModel), None if unknown."""
    llama = arch == "llama"
    top = {"token_embd.weight": "model.embed_tokens.weight" if llama else "transformer.wte.weight",
           "output_norm.weight": "model.norm.weight" if llama else "transformer.ln_f.weight",
           "output.weight": "lm_head.weight"}
    if not llama:
        top.update({"position_embd.weight": "transformer.wpe.weight", "output_norm.bias": "transformer.ln_f.bias"})
    if name in top:
        return top[name]
    parts = name.split(".")
    names = LLAMA_GGUF_NAMES if llama else GPT2_GGUF_NAMES
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in names:
        prefix = "model.layers" if llama else "transformer.h"
        return f"{prefix}.{parts[1]}.{names[parts[2]]}.{parts[3]}"
    return None


def _gguf_tensor(tensor, source: str) -> torch.Tensor:
    """One tensor, dequantized to float32, in numpy/torch dimension order."""
    from gguf.quants import dequantize

    try:
        array = dequantize(tensor.data, tensor.tensor_type)
    except (NotImplementedError, ValueError) as e:
        raise PretrainedError(f"{source}: tensor {tensor.name} of type {tensor.tensor_type.name} cannot be "
                              f"dequantized ({_one_line(e)})") from None
    shape = tuple(int(d) for d in reversed(list(tensor.shape)))  # GGUF lists dimensions innermost first
    return torch.from_numpy(np.array(array, dtype=np.float32).reshape(shape))  # a copy: the file is mapped read-only


def load_gguf(path, device="cpu", dtype=None) -> tuple[GPT, PretrainedTokenizer]:
    """(model, tokenizer) from a GGUF file, Llama or GPT-2 architecture, any type `gguf` dequantizes.

    dtype: None = float32; else the model is cast to it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PretrainedError(f"{path}: {'not a file' if os.path.exists(path) else 'not found'}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise PretrainedError(f"{path}: not a GGUF file (it does not start with the bytes 'GGUF')")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise PretrainedError(f"{path}: reading GGUF needs the gguf package: "
                              f"pip install -e \".[pretrained]\"") from None

    try:
        reader = GGUFReader(path)
        meta = {key: _gguf_value(field) for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    except Exception as e:  # noqa: BLE001  a truncated or corrupt file fails anywhere inside the reader
        raise PretrainedError(f"{path}: a broken GGUF file ({type(e).__name__}: {_one_line(e)})") from None
    tensors = {t.name: t for t in reader.tensors}
    arch = meta.get("general.architecture")
    if "token_embd.weight" not in tensors:
        raise PretrainedError(f"{path}: no tensor token_embd.weight")
    vocab_size = int(tensors["token_embd.weight"].shape[-1])  # GGUF shape [n_embd, n_vocab]
    config = _gguf_config(meta, vocab_size, "output.weight" in tensors, path)
    tokenizer = _gguf_tokenizer(meta, path)
    state = {}
    for name, tensor in tensors.items():
        hf_name = _gguf_to_hf(name, arch)
        if hf_name is None:
            raise PretrainedError(f"{path}: unexpected tensor {name!r} for architecture {arch!r}")
        weight = _gguf_tensor(tensor, path)
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = config.n_head if name.endswith("attn_q.weight") else config.kv_heads
            if weight.dim() != 2 or weight.shape[0] != heads * config.head_size:
                raise PretrainedError(f"{path}: shape mismatch for {name}: {tuple(weight.shape)}, the model needs "
                                      f"({heads * config.head_size}, {config.n_embd})")
            weight = unpermute_rope_rows(weight, heads)
        if arch == "gpt2" and name.endswith(".weight") and hf_name.endswith(("c_attn.weight", "c_proj.weight",
                                                                             "c_fc.weight")):
            weight = weight.t()  # llama.cpp stores them as nn.Linear does; HF's Conv1D layout is (in, out)
        state[hf_name] = weight
    if arch == "gpt2" and "lm_head.weight" in state:
        if torch.equal(state["lm_head.weight"], state["transformer.wte.weight"]):
            del state["lm_head.weight"]  # llama.cpp writes GPT-2's tied head out as a copy of the embedding
            config.tie_embeddings = True
    model = build_model(config, state, path, device, dtype)
    check_vocab(model, tokenizer, path)
    return model, tokenizer
