"""Our own greedy decoding loop for Kosmos-2: token for token what `model.generate` gives, with less overhead.

It runs the loaded model's own modules and weights (no copy), in the order `Kosmos2TextTransformer.forward` runs
them, and differs from generate only in how the work is laid out:

- prompts of different token lengths share one batch, LEFT padded: the pads are masked out of attention and take
  the padding position (a zero vector), and every real token gets the position generate would give it when the row
  runs alone (`padding_idx + 1 + i` for the i-th token of the row, pads in the prompt excepted, as the model's
  `create_position_ids_from_input_ids` counts them);
- the KV cache is preallocated, batch x heads x length x head_dim per layer, and kept between batches; each step
  writes one column into it (generate's DynamicCache concatenates the whole cache at every step);
- the prompt runs eagerly (prefill), over the batch's real rows only (a bucket's extra rows then copy the first row's
  cache); every later token runs through one *static step*: fixed shapes and device
  tensors only (the column it writes, the step count, the mask built on the device from them; no `.item()`, no
  Python number that changes from step to step), attending over the first `span` columns of the cache (a multiple
  of SPAN) under a float mask, 0 where a row may look and the dtype's minimum where not. On the CPU the static step
  runs eagerly, which is what the tests check against generate; on CUDA each (batch bucket, span) is captured once
  as a CUDA graph and replayed (`Decoder(graphs=True)`), and a batch is padded up to its bucket (a power of two)
  with rows that start finished, so the graphs are reused. Every capture of a decoder is made on the model's device,
  on one side stream, into one memory pool; within a batch the largest bucket is captured first (smaller ones as
  rows finish, reusing its pool). Running out of memory during a capture is an out-of-memory error (the engine
  halves the batch; graphs stay on); any other failure to capture warns once and the step runs eagerly from then on;
- the host and the device exchange little (cache.py): a batch's prompt inputs go over in one copy, a look at the done
  flags brings back one small vector, and the tokens and their probabilities come back in one copy;
- no logits processors, stopping criteria or output objects: argmax, the chosen token's probability
  (exp(max - logsumexp) of the float32 logits, as the engine's keeper computes it), and a done flag per row, all
  inside the step.

A finished row (its end-of-sequence token, or a `stop_at` token) is fed the pad token from then on, as generate does,
and no longer counts: when a check (every `check_every` steps: each check waits for the device) finds at most half
of the bucket's rows still going, those rows go on alone in the smaller bucket (`shrink`: their cache and state
moved to its first rows; no row's computation depends on another's, so its tokens do not change), and the loop ends
when every row is done or after max_new_tokens steps. Each row's answer ends at its finishing token (generate pads it to
the batch's longest), so steps run past the last finish change nothing.

torch is imported lazily; the engine calls the decoder under `torch.inference_mode()`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .cache import STOPS, Storage, Workspace, prompt_inputs
from .capture import Graphs

SPAN = 64  # a decode step attends over the cache in multiples of this many columns (one graph per multiple)


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


def bucket(rows: int) -> int:
    """The batch-size bucket `rows` is padded up to when graphs are captured: the next power of two."""
    return 1 << max(0, math.ceil(math.log2(rows))) if rows > 1 else 1


class Decoder:
    """Greedy decoding over one loaded Kosmos2ForConditionalGeneration; its cache and CUDA graphs are kept from one
    batch to the next (`reset` drops them, e.g. after an out-of-memory error).

    `graphs`: capture the decode step as CUDA graphs (default: on CUDA; capture.py). `buckets`: pad batches up to a
    power of two (default: with graphs; the tests turn it on on the CPU to show padded rows change nothing).
    `check_every`: how many steps between two looks at whether every row is done (default 1 on the CPU, 8 with
    graphs). `keep`: keep the cache for the next batch (default: with graphs, which point into it). `shrink`: when a
    look finds at most half of the bucket's rows still going, they go on alone in the smaller bucket (their cache and
    state moved to its first rows): finished rows stop costing work. Each row's computation never depends on
    another's, so its tokens stay the same."""

    def __init__(
        self,
        model: Any,
        max_new_tokens: int,
        pad_id: int,
        graphs: bool | None = None,
        buckets: bool | None = None,
        check_every: int | None = None,
        keep: bool | None = None,
        shrink: bool = True,
    ):
        self.model = model
        self.text = model.text_model.model  # Kosmos2TextTransformer
        self.head = model.text_model.lm_head
        param = next(self.text.parameters())
        self.dtype, self.device = param.dtype, param.device
        self.max_new_tokens, self.pad_id = max_new_tokens, pad_id
        self.cuda_graphs = Graphs(self.device, self.device.type == "cuda" if graphs is None else graphs)
        self.buckets = self.cuda_graphs.on if buckets is None else buckets
        self.check_every = check_every or (8 if self.cuda_graphs.on else 1)
        self.keep = self.cuda_graphs.on if keep is None else keep
        self.shrink = shrink
        self.shrunk = 0  # times a batch went on in a smaller bucket because most of its rows were done
        self._storage: Storage | None = None
        self._workspaces: dict[int, Workspace] = {}

    @property
    def graphs(self) -> bool:
        """Whether decode steps are captured as CUDA graphs (off once a capture failed, but for memory)."""
        return self.cuda_graphs.on

    @property
    def captured(self) -> int:
        """Graphs captured so far (the benchmark reports it)."""
        return self.cuda_graphs.captured

    def reset(self) -> None:
        """Drop the cache and the graphs (they hold device memory); the next batch allocates and captures anew (on the
        same side stream, into the same pool)."""
        self._storage, self._workspaces = None, {}
        self.cuda_graphs.reset()

    def __call__(self, image_embeds: Any, prompts: Sequence[Sequence[int]], image_masks, stop_ids) -> Decoded:
        """Greedy decoding of `prompts` (token ids, any lengths).

        `image_embeds`: (batch, latent_query_num, embed_dim), the projected image features of each row (computed once
        per image by the caller); `image_masks`: per prompt, 1 where its image features go. Returns what generate's
        sequences hold after the prompt, and the probability of every token chosen."""
        import torch

        if not 1 <= len(stop_ids) <= STOPS:
            raise ValueError(f"between 1 and {STOPS} stop ids, not {len(stop_ids)}")
        if self.device.type != "cuda":
            return self._greedy(image_embeds, prompts, image_masks, stop_ids)
        with torch.cuda.device(self.device):  # captures and replays on the model's card, whichever is current
            return self._greedy(image_embeds, prompts, image_masks, stop_ids)

    def _greedy(self, image_embeds, prompts, image_masks, stop_ids) -> Decoded:
        batch, longest = len(prompts), max(len(p) for p in prompts)
        rows = bucket(batch) if self.buckets else batch
        length = SPAN * math.ceil((longest + self.max_new_tokens) / SPAN)
        ws, made = self._prefill(self._workspace(rows, length), image_embeds, prompts, image_masks, stop_ids), 1
        order: list[int | None] = [*range(batch), *[None] * (rows - batch)]  # the caller's row of each of ws's rows
        tokens: list[list[int]] = [[] for _ in range(batch)]
        probs: list[list[float]] = [[] for _ in range(batch)]
        for step in range(self.max_new_tokens - 1):
            if step % self.check_every == 0:  # a look: one copy of the done flags, which waits for the device
                going = [r for r, unfinished in enumerate(ws.unfinished.tolist()) if unfinished]
                if not going:
                    break
                if self.shrink and len(going) <= ws.rows // 2:
                    ws, order = self._shrink(ws, order, going, made, tokens, probs)
            span = min(length, SPAN * math.ceil((longest + step + 1) / SPAN))
            self.cuda_graphs.run((ws.rows, span), functools.partial(self._step, ws, span))
            made += 1
        _hand_over(ws, order, range(ws.rows), made, tokens, probs)
        if not self.keep:
            self.reset()  # on the CPU the cache is not kept between batches
        stopping = set(stop_ids)
        for r, row in enumerate(tokens):
            end = next((i + 1 for i, t in enumerate(row) if t in stopping), len(row))
            del row[end:], probs[r][end:]
        return Decoded(tokens, probs)

    def _prefill(self, ws: Workspace, image_embeds, prompts, image_masks, stop_ids) -> Workspace:
        """The prompts run eagerly over the batch's real rows alone (the whole left-padded prompt, causal and
        pad-masked), and the first token chosen; the bucket's extra rows then repeat the first row's cache and
        inputs and start finished: they change no real row."""
        import torch

        batch, longest, rows = len(prompts), max(len(p) for p in prompts), ws.rows
        ids, image_mask, lengths, stops = prompt_inputs(prompts, image_masks, stop_ids, self.pad_id, self.device)
        pads = longest - lengths
        # positions as the model derives them from input_ids: pads (left pads and pad ids) at padding_idx
        columns = ws.columns[:longest]
        valid = columns[None, :] >= pads[:, None]  # (batch, longest): not a left pad
        counted = (ids != self.pad_id) & valid
        positions = torch.cumsum(counted.int(), dim=1) * counted + self.text.embed_positions.padding_idx
        assert self._storage is not None  # made by _workspace
        real = ws if rows == batch else Workspace(self._storage, batch)  # views of the storage's first rows
        real.write = None
        hidden = self.text.forward_embedding(
            input_ids=ids, image_embeds=image_embeds, img_input_mask=image_mask, position_ids=positions
        )
        causal = columns[None, :] <= columns[:, None]  # (query, key)
        mask = torch.where((causal[None, :, :] & valid[:, None, :])[:, None], ws.open, ws.shut)
        logits = self._run(hidden, mask, real)
        if rows > batch:
            for cache in (*ws.keys, *ws.values):
                cache[batch:, :, :longest] = cache[:1, :, :longest]
            logits = torch.cat([logits, logits[:1].expand(rows - batch, -1)])
            lengths = torch.cat([lengths, lengths[:1].expand(rows - batch)])
        ws.lengths.copy_(lengths)
        ws.pads.copy_(longest - lengths)
        ws.unfinished.copy_(torch.arange(rows, device=self.device) < batch)
        ws.stops.copy_(stops)
        ws.first.fill_(longest)
        ws.step.zero_()
        self._choose(ws, logits)
        return ws

    def _shrink(self, ws: Workspace, order, going: list[int], made: int, tokens, probs):
        """The rows still `going` moved to the first rows of the smallest bucket that holds them: their cache, state,
        tokens and probabilities (extra rows of the bucket repeat the first and are finished). The others' answers
        are final: handed over now. Returns the smaller workspace and its rows' places in the caller's batch."""
        import torch

        rows = bucket(len(going)) if self.buckets else len(going)
        if rows >= ws.rows:
            return ws, order
        _hand_over(ws, order, sorted(set(range(ws.rows)) - set(going)), made, tokens, probs)
        picked = torch.tensor(going + [going[0]] * (rows - len(going))).to(self.device, non_blocking=True)
        for t in (*ws.keys, *ws.values, ws.fed, ws.lengths, ws.pads, ws.unfinished, ws.tokens, ws.probs):
            t[:rows] = t.index_select(0, picked)  # a copy first, then written: overlapping rows are safe
        small = self._workspace(rows, ws.length)
        small.unfinished[len(going) :] = False
        self.shrunk += 1
        return small, [order[r] for r in going] + [None] * (rows - len(going))

    def _workspace(self, rows: int, length: int) -> Workspace:
        """The bucket's views of the storage; a bigger batch or a longer one first replaces the storage (and so drops
        every graph, which point into it)."""
        s = self._storage
        if s is None or s.rows < rows or s.length < length:
            most, longest = (rows, length) if s is None else (max(rows, s.rows), max(length, s.length))
            s = None  # the old storage (and the graphs that point into it) released before the larger one is made
            self.reset()
            s = self._storage = Storage(self.text, most, longest, self.max_new_tokens, self.dtype, self.device)
            _grow_positions(self.text.embed_positions, longest)
        if rows not in self._workspaces:
            self._workspaces[rows] = Workspace(s, rows)
        return self._workspaces[rows]

    def _run(self, hidden, mask, ws: Workspace):
        for layer in self.text.layers:
            hidden = layer(hidden, attention_mask=mask, cache=ws)
        return self.head(self.text.layer_norm(hidden[:, -1:]))[:, -1].float()

    def _choose(self, ws: Workspace, logits) -> None:
        """The greedy choice from `logits`, kept at index `ws.step`: token, its probability, done flags, next input."""
        import torch

        probs = torch.exp(logits.max(dim=-1).values - torch.logsumexp(logits, dim=-1))
        chosen = torch.where(ws.unfinished, torch.argmax(logits, dim=-1), self.pad_id)
        at = ws.step.view(1)
        ws.tokens.index_copy_(1, at, chosen[:, None])
        ws.probs.index_copy_(1, at, probs[:, None])
        ws.unfinished &= ~(chosen[:, None] == ws.stops[None, :]).any(dim=-1)
        ws.fed.copy_(chosen[:, None])

    def _step(self, ws: Workspace, span: int) -> None:
        """The static step: feed each row its last token at column first + step, then choose the next one. Static
        shapes, device tensors only: what a CUDA graph captures."""
        import torch

        padding_idx = self.text.embed_positions.padding_idx
        write = ws.first + ws.step
        place = torch.where(ws.fed != self.pad_id, (ws.lengths + ws.step + 1 + padding_idx)[:, None], padding_idx)
        # cache_length only sizes the position table (grown to the storage's length beforehand): a constant here
        hidden = self.text.forward_embedding(input_ids=ws.fed, position_ids=place, cache_length=ws.length - 1)
        columns = ws.columns[:span]
        allowed = (columns[None, :] >= ws.pads[:, None]) & (columns[None, :] <= write)
        mask = torch.where(allowed[:, None, None, :], ws.open, ws.shut)
        ws.write, ws.span = write.view(1), span
        logits = self._run(hidden, mask, ws)
        ws.step.add_(1)
        self._choose(ws, logits)


def _grow_positions(table, longest: int) -> None:
    """The position table grown to hold `longest` columns: now, never inside a graph."""
    if table.padding_idx + 1 + longest > table.weights.size(0):
        table.make_weights(table.padding_idx + 1 + longest + table.offset, table.embedding_dim, table.padding_idx)


def _hand_over(ws: Workspace, order, rows, made: int, tokens, probs) -> None:
    """The answers so far of `rows` of `ws`, into the caller's rows: every row of ws read back in one copy."""
    rows = [r for r in rows if order[r] is not None]
    if not rows:
        return
    chosen, kept = ws.read(made)
    for r in rows:
        tokens[order[r]], probs[order[r]] = chosen[r], kept[r]


def greedy(
    model: Any,
    image_embeds: Any,
    prompts: Sequence[Sequence[int]],
    image_masks: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
) -> Decoded:
    """One batch through a fresh `Decoder` that runs its steps eagerly (no graphs, no buckets)."""
    return Decoder(model, max_new_tokens, pad_id, graphs=False)(image_embeds, prompts, image_masks, stop_ids)
