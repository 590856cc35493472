"""Our own greedy decoding loop for Kosmos-2: token for token what `model.generate` gives, with less overhead.

It runs the loaded model's own modules and weights (no copy), in the order `Kosmos2TextTransformer.forward` runs
them, and differs from generate only in how the work is laid out:

- prompts of different token lengths share one batch, LEFT padded: the pads are masked out of attention and take
  the padding position (a zero vector), and every real token gets the position generate would give it when the row
  runs alone (`padding_idx + 1 + i` for the i-th token of the row, pads in the prompt excepted, as the model's
  `create_position_ids_from_input_ids` counts them);
- the KV cache is preallocated once, batch x heads x (longest prompt + max_new_tokens) x head_dim per layer, and each
  step writes one column into it (generate's DynamicCache concatenates the whole cache at every step); attention
  reads the filled prefix only, under our own float mask (0 where a row may look, the dtype's minimum where not);
- no logits processors, stopping criteria or output objects: argmax, the chosen token's probability
  (exp(max - logsumexp) of the float32 logits, as the engine's keeper computes it), and a done flag per row.

A finished row (its end-of-sequence token, or a `stop_at` token) is fed the pad token from then on, as generate does,
and no longer counts: the loop ends when every row is done or after max_new_tokens steps. Each row's answer ends at
its finishing token (generate pads it to the batch's longest).

torch is imported lazily; the engine calls `greedy` under `torch.inference_mode()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Decoded:
    """A batch's answer: per row the new token ids, up to and including the one that finished it (or
    max_new_tokens of them), and the probability of each. What a row gets does not depend on its batch: generate's
    pads after a finished row, up to the batch's longest, are left off."""

    tokens: list[list[int]]
    probs: list[list[float]]


# generation_config settings that make generate add a logits processor or change decoding; with any of them set
# the fast loop would not give generate's tokens, so the engine decodes with generate instead
_CHANGES_DECODING = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "diversity_penalty": 0.0,
    "guidance_scale": None,
    "watermarking_config": None,
}


def checkpoint_obstacle(generation_config: Any) -> str | None:
    """Why the checkpoint's own generation settings keep the fast loop from matching generate; None when nothing."""
    for name, neutral in _CHANGES_DECODING.items():
        value = getattr(generation_config, name, neutral)
        if value is not None and value != neutral:
            return f"the checkpoint's generation_config sets {name}={value!r}"
    return None


class _Buffers:
    """A preallocated KV cache that KosmosTextAttention writes through its `cache.update(...)` call: each forward
    writes its new keys and values at `start` and attends to everything written so far (a view, no copy)."""

    def __init__(self, layers: int, shape: tuple[int, int, int, int], dtype, device):
        import torch

        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.start = 0

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        end = self.start + key_states.shape[2]
        self.keys[layer_idx][:, :, self.start : end] = key_states
        self.values[layer_idx][:, :, self.start : end] = value_states
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]


def greedy(
    model: Any,
    image_embeds: Any,
    prompts: Sequence[Sequence[int]],
    image_masks: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
) -> Decoded:
    """Greedy decoding of `prompts` (token ids, any lengths) over a Kosmos2ForConditionalGeneration.

    `image_embeds`: (batch, latent_query_num, embed_dim), the projected image features of each row (computed once
    per image by the caller); `image_masks`: per prompt, 1 where its image features go. Returns what generate's
    sequences hold after the prompt, and the probability of every token chosen.
    """
    import torch

    text = model.text_model.model  # Kosmos2TextTransformer
    head = model.text_model.lm_head
    device = image_embeds.device
    dtype = next(text.parameters()).dtype
    padding_idx = text.embed_positions.padding_idx
    batch, longest = len(prompts), max(len(p) for p in prompts)
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    pads = longest - lengths  # left pads per row

    ids = torch.full((batch, longest), pad_id, dtype=torch.long, device=device)
    image_mask = torch.zeros((batch, longest), dtype=torch.bool, device=device)
    for r, (p, m) in enumerate(zip(prompts, image_masks)):
        ids[r, longest - len(p) :] = torch.tensor(p, dtype=torch.long)
        image_mask[r, longest - len(p) :] = torch.tensor(m, dtype=torch.bool)

    total = longest + max_new_tokens
    columns = torch.arange(total, device=device)
    valid = columns[None, :] >= pads[:, None]  # (batch, total): not a left pad
    low = torch.finfo(dtype).min

    # positions as the model derives them from input_ids: pads (left pads and pad ids) at padding_idx
    counted = (ids != pad_id) & valid[:, :longest]
    positions = torch.cumsum(counted.int(), dim=1) * counted + padding_idx

    heads = text.layers[0].self_attn.num_heads
    width = text.layers[0].self_attn.head_dim
    cache = _Buffers(len(text.layers), (batch, heads, total, width), dtype, device)

    def run(hidden, mask):
        for layer in text.layers:
            hidden = layer(hidden, attention_mask=mask, cache=cache)
        return head(text.layer_norm(hidden[:, -1:]))[:, -1].float()

    # prefill: the whole (padded) prompt, causal and pad-masked
    hidden = text.forward_embedding(
        input_ids=ids, image_embeds=image_embeds, img_input_mask=image_mask, position_ids=positions
    )
    causal = columns[None, :longest] <= columns[:longest, None]  # (query, key)
    allowed = causal[None, :, :] & valid[:, None, :longest]
    mask = torch.zeros((batch, 1, longest, longest), dtype=dtype, device=device).masked_fill(~allowed[:, None], low)
    logits = run(hidden, mask)

    stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    tokens, probs = [], []
    for step in range(max_new_tokens):
        probs.append(torch.exp(logits.max(dim=-1).values - torch.logsumexp(logits, dim=-1)))
        chosen = torch.argmax(logits, dim=-1)
        chosen = torch.where(unfinished, chosen, torch.full_like(chosen, pad_id))
        tokens.append(chosen)
        unfinished &= ~torch.isin(chosen, stops)
        if step + 1 == max_new_tokens or not bool(unfinished.any()):
            break
        cache.start = longest + step
        end = cache.start + 1
        fed = chosen[:, None]
        place = torch.where(fed != pad_id, (lengths + step + 1)[:, None] + padding_idx, padding_idx)
        hidden = text.forward_embedding(input_ids=fed, position_ids=place, cache_length=end - 1)
        mask = torch.zeros((batch, 1, 1, end), dtype=dtype, device=device).masked_fill(~valid[:, None, None, :end], low)
        logits = run(hidden, mask)
    rows, row_probs = torch.stack(tokens, 1).tolist(), torch.stack(probs, 1).tolist()
    stopping = set(stop_ids)
    for r, row in enumerate(rows):
        end = next((i + 1 for i, t in enumerate(row) if t in stopping), len(row))
        del row[end:], row_probs[r][end:]
    return Decoded(rows, row_probs)
