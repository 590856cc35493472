"""Load Kosmos-2 once; preprocess -> forward -> postprocess, batched, on the device.

The shape follows transformers' pipelines: `prepare` runs on the CPU in background workers (processor calls; an
image's pixels resized to uint8, pixels.py), `collate` stacks a batch's pixels into one host tensor (pinned on CUDA),
`forward` runs under `torch.inference_mode()` on the device (the pixels copied over asynchronously and normalised
there; our own decoder, decoder.py, or transformers' generate, generate.py), and the token ids are turned back into
text later, on the thread that finishes the records. torch is imported here, lazily (transformers in checkpoint.py,
which reads the checkpoint, decoder.py and generate.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import OutOfMemory, UsageError
from ..options import GenerationOptions, ModelOptions
from ..tasks.scores import Generation, Markup
from . import batch_size, checkpoint, quantize
from .batch_size import AUTO_BATCH_SIZES, DEFAULT_BATCH_SIZE
from .decoder import Decoder, checkpoint_obstacle
from .device import check_versions, is_cuda, resolve_device, resolve_dtype
from .files import local_model_path
from .generate import generated
from .pixels import ClipPixels, Collated, collate
from .prompts import EncodedPrompts, Prompt

__all__ = ["AUTO_BATCH_SIZES", "DEFAULT_BATCH_SIZE", "Collated", "Engine", "GenerationOptions", "ModelOptions"]

log = logging.getLogger("kosmos_cli")


@dataclass
class Prepared:
    """One request, preprocessed on the CPU: an image's pixels and one prompt's token ids."""

    image_key: Any  # requests with the same key share one pass of the vision encoder
    pixel_values: Any  # numpy (3, H, W): uint8 at the model's size (pixels.ClipPixels), or the processor's float32
    input_ids: tuple[int, ...]
    image_mask: tuple[int, ...]


class Engine:
    """A loaded model and processor. Thread-safe for `prepare`; `forward` runs on the caller's thread."""

    def __init__(self, options: ModelOptions = ModelOptions(), generation: GenerationOptions = GenerationOptions()):
        self.options = options
        self.generation = generation
        self.processor: Any = None  # transformers' processor and model, once loaded
        self.model: Any = None
        self.device: Any = None  # "cpu", "cuda:0", ... or a torch.device
        self.dtype: Any = None  # a torch dtype
        self._clip_pixels: Any = _UNKNOWN  # ClipPixels for this processor, or None: not known until first used
        self.fast = False  # set on loading: decoder.Decoder decodes (see GenerationOptions.fast)
        self.decoder: Any = None  # that decoder (its cache and CUDA graphs live from one batch to the next)
        self.fits: int | None = None  # after an out-of-memory error: the largest batch that went through since
        self.quantized: str | None = None  # "int8" once the model's weights are (quantize.py)
        self._prompts = EncodedPrompts()  # encoded prompts, kept

    # -- loading -----------------------------------------------------------------------------------------
    @classmethod
    def from_model(
        cls, model, processor, generation: GenerationOptions = GenerationOptions(), label: str = "in-memory"
    ) -> Engine:
        """Wrap a model and processor already loaded (its device and dtype are kept)."""
        check_versions()
        engine = cls(ModelOptions(model=label), generation)
        engine.processor, engine.model = processor, model.eval()
        engine.device, engine.dtype = next(model.parameters()).device, next(model.parameters()).dtype
        engine._setup(model.config)
        return engine

    def _setup(self, config) -> None:
        obstacle = checkpoint_obstacle(self.model.generation_config)
        if obstacle and self.generation.decoder == "fast":
            raise UsageError(f"{{param}} fast cannot decode this checkpoint as generate does: {obstacle}", "decoder")
        self.fast = self.generation.fast and obstacle is None  # decode with decoder.Decoder, batches of any lengths
        self._num_image_tokens = int(config.latent_query_num)
        self._pad = self.processor.tokenizer.pad_token_id
        if self.fast:
            self.decoder = Decoder(self.model, self.generation.max_new_tokens, self._pad)
        self._eos = self.processor.tokenizer.eos_token_id
        self._markup = Markup.of(self.processor.tokenizer)

    def load(self, weights: bool = True) -> Engine:
        """Read the checkpoint (checkpoint.read: a folder, the local cache or the hub) onto the device.
        `weights=False`: the processor alone, which is all `prepare` and `pixels` need (a Ray worker that loads
        images, on a machine without the model's device)."""
        name = local_model_path(self.options.name)  # a folder that is not there: said before anything else
        check_versions()
        if weights:
            self.device = resolve_device(self.options.device)
            self.dtype = resolve_dtype(self.options.dtype, self.device)
        int8 = weights and self.options.quantize is not None and str(self.device).startswith("cpu")
        build = quantize.load if int8 else None  # int8 weights read layer by layer: never the whole float32 model
        config, self.processor, model = checkpoint.read(name, self.options.revision, self.dtype, weights, build)
        if model is None:
            self._num_image_tokens = int(config.latent_query_num)
            return self
        self.model = model.to(self.device).eval()
        self.quantized = quantize.apply(self.model, self.options.quantize, self.device)
        self._setup(config)
        log.debug("loaded %s on %s as %s", name, self.device, self.dtype)
        return self

    @property
    def decoding(self) -> str:
        """What records name as their decoding: the generation's label, and the weights' quantization when they
        have one ("greedy max_new_tokens=128 quantize=int8"). A record made with another one is redone."""
        return self.generation.label + (f" quantize={self.quantized}" if self.quantized else "")

    # -- preprocess (CPU, any thread) -----------------------------------------------------------------
    def prepare(self, image, prompt: Prompt, image_key: Any = None, pixel_values: Any = None) -> Prepared:
        """Pixels and token ids for one (image, prompt). Pass `pixel_values` to reuse an image's pixels."""
        if pixel_values is None:
            pixel_values = self.pixels(image)
        ids, mask = self._prompts.encode(self.processor, self._num_image_tokens, prompt)
        return Prepared(image_key if image_key is not None else id(image), pixel_values, ids, mask)

    def pixels(self, image):
        """What a loader hands on for `image`: uint8 (3, H, W) at the model's size when ClipPixels mirrors the
        processor (an RGB image through Kosmos-2's usual settings: one resize; it is normalised on the device, to
        the processor's values bit for bit), normalised float32 already when the model is on the CPU (no copy to
        save: the loaders, not the model's thread, do the lookup); otherwise the processor's own float32 (3, H, W)."""
        clip = self.clip_pixels
        if clip is not None and getattr(image, "mode", None) == "RGB":
            return clip(image) if str(self.device) == "cpu" else clip.chw(image)
        return self.processor.image_processor(images=[image], return_tensors="np")["pixel_values"][0]

    @property
    def clip_pixels(self) -> ClipPixels | None:
        """ClipPixels for this engine's processor, or None when it cannot mirror it (found once, on first use)."""
        if self._clip_pixels is _UNKNOWN:
            self._clip_pixels = ClipPixels.of(self.processor.image_processor)
        return self._clip_pixels

    # -- forward (device) ------------------------------------------------------------------------------
    def collate(self, batch: Sequence[Prepared] | Collated) -> Collated:
        """`batch`'s pixels stacked into one host tensor, each image once (pixels.collate; pinned when the model is
        on CUDA), ready for `forward_scored(_safe)`: any thread may call it ahead of the model's."""
        if isinstance(batch, Collated):
            return batch
        return collate(batch, self.clip_pixels, pin=is_cuda(self.device))

    def forward(self, batch: Sequence[Prepared] | Collated, stop_at: str | None = None) -> list[str]:
        """Generate for requests whose prompts have the same token length; returns the decoded new text.

        `stop_at`: a special token (e.g. "</object>") that ends a sequence like the end-of-sequence token does.
        """
        return [g.text for g in self.forward_scored(batch, stop_at)]

    def forward_scored(self, batch: Sequence[Prepared] | Collated, stop_at: str | None = None) -> list[Generation]:
        """`forward`, keeping each row's token ids and, when decoding greedily, the probability of each token it
        generated (scores.py turns them into a score per box). Costs one small vector per step, whatever the
        vocabulary: no logits are kept. With the fast decoder, prompts of any token lengths share a batch."""
        import torch

        collated = self.collate(batch)
        requests = collated.requests
        stop = [self.processor.tokenizer.convert_tokens_to_ids(stop_at)] if stop_at else []
        if not self.fast and len({len(p.input_ids) for p in requests}) != 1:
            raise ValueError("a batch must hold prompts of one token length (Kosmos-2's KV cache needs it)")
        with torch.inference_mode():
            embeds = self._image_embeds(collated)
            if self.fast:
                out = self.decoder(
                    embeds, [p.input_ids for p in requests], [p.image_mask for p in requests], [self._eos, *stop]
                )
                rows, steps = [list(p.input_ids) + new for p, new in zip(requests, out.tokens)], out.probs
            else:
                eos = [self._eos, *stop] if stop else self._eos
                rows, steps = generated(self.model, embeds, requests, eos, self._pad, self.generation)
        generations = []
        for i, (p, row) in enumerate(zip(requests, rows)):
            start, prompt = _after_image(p.image_mask), len(p.input_ids)
            probs = None if steps is None else (None,) * (prompt - start) + tuple(steps[i])
            generations.append(Generation(None, tuple(row[start:]), probs, self._markup, self._decode))
        return generations

    def _decode(self, ids: tuple[int, ...]) -> str:
        """Token ids -> text, special tokens kept: called by Generation.text when the record is finished, on the
        thread that finishes it (the writing thread), not the one that drives the model."""
        return self.processor.tokenizer.decode(ids, skip_special_tokens=False)

    def _image_embeds(self, collated: Collated):
        """Projected image features per request, the vision encoder run once per distinct image."""
        import torch

        pixels = collated.on_device(self.device, self.dtype)
        embeds = self.model.get_image_features(pixels, return_dict=True).pooler_output
        if collated.index == tuple(range(len(embeds))):
            return embeds  # an image per request, in order
        return embeds.index_select(0, torch.tensor(collated.index).to(embeds.device, non_blocking=True))

    def forward_scored_safe(self, batch: Sequence[Prepared] | Collated, stop_at: str | None = None) -> list[Generation]:
        """`forward_scored`, in pieces the device has room for.

        On an out-of-memory error the failed piece is retried in halves, and the size that went through is kept
        (`fits`): later batches go in pieces of that size straight away instead of failing again first. Only when
        even one request does not fit is it an OutOfMemory error (the pipeline writes the batch's records as errors)."""
        import torch

        collated = self.collate(batch)
        out: list[Generation] = []
        while len(out) < len(collated):
            size = min(self.fits or len(collated), len(collated) - len(out))
            piece = collated if size == len(collated) else collated.piece(len(out), len(out) + size)
            try:
                out.extend(self.forward_scored(piece, stop_at))
                continue
            except torch.OutOfMemoryError:
                pass  # out of the except block first: its traceback holds the failed batch's tensors until then
            self._free()
            if size == 1:
                raise OutOfMemory(
                    "out of GPU memory on a single image: use a smaller --max-new-tokens "
                    "or --num-beams, or --dtype float16"
                ) from None
            self.fits = size // 2
            log.warning(
                "out of GPU memory at batch %d: going on with batches of %d (pass a smaller --batch-size)",
                size,
                self.fits,
            )
        return out

    def _free(self) -> None:
        """What an out-of-memory error leaves: the decoder's cache and graphs, and the allocator's cached blocks."""
        import torch

        if self.decoder is not None:
            self.decoder.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def batch_size(self, given: int | None = None) -> int:
        """The batch size a run uses: `given` when the user gave one; else on CUDA what the card's free memory holds
        (batch_size.choose_batch_size), on the CPU 8."""
        if given is not None:
            return given
        return batch_size.for_device(self.model, self.device, self.generation, self.dtype)


_UNKNOWN = object()


def _after_image(mask: Sequence[int]) -> int:
    """Index of the first token after </image>: the prompt text and what the model generates."""
    last = max(i for i, m in enumerate(mask) if m)
    return last + 2
