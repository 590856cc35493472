"""Every Kosmos-2 tag string and prompt builder lives here, and only here.

A prompt is text plus, for prompts that point at a region, the normalised boxes the processor turns into
<patch_index> tokens itself (its `bboxes=` argument): we never write patch tokens by hand.
"""

from __future__ import annotations

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
