"""Decoding through transformers' `generate`: batches of one prompt token length, and, when decoding greedily, the
probability of each token it chose, kept by a logits processor last in its list (no logits are kept). The engine
takes this path when our own loop (decoder.py) cannot give generate's tokens: beams, or a checkpoint whose
generation settings change decoding. torch and transformers are imported lazily."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..options import GenerationOptions


def generated(
    model: Any, embeds: Any, batch: Sequence[Any], eos: Any, pad: int, generation: GenerationOptions
) -> tuple[list[list[int]], list[list[float]] | None]:
    """Per request of `batch` (the engine's Prepared, one prompt length), its whole sequence of token ids, prompt
    included, and the probabilities of its generated tokens (None: beams, or not one per token)."""
    import torch

    keeper = _chosen_probabilities() if generation.num_beams == 1 else None  # beams: no scores
    device = embeds.device
    input_ids = torch.tensor([p.input_ids for p in batch]).to(device, non_blocking=True)
    mask = torch.tensor([p.image_mask for p in batch]).to(device, non_blocking=True)
    out = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        image_embeds=embeds,
        image_embeds_position_mask=mask,
        pad_token_id=pad,
        eos_token_id=eos,
        **({"logits_processor": [keeper]} if keeper is not None else {}),
        **generation.generate_kwargs(),
    )
    steps = keeper.rows() if keeper is not None else None
    if steps is not None and len(steps[0]) != out.shape[1] - input_ids.shape[1]:
        steps = None  # not one probability per generated token: no scores rather than wrong ones
    return out.cpu().tolist(), steps


def _chosen_probabilities():
    """A logits processor, last in generate's list, that keeps per step and row the probability of the token greedy
    decoding picks: the softmax maximum of the processed scores, as exp(max - logsumexp), one float per row."""
    import torch
    from transformers import LogitsProcessor

    class ChosenProbabilities(LogitsProcessor):
        def __init__(self):
            self.steps: list = []

        def __call__(self, input_ids, scores):
            s = scores.float()
            self.steps.append(torch.exp(s.max(dim=-1).values - torch.logsumexp(s, dim=-1)))
            return scores

        def rows(self) -> list[list[float]] | None:
            """Per row, the probability of each generated token; None when no step ran."""
            if not self.steps:
                return None
            return torch.stack(self.steps, dim=1).cpu().tolist()

    return ChosenProbabilities()
