"""Reading a Kosmos-2 checkpoint: its config, processor and model, from a folder, the local Hugging Face cache or the
hub, with one line that says what to do when it cannot be read (the messages live in model_files.py).

transformers is imported here lazily, only while a model loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import ModelError
from ..options import DEFAULT_MODEL
from .files import (
    damaged_hint,
    hub_offline,
    hub_unreachable,
    is_damaged_weights,
    quiet_hub,
    unreachable_hint,
)

Build = Callable[[str, Any, dict], Any]  # (name, config, from_pretrained's kwargs) -> a model, or None


def read(
    name: str, revision: str | None, dtype: Any, weights: bool = True, build: Build | None = None
) -> tuple[Any, Any, Any]:
    """(config, processor, model) of the checkpoint `name` (a folder, or a hub id: the cache first, then the
    network), the model's weights in `dtype`; model None without `weights`. `build`: a reader of the model tried
    before from_pretrained (quantize.load: int8 weights, layer by layer), None when it cannot read this one. A
    ModelError, in one line, when it cannot be read."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # our own messages say what went wrong; no weight-loading bars
    hf_logging.disable_progress_bar()
    kwargs = {"revision": revision, "trust_remote_code": False}
    try:
        with quiet_hub():  # its retry warnings would bury our one line
            if os.path.isdir(name) or hub_offline():
                return _from_pretrained(name, dtype, kwargs, weights, build)
            try:  # a hub id: the local cache first, the network only when it is not there
                return _from_pretrained(name, dtype, {**kwargs, "local_files_only": True}, weights, build)
            except (OSError, ValueError):
                problem = hub_unreachable(name, revision)
                if problem:
                    raise ModelError(unreachable_hint(name, problem)) from None
                return _from_pretrained(name, dtype, kwargs, weights, build)
    except (OSError, ValueError) as exc:
        raise ModelError(_load_hint(name, exc)) from None


def _from_pretrained(
    name: str, dtype: Any, kwargs: dict, weights: bool = True, build: Build | None = None
) -> tuple[Any, Any, Any]:
    """(config, processor, model) of `name`. Raises OSError or ValueError when they cannot be found or read."""
    from transformers import AutoConfig, AutoProcessor, Kosmos2ForConditionalGeneration

    config = AutoConfig.from_pretrained(name, **kwargs)
    if getattr(config, "model_type", None) != "kosmos-2":
        raise ModelError(
            f"{name} is a {getattr(config, 'model_type', 'unknown')!r} model, not Kosmos-2: "
            f"pass a Kosmos-2 checkpoint with --model (default {DEFAULT_MODEL})"
        )
    processor = AutoProcessor.from_pretrained(name, **kwargs)
    if not weights:
        return config, processor, None
    try:
        model = build(name, config, kwargs) if build is not None else None
        if model is None:
            model = Kosmos2ForConditionalGeneration.from_pretrained(name, dtype=dtype, **kwargs)
    except (OSError, ValueError):
        raise
    except Exception as exc:
        if not is_damaged_weights(exc):
            raise
        raise ModelError(damaged_hint(name, exc)) from None
    return config, processor, model


def _load_hint(name: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if os.path.isdir(name):
        return (
            f"cannot load model from folder {name}: it is not a Kosmos-2 checkpoint ({first}); "
            "pass a folder written by save_pretrained, or a hub id"
        )
    if hub_offline():
        return (
            f"cannot load model {name}: HF_HUB_OFFLINE is set and it is not in the Hugging Face cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}); download it once with network "
            "or pass --model FOLDER"
        )
    return f"cannot load model {name} ({first}): check the hub id and your network, or pass --model with a local folder"
