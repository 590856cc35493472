"""Load Kosmos-2 once; preprocess -> forward -> postprocess, batched, on the device.

The shape follows transformers' pipelines: `prepare` runs on the CPU in background workers (processor
calls), `forward` runs under `torch.inference_mode()` on the device, `decode` turns token ids back into text.
torch is imported here, lazily (transformers in checkpoint.py, which reads the checkpoint, and decoder.py).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ModelError, OutOfMemory, UsageError
from ..options import GenerationOptions, ModelOptions
from ..tasks.scores import Generation, Markup
from . import checkpoint, quantize
from .decoder import Decoder, checkpoint_obstacle
from .files import local_model_path
from .prompts import Prompt

log = logging.getLogger("kosmos_cli")

DEFAULT_BATCH_SIZE = 8  # on the CPU, and wherever the batch size is not chosen from the device's memory
AUTO_BATCH_SIZES = (64, 256)  # on CUDA, the batch size chosen from free memory lies in this range where it fits
# the lowest versions the code runs on, as pyproject.toml declares them (.ci/lowest runs the tests on them): the model
# calls of transformers 5.24 (get_image_features, cache=/cache_length=; 5.17 drops cache= silently, decoding with
# no KV cache), and the torch transformers 5.24 itself needs (below 2.6 it acts as if torch were not installed)
NEEDS = {"torch": "2.6", "transformers": "5.24"}
PROMPT_CACHE = 4096  # encoded prompts an engine keeps (prompts repeat: one per task, or one per phrase or box)


@dataclass
class Prepared:
    """One request, preprocessed on the CPU: an image's pixels and one prompt's token ids."""

    image_key: Any  # requests with the same key share one pass of the vision encoder
    pixel_values: Any  # numpy float32 (3, H, W)
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
        self._lock = threading.Lock()
        self._clip_pixels: Any = _UNKNOWN  # ClipPixels for this processor, or None: not known until first used
        self.fast = False  # set on loading: decoder.Decoder decodes (see GenerationOptions.fast)
        self.decoder: Any = None  # that decoder (its cache and CUDA graphs live from one batch to the next)
        self.fits: int | None = None  # after an out-of-memory error: the largest batch that went through since
        self.quantized: str | None = None  # "int8" once the model's weights are (quantize.py)
        self._prompts: dict[tuple, tuple[tuple[int, ...], tuple[int, ...]]] = {}  # encoded prompts, by (text, boxes)

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
        ids, mask = self._encode_prompt(prompt.text, _freeze(prompt.processor_bboxes))
        return Prepared(image_key if image_key is not None else id(image), pixel_values, ids, mask)

    def pixels(self, image):
        """The model's pixels for `image`: numpy float32 (3, H, W), bit for bit what the image processor gives.

        An RGB image through Kosmos-2's usual processor settings takes ClipPixels (one resize and a table lookup);
        anything else goes through the processor itself."""
        clip = self._clip_pixels
        if clip is _UNKNOWN:
            clip = self._clip_pixels = ClipPixels.of(self.processor.image_processor)
        if clip is not None and getattr(image, "mode", None) == "RGB":
            return clip(image)
        return self.processor.image_processor(images=[image], return_tensors="np")["pixel_values"][0]

    def _encode_prompt(self, text: str, bboxes) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """A prompt's token ids and image mask, kept on the engine (a dict of its own, not an lru_cache on the
        method: that one cache is the class's and would keep every engine alive, with its model and KV cache)."""
        key = (text, bboxes)
        found = self._prompts.get(key)
        if found is not None:
            return found
        from PIL import Image

        blank = Image.new("RGB", (8, 8))
        enc = self.processor(images=blank, text=text, bboxes=_thaw(bboxes), num_image_tokens=self._num_image_tokens)
        found = tuple(enc["input_ids"]), tuple(enc["image_embeds_position_mask"])
        with self._lock:  # prepare runs on loader threads
            if len(self._prompts) >= PROMPT_CACHE:
                self._prompts.pop(next(iter(self._prompts)))  # the oldest
            self._prompts[key] = found
        return found

    # -- forward (device) ------------------------------------------------------------------------------
    def forward(self, batch: Sequence[Prepared], stop_at: str | None = None) -> list[str]:
        """Generate for requests whose prompts have the same token length; returns the decoded new text.

        `stop_at`: a special token (e.g. "</object>") that ends a sequence like the end-of-sequence token does.
        """
        return [g.text for g in self.forward_scored(batch, stop_at)]

    def forward_scored(self, batch: Sequence[Prepared], stop_at: str | None = None) -> list[Generation]:
        """`forward`, keeping each row's token ids and, when decoding greedily, the probability of each token it
        generated (scores.py turns them into a score per box). Costs one small vector per step, whatever the
        vocabulary: no logits are kept. With the fast decoder, prompts of any token lengths share a batch."""
        import torch

        if self.fast:
            return self._forward_fast(batch, stop_at)
        lengths = {len(p.input_ids) for p in batch}
        if len(lengths) != 1:
            raise ValueError("a batch must hold prompts of one token length (Kosmos-2's KV cache needs it)")
        eos = [self._eos, self.processor.tokenizer.convert_tokens_to_ids(stop_at)] if stop_at else self._eos
        keeper = _chosen_probabilities() if self.generation.num_beams == 1 else None  # beams: no scores
        with torch.inference_mode():
            embeds = self._image_embeds(batch)
            input_ids = torch.tensor([p.input_ids for p in batch], device=self.device)
            mask = torch.tensor([p.image_mask for p in batch], device=self.device)
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                image_embeds=embeds,
                image_embeds_position_mask=mask,
                pad_token_id=self._pad,
                eos_token_id=eos,
                **({"logits_processor": [keeper]} if keeper is not None else {}),
                **self.generation.generate_kwargs(),
            )
        start, prompt = _after_image(batch[0].image_mask), input_ids.shape[1]
        ids = out[:, start:].cpu()
        steps = keeper.rows() if keeper is not None else None
        if steps is not None and len(steps[0]) != out.shape[1] - prompt:
            steps = None  # not one probability per generated token: no scores rather than wrong ones
        given = (None,) * (prompt - start)
        return [
            Generation(None, tuple(row), None if steps is None else given + tuple(steps[i]), self._markup, self._decode)
            for i, row in enumerate(ids.tolist())
        ]

    def _forward_fast(self, batch: Sequence[Prepared], stop_at: str | None) -> list[Generation]:
        """forward_scored through decoder.Decoder: the same tokens and probabilities as generate gives."""
        import torch

        stops = [self._eos, self.processor.tokenizer.convert_tokens_to_ids(stop_at)] if stop_at else [self._eos]
        with torch.inference_mode():
            embeds = self._image_embeds(batch)
            out = self.decoder(embeds, [p.input_ids for p in batch], [p.image_mask for p in batch], stops)
        generations = []
        for p, new, probs in zip(batch, out.tokens, out.probs):
            start = _after_image(p.image_mask)
            ids = tuple(p.input_ids[start:]) + tuple(new)
            given = (None,) * (len(p.input_ids) - start)
            generations.append(Generation(None, ids, given + tuple(probs), self._markup, self._decode))
        return generations

    def _decode(self, ids: tuple[int, ...]) -> str:
        """Token ids -> text, special tokens kept: called by Generation.text when the record is finished, on the
        thread that finishes it (the writing thread), not the one that drives the model."""
        return self.processor.tokenizer.decode(ids, skip_special_tokens=False)

    def _image_embeds(self, batch: Sequence[Prepared]):
        """Projected image features per request, the vision encoder run once per distinct image."""
        import torch

        keys = list(dict.fromkeys(p.image_key for p in batch))
        first = {p.image_key: p for p in reversed(batch)}
        pixels = torch.from_numpy(_stack([first[k].pixel_values for k in keys])).to(self.device, self.dtype)
        embeds = self.model.get_image_features(pixels, return_dict=True).pooler_output
        index = torch.tensor([keys.index(p.image_key) for p in batch], device=embeds.device)
        return embeds.index_select(0, index)

    def forward_scored_safe(self, batch: Sequence[Prepared], stop_at: str | None = None) -> list[Generation]:
        """`forward_scored`, in pieces the device has room for.

        On an out-of-memory error the failed piece is retried in halves, and the size that went through is kept
        (`fits`): later batches go in pieces of that size straight away instead of failing again first. Only when
        even one request does not fit is it an OutOfMemory error (the pipeline writes the batch's records as errors)."""
        import torch

        out: list[Generation] = []
        while len(out) < len(batch):
            size = min(self.fits or len(batch), len(batch) - len(out))
            piece = batch[len(out) : len(out) + size]
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
        (choose_batch_size), on the CPU 8."""
        if given is not None:
            return given
        import torch

        device = torch.device(self.device)
        if device.type != "cuda" or self.model is None:
            return DEFAULT_BATCH_SIZE
        free, _ = torch.cuda.mem_get_info(device)
        model_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return choose_batch_size(free, model_bytes, row_bytes(self.model.config, self.generation, self.dtype))


def check_versions() -> None:
    """ModelError, in one line naming the version needed, when the installed torch or transformers is older than
    NEEDS (torch first: transformers ignores a torch older than it supports)."""
    import torch
    import transformers

    for name, installed in (("torch", torch.__version__), ("transformers", transformers.__version__)):
        if _release(installed) < _release(NEEDS[name]):  # an unreadable version string is taken as new enough
            raise ModelError(
                f"{name} {installed} is installed, but kosmos needs {name}>={NEEDS[name]}: "
                f"pip install -U '{name}>={NEEDS[name]}'"
            )


def _release(version: str) -> tuple[int, ...]:
    """The release numbers a version string starts with: "2.6.0+cu124" -> (2, 6, 0), "5.24.0.dev0" -> (5, 24, 0)."""
    found = re.match(r"\d+(\.\d+)*", str(version).strip())
    return tuple(int(n) for n in found.group(0).split(".")) if found else (1 << 30,)


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


_UNKNOWN = object()


class ClipPixels:
    """What a PIL-backed CLIP image processor (Kosmos-2's) makes of an RGB image, computed directly.

    The processor resizes with Pillow to a fixed size, then rescales (in float64, to float32) and normalises each
    channel (in float32), in several passes of Python and numpy. A uint8 value has 256 possible results per channel,
    so they are computed once into `table` with the processor's own arithmetic, and an image's pixels are one
    Pillow resize and one lookup: the same float32 values, bit for bit, at a fraction of the cost.
    """

    def __init__(self, height: int, width: int, resample: int, scale: float, mean, std):
        import numpy as np

        self.size, self.resample = (width, height), resample
        values = (np.arange(256, dtype=np.float64) * scale).astype(np.float32)  # the processor's rescale
        mean32, std32 = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
        self.table = np.stack([(values - mean32[c]) / std32[c] for c in range(3)])  # its normalise: (3, 256)

    @classmethod
    def of(cls, processor) -> ClipPixels | None:
        """ClipPixels for `processor` when it is one we compute exactly (Pillow backend, a fixed output size,
        rescale and normalise on, a centre crop to that same size or none, no padding); otherwise None."""
        try:
            if getattr(processor, "backend", None) != "pil" or getattr(processor, "do_pad", None):
                return None
            size, crop = processor.size, processor.crop_size
            height, width = size.height, size.width
            if not (processor.do_resize and processor.do_rescale and processor.do_normalize and height and width):
                return None
            if processor.do_center_crop and (crop.height, crop.width) != (height, width):
                return None
            mean, std = list(processor.image_mean), list(processor.image_std)
            if len(mean) != 3 or len(std) != 3 or getattr(processor, "reducing_gap", None) is not None:
                return None
            resample = processor.resample if processor.resample is not None else 2  # the backend's default: bilinear
            return cls(int(height), int(width), int(resample), float(processor.rescale_factor), mean, std)
        except (AttributeError, TypeError, ValueError):
            return None

    @classmethod
    def default(cls) -> ClipPixels:
        """Kosmos-2's own settings (224 x 224, bicubic, CLIP's mean and std)."""
        return cls(224, 224, 3, 1 / 255, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

    def resized(self, image):
        """The image at the model's size: uint8 (H, W, 3)."""
        import numpy as np

        return np.asarray(image.resize(self.size, resample=self.resample))

    def __call__(self, image):
        """The model's pixels: float32 (3, H, W)."""
        import numpy as np

        hwc = self.resized(image)
        return np.stack([self.table[c].take(hwc[:, :, c]) for c in range(3)])


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


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"{{param}} {device}: CUDA is not available here; use {{param}} cpu", param="device")
    try:
        torch.device(device)
    except RuntimeError:
        raise UsageError(
            f"unknown device {device!r} ({{param}}): use auto, cpu, cuda or cuda:N", param="device"
        ) from None
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def _after_image(mask: Sequence[int]) -> int:
    """Index of the first token after </image>: the prompt text and what the model generates."""
    last = max(i for i, m in enumerate(mask) if m)
    return last + 2


def _stack(arrays):
    import numpy as np

    return np.ascontiguousarray(np.stack(arrays))


def _freeze(bboxes):
    if bboxes is None:
        return None
    return tuple(tuple(tuple(b) for b in boxes) for boxes in bboxes)


def _thaw(bboxes):
    if bboxes is None:
        return None
    return [[tuple(b) for b in boxes] for boxes in bboxes]
