"""A self-play run's checkpoint: what it holds, when a rerun may resume from it, how it is restored.

`pipeline.selfplay_stage` writes `out_dir/checkpoint.pt` with `save_run`; `pipeline.run` asks
`resume_point` whether the same command may continue from it and `restore`s the game. The file
holds the game (`SelfPlay.state_dict`: model, reference, Adam state, pool, RNGs, iteration), the
process-wide RNGs, the tokenizer, the config and every iteration's metrics; with several ranks
(torchrun) also their number and every rank's own RNG streams. A resumed run ends with the same
metrics bytes and model as an uninterrupted one on the same machine (tests/test_reliability.py,
tests/test_distributed.py).
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import torch

from . import checkpoint, distributed
from .checkpoint import CheckpointError
from .config import RunConfig, to_json
from .distributed import Ranks
from .selfplay import SelfPlay

RESUMABLE_KEYS = ("out_dir", "sft_cache_dir", "threads", "checkpoint_every", "resume", "logger", "wandb_project")
"""Config keys a resumed run may change: none of them changes what is computed."""


def global_rng_state() -> dict:
    """The process-wide RNGs (python, numpy, torch CPU) as JSON text and a tensor. Self-play
    draws from its own generators (SelfPlay.state_dict); these are saved so that code which
    draws from the global ones stays resumable."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": checkpoint.python_rng_to_json(random.getstate()),
            "numpy": json.dumps([name, keys.tolist(), pos, has_gauss, cached]),
            "torch": torch.get_rng_state()}


def set_global_rng_state(state: dict) -> None:
    random.setstate(checkpoint.python_rng_from_json(state["python"]))
    name, keys, pos, has_gauss, cached = json.loads(state["numpy"])
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())


def save_run(path: str, cfg: RunConfig, game: SelfPlay, history: list[dict], device,
             rank_states: list[str] | None = None) -> None:
    """The self-play run so far, atomically: the game (model, reference, optimizer, pool,
    RNGs, iteration), the tokenizer, the config and the metrics of every iteration; with
    several ranks, their number and every rank's own RNG streams (`rank_states`, JSON text)."""
    ranks = {"world_size": len(rank_states), "rank_states": json.dumps(rank_states)} if rank_states else {}
    checkpoint.save(path, {
        **ranks,
        **game.state_dict(),
        **checkpoint.model_payload(game.model, game.tokenizer, world_seed=cfg.world_seed, seed=cfg.seed),
        "config": to_json(cfg),
        "history": json.dumps(history),
        "rng_global": global_rng_state(),
        "device_type": device.type,
    })


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def resume_point(cfg: RunConfig, device, ranks: Ranks = Ranks()) -> dict | None:
    """The run checkpoint `out_dir/checkpoint.pt` to continue from, or None to start afresh
    (no checkpoint, `resume=false`, or `stage=sft`).

    Refuses, with a one-line CheckpointError and before anything is written, a
    checkpoint that is truncated or holds more than weights, one written with
    another config (the first differing key is named; only RESUMABLE_KEYS may
    differ), by another number of ranks or on another kind of device, and one whose model
    does not fit the config.
    """
    path = os.path.join(cfg.out_dir, "checkpoint.pt")
    if not cfg.resume or cfg.stage == "sft" or not os.path.exists(path):
        return None
    state = checkpoint.load(path, device)
    try:
        saved = _flat(json.loads(state["config"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CheckpointError(f"{path} is not a self-play run checkpoint (it holds no config)") from None
    now = _flat(json.loads(to_json(cfg)))
    for key in list(now) + [k for k in saved if k not in now]:
        if key not in RESUMABLE_KEYS and saved.get(key, "<absent>") != now.get(key, "<absent>"):
            raise CheckpointError(f"{path} was written with {key}={saved.get(key, '<absent>')!r} but this run has "
                                  f"{key}={now.get(key, '<absent>')!r}; rerun with the same config, choose "
                                  f"another out_dir, or pass resume=false to start over (it overwrites {path})")
    written_by = int(state.get("world_size", 1))
    if written_by != ranks.world_size:
        raise CheckpointError(f"{path} was written by {written_by} rank(s) but this run has {ranks.world_size}: "
                              f"resume with the same number of processes (torchrun --nproc_per_node={written_by}), "
                              f"or pass resume=false to start over")
    if state.get("device_type") != device.type:
        raise CheckpointError(f"{path} was written on {state.get('device_type')} but this run is on {device.type}: "
                              f"its sampler's RNG state only fits the same kind of device")
    checkpoint.model_from_payload(state, "cpu", expected=cfg.model)  # refuses a model that does not fit
    return state


def restore(game: SelfPlay, state: dict, path: str) -> list[dict]:
    """Load a run checkpoint into `game` and the global RNGs; return the metrics history it holds."""
    try:
        game.load_state_dict(state)
        if game.ranks.active:  # this rank's own streams
            game.load_rank_state(distributed.rank_state_from_json(json.loads(state["rank_states"])[game.ranks.rank]))
        set_global_rng_state(state["rng_global"])
        return json.loads(state["history"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise CheckpointError(f"{path} is a broken run checkpoint ({type(e).__name__}: {first})") from None
