"""Data-parallel self-play under `torchrun`: N processes, one model, one replay pool.

    torchrun --standalone --nproc_per_node=2 train.py [key=value ...]

torchrun starts N copies of train.py and tells each its RANK and WORLD_SIZE (the
convention of nanoGPT and nanochat); without it WORLD_SIZE is unset and nothing
here runs. What each piece of self-play does with N ranks:

- **games**: each rank plays `seeds_per_iteration / N` games per iteration,
  with its own RNG streams (`stream_seed`: the run seed for rank 0, so that one
  process is the run it always was);
- **replay**: every rank holds the same pool and draws the replayed entries
  from one generator that all ranks share (same seed, same draws), `N · k` of
  them, and answers its own slice of k; no message is needed to agree on them.
  Then each rank's replay rewards and new attacks are gathered
  (`all_gather_object`) and every rank applies all of them in rank order, so
  the pools stay equal;
- **update**: after each minibatch's backward pass the gradients are averaged
  over ranks by one explicit all-reduce (`all_reduce_gradients`) before the
  clip and the optimizer step; every rank starts from rank 0's weights
  (`broadcast_model`), so every rank holds the same model after every update.
  `check_in_sync` checks that every iteration (the weights' checksum and the
  pool's text, gathered and compared) and stops the run if they differ;
- **metrics** are averaged over ranks (maxima for `max` keys) before they are
  logged; only rank 0 writes files, prints, evaluates and saves checkpoints,
  which hold every rank's RNG streams so that a run resumes under the same
  torchrun command, with the same world size (another one is refused);
- **the supervised stage** runs on rank 0 only; the other ranks wait and then
  read its cached checkpoint.

Backend: NCCL when the run is on CUDA (rank r uses GPU `LOCAL_RANK`), gloo on
a CPU.

Simplified: advantages are whitened per rank (each rank's games, per role)
rather than over all games; a rank's PPO minibatches are shuffled by its own
stream; the game metrics are the mean of the ranks' means. Our choice, not
DDP's: an explicit all-reduce a reader can see, not `DistributedDataParallel`'s
bucketed hooks (one flat buffer per minibatch is enough at this size).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

RANK_STRIDE = 1_000_003
"""Rank r's RNG streams are seeded with seed + r · RANK_STRIDE (a prime, so runs of nearby seeds
never share a stream)."""
REPLAY_STREAM = 0x5EED
"""The shared replay generator is seeded with (seed, REPLAY_STREAM): the same on every rank."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes files, prints, evaluates and saves checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def from_environment() -> Ranks:
    """The ranks torchrun describes in the environment; rank 0 of 1 without it."""
    return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """On CUDA with several ranks, rank r's GPU is LOCAL_RANK (one per process); else `device`."""
    if ranks.active and device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"torchrun started {ranks.world_size} processes, one GPU each, but this machine has "
                               f"{torch.cuda.device_count()} GPU(s); use --nproc_per_node={torch.cuda.device_count()}")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    return device


WAIT = datetime.timedelta(hours=2)
"""How long a rank waits in a collective: rank 0 alone runs the evaluations (minutes for a large model)
while the others wait at their next collective."""


def start(ranks: Ranks, device: torch.device) -> None:
    """Join the process group: NCCL on CUDA, gloo on a CPU. Nothing to do for one process."""
    if ranks.active and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=WAIT)


def stop(ranks: Ranks) -> None:
    if ranks.active and dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing; leave together
        dist.destroy_process_group()


def stream_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own RNG streams: the run seed for rank 0."""
    return seed + rank * RANK_STRIDE


def barrier(ranks: Ranks) -> None:
    if ranks.active:
        dist.barrier()


def gather(obj, ranks: Ranks) -> list:
    """Every rank's `obj`, in rank order (one process: [obj])."""
    if not ranks.active:
        return [obj]
    out = [None] * ranks.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_model(model: torch.nn.Module, ranks: Ranks) -> None:
    """Rank 0's weights and buffers, copied into every rank's model."""
    if ranks.active:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def all_reduce_gradients(model: torch.nn.Module, ranks: Ranks) -> None:
    """Average the gradients over ranks, in place: one all-reduce of one flat buffer."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of sizes,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ranks.world_size
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def reduce_metrics(metrics: dict, ranks: Ranks) -> dict:
    """One rank's metrics averaged over ranks (the maximum for keys that name a max, the sum for
    counts such as `replay/count`, the prompts replayed by all ranks together). A family share
    that a rank lacks counts as 0 there; any other key some ranks lack, or hold as NaN (a rate
    with nothing to count), is averaged over the ranks that have it."""
    if not ranks.active:
        return metrics
    every = gather(metrics, ranks)
    out = {}
    for key in metrics | {k: v for m in every for k, v in m.items()}:
        if key.startswith("family/"):  # a share of a rank's attacks: a rank without the family had 0
            values = [m.get(key, 0.0) for m in every]
        else:
            values = [m[key] for m in every if key in m and isinstance(m[key], (int, float))]
        finite = [v for v in values if v == v]
        if key == "iteration" or not values:
            out[key] = metrics.get(key, values[0] if values else None)
        elif not finite:
            out[key] = float("nan")
        else:
            out[key] = max(finite) if "max" in key else sum(finite) if key.endswith("/count") else \
                sum(finite) / len(finite)
    return out


def check_in_sync(model: torch.nn.Module, pool_text: str, ranks: Ranks) -> None:
    """Raise RuntimeError if the ranks' weights or pools differ (a checksum of each, gathered)."""
    if not ranks.active:
        return
    with torch.no_grad():  # one float64 sum per tensor: equal weights give equal sums, on the device
        sums = torch.stack([t.detach().double().sum() for t in model.state_dict().values()]).tolist()
    mine = (sums, hashlib.sha256(pool_text.encode()).hexdigest())
    every = gather(mine, ranks)
    for what, i in (("weights", 0), ("replay pools", 1)):
        if any(digest[i] != every[0][i] for digest in every):
            raise RuntimeError(f"the ranks' {what} differ after the update: the data-parallel sync failed")


def rank_state_json(state: dict) -> str:
    """A rank's RNG streams (SelfPlay.rank_state) as JSON text, the torch generator state as a list."""
    return json.dumps({k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in state.items()})


def rank_state_from_json(text: str) -> dict:
    state = json.loads(text)
    state["rng_torch"] = torch.tensor(state["rng_torch"], dtype=torch.uint8)
    return state
