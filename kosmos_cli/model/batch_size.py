"""The batch size a run uses when none is given: 8 on the CPU; on CUDA, what the card's free memory holds, estimated
from the model's size and what one request takes while it decodes. torch is imported lazily."""

from __future__ import annotations

from typing import Any

from ..options import GenerationOptions

DEFAULT_BATCH_SIZE = 8  # on the CPU, and wherever the batch size is not chosen from the device's memory
AUTO_BATCH_SIZES = (64, 256)  # on CUDA, the batch size chosen from free memory lies in this range where it fits


def choose_batch_size(free_bytes: int, model_bytes: int, per_row_bytes: int) -> int:
    """The batch size for a card with `free_bytes` free once the model (`model_bytes`) is loaded: the largest power
    of two (the fast decoder's graph buckets) whose rows take at most 80% of what is free after a reserve for the
    model's working memory (a quarter of its size, at least 1 GiB), held to 64..256. Fewer than 64 rows only when
    fewer fit (at least 1; an out-of-memory error still halves it)."""
    low, high = AUTO_BATCH_SIZES
    room = 0.8 * (free_bytes - max(model_bytes // 4, 1 << 30))
    fits = int(room // max(per_row_bytes, 1))
    size = 1
    while size * 2 <= min(fits, high):
        size *= 2
    return size if fits < low else max(size, low)


def row_bytes(config: Any, generation: GenerationOptions, dtype: Any) -> int:
    """Device memory one request takes while it decodes, estimated: its KV cache (layers x 2 x width x the prompt
    and its new tokens, twice: generate's cache grows by concatenation, and the fast decoder's storage is rounded
    up), its float32 logits (three vocabulary-sized rows: logits, their softmax terms, the processor's copy) and the
    vision encoder's activations for its image."""
    import torch

    text, vision = config.text_config, config.vision_config
    item = torch.empty((), dtype=dtype).element_size()
    positions = int(config.latent_query_num) + 64 + generation.max_new_tokens * max(1, generation.num_beams)
    cache = 2 * 2 * text.layers * text.embed_dim * positions * item
    logits = 3 * text.vocab_size * 4 * max(1, generation.num_beams)
    patches = (vision.image_size // vision.patch_size) ** 2 + 1
    encoder = patches * (4 * vision.hidden_size + vision.intermediate_size) * item + patches * patches * 4 * 16
    return cache + logits + encoder


def for_device(model: Any, device: Any, generation: GenerationOptions, dtype: Any) -> int:
    """The batch size for `model` on `device`: on CUDA what its free memory holds (choose_batch_size), else 8."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or model is None:
        return DEFAULT_BATCH_SIZE
    free, _ = torch.cuda.mem_get_info(device)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return choose_batch_size(free, model_bytes, row_bytes(model.config, generation, dtype))
