"""Generated Kosmos-2 text -> caption, entities, normalised and pixel boxes. Pure functions, no torch.

This follows transformers' `Kosmos2Processor.post_process_generation` (the same caption, the same spans, the
same boxes; tests compare the two on many strings) and fixes what that function leaves to the caller:

- the text after the end-of-sequence token is ignored;
- a box whose corners came out reversed is put in order (x1 <= x2, y1 <= y2);
- an object the model gave without a phrase keeps its boxes with an empty phrase instead of an invented name;
- the prompt's own words can be taken off the front of the caption, with every span shifted to match.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

GRID = 32  # Kosmos-2 cuts the image into 32x32 cells: 1024 <patch_index_NNNN> tokens

_TAG = re.compile(r"<.*?>")
_ENTITY = re.compile(
    r"(?:(<phrase>([^<]+)</phrase>))?<object>((?:<patch_index_\d+><patch_index_\d+></delimiter_of_multi_objects/>)*"
    r"<patch_index_\d+><patch_index_\d+>)</object>"
)
_PATCH = re.compile(r"<patch_index_(\d+)>")
EOS = "</s>"
END_OF_IMAGE = "</image>"


@dataclass(frozen=True)
class Parsed:
    """One grounded phrase in a caption: text, span (start, end) in the caption, normalised boxes."""

    phrase: str
    start: int
    end: int
    boxes: tuple[tuple[float, float, float, float], ...]


def strip_tags(text: str) -> str:
    return _TAG.sub("", text)


def parse(text: str, strip_prompt: str | None = None, grid: int = GRID) -> tuple[str, list[Parsed]]:
    """Caption and entities of one decoded generation (special tokens kept).

    `strip_prompt`: the prompt's markup (e.g. "<grounding> An image of"); its words are removed from the start
    of the caption when they are there and no entity lies inside them.
    """
    text = text.split(END_OF_IMAGE)[-1].split(EOS)[0]
    flat = strip_tags(text)
    found = []
    for match in _ENTITY.finditer(text):
        if match.group(1):
            phrase, (start, end) = match.group(2), match.span(2)
        else:
            phrase, start = "", match.start(0)
            end = start
        pairs = _PATCH.findall(match.group(3))
        boxes = tuple(patch_to_box(int(a), int(b), grid) for a, b in zip(pairs[::2], pairs[1::2]))
        start, end = len(strip_tags(text[:start])), len(strip_tags(text[:end]))
        if phrase:  # the span covers the phrase without its surrounding spaces
            start += len(phrase) - len(phrase.lstrip())
            end -= len(phrase) - len(phrase.rstrip())
        found.append((phrase.strip(), start, end, boxes))

    lead = len(flat) - len(flat.lstrip())
    caption = flat.strip()
    entities = [Parsed(p, s - lead, e - lead, b) for p, s, e, b in found]
    if strip_prompt is not None:
        caption, entities = _drop_prompt(caption, entities, strip_tags(strip_prompt).strip())
    return caption, entities


def _drop_prompt(caption: str, entities: list[Parsed], prompt: str) -> tuple[str, list[Parsed]]:
    if not prompt or not caption.startswith(prompt) or any(e.start < len(prompt) for e in entities):
        return caption, entities
    rest = caption[len(prompt) :]
    shift = len(prompt) + len(rest) - len(rest.lstrip())
    return rest.strip(), [Parsed(e.phrase, e.start - shift, e.end - shift, e.boxes) for e in entities]


def patch_to_box(ul: int, lr: int, grid: int = GRID) -> tuple[float, float, float, float]:
    """Two patch indices -> normalised (x1, y1, x2, y2), corners put in order.

    The same arithmetic as Kosmos-2's demo (`patch_index_to_coordinate`): whole cells when the corners share a
    row or column, cell centres otherwise.
    """
    cell = 1.0 / grid
    ux, uy, lx, ly = ul % grid, ul // grid, lr % grid, lr // grid
    if ul == lr or ux == lx or uy == ly:
        x1, y1, x2, y2 = ux * cell, uy * cell, lx * cell + cell, ly * cell + cell
    else:
        x1, y1, x2, y2 = ux * cell + cell / 2, uy * cell + cell / 2, lx * cell + cell / 2, ly * cell + cell / 2
    return ordered((x1, y1, x2, y2))


def box_to_patches(box: tuple[float, float, float, float], grid: int = GRID) -> tuple[int, int]:
    """Normalised box -> the (upper-left, lower-right) patch indices the processor gives it."""
    x1, y1, x2, y2 = box
    ul = math.floor(y1 * grid) * grid + math.floor(x1 * grid)
    lr = math.ceil(y2 * grid - 1) * grid + math.ceil(x2 * grid - 1)
    return ul, lr


def snap(box: tuple[float, float, float, float], grid: int = GRID) -> tuple[float, float, float, float]:
    """The box as the model sees it: quantised to the grid and read back."""
    return patch_to_box(*box_to_patches(box, grid), grid)


def ordered(box) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def to_pixels(box, width: int, height: int) -> list[int]:
    """Normalised box -> whole pixels of a width x height image, ordered and clipped to it."""
    x1, y1, x2, y2 = ordered(box)
    clip = lambda v, hi: max(0, min(hi, int(round(v * hi))))  # noqa: E731
    return [clip(x1, width), clip(y1, height), clip(x2, width), clip(y2, height)]


def to_normalized(box_px, width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box_px
    return (x1 / width, y1 / height, x2 / width, y2 / height)
