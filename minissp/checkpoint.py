"""Checkpoints: one file, written atomically, loaded without running any code.

A checkpoint is a single `torch.save` file holding only tensors, numbers and
strings: the model's state dict, its config and tokenizer as JSON text, and
whatever else a stage adds (an optimizer state, a replay pool as JSON, RNG
states). Two rules, after PyTorch's own security advice:

- **atomic writes**: we write to a temporary file in the same directory and
  `os.replace` it over the old one, so a crash or a kill mid-write leaves the
  previous checkpoint intact;
- **safe loads**: every `torch.load` passes `weights_only=True`, which refuses
  pickled callables, so a stranger's checkpoint cannot run code.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import re
import tempfile
import warnings

import torch
from tokenizers import Tokenizer as HFTokenizer

from .chatml import PretrainedTokenizer
from .model import GPT, GPTConfig
from .tokenizer import Tokenizer


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, unsafe or does not fit."""


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def directory_problem(path: str) -> str | None:
    """Why the directory `path` could not be created or written, or None if it can; creates nothing.

    The path itself, when it exists, must be a writable directory; otherwise its
    nearest existing ancestor must be one (a file in the way, a read-only parent).
    """
    if not path:
        return "is empty"
    if "\0" in path:
        return "holds a NUL character"
    here = os.path.abspath(path)
    if os.path.exists(here):
        if not os.path.isdir(here):
            return "exists and is not a directory"
        return None if os.access(here, os.W_OK | os.X_OK) else "is not writable"
    parent = here
    while not os.path.exists(parent):  # ends at the root, which exists
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save(path: str, payload: dict) -> None:
    """torch.save `payload` to `path` atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: str, device="cpu") -> dict:
    """Load a checkpoint safely; every failure becomes a one-line CheckpointError.

    Anything that is not a `torch.save` file of a dict (random bytes, text, an
    empty or truncated file, a plain pickle) is refused as "not a checkpoint";
    one whose unpickling would call code is refused as holding more than weights.
    """
    if os.path.isdir(path):
        raise CheckpointError(f"cannot read checkpoint {path}: it is a directory, not a file")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": a second stderr line
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        code = re.search(r"GLOBAL ([\w.]+)", str(e))
        if code:  # the weights-only unpickler met a callable and did not import it
            raise CheckpointError(f"refusing to load {path}: it holds more than weights (a pickled "
                                  f"{code.group(1)}, never called)") from None
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a checkpoint "
                              f"(not a file torch.save wrote)") from None
    except PermissionError:
        raise CheckpointError(f"cannot read checkpoint {path}: permission denied") from None
    except Exception as e:  # noqa: BLE001  the unpickler of a text file raises KeyError, IndexError, ...
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a checkpoint "
                              f"({type(e).__name__})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"cannot read checkpoint {path}: not a minissp checkpoint (it holds a "
                              f"{type(payload).__name__}, not a dict)")
    return payload


def python_rng_to_json(state: tuple) -> str:
    """A `random.Random` state (`getstate()`) as JSON text, which `weights_only` loading accepts."""
    version, internal, gauss = state
    return json.dumps([version, list(internal), gauss])


def python_rng_from_json(text: str) -> tuple:
    """The inverse of `python_rng_to_json`: a state `random.setstate` takes."""
    version, internal, gauss = json.loads(text)
    return version, tuple(internal), gauss


def model_payload(model: GPT, tokenizer: Tokenizer | PretrainedTokenizer, **extra) -> dict:
    """What a model checkpoint holds: weights, config and tokenizer (as JSON), plus `extra`.
    A pretrained model's tokenizer also keeps its chat settings (`PretrainedTokenizer.settings`)."""
    chat = {"chat_tokenizer": json.dumps(tokenizer.settings())} if isinstance(tokenizer, PretrainedTokenizer) else {}
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": json.dumps(dataclasses.asdict(model.config)),
        "tokenizer": tokenizer.hf.to_str(),
        **chat,
        **extra,
    }


def model_from_payload(payload: dict, device="cpu", expected: GPTConfig | None = None) -> tuple[GPT, Tokenizer]:
    """Rebuild the model and tokenizer from a loaded payload.

    With `expected`, a checkpoint whose shape differs from that config is
    refused with a message naming the first differing field. The vocabulary
    size is the tokenizer's (the supervised stage sets it), so it is checked
    against the checkpoint's own tokenizer instead.
    """
    try:
        config = GPTConfig(**json.loads(payload["model_config"]))
        hf = HFTokenizer.from_str(payload["tokenizer"])
        pretrained = "chat_tokenizer" in payload
        tokenizer = PretrainedTokenizer(hf, **json.loads(payload["chat_tokenizer"])) if pretrained else Tokenizer(hf)
        state = payload["model"]
    except Exception as e:  # KeyError, TypeError, ValueError, and tokenizers' bare Exception on bad JSON
        raise CheckpointError(f"checkpoint is missing or has a broken model entry ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    if config.vocab_size != tokenizer.vocab_size and not (pretrained and tokenizer.vocab_size < config.vocab_size):
        raise CheckpointError(f"checkpoint model has vocab_size={config.vocab_size} but its tokenizer has "
                              f"{tokenizer.vocab_size} tokens")
    if expected is not None and not pretrained:  # a pretrained model's shape is its own, not the config's
        for field in ("block_size", "n_layer", "n_head", "n_embd"):
            if getattr(config, field) != getattr(expected, field):
                raise CheckpointError(f"checkpoint model has {field}={getattr(config, field)} but the config "
                                      f"asks for {field}={getattr(expected, field)}")
    model = GPT(config)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, ValueError) as e:  # shapes; non-tensor entries
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint weights do not fit its config: {first}") from None
    return model.to(device), tokenizer


def world_seed_of(meta: dict, path: str) -> int:
    """The world seed a model checkpoint was trained in (0 when it names none)."""
    try:
        return int(meta.get("world_seed", 0))
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: its world_seed is not an integer") from None


def save_model(path: str, model: GPT, tokenizer: Tokenizer, **extra) -> None:
    save(path, model_payload(model, tokenizer, **extra))


def load_model(path: str, device="cpu", expected: GPTConfig | None = None) -> tuple[GPT, Tokenizer, dict]:
    """(model, tokenizer, the rest of the payload) from a checkpoint file."""
    payload = load(path, device)
    try:
        model, tokenizer = model_from_payload(payload, device, expected)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    rest = {k: v for k, v in payload.items() if k not in ("model", "model_config", "tokenizer", "chat_tokenizer")}
    return model, tokenizer, rest
