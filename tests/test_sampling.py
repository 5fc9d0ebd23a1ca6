import math

import pytest
import torch
import torch.nn.functional as F

from minissp.model import GPT, GPTConfig
from minissp.sampling import FINISHED_CHECK_EVERY, KVCache, generate, left_pad, sample_next_token

PAD, EOS = 0, 1
RAGGED_PROMPTS = [[5, 9, 13], [7], [20, 21, 22, 23, 24, 25, 26, 27, 28], [3, 30, 31, 4, 40], [50, 51]]


def random_gpt(seed=0, vocab_size=64, block_size=64):
    """A tiny GPT whose weights are large enough that its next token depends on the context
    (GPT-2's std-0.02 init mostly repeats the last token)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:  # embeddings and Linear weights; LayerNorms keep weight 1, bias 0
                p.normal_(0.0, 0.3)
    return model.eval()


def constant_gpt(eos_logit, vocab_size=64):
    """A GPT whose next-token distribution ignores the context: logit eos_logit for EOS,
    -20 for pad (practically never drawn), 0 for everything else."""
    model = random_gpt(vocab_size=vocab_size)
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0  # every final hidden state is the unit vector e_0
        model.lm_head.weight[:, 0] = 0.0  # so logit[v] = lm_head.weight[v, 0]
        model.lm_head.weight[EOS, 0] = eos_logit
        model.lm_head.weight[PAD, 0] = -20.0
    return model


def uncached_greedy(model, prompt, n):
    """Reference: one prompt alone, re-running the whole context every step."""
    ids = torch.tensor([prompt])
    for _ in range(n):
        logits, _ = model(ids)  # (1, T, V)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt):].tolist()


def recomputed_logprobs(model, gen, temperature):
    """What PPO does: one forward pass over prompt + response, logits / temperature."""
    ids, mask = gen.sequence()  # (B, P+N)
    logits, _ = model(ids, attention_mask=mask)  # (B, P+N, V)
    P = gen.prompt_ids.shape[1]
    logprobs = F.log_softmax(logits[:, P - 1:-1] / temperature, dim=-1)  # (B, N, V)
    return logprobs.gather(-1, gen.response_ids[..., None]).squeeze(-1)  # (B, N)


def test_cached_greedy_equals_uncached_greedy_on_ragged_batch():
    model = random_gpt()
    n = 20
    gen = generate(model, RAGGED_PROMPTS, n, eos_id=None, pad_id=PAD, temperature=0.0)
    expected = [uncached_greedy(model, p, n) for p in RAGGED_PROMPTS]
    assert gen.response_ids.tolist() == expected
    assert len({t for row in expected for t in row}) > 10  # the model does not just repeat itself


def test_next_token_logits_alone_equal_inside_padded_batch():
    model = random_gpt()
    continuation = torch.tensor([[11, 12, 13]] * len(RAGGED_PROMPTS))  # (B, 3) fed one token at a time
    ids, mask = left_pad(RAGGED_PROMPTS, PAD, torch.device("cpu"))
    cache = KVCache(model.config, len(RAGGED_PROMPTS), ids.shape[1] + 3)
    with torch.no_grad():
        batch_logits = [model(ids, attention_mask=mask, kv_cache=cache)[0][:, -1]]
        for t in range(3):
            batch_logits.append(model(continuation[:, t:t + 1], kv_cache=cache)[0][:, -1])
        for row, prompt in enumerate(RAGGED_PROMPTS):
            alone, _ = model(torch.tensor([prompt + [11, 12, 13]]))  # (1, T, V)
            for t in range(4):
                torch.testing.assert_close(batch_logits[t][row], alone[0, len(prompt) - 1 + t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_a_full_forward_pass(temperature):
    model = random_gpt()
    g = torch.Generator().manual_seed(0)
    gen = generate(model, RAGGED_PROMPTS, 16, eos_id=EOS, pad_id=PAD, temperature=temperature, generator=g)
    with torch.no_grad():
        expected = recomputed_logprobs(model, gen, temperature)
    mask = gen.response_mask
    torch.testing.assert_close(gen.response_logprobs[mask], expected[mask], atol=1e-5, rtol=0)
    assert (gen.response_logprobs[~mask] == 0).all()


def test_greedy_logprob_is_under_the_temperature_one_distribution():
    model = random_gpt()
    gen = generate(model, RAGGED_PROMPTS, 8, eos_id=None, pad_id=PAD, temperature=0.0)
    with torch.no_grad():
        torch.testing.assert_close(gen.response_logprobs, recomputed_logprobs(model, gen, 1.0), atol=1e-5, rtol=0)


def test_rows_stop_independently_at_eos():
    model = constant_gpt(eos_logit=math.log(62 * 0.15 / 0.85))  # P(EOS) = 0.15 per step
    g = torch.Generator().manual_seed(1)
    gen = generate(model, RAGGED_PROMPTS * 4, 12, eos_id=EOS, pad_id=PAD, generator=g)
    ids, mask = gen.response_ids, gen.response_mask
    assert gen.finished.any() and not gen.finished.all()  # some rows stopped, others ran out of tokens
    for row in range(ids.shape[0]):
        tokens, valid = ids[row].tolist(), mask[row].tolist()
        n_valid = sum(valid)
        assert valid == [True] * n_valid + [False] * (len(valid) - n_valid)  # a prefix, no holes
        assert PAD not in tokens[:n_valid]  # never pad before EOS
        assert tokens[n_valid:] == [PAD] * (len(tokens) - n_valid)  # only pad after it
        if gen.finished[row]:
            assert tokens[:n_valid].index(EOS) == n_valid - 1  # EOS is the last action, kept
        else:
            assert EOS not in tokens and n_valid == len(tokens)
    assert len(set(mask.sum(1).tolist())) > 2  # rows really stopped at different steps


def test_generation_stops_early_once_every_row_finished():
    model = constant_gpt(eos_logit=10.0)  # EOS almost surely at the first step
    gen = generate(model, RAGGED_PROMPTS, 50, eos_id=EOS, pad_id=PAD, generator=torch.Generator().manual_seed(0))
    assert gen.finished.all()
    assert gen.response_ids.shape[1] == FINISHED_CHECK_EVERY  # stopped at the first finished-check
    assert gen.response_ids[:, 0].tolist() == [EOS] * len(RAGGED_PROMPTS)


def test_same_seed_same_samples_different_seed_different():
    model = random_gpt()

    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return generate(model, RAGGED_PROMPTS, 16, eos_id=EOS, pad_id=PAD, generator=g).response_ids

    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0), sample(1))


def test_top_k_one_equals_greedy():
    model = random_gpt()
    greedy = generate(model, RAGGED_PROMPTS, 16, eos_id=EOS, pad_id=PAD, temperature=0.0)
    top1 = generate(model, RAGGED_PROMPTS, 16, eos_id=EOS, pad_id=PAD, temperature=1.3, top_k=1,
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(top1.response_ids, greedy.response_ids)
    assert (top1.response_logprobs == 0).all()  # one token left: probability 1


def test_top_k_and_top_p_sample_only_kept_tokens_with_renormalised_logprobs():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).expand(2000, 4)  # (B, V)
    g = torch.Generator().manual_seed(0)
    for kwargs in ({"top_k": 2}, {"top_p": 0.7}):  # both keep tokens 0 and 1, mass 0.8
        token, logprob = sample_next_token(probs.log(), generator=g, **kwargs)
        assert set(token.tolist()) == {0, 1}
        torch.testing.assert_close(logprob, (probs[0, token] / 0.8).log())


def test_too_long_request_raises():
    model = random_gpt(block_size=16)
    with pytest.raises(ValueError, match="block_size"):
        generate(model, [[2] * 10], 7, eos_id=EOS, pad_id=PAD)
    generate(model, [[2] * 10], 6, eos_id=EOS, pad_id=PAD)  # exactly block_size is fine
    with pytest.raises(ValueError, match="block_size"):
        KVCache(model.config, batch_size=1, max_len=17)


def test_generate_leaves_the_training_mode_as_it_found_it():
    model = random_gpt().train()
    generate(model, RAGGED_PROMPTS, 2, eos_id=EOS, pad_id=PAD)
    assert model.training
