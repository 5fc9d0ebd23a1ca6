"""A decode step with one shape for every step, so that a GPU can replay it as a CUDA graph.

The eager `sampling.KVCache` attends over the slots filled so far,
`cache[:, :length]`, a shape that grows by one token per step; that is the
readable reference. On a GPU, a small model's decode step is bound by kernel
launches and host overhead rather than arithmetic, and the cure is to record
the step's kernels once as a CUDA graph and replay them (NVIDIA's CUDA
Graphs; gpt-fast does it through `torch.compile(mode="reduce-overhead")`).
A graph replays fixed shapes and fixed memory, so here a decode step:

- attends over **all** `max_len` slots, those not yet written hidden by the
  mask (they hold zeros, not garbage, so a masked score is never NaN);
- writes its keys and values at a slot index held in a device tensor
  (`index_copy_`), and advances that index on the device;
- keeps every per-step tensor (positions, mask, token) one shape.

The prompt (prefill) runs eagerly, as in `KVCache`. `generate(...,
decode="static")` uses this cache eagerly (the same tokens and logprobs as
the eager path, up to float rounding: tests); `decode="graph"` also captures
one step as a CUDA graph, on a GPU only.

Simplified: one graph per `generate` call (captured again for every batch
shape), no memory pool shared between graphs.
"""

from __future__ import annotations

import torch

from .model import GPTConfig
from .sampling import KVCache


class StaticKVCache(KVCache):
    """`KVCache` with fixed-shape decode steps (see the module docstring)."""

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__(config, batch_size, max_len, device, dtype)
        self.keys.zero_()  # masked slots get weight 0; 0 * garbage could be NaN, 0 * 0 is not
        self.values.zero_()
        self.slots = torch.arange(max_len, device=self.keys.device)  # (max_len,)
        self.next_slot = torch.zeros((), dtype=torch.long, device=self.keys.device)  # where the next token goes
        self.slot = torch.zeros(1, dtype=torch.long, device=self.keys.device)  # the token being decoded
        self.decoding = False

    def append(self, attention_mask: torch.Tensor | None, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        if T > 1 or attention_mask is not None:  # the prompt: eagerly, as KVCache does
            self.decoding = False
            positions, mask = super().append(attention_mask, T)
            self.next_slot.fill_(self.length)
            return positions, mask
        self.decoding = True
        self.slot.copy_(self.next_slot.view(1))
        self.next_slot += 1
        positions = self.n_real[:, None].clone()  # (B, 1)
        self.n_real += 1
        visible = self.is_real & (self.slots <= self.slot)  # (B, max_len): written slots, this one included
        return positions, visible[:, None, None, :]  # (B, 1, 1, max_len)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.decoding:
            return super().write(layer, k, v)
        # k (B, nkv, 1, hs) into slot `slot`; index_copy_ does not cast (bf16 autocast makes k bf16)
        self.keys[layer].index_copy_(2, self.slot, k.to(self.keys.dtype))
        self.values[layer].index_copy_(2, self.slot, v.to(self.values.dtype))
        return self.keys[layer], self.values[layer]  # (B, nkv, max_len, hs): every slot, masked


def graphed_decode_step(model, cache: StaticKVCache, batch_size: int):
    """One decode step of `model` on `cache`, captured as a CUDA graph.

    Returns step(tokens (B,)) -> logits (B, V), which copies the tokens into the graph's input
    and replays it. Capturing needs a warm-up run first; its writes to the cache are undone
    (the slot index and positions restored; the slot it wrote is overwritten by the next step)."""
    token = torch.zeros(batch_size, 1, dtype=torch.long, device=cache.keys.device)
    saved = cache.next_slot.clone(), cache.n_real.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm up (allocations, kernel choice) off the graph
            model(token, kv_cache=cache)
            cache.next_slot.copy_(saved[0])
            cache.n_real.copy_(saved[1])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # records the kernels; runs nothing, so the cache is untouched
        logits, _ = model(token, kv_cache=cache)

    def step(tokens: torch.Tensor) -> torch.Tensor:
        token.copy_(tokens.view(batch_size, 1))
        graph.replay()
        return logits[:, -1, :]  # (B, V): the graph's own output memory, read before the next replay
    return step
