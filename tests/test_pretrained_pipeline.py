"""The whole pipeline from a pretrained chat model (`sft.init_from`), on CPU, from a tiny random
Llama directory written by transformers: supervised stages through its own tokenizer and ChatML,
self-play, the evaluation with the real-text safe set, the checkpoint it leaves, chat and evaluate."""

import json
import pathlib
import sys

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from minissp import chat, checkpoint, evaluate
from minissp.chatml import PretrainedTokenizer
from minissp.config import ConfigError, build_config, sft_fingerprint
from minissp.world import World
from minissp.world.corpora import capability_corpus

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402  (the repository's train.py)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A random 1-layer Llama with a byte-level BPE that knows the world's words and ChatML's tokens."""
    import random

    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    texts = [f"{e.prompt} {e.response}" for e in capability_corpus(World(0).intents, random.Random(0), 1)]
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(texts + ["You are a helpful assistant. Rewrite the request."], trainers.BpeTrainer(
        vocab_size=800, special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIALS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=hf.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    LlamaForCausalLM(config).save_pretrained(path)
    hf.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                                            "chat_template": "<|im_start|>{{ ... }}"}))
    return path


def args(llama_dir, tmp_path, *more):
    return ["preset=pretrained_smoke", f"sft.init_from={llama_dir}", f"out_dir={tmp_path / 'run'}",
            f"sft_cache_dir={tmp_path / 'cache'}", *more]


def test_train_py_runs_end_to_end_from_a_pretrained_llama_directory(llama_dir, tmp_path, capsys):
    assert train.main(args(llama_dir, tmp_path)) == 0, capsys.readouterr().err
    out = tmp_path / "run"
    results = json.loads((out / "results.json").read_text())
    assert list(results["columns"]) == ["pretrained", "supervised", "self-play"]
    for name, column in results["columns"].items():  # the real-text row for every model, the world's for two
        assert 0.0 <= column["safe_set_over_refusal"] <= 1.0, name
    assert "helpfulness" in results["columns"]["self-play"] and "helpfulness" not in results["columns"]["pretrained"]
    assert "real-text safe set" in (out / "results.md").read_text()
    assert len((out / "selfplay_metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "selfplay_metrics.jsonl").read_text().splitlines()[0])[
        "first_minibatch/max_abs_ratio_minus_1"] == 0.0

    # the checkpoint keeps the pretrained tokenizer and its chat format, and the Llama shape
    model, tokenizer, _ = checkpoint.load_model(str(out / "final.pt"))
    assert isinstance(tokenizer, PretrainedTokenizer) and tokenizer.chat_format == "chatml"
    assert model.config.arch == "llama" and model.config.n_layer == 1 and model.config.block_size == 320
    assert tokenizer.prompt_text("defender", "hi").startswith("<|im_start|>system\n")

    # the same command again: the supervised model from the cache, self-play resumed at its end
    capsys.readouterr()
    assert train.main(args(llama_dir, tmp_path)) == 0
    assert json.loads((out / "results.json").read_text())["columns"]["self-play"] == results["columns"]["self-play"]

    # chat and evaluate read that checkpoint
    assert chat.main(["--ckpt", str(out / "final.pt"), "--prompt", "how do i bake bread ?"]) == 0
    assert "labels:" in capsys.readouterr().out
    assert evaluate.main(["--ckpt", str(out / "final.pt"), "--prompts", str(ROOT / "minissp/data/safe_prompts.csv"),
                          "--limit", "3", "--max-new-tokens", "4"]) == 0
    assert "refusal-phrase judge" in capsys.readouterr().out


def test_the_cache_key_follows_the_pretrained_files(llama_dir, tmp_path):
    cfg = build_config(args(llama_dir, tmp_path))
    key = sft_fingerprint(cfg)
    weights = next(llama_dir.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data + b"\0")  # another model at the same path
    try:
        assert sft_fingerprint(cfg) != key
    finally:
        weights.write_bytes(data)


def test_pretrained_configs_that_cannot_run_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="needs sft.init_from"):
        build_config(["preset=pretrained_smoke"])
    with pytest.raises(ConfigError, match="sft.init_from=.*no such file or directory"):
        build_config([f"sft.init_from={tmp_path / 'nowhere'}"])
    assert train.main(["preset=pretrained_smoke", f"sft.init_from={tmp_path}", f"out_dir={tmp_path / 'r'}",
                       f"sft_cache_dir={tmp_path / 'c'}"]) == 2  # a directory with no model in it: one line
