"""Smoke tests of the stages on the tiny preset: they run, they learn a little, they write what they say."""

import copy
import json
import os
import random

import pytest
import torch

from minissp import checkpoint
from minissp.config import build_config
from minissp.evaluate import evaluate, format_table
from minissp.pipeline import make_game, run, selfplay_stage
from minissp.selfplay import draw_seeds, stack_for_ppo
from minissp.sampling import generate
from minissp.model import GPT, GPTConfig
from minissp.sft import Encoded, collate, masked_lm_loss, run_sft
from minissp.world import HARMFUL, TRAIN, World


@pytest.fixture(scope="module")
def world():
    return World(0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny supervised model (trained once for the module)."""
    cfg = build_config(["preset=tiny", "sft.capability_steps=30", "sft.alignment_steps=30"])
    path = str(tmp_path_factory.mktemp("sft") / "sft.pt")
    metrics = path + ".jsonl"
    torch.manual_seed(0)
    model, tokenizer = run_sft(World(0), cfg.model, cfg.sft, path, seed=0, metrics_path=metrics)
    return cfg, model, tokenizer, path, metrics


def test_sft_lowers_the_loss_and_writes_a_loadable_checkpoint(tiny):
    cfg, model, tokenizer, path, metrics = tiny
    records = [json.loads(line) for line in open(metrics)]
    first = [r["loss"] for r in records if r["stage"] == "capability"][:3]
    last = [r["loss"] for r in records if r["stage"] == "capability"][-3:]
    assert sum(last) < sum(first), "capability loss did not go down"
    assert any("eval_loss" in r for r in records)
    loaded, tok, meta = checkpoint.load_model(path)
    assert tok.encode("how do i bake bread ?") == tokenizer.encode("how do i bake bread ?")
    ids = torch.tensor([tokenizer.encode("<|defender|> how do i bake bread ? <|sep|>")])
    assert torch.equal(loaded(ids)[0], model(ids)[0])
    assert meta["world_seed"] == 0


def test_the_supervised_loss_reads_out_only_the_columns_it_covers():
    """masked_lm_loss skips the logits of the columns before the first masked target; the loss
    is still the mean cross-entropy over every masked target, computed here from all logits."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    batch = [Encoded(list(range(2, 12)), 6), Encoded(list(range(20, 28)), 4), Encoded(list(range(30, 39)), 7)]
    inputs, targets, mask = collate(batch, pad_id=0, device="cpu")
    logits, _ = model(inputs)  # (B, T, V): every column
    expected = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    torch.testing.assert_close(masked_lm_loss(model, inputs, targets, mask), expected, atol=1e-6, rtol=0)
    reads = []
    model.register_forward_hook(lambda module, args, kwargs, out: reads.append(out[0].shape[1]), with_kwargs=True)
    masked_lm_loss(model, inputs, targets, mask)
    assert reads == [inputs.shape[1] - 3]  # the earliest loss starts at target 3 (row 1's response)


def test_evaluation_table_is_well_formed(tiny, world):
    cfg, model, tokenizer, _, _ = tiny
    results = evaluate(model, tokenizer, world, cfg.eval)
    for key in ("helpfulness", "refusal_harmful", "asr_seen", "asr_unseen", "over_refusal_borderline",
                "attacker_keeps_intent", "asr/cipher", "asr/persona"):
        assert 0.0 <= results[key] <= 1.0, key
    table = format_table({"a": results, "b": results})
    lines = table.splitlines()
    assert lines[0] == "| metric | a | b |" and all(line.count("|") == 4 for line in lines)
    assert any("ASR cipher (unseen)" in line for line in lines)
    json.dumps({k: v for k, v in results.items()})  # everything is JSON-serialisable


def test_draw_seeds_respects_the_harmful_fraction_and_the_split(world):
    seeds = draw_seeds(world, 20, 0.25, random.Random(0))
    assert sum(s.label == HARMFUL for s in seeds) == 5
    assert all(s.split == TRAIN for s in seeds)


def test_stack_for_ppo_aligns_actions_with_response_tokens(tiny):
    _, model, tokenizer, _, _ = tiny
    a = generate(model, [[5, 6, 7], [8]], 4, None, tokenizer.pad_id)
    b = generate(model, [[9, 10, 11, 12, 13]], 6, None, tokenizer.pad_id)
    ids, mask, actions = stack_for_ppo([a, b], tokenizer.pad_id)
    assert ids.shape == (3, 5 + 6) and actions.shape == (3, 10)
    # action t is token t+1; the response of row 0 sits at columns 5..8
    assert actions[0].tolist() == [False] * 4 + [True] * 4 + [False] * 2
    assert torch.equal(ids[0, 5:9], a.response_ids[0]) and torch.equal(ids[2, 5:11], b.response_ids[0])
    assert (mask.bool()[:, 1:] | ~actions).all()  # no action on a pad


def test_selfplay_smoke_run_logs_every_iteration(tiny, world, tmp_path):
    cfg, model, tokenizer, _, _ = tiny
    cfg = copy.deepcopy(cfg)
    cfg.out_dir, cfg.selfplay.iterations = str(tmp_path), 3
    game = make_game(cfg, model, tokenizer, world)
    history = selfplay_stage(cfg, game, torch.device("cpu"), checkpoints=False)
    lines = [json.loads(line) for line in open(tmp_path / "selfplay_metrics.jsonl")]
    timings = [json.loads(line) for line in open(tmp_path / "selfplay_timing.jsonl")]
    assert len(lines) == 3 == len(history) == len(timings)
    for key in ("attacker/reward", "defender/reward", "game/asr", "defender/approx_kl", "attacker/clipfrac",
                "defender/explained_variance", "pool/size", "ptx/loss"):
        assert key in lines[-1], key
    assert "time/sampling" in timings[-1] and "time/ppo" in timings[-1] and "time/ppo" not in lines[-1]
    assert not (tmp_path / "checkpoint.pt").exists()
    assert lines[0]["first_minibatch/max_abs_ratio_minus_1"] == 0.0
    # 8 defender answers per iteration, each one visit of a pool entry; a quarter replayed once the pool has some
    assert [m["pool/total_visits"] for m in lines] == [8.0, 16.0, 24.0]
    assert [m["replay/count"] for m in lines] == [0.0, 2.0, 2.0]
    # eval_every=2 in the tiny preset, and after the last iteration
    assert [m.get("eval/helpfulness") is not None for m in lines] == [False, True, True]


def test_frozen_roles(tiny, world):
    cfg, model, tokenizer, _, _ = tiny
    frozen = type(model)(model.config)
    frozen.load_state_dict(model.state_dict())
    metrics = make_game(cfg, model, tokenizer, world, frozen_attacker=frozen).step()
    assert "defender/approx_kl" in metrics and "attacker/approx_kl" not in metrics
    metrics = make_game(cfg, model, tokenizer, world, frozen_defender=frozen).step()
    assert "attacker/approx_kl" in metrics and "defender/approx_kl" not in metrics


def test_train_py_pipeline_end_to_end(tmp_path):
    out = tmp_path / "run"
    cfg = build_config(["preset=tiny", f"out_dir={out}", f"sft_cache_dir={tmp_path / 'cache'}"])
    results = run(cfg, log=lambda *a: None)
    for name in ("config.json", "selfplay_metrics.jsonl", "final.pt", "results.json", "results.md"):
        assert os.path.exists(out / name), name
    assert set(results["columns"]) == {"supervised", "self-play"}
    # the second run reuses the cached supervised checkpoint
    messages = []
    run(cfg, log=messages.append)
    assert any("reusing" in m for m in messages)
