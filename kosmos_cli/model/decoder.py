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

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("kosmos_cli")

SPAN = 64  # a decode step attends over the cache in multiples of this many columns (one graph per multiple)
_STOPS = 4  # stop ids a decoder takes at most (the end-of-sequence token and stop_at)


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


class _Storage:
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
        self.stops = torch.zeros(_STOPS, dtype=torch.long, device=device)
        self.open = torch.zeros((), dtype=dtype, device=device)  # the attention mask's two values
        self.shut = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)


class _Workspace:
    """A batch bucket's view of the storage, and the cache protocol KosmosTextAttention calls (`cache.update`).

    Prefill (`write` None) writes the prompt's columns and returns them. A decode step writes one column at the device
    tensor `write` (index_copy_: no Python int that changes per step) and returns the first `span` columns, the rest
    masked; `span` is fixed per captured graph."""

    def __init__(self, storage: _Storage, rows: int):
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


def bucket(rows: int) -> int:
    """The batch-size bucket `rows` is padded up to when graphs are captured: the next power of two."""
    return 1 << max(0, math.ceil(math.log2(rows))) if rows > 1 else 1


class Decoder:
    """Greedy decoding over one loaded Kosmos2ForConditionalGeneration; its cache and CUDA graphs are kept from one
    batch to the next (`reset` drops them, e.g. after an out-of-memory error).

    `graphs`: capture the decode step as CUDA graphs (default: on CUDA). `buckets`: pad batches up to a power of two
    (default: with graphs; the tests turn it on on the CPU to show padded rows change nothing). `check_every`: how
    many steps between two looks at whether every row is done (default 1 on the CPU, 8 with graphs). `keep`: keep the
    cache for the next batch (default: with graphs, which point into it). `shrink`: when a look finds at most half of
    the bucket's rows still going, they go on alone in the smaller bucket (their cache and state moved to its first
    rows): finished rows stop costing work. Each row's computation never depends on another's, so its tokens stay
    the same."""

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
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        self.buckets = self.graphs if buckets is None else buckets
        self.check_every = check_every or (8 if self.graphs else 1)
        self.keep = self.graphs if keep is None else keep
        self.shrink = shrink
        self.captured = 0  # graphs captured so far (the benchmark reports it)
        self.shrunk = 0  # times a batch went on in a smaller bucket because most of its rows were done
        self._storage: _Storage | None = None
        self._workspaces: dict[int, _Workspace] = {}
        self._graphs: dict[tuple[int, int], Any] = {}
        self._capture: _Capture | None = None  # the side stream and memory pool of every capture, made on the first
        self.capture_order: list[tuple[int, int]] = []  # (bucket, span) of each capture, in order

    def reset(self) -> None:
        """Drop the cache and the graphs (they hold device memory); the next batch allocates and captures anew (on the
        same side stream, into the same pool)."""
        self._storage, self._workspaces, self._graphs = None, {}, {}

    def __call__(
        self,
        image_embeds: Any,
        prompts: Sequence[Sequence[int]],
        image_masks: Sequence[Sequence[int]],
        stop_ids: Sequence[int],
    ) -> Decoded:
        """Greedy decoding of `prompts` (token ids, any lengths).

        `image_embeds`: (batch, latent_query_num, embed_dim), the projected image features of each row (computed once
        per image by the caller); `image_masks`: per prompt, 1 where its image features go. Returns what generate's
        sequences hold after the prompt, and the probability of every token chosen."""
        import torch

        if self.device.type != "cuda":
            return self._greedy(image_embeds, prompts, image_masks, stop_ids)
        with torch.cuda.device(self.device):  # captures and replays on the model's card, whichever is current
            return self._greedy(image_embeds, prompts, image_masks, stop_ids)

    def _greedy(self, image_embeds, prompts, image_masks, stop_ids) -> Decoded:
        import torch

        if not 1 <= len(stop_ids) <= _STOPS:
            raise ValueError(f"between 1 and {_STOPS} stop ids, not {len(stop_ids)}")
        batch, longest = len(prompts), max(len(p) for p in prompts)
        rows = bucket(batch) if self.buckets else batch
        length = SPAN * math.ceil((longest + self.max_new_tokens) / SPAN)
        ws = self._workspace(rows, length)
        device, pad_id, padding_idx = self.device, self.pad_id, self.text.embed_positions.padding_idx

        # prefill over the real rows alone; the bucket's extra rows then repeat the first row's cache and inputs and
        # start finished: they change no real row
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        pads = longest - lengths
        # built in host memory, then one copy each to the device
        ids = torch.tensor([[pad_id] * (longest - len(p)) + list(p) for p in prompts], dtype=torch.long).to(device)
        image_mask = torch.tensor([[0] * (longest - len(m)) + list(m) for m in image_masks], dtype=torch.bool).to(
            device
        )

        # positions as the model derives them from input_ids: pads (left pads and pad ids) at padding_idx
        columns = ws.columns[:longest]
        valid = columns[None, :] >= pads[:, None]  # (batch, longest): not a left pad
        counted = (ids != pad_id) & valid
        positions = torch.cumsum(counted.int(), dim=1) * counted + padding_idx

        # prefill, eagerly: the whole (padded) prompt, causal and pad-masked
        storage = self._storage
        assert storage is not None  # made by _workspace above
        real = ws if rows == batch else _Workspace(storage, batch)  # views of the storage's first rows
        real.write = None
        hidden = self.text.forward_embedding(
            input_ids=ids, image_embeds=image_embeds, img_input_mask=image_mask, position_ids=positions
        )
        causal = columns[None, :] <= columns[:, None]  # (query, key)
        allowed = causal[None, :, :] & valid[:, None, :]
        mask = torch.where(allowed[:, None], ws.open, ws.shut)
        logits = self._run(hidden, mask, real)
        if rows > batch:
            for cache in (*ws.keys, *ws.values):
                cache[batch:, :, :longest] = cache[:1, :, :longest]
            logits = torch.cat([logits, logits[:1].expand(rows - batch, -1)])
            lengths = torch.cat([lengths, lengths[:1].expand(rows - batch)])
            pads = longest - lengths

        ws.lengths.copy_(lengths)
        ws.pads.copy_(pads)
        ws.unfinished.copy_(torch.arange(rows, device=device) < batch)
        ws.stops.copy_(torch.tensor(list(stop_ids) + [stop_ids[0]] * (_STOPS - len(stop_ids)), device=device))
        ws.first.fill_(longest)
        ws.step.zero_()
        self._choose(ws, logits)
        made = 1
        order: list[int | None] = [*range(batch), *[None] * (rows - batch)]  # the caller's row of each of ws's rows
        tokens: list[list[int]] = [[] for _ in range(batch)]
        probs: list[list[float]] = [[] for _ in range(batch)]
        for step in range(self.max_new_tokens - 1):
            if step % self.check_every == 0:
                going = ws.unfinished.nonzero().flatten().tolist()
                if not going:
                    break
                if self.shrink and len(going) <= ws.rows // 2:
                    ws, order = self._shrink(ws, order, going, made, tokens, probs)
            span = min(length, SPAN * math.ceil((longest + step + 1) / SPAN))
            self._decode(ws, span)
            made += 1
        self._hand_over(ws, order, range(ws.rows), made, tokens, probs)
        if not self.keep:
            self.reset()  # on the CPU the cache is not kept between batches
        stopping = set(stop_ids)
        for r, row in enumerate(tokens):
            end = next((i + 1 for i, t in enumerate(row) if t in stopping), len(row))
            del row[end:], probs[r][end:]
        return Decoded(tokens, probs)

    def _shrink(self, ws: _Workspace, order, going: list[int], made: int, tokens, probs):
        """The rows still `going` moved to the first rows of the smallest bucket that holds them: their cache, state,
        tokens and probabilities (extra rows of the bucket repeat the first and are finished). The others' answers
        are final: handed over now. Returns the smaller workspace and its rows' places in the caller's batch."""
        import torch

        rows = bucket(len(going)) if self.buckets else len(going)
        if rows >= ws.rows:
            return ws, order
        self._hand_over(ws, order, sorted(set(range(ws.rows)) - set(going)), made, tokens, probs)
        picked = torch.tensor(going + [going[0]] * (rows - len(going)), device=self.device)
        for t in (*ws.keys, *ws.values, ws.fed, ws.lengths, ws.pads, ws.unfinished, ws.tokens, ws.probs):
            t[:rows] = t.index_select(0, picked)  # a copy first, then written: overlapping rows are safe
        small = self._workspace(rows, ws.length)
        small.unfinished[len(going) :] = False
        self.shrunk += 1
        return small, [order[r] for r in going] + [None] * (rows - len(going))

    @staticmethod
    def _hand_over(ws: _Workspace, order, rows, made: int, tokens, probs) -> None:
        """The answers so far of `rows` of `ws`, into the caller's rows."""
        rows = [r for r in rows if order[r] is not None]
        if not rows:
            return
        chosen, kept = ws.tokens[rows, :made].tolist(), ws.probs[rows, :made].tolist()
        for r, row_tokens, row_probs in zip(rows, chosen, kept):
            tokens[order[r]], probs[order[r]] = row_tokens, row_probs

    def _workspace(self, rows: int, length: int) -> _Workspace:
        """The bucket's views of the storage; a bigger batch or a longer one first replaces the storage (and so drops
        every graph, which point into it)."""
        s = self._storage
        if s is None or s.rows < rows or s.length < length:
            most, longest = (rows, length) if s is None else (max(rows, s.rows), max(length, s.length))
            s = None  # the old storage (and the graphs that point into it) released before the larger one is made
            self.reset()
            s = self._storage = _Storage(self.text, most, longest, self.max_new_tokens, self.dtype, self.device)
            table = self.text.embed_positions
            if table.padding_idx + 1 + longest > table.weights.size(0):  # grown now, never inside a graph
                table.make_weights(
                    table.padding_idx + 1 + longest + table.offset, table.embedding_dim, table.padding_idx
                )
        if rows not in self._workspaces:
            self._workspaces[rows] = _Workspace(s, rows)
        return self._workspaces[rows]

    def _run(self, hidden, mask, ws: _Workspace):
        for layer in self.text.layers:
            hidden = layer(hidden, attention_mask=mask, cache=ws)
        return self.head(self.text.layer_norm(hidden[:, -1:]))[:, -1].float()

    def _choose(self, ws: _Workspace, logits) -> None:
        """The greedy choice from `logits`, kept at index `ws.step`: token, its probability, done flags, next input."""
        import torch

        probs = torch.exp(logits.max(dim=-1).values - torch.logsumexp(logits, dim=-1))
        chosen = torch.where(ws.unfinished, torch.argmax(logits, dim=-1), self.pad_id)
        at = ws.step.view(1)
        ws.tokens.index_copy_(1, at, chosen[:, None])
        ws.probs.index_copy_(1, at, probs[:, None])
        ws.unfinished &= ~(chosen[:, None] == ws.stops[None, :]).any(dim=-1)
        ws.fed.copy_(chosen[:, None])

    def _step(self, ws: _Workspace, span: int) -> None:
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

    def _decode(self, ws: _Workspace, span: int) -> None:
        """One decode step: the captured graph of (bucket, span) replayed, captured on its first use (which runs it
        eagerly once), or the static step run eagerly.

        An out-of-memory error during a capture is raised as torch.OutOfMemoryError, whatever CUDA said on ending the
        broken capture: the engine halves the batch and the graphs stay on. Any other failure to capture warns once
        and the step runs eagerly from then on (as on the CPU)."""
        import torch

        key = (ws.rows, span)
        graph = self._graphs.get(key)
        if graph is not None:
            graph.replay()
            return
        if not self.graphs:
            self._step(ws, span)
            return
        if self._capture is None:
            self._capture = _Capture(self.device)
        self._capture.warm(lambda: self._step(ws, span))  # a real step, and the warm-up a capture needs
        try:
            graph = self._capture.capture(lambda: self._step(ws, span))  # recorded, not run
        except Exception as exc:  # noqa: BLE001 - any failure to capture but running out of memory: decode eagerly
            if _out_of_memory(exc):
                raise torch.OutOfMemoryError(f"out of memory while capturing a CUDA graph: {exc}") from exc
            log.warning("CUDA graph capture failed (%s: %s); decoding without graphs", type(exc).__name__, exc)
            self.graphs = False
            self._graphs = {}
            return
        self._graphs[key] = graph
        self.captured += 1
        self.capture_order.append(key)


class _Capture:
    """How one decoder captures its static step as CUDA graphs: on the model's device (not the current one: `--device
    cuda:1`, or a rank's cuda:N), on one side stream and into one memory pool that all its captures share. A capture
    that fails leaves the current stream as it was. (Tests stand a fake in for it on the CPU.)"""

    def __init__(self, device: Any):
        import torch

        self.device = torch.device(device)
        with torch.cuda.device(self.device):
            self.side = torch.cuda.Stream(device=self.device)
            self.pool = torch.cuda.graph_pool_handle()

    def warm(self, step) -> None:
        """`step` run on the side stream, ordered after what the current stream has queued and before what follows."""
        import torch

        with torch.cuda.device(self.device):
            current = torch.cuda.current_stream(self.device)
            self.side.wait_stream(current)
            with torch.cuda.stream(self.side):
                step()
            current.wait_stream(self.side)

    def capture(self, step) -> Any:
        """`step` recorded (not run) as a CUDA graph on the side stream, into the shared pool."""
        import torch

        with torch.cuda.device(self.device):
            current = torch.cuda.current_stream(self.device)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, pool=self.pool, stream=self.side):
                    step()
            finally:
                if torch.cuda.current_stream(self.device) != current:  # a capture that failed on entering or leaving
                    torch.cuda.set_stream(current)
        return graph


def _out_of_memory(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it was raised during or from, is running out of device memory (ending a capture
    that an out-of-memory error broke raises a CUDA error of its own, with the out-of-memory one as its context)."""
    import torch

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


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
