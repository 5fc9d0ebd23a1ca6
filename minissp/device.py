"""Which device to run on: "auto" picks the GPU when torch sees one."""

from __future__ import annotations

import torch


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available, else cpu; any other name is checked and returned."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} was asked for, but this torch sees no GPU; use device=cpu or device=auto")
    return device
