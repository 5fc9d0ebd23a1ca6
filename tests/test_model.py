import pytest
import torch

from minissp.model import GPT, GPTConfig, positions_from_mask

CONFIG = dict(vocab_size=96, block_size=32, n_layer=2, n_head=4, n_embd=64)


def hf_gpt2_and_ours(seed=0):
    """A randomly initialised HF GPT-2 and our GPT loaded with the same weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=CONFIG["vocab_size"], n_positions=CONFIG["block_size"], n_layer=CONFIG["n_layer"],
        n_head=CONFIG["n_head"], n_embd=CONFIG["n_embd"], activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        bos_token_id=None, eos_token_id=None,  # GPT-2's 50256 is outside this vocabulary
        initializer_range=0.2,  # large weights, so a wrong detail shows in the logits
    )).eval()
    ours = GPT(GPTConfig(**CONFIG)).eval()
    ours.load_gpt2_state_dict(hf.state_dict())
    return hf, ours


def test_logits_equal_hf_gpt2_with_the_same_weights():
    hf, ours = hf_gpt2_and_ours()
    idx = torch.randint(0, CONFIG["vocab_size"], (3, CONFIG["block_size"]))
    with torch.no_grad():
        expected = hf(idx).logits
        logits, _ = ours(idx)
    assert expected.abs().max() > 1.0  # not a trivial all-near-zero comparison
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_logits_equal_hf_gpt2_on_a_left_padded_batch():
    hf, ours = hf_gpt2_and_ours(seed=1)
    idx = torch.randint(1, CONFIG["vocab_size"], (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :5] = 0
    mask[1, :11] = 0
    with torch.no_grad():
        expected = hf(idx, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
        logits, _ = ours(idx, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(logits[real], expected[real], atol=1e-5, rtol=0)


def test_a_prompt_gives_the_same_logits_alone_and_inside_a_left_padded_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG)).eval()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
    T = max(len(p) for p in prompts)
    pad_id = 0
    idx = torch.tensor([[pad_id] * (T - len(p)) + p for p in prompts])  # (B, T)
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])  # (B, T)
    with torch.no_grad():
        batch_logits, batch_values = model(idx, attention_mask=mask)
        for row, prompt in enumerate(prompts):
            alone, _ = model(torch.tensor([prompt]))  # (1, len, V)
            torch.testing.assert_close(batch_logits[row, T - len(prompt):], alone[0], atol=1e-5, rtol=0)
    assert not torch.isnan(batch_logits).any() and not torch.isnan(batch_values).any()  # pad rows included


@pytest.mark.parametrize("read_from", [-1, 6])
def test_read_from_reads_out_the_positions_from_there_on(read_from):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG)).eval()
    idx = torch.randint(0, CONFIG["vocab_size"], (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :4] = 0
    with torch.no_grad():
        logits, values = model(idx, attention_mask=mask)
        part_logits, part_values = model(idx, attention_mask=mask, read_from=read_from)
    n = 1 if read_from == -1 else 10 - read_from
    assert part_logits.shape == (2, n, CONFIG["vocab_size"]) and part_values.shape == (2, n)
    torch.testing.assert_close(part_logits, logits[:, read_from:], atol=1e-6, rtol=0)
    torch.testing.assert_close(part_values, values[:, read_from:], atol=1e-6, rtol=0)


def test_value_head_starts_at_zero():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG))
    _, values = model(torch.randint(0, CONFIG["vocab_size"], (2, 10)))
    assert values.shape == (2, 10)
    assert (values == 0).all()


def test_tied_embeddings_are_counted_once():
    model = GPT(GPTConfig(**CONFIG))
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.num_params() == sum(p.numel() for p in set(model.parameters()))


@pytest.mark.parametrize("bad", [dict(n_embd=30, n_head=4), dict(n_layer=0), dict(vocab_size=-1)])
def test_bad_config_raises(bad):
    with pytest.raises(ValueError):
        GPTConfig(**{**CONFIG, **bad})


def test_loading_a_mismatched_gpt2_state_dict_raises():
    hf, _ = hf_gpt2_and_ours()
    wider = GPT(GPTConfig(**{**CONFIG, "n_embd": 128}))
    with pytest.raises(ValueError, match="shape mismatch"):
        wider.load_gpt2_state_dict(hf.state_dict())
    incomplete = {k: v for k, v in hf.state_dict().items() if "ln_f" not in k}
    with pytest.raises(KeyError, match="lacks"):
        GPT(GPTConfig(**CONFIG)).load_gpt2_state_dict(incomplete)
