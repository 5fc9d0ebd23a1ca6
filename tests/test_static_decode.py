"""decode="static": fixed-shape decode steps (the CUDA-graph-ready path) sample what the eager path samples."""

import pytest
import torch

from minissp.model import GPT, GPTConfig
from minissp.sampling import generate
from minissp.static_decode import StaticKVCache
from test_sampling import RAGGED_PROMPTS

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny(arch, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=64, block_size=48, n_layer=2, n_head=4, n_embd=32, arch=arch,
                         n_kv_head=2 if arch == "llama" else 0)).eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("temperature, eos", [(0.0, None), (1.0, None), (1.0, 7)])
def test_static_decode_samples_the_eager_tokens_and_logprobs(arch, temperature, eos):
    model = tiny(arch)
    runs = {decode: generate(model, RAGGED_PROMPTS, 12, eos, 0, temperature=temperature, decode=decode,
                             generator=torch.Generator().manual_seed(3)) for decode in ("eager", "static")}
    eager, static = runs["eager"], runs["static"]
    assert torch.equal(eager.response_ids, static.response_ids)
    assert torch.equal(eager.response_mask, static.response_mask) and torch.equal(eager.finished, static.finished)
    torch.testing.assert_close(static.response_logprobs, eager.response_logprobs, atol=1e-5, rtol=1e-5)


def test_a_static_step_keeps_every_shape():
    model = tiny("llama")
    cache = StaticKVCache(model.config, 2, 10)
    model(torch.tensor([[0, 5, 6], [4, 5, 6]]), attention_mask=torch.tensor([[0, 1, 1], [1, 1, 1]]), kv_cache=cache)
    shapes = []
    for token in (8, 9, 10):
        positions, mask = cache.append(None, 1)
        shapes.append((tuple(positions.shape), tuple(mask.shape)))
        for layer in range(model.config.n_layer):
            k = torch.full((2, model.config.kv_heads, 1, model.config.head_size), float(token))
            keys, _ = cache.write(layer, k, k)
            shapes.append(tuple(keys.shape))
    assert len(set(shapes)) == 2  # one shape for the positions and mask, one for the keys, at every step
    assert cache.keys[0, 0, 0, 3:6, 0].tolist() == [8.0, 9.0, 10.0] and int(cache.next_slot) == 6
    assert cache.n_real.tolist() == [5, 6]  # the pad of row 0 is not a position


def test_the_graph_path_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the graph path runs")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        generate(tiny("gpt2"), RAGGED_PROMPTS, 4, None, 0, decode="graph")
