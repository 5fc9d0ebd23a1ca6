"""Tokens per second of minissp's sampler against two baselines, same weights.

- ours:  `minissp.sampling.generate`, preallocated KV cache, ragged prompts;
- static: the same with fixed-shape decode steps (`decode="static"`), and on a
  GPU `graph`: those steps replayed as a CUDA graph (`minissp/static_decode.py`);
- naive: nanoGPT-style generation that re-runs the whole context every step;
- HF:    `transformers.GPT2LMHeadModel.generate` with its own KV cache.

One random HF GPT-2 is built and loaded into our GPT, so all three run the
same network. Prompts are ragged (16-48 tokens, left-padded); every method
samples exactly `--new-tokens` tokens per row at temperature 1 (no EOS
stopping, no top-k), so the token counts are equal. Each timing is the median
of `--repeats` runs after `--warmup` runs; the methods take turns.

    python benchmarks/bench_sampling.py                 # CPU, default GPTConfig()
    python benchmarks/bench_sampling.py --device cuda --n-layer 12 --n-head 12 --n-embd 768 --batch-sizes 1 64 256
    python benchmarks/bench_sampling.py --device cuda --bf16     # every model's forward under bf16 autocast
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from minissp.model import GPT, GPTConfig, pick_device
from minissp.sampling import generate, left_pad

PAD_ID = 0


@torch.no_grad()
def naive_generate(model, prompts, max_new_tokens, generator):
    """Re-run the full (left-padded) context for every new token, no cache."""
    ids, mask = left_pad(prompts, PAD_ID, next(model.parameters()).device)  # (B, P)
    for _ in range(max_new_tokens):
        logits, _ = model(ids, attention_mask=mask)  # (B, T, V)
        probs = logits[:, -1].softmax(dim=-1)  # (B, V)
        token = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
        ids = torch.cat([ids, token], dim=1)  # (B, T+1)
        mask = torch.cat([mask, torch.ones_like(token, dtype=torch.bool)], dim=1)  # (B, T+1)
    return ids[:, -max_new_tokens:]


@torch.no_grad()
def hf_generate(hf_model, prompts, max_new_tokens, generator):
    """HF samples with torch's global generator; `generator` is here for a common signature."""
    ids, mask = left_pad(prompts, PAD_ID, hf_model.device)  # (B, P)
    out = hf_model.generate(input_ids=ids, attention_mask=mask.long(), do_sample=True, top_k=0, top_p=1.0,
                            temperature=1.0, max_new_tokens=max_new_tokens, min_new_tokens=None,
                            pad_token_id=PAD_ID, eos_token_id=None)
    return out[:, ids.shape[1]:]


def ours_generate(model, prompts, max_new_tokens, generator, decode="eager"):
    gen = generate(model, prompts, max_new_tokens, eos_id=None, pad_id=PAD_ID, generator=generator, decode=decode)
    return gen.response_ids


def seconds(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    default = GPTConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--n-layer", type=int, default=default.n_layer)
    parser.add_argument("--n-head", type=int, default=default.n_head)
    parser.add_argument("--n-embd", type=int, default=default.n_embd)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for every method")
    parser.add_argument("--out", help="also write the table as JSON here")
    args = parser.parse_args()
    device = pick_device(args.device)

    config = GPTConfig(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head)
    torch.manual_seed(args.seed)
    hf_model = GPT2LMHeadModel(GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_layer=config.n_layer,
        n_head=config.n_head, n_embd=config.n_embd, activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        bos_token_id=None, eos_token_id=None,  # GPT-2's 50256 is outside this vocabulary
    )).to(device).eval()
    model = GPT(config)
    model.load_gpt2_state_dict(hf_model.state_dict())
    model.to(device).eval()
    model.bf16 = args.bf16

    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"load average={os.getloadavg()[0]:.1f} (other processes slow a CPU run down) "
          f"model: {config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide, "
          f"vocab {config.vocab_size}, {model.num_params() / 1e6:.2f}M params; "
          f"prompts 16-48 tokens, {args.new_tokens} new tokens, median of {args.repeats}\n")
    methods = {"ours": ours_generate, "static": functools.partial(ours_generate, decode="static"),
               "hf": hf_generate, "naive": naive_generate}
    if device.type == "cuda":
        methods["graph"] = functools.partial(ours_generate, decode="graph")
    print("| batch | " + " | ".join(f"{m} tok/s" for m in methods) + " | " +
          " | ".join(f"{m} / HF" for m in methods if m != "hf") + " |")
    print("|" + " ---: |" * (1 + 2 * len(methods) - 1))
    table = []
    for B in args.batch_sizes:
        lengths = torch.randint(16, 49, (B,), generator=torch.Generator().manual_seed(B)).tolist()
        prompts = [torch.randint(1, config.vocab_size, (n,)).tolist() for n in lengths]
        runs = {}
        for name, fn in methods.items():
            net = hf_model if name == "hf" else model
            generator = torch.Generator(device=device).manual_seed(args.seed)
            runs[name] = functools.partial(autocast(fn, device, args.bf16), net, prompts, args.new_tokens, generator)
            out = runs[name]()  # also the first warm-up
            assert out.shape == (B, args.new_tokens), f"{name} made {tuple(out.shape)} tokens"
            for _ in range(args.warmup - 1):
                runs[name]()
        # the methods take turns, so a change in the machine's load hits all of them
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name].append(seconds(run, device))
        tokens_per_s = {name: B * args.new_tokens / statistics.median(t) for name, t in times.items()}
        hf = tokens_per_s["hf"]
        print(f"| {B} | " + " | ".join(f"{v:,.0f}" for v in tokens_per_s.values()) + " | " +
              " | ".join(f"{v / hf:.1f}x" for m, v in tokens_per_s.items() if m != "hf") + " |", flush=True)
        table.append({"batch": B, "tokens_per_s": tokens_per_s})
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                       "torch": torch.__version__, "bf16": args.bf16, "params": model.num_params(),
                       "new_tokens": args.new_tokens, "rows": table}, f, indent=1)


def autocast(fn, device, bf16: bool):
    """fn under bf16 autocast when asked (HF's model too, so that every method computes alike)."""
    def run(*a):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return fn(*a)
    return run


if __name__ == "__main__":
    main()
