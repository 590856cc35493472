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
import os
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
    if _is_int8(model):  # read with int8 weights already (`load`)
        return "int8"
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


def _is_int8(model: Any) -> bool:
    """Whether the linear layers of LAYERS all have int8 weights already."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    try:
        parts = [model.get_submodule(name) for name in LAYERS]
    except AttributeError:
        return False
    kinds = {type(m) for part in parts for m in part.modules()}
    return Int8Linear in kinds and torch.nn.Linear not in kinds


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


def load(name: str, config: Any, kwargs: dict) -> Any | None:
    """The checkpoint `name` (a folder, or a hub id in the local cache) read straight into a model with int8 weights,
    one linear layer at a time: each layer's float32 weights are read from the file (plain reads, no memory map that
    would count the whole file as resident), quantized, and dropped before the next, so the float32 model never
    exists whole (peak memory about int8's, not float32's plus int8's). The model is built without initialising its
    weights, which are all read from the checkpoint.

    None when it cannot be read that way (weights not in safetensors files, names other than the model's): the
    caller loads the float32 model and quantizes it in place (`apply`)."""
    import torch
    from transformers import GenerationConfig, Kosmos2ForConditionalGeneration

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - transformers keeps it there from 5.0
        return None
    files = _weight_files(name, kwargs)
    if files is None or missing_kernels() is not None:
        return None
    tensors = {key: entry for path in files for key, entry in _safetensors_index(path).items()}
    with no_init_weights(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Kosmos2ForConditionalGeneration(config)
    expected = set(model.state_dict())  # the names alone: its tensors would keep every float weight alive
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    if set(tensors) - expected or expected - set(tensors) - tied:
        return None  # not the names this version's model has: transformers' own loading knows how to map them
    with torch.no_grad():
        for module in model.modules():  # buffers that are not in the checkpoint (positions): as the model makes them
            if module._non_persistent_buffers_set:
                model._init_weights(module)  # its own initialiser, before any of its weights is read
        layers = [
            (f"{part}.{n}" if n else part, m)
            for part in LAYERS
            for n, m in model.get_submodule(part).named_modules()
            if type(m) is torch.nn.Linear
        ]
        in_layers = {f"{n}.{p}" for n, m in layers for p, _ in m.named_parameters(recurse=False)}
        for key in sorted(expected - in_layers):
            if key in tensors:
                owner, _, attr = key.rpartition(".")
                _read_into(getattr(model.get_submodule(owner) if owner else model, attr), *tensors[key])
        model.tie_weights()  # lm_head is the input embeddings' weight (saved once), as from_pretrained ties it
        _quantize_layers(model, layers, tensors)
    model.eval()
    try:
        model.generation_config = GenerationConfig.from_pretrained(os.path.dirname(files[0]))
    except OSError:
        model.generation_config = GenerationConfig.from_model_config(config)
    return model


def _quantize_layers(model: Any, layers: list, tensors: dict) -> None:
    """Each float linear layer of `layers`, in turn: its weights read, an int8 layer made from them and put in its
    place; the float one is dropped before the next is read (a weight tied to one already read is not read again)."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear
    from torch.ao.quantization import default_dynamic_qconfig

    while layers:
        name, linear = layers.pop(0)
        for p, param in linear.named_parameters(recurse=False):
            if f"{name}.{p}" in tensors:
                _read_into(param, *tensors[f"{name}.{p}"])
        linear.qconfig = default_dynamic_qconfig
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized = Int8Linear.from_float(linear)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, quantized)
        del linear, param, quantized
    assert not [m for part in LAYERS for m in model.get_submodule(part).modules() if type(m) is torch.nn.Linear]


def _weight_files(name: str, kwargs: dict) -> list[str] | None:
    """The safetensors files of `name` (a folder, or a hub id's snapshot in the local cache), or None."""
    import json

    folder = name if os.path.isdir(name) else None
    if folder is None:
        try:
            from transformers.utils import cached_file

            found = cached_file(name, "config.json", **{**kwargs, "local_files_only": True})
        except (OSError, ValueError, TypeError):
            return None
        if not found:
            return None
        folder = os.path.dirname(found)
    single, index = os.path.join(folder, "model.safetensors"), os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        paths = [os.path.join(folder, s) for s in shards]
        return paths if all(os.path.isfile(p) for p in paths) else None
    return None


_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64"}


def _safetensors_index(path: str) -> dict[str, tuple[str, str, tuple[int, ...], int, int]]:
    """key -> (file, dtype, shape, start, end) of each tensor in a safetensors file, from its header alone."""
    import json
    import struct

    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    base = 8 + size
    out = {}
    for key, entry in header.items():
        if key != "__metadata__":
            start, end = entry["data_offsets"]
            out[key] = (path, entry["dtype"], tuple(entry["shape"]), base + start, base + end)
    return out


def _read_into(tensor: Any, path: str, dtype: str, shape: tuple[int, ...], start: int, end: int) -> None:
    """The tensor's values read from the file (converted when the file holds another dtype)."""
    import torch

    if tuple(tensor.shape) != shape or dtype not in _DTYPES:
        raise ValueError(f"{path}: a tensor of shape {shape} ({dtype}) where the model has {tuple(tensor.shape)}")
    kind = getattr(torch, _DTYPES[dtype])
    target = tensor.data if tensor.dtype == kind else torch.empty(shape, dtype=kind)
    raw = target.reshape(-1).view(torch.uint8).numpy()
    if raw.nbytes != end - start:
        raise ValueError(f"{path}: {end - start} bytes for a tensor of {raw.nbytes}")
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        view, done = raw.data.cast("B"), 0
        while done < raw.nbytes:
            got = f.readinto(view[done:])
            if not got:
                raise ValueError(f"{path} ends before its tensors do")
            done += got
    if target is not tensor.data:
        tensor.data.copy_(target)
