"""What the model runs on: the torch and transformers versions it needs, its device and its dtype. torch and
transformers are imported lazily."""

from __future__ import annotations

import re

from ..errors import ModelError, UsageError

# the lowest versions the code runs on, as pyproject.toml declares them (.ci/lowest runs the tests on them): the model
# calls of transformers 5.24 (get_image_features, cache=/cache_length=; 5.17 drops cache= silently, decoding with
# no KV cache), and the torch transformers 5.24 itself needs (below 2.6 it acts as if torch were not installed)
NEEDS = {"torch": "2.6", "transformers": "5.24"}


def check_versions() -> None:
    """ModelError, in one line naming the version needed, when the installed torch or transformers is older than
    NEEDS (torch first: transformers ignores a torch older than it supports)."""
    import torch
    import transformers

    for name, installed in (("torch", torch.__version__), ("transformers", transformers.__version__)):
        if _release(installed) < _release(NEEDS[name]):  # an unreadable version string is taken as new enough
            raise ModelError(
                f"{name} {installed} is installed, but kosmos needs {name}>={NEEDS[name]}: "
                f"pip install -U '{name}>={NEEDS[name]}'"
            )


def _release(version: str) -> tuple[int, ...]:
    """The release numbers a version string starts with: "2.6.0+cu124" -> (2, 6, 0), "5.24.0.dev0" -> (5, 24, 0)."""
    found = re.match(r"\d+(\.\d+)*", str(version).strip())
    return tuple(int(n) for n in found.group(0).split(".")) if found else (1 << 30,)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"{{param}} {device}: CUDA is not available here; use {{param}} cpu", param="device")
    try:
        torch.device(device)
    except RuntimeError:
        raise UsageError(
            f"unknown device {device!r} ({{param}}): use auto, cpu, cuda or cuda:N", param="device"
        ) from None
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def is_cuda(device) -> bool:
    """Whether `device` ("cuda:1", a torch.device, ...) is a CUDA device."""
    import torch

    return device is not None and torch.device(device).type == "cuda"


def host_empty(shape, dtype, pin: bool):
    """An empty tensor in host memory, page-locked when `pin` (the model is on CUDA: its copy to the device can then
    be asynchronous); ordinary memory where none can be locked (a container's limit), copied synchronously then."""
    import torch

    if pin:
        try:
            return torch.empty(shape, dtype=dtype, pin_memory=True)
        except RuntimeError:
            pass
    return torch.empty(shape, dtype=dtype)
