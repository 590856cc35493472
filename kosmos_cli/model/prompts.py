"""Every Kosmos-2 tag string and prompt builder lives here, and only here.

A prompt is text plus, for prompts that point at a region, the normalised boxes the processor turns into
<patch_index> tokens itself (its `bboxes=` argument): we never write patch tokens by hand.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

GROUNDING = "<grounding>"
OBJECT_END = "</object>"
PRESETS = {
    "brief": "<grounding> An image of",
    "detailed": "<grounding> Describe this image in detail:",
}
DEFAULT_PROMPT = "brief"


@dataclass(frozen=True)
class Prompt:
    """Text for the processor, and the boxes (one list per <phrase>) it places after each phrase."""

    text: str
    bboxes: tuple | None = None

    @property
    def processor_bboxes(self):
        """In the nested-list-of-tuples form Kosmos2Processor checks for."""
        if self.bboxes is None:
            return None
        return [[tuple(float(v) for v in box) for box in boxes] for boxes in self.bboxes]


def caption_prompt(prompt: str | None = None) -> Prompt:
    """A preset name (brief, detailed) or any text; text without <grounding> gets it, so boxes come out."""
    text = PRESETS.get(prompt or DEFAULT_PROMPT) or str(prompt)
    if GROUNDING not in text:
        text = f"{GROUNDING} {text.strip()}"
    return Prompt(text)


def refer_prompt(box: tuple[float, float, float, float]) -> Prompt:
    """Describe a region: "<grounding><phrase> It</phrase><object>…</object> is"."""
    return Prompt(f"{GROUNDING}<phrase> It</phrase> is", ((tuple(box),),))


def find_prompt(phrase: str) -> Prompt:
    """Boxes for a phrase: "<grounding><phrase> a red car</phrase>"; the model goes on with <object>…"""
    return Prompt(f"{GROUNDING}<phrase> {clean_phrase(phrase)}</phrase>")


def clean_phrase(phrase: str) -> str:
    """A phrase with no markup of its own (it must not open or close a tag) and single spaces."""
    return " ".join(phrase.replace("<", " ").replace(">", " ").split())


def display_prompt(prompt: Prompt) -> str:
    """The prompt as recorded in the output: its text (boxes are recorded in their own fields)."""
    return prompt.text


PROMPT_CACHE = 4096  # encoded prompts an engine keeps (prompts repeat: one per task, or one per phrase or box)


class EncodedPrompts:
    """Prompts' token ids and image masks as a processor encodes them, kept (at most PROMPT_CACHE, the oldest dropped
    first) on the engine that owns this: a dict of its own, not an lru_cache on a method, which is the class's and
    would keep every engine alive, with its model and KV cache. Thread-safe: prepare runs on loader threads."""

    def __init__(self) -> None:
        self._kept: dict[tuple, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kept)

    def encode(self, processor, num_image_tokens: int, prompt: Prompt) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """`prompt`'s token ids and image mask (1 where the image's features go)."""
        bboxes = prompt.processor_bboxes
        key = (prompt.text, None if bboxes is None else tuple(tuple(boxes) for boxes in bboxes))  # the boxes are tuples
        found = self._kept.get(key)
        if found is not None:
            return found
        from PIL import Image

        enc = processor(
            images=Image.new("RGB", (8, 8)), text=prompt.text, bboxes=bboxes, num_image_tokens=num_image_tokens
        )
        found = tuple(enc["input_ids"]), tuple(enc["image_embeds_position_mask"])
        with self._lock:
            if len(self._kept) >= PROMPT_CACHE:
                self._kept.pop(next(iter(self._kept)))  # the oldest
            self._kept[key] = found
        return found
