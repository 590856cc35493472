"""The decoder's preallocated KV cache and step state (`Storage`), a batch bucket's views of them (`Workspace`), and
the small copies between the host and the device a batch needs, each made once: a prompt's inputs go over in one
copy (`prompt_inputs`), the chosen tokens and their probabilities come back in one (`Workspace.read`). torch is
imported lazily."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .device import host_empty

STOPS = 4  # stop ids a decoder takes at most (the end-of-sequence token and stop_at)


class Storage:
    """The tensors one decoder keeps between batches: the KV cache (zeros, so a masked column never brings a NaN
    into attention) and the small state a decode step reads and writes, for `rows` rows and `length` columns.
    Smaller batches use views of the first rows, so every batch-size bucket shares one allocation."""

    def __init__(self, text, rows: int, length: int, new_tokens: int, dtype, device):
        import torch

        attn = text.layers[0].self_attn
        shape = (rows, attn.num_heads, length, attn.head_dim)
        self.rows, self.length = rows, length
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in text.layers]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in text.layers]
        self.columns = torch.arange(length, device=device)
        self.fed = torch.zeros((rows, 1), dtype=torch.long, device=device)  # the token each row is fed next
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)  # its prompt's tokens
        self.pads = torch.zeros(rows, dtype=torch.long, device=device)  # its left pads
        self.unfinished = torch.zeros(rows, dtype=torch.bool, device=device)
        self.tokens = torch.zeros((rows, new_tokens), dtype=torch.long, device=device)
        self.probs = torch.zeros((rows, new_tokens), dtype=torch.float32, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)  # tokens chosen so far, less one
        self.first = torch.zeros((), dtype=torch.long, device=device)  # the prompt's columns (its longest row)
        self.stops = torch.zeros(STOPS, dtype=torch.long, device=device)
        self.open = torch.zeros((), dtype=dtype, device=device)  # the attention mask's two values
        self.shut = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)


class Workspace:
    """A batch bucket's view of the storage, and the cache protocol KosmosTextAttention calls (`cache.update`).

    Prefill (`write` None) writes the prompt's columns and returns them. A decode step writes one column at the device
    tensor `write` (index_copy_: no Python int that changes per step) and returns the first `span` columns, the rest
    masked; `span` is fixed per captured graph."""

    def __init__(self, storage: Storage, rows: int):
        s = storage
        self.rows, self.length = rows, s.length
        self.keys, self.values = [k[:rows] for k in s.keys], [v[:rows] for v in s.values]
        self.columns, self.fed, self.lengths, self.pads = s.columns, s.fed[:rows], s.lengths[:rows], s.pads[:rows]
        self.unfinished, self.tokens, self.probs = s.unfinished[:rows], s.tokens[:rows], s.probs[:rows]
        self.step, self.first, self.stops, self.open, self.shut = s.step, s.first, s.stops, s.open, s.shut
        self.write: Any = None
        self.span = s.length

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.write is None:
            end = key_states.shape[2]
            keys[:, :, :end] = key_states
            values[:, :, :end] = value_states
            return keys[:, :, :end], values[:, :, :end]
        keys.index_copy_(2, self.write, key_states)
        values.index_copy_(2, self.write, value_states)
        return keys[:, :, : self.span], values[:, :, : self.span]

    def read(self, made: int) -> tuple[list[list[int]], list[list[float]]]:
        """Every row's first `made` tokens and their probabilities, in one copy to the host (the tokens as int32, the
        float32 probabilities' bits beside them), which waits for the device."""
        import torch

        both = torch.cat([self.tokens[:, :made].int(), self.probs[:, :made].view(torch.int32)], dim=1).cpu().numpy()
        return both[:, :made].tolist(), both[:, made:].view("float32").tolist()


def prompt_inputs(prompts: Sequence[Sequence[int]], image_masks: Sequence[Sequence[int]], stop_ids, pad_id, device):
    """A batch's prompts left padded to the longest, their image masks, lengths and the stop ids (padded to STOPS
    with the first), built in host memory and sent in one copy (from pinned memory, asynchronously, on CUDA).
    Returns (ids, image_mask, lengths, stops) on `device`: long, bool, long, long."""
    import torch

    batch, longest = len(prompts), max(len(p) for p in prompts)
    host = host_empty(2 * batch * longest + batch + STOPS, torch.long, pin=torch.device(device).type == "cuda")
    values = host.numpy()
    ids, mask = values[: batch * longest].reshape(batch, longest), values[batch * longest : 2 * batch * longest]
    mask = mask.reshape(batch, longest)
    ids[:], mask[:] = pad_id, 0
    for r, (p, m) in enumerate(zip(prompts, image_masks)):
        ids[r, longest - len(p) :], mask[r, longest - len(m) :] = p, m
    values[2 * batch * longest : 2 * batch * longest + batch] = [len(p) for p in prompts]
    values[2 * batch * longest + batch :] = list(stop_ids) + [stop_ids[0]] * (STOPS - len(stop_ids))
    sent = host.to(device, non_blocking=True)
    ids_d, mask_d = sent[: batch * longest].view(batch, longest), sent[batch * longest : 2 * batch * longest]
    rest = sent[2 * batch * longest :]
    return ids_d, mask_d.view(batch, longest).bool(), rest[:batch], rest[batch:]
