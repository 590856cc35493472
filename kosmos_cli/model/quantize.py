"""int8 weights on the CPU (`--quantize int8`): the linear layers of the vision encoder and of the text decoder.

torch's dynamic quantization (torch.ao): each chosen `nn.Linear` keeps its weights as int8 (one scale per
layer) and quantizes its input on the fly, so its matrix product runs in int8 (fbgemm/oneDNN kernels); everything
else (embeddings, layer norms, attention's softmax) stays in float32. On the full-size architecture that is about
twice float32's speed here (benchmarks/bench_cpu.py, docs/cpu.md), and the answers are approximate: a token or a
box can come out otherwise than in float32. Records say so in their `decoding` ("... quantize=int8"), so a run in
float32 redoes what an int8 run made and the other way round.

Which layers: LAYERS, a measured choice (docs/cpu.md has the table): every linear layer but the image-to-text
projection's, which costs 1% of the time and, quantized, moved nearly every box of the shapes checkpoint.

    int8             int8 weights, or one line saying why not (before any image is read)
    int8-or-float32  int8 weights where they can be had, else float32 with a warning
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from ..errors import ModelError, UsageError

log = logging.getLogger("kosmos_cli")

MODES = ("int8", "int8-or-float32")
LAYERS = ("vision_model", "text_model")  # the submodules whose linear layers get int8 weights (lm_head included)


def check(quantize: str | None, device: str, dtype: str) -> None:
    """UsageError, in one line, for a mode kosmos does not know, a CUDA device or a dtype other than float32. The
    torch build is asked for its int8 kernels here too, before anything loads (`--quantize int8` only)."""
    if quantize is None:
        return
    if quantize not in MODES:
        raise UsageError(
            f"unknown quantization {quantize!r} ({{param}}): use int8, or int8-or-float32 to go on in float32 "
            "where int8 cannot be had",
            param="quantize",
        )
    if device.startswith("cuda"):
        raise UsageError(
            "{param} int8 is for the CPU: on CUDA use --dtype bfloat16 (what --dtype auto picks there)",
            param="quantize",
        )
    if dtype not in ("auto", "float32"):
        raise UsageError(
            f"{{param}} int8 computes around its int8 weights in float32: drop --dtype {dtype} (or use float32)",
            param="quantize",
        )
    if quantize == "int8":
        missing = missing_kernels()
        if missing:
            raise UsageError(f"{{param}} int8: {missing}", param="quantize")


def missing_kernels() -> str | None:
    """Why this torch build cannot run int8 linear layers (no quantized engine), or None when it can."""
    import torch

    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    if engines:
        return None
    return (
        f"this torch build ({torch.__version__}) has no int8 kernels (torch.backends.quantized lists none): "
        "install the standard CPU build of torch, or pass --quantize int8-or-float32 to go on in float32"
    )


def apply(model: Any, quantize: str | None, device: str) -> str | None:
    """Give the linear layers of LAYERS int8 weights, in place; "int8" when they have them, None when the model runs
    as it is (no `quantize`, or int8-or-float32 that could not have int8: warned). UsageError on CUDA, ModelError when
    `--quantize int8` cannot be had."""
    if quantize is None:
        return None
    check(quantize, str(device), "float32")
    why = missing_kernels() or _obstacle(model)
    if why is None:
        try:
            _quantize(model)
            return "int8"
        except (RuntimeError, AssertionError, ValueError) as exc:  # what torch.ao raises on a layer it cannot take
            why = f"its linear layers could not be quantized ({type(exc).__name__}: {exc})"
    if quantize == "int8":
        raise ModelError(f"--quantize int8: {why}; pass --quantize int8-or-float32 to go on in float32")
    log.warning("--quantize int8-or-float32: %s; going on in float32", why)
    return None


def _obstacle(model: Any) -> str | None:
    """Why `model`'s layers cannot get int8 weights (not float32 linear layers where LAYERS are), or None."""
    import torch

    for name in LAYERS:
        try:
            part = model.get_submodule(name)
        except AttributeError:
            return f"the checkpoint has no {name} (not Kosmos-2's layout)"
        linears = [m for m in part.modules() if type(m) is torch.nn.Linear]
        if not linears:
            return f"the checkpoint's {name} has no plain float linear layers"
        if any(m.weight.dtype != torch.float32 for m in linears):
            return f"the checkpoint's {name} is not in float32"
    return None


def _quantize(model: Any, layers: tuple[str, ...] = LAYERS) -> None:
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao says it is deprecated in favour of torchao, once per layer
        warnings.simplefilter("ignore")
        quantize_dynamic(
            model,
            {name: default_dynamic_qconfig for name in layers},
            dtype=torch.qint8,
            mapping={torch.nn.Linear: Int8Linear},
            inplace=True,
        )
