"""precision=bf16: the forward pass under bfloat16 autocast, weights and optimizer state in float32.
Checked on CPU, where autocast to bfloat16 exists too; the tolerances are bf16's (8 bits of mantissa)."""

import torch

from minissp.config import build_config
from minissp.model import GPT, GPTConfig
from minissp.pipeline import run
from minissp.ppo import PPOConfig, ppo_optimizer, ppo_update
from minissp.sampling import generate
from test_ppo import rollout
from test_sampling import RAGGED_PROMPTS


def tiny(arch="gpt2", bf16=True, seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=64, block_size=48, n_layer=2, n_head=4, n_embd=32, arch=arch,
                          n_kv_head=2 if arch == "llama" else 0)).eval()
    for p in model.parameters():  # larger weights than the init, so that bf16's rounding shows if it leaks
        torch.nn.init.normal_(p, std=0.3)
    model.bf16 = bf16
    return model


def test_bf16_runs_the_matmuls_in_bf16_and_returns_float32():
    model = tiny()
    ids = torch.randint(0, 64, (3, 10))
    logits, values = model(ids)
    assert logits.dtype == values.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    reference = tiny(bf16=False)(ids)[0]
    difference = (logits - reference).abs().max().item()
    assert 1e-4 < difference < 0.15 * reference.abs().max().item()  # rounded like bf16, not wrong


def test_bf16_cached_logprobs_equal_uncached_within_bf16_tolerance():
    for arch, decode in (("gpt2", "eager"), ("llama", "eager"), ("gpt2", "static"), ("llama", "static")):
        model = tiny(arch)
        gen = generate(model, RAGGED_PROMPTS, 8, None, 0, temperature=1.0, generator=torch.Generator().manual_seed(0),
                       decode=decode)
        ids, mask = gen.sequence()  # the prompt and the sampled response, one sequence per row
        logits, _ = model(ids, attention_mask=mask)
        P = gen.prompt_ids.shape[1]
        full = torch.log_softmax(logits[:, P - 1:-1], dim=-1).gather(-1, gen.response_ids[..., None]).squeeze(-1)
        gap = (full - gen.response_logprobs).abs()[gen.response_mask].max().item()
        assert gap < 0.05, (arch, decode, gap)


def test_bf16_first_ppo_ratio_is_one_within_bf16_tolerance():
    model = tiny().train()
    cfg = PPOConfig(epochs=1, minibatch_size=12, temperature=0.7)
    metrics = ppo_update(model, ppo_optimizer(model, cfg), rollout(model, cfg), cfg, torch.Generator().manual_seed(0))
    # the same rows in the same batch shape: the same bf16 sums, so the ratio is 1 exactly here too
    assert metrics["first_minibatch/max_abs_ratio_minus_1"] < 1e-3
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_precision_bf16_runs_the_pipeline_and_keys_its_own_cache(tmp_path):
    common = ["preset=tiny", f"out_dir={tmp_path / 'run'}", f"sft_cache_dir={tmp_path / 'cache'}"]
    results = run(build_config(common + ["precision=bf16"]), log=lambda *a: None)
    assert 0.0 <= results["columns"]["self-play"]["helpfulness"] <= 1.0
    messages = []
    run(build_config(common + ["precision=fp32", f"out_dir={tmp_path / 'run32'}"]), log=messages.append)
    assert not any("reusing" in m for m in messages)  # a bf16 supervised model is not an fp32 one
