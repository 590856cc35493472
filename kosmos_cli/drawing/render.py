"""Boxes and labels onto an image. Pillow only.

Each entity gets its own colour (a band edged in black or white); a label is a filled box in that colour with
black or white text, whichever contrasts more, so it reads on light and dark pictures alike; it stays inside the
picture. What a row shows (its entities' labels and boxes) its task says (`Task.shapes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

from ..output.reader import Result, result_of
from ..tasks.scores import passes
from .colors import color, text_color
from .fonts import label_font


@dataclass
class Shape:
    """What to draw for one entity: its label, its pixel boxes [x1, y1, x2, y2], its colour, and each box's score
    (None: none known), written after the label ("a red square 0.93")."""

    label: str
    boxes: list[list[float]]
    color: tuple[int, int, int]
    scores: list[float | None] | None = None

    def labels(self) -> list[str]:
        """The label of each box: the entity's label, and the box's score when it has one."""
        scores = self.scores if self.scores is not None and len(self.scores) == len(self.boxes) else None
        if scores is None:
            return [self.label] * len(self.boxes)
        return [f"{self.label} {s:.2f}".strip() if s is not None else self.label for s in scores]


def shapes_of(result: Result | Mapping[str, Any], min_score: float | None = None) -> list[Shape]:
    """The regions of a result (or a record's row), each with its colour and its boxes' scores; `min_score` keeps
    only the boxes scored at least that (scores.passes). A region keeps its colour when some boxes are dropped."""
    if not isinstance(result, Result):
        result = result_of(result)
    shapes = []
    for i, region in enumerate(result.regions):
        kept = [(b, s) for b, s in zip(region.boxes, region.scores) if passes(s, min_score)]
        shapes.append(Shape(region.label, [list(b) for b, _ in kept], color(i), [s for _, s in kept]))
    return shapes


def line_width(width: int, height: int) -> int:
    return max(2, round(max(width, height) / 250))


def font_size(width: int, height: int) -> int:
    return max(12, round(max(width, height) / 36))


def _font(size: int):
    return label_font(size)  # a Unicode font when the system has one (fonts.py)


def annotate(image: Image.Image, shapes: Iterable[Shape], scale: tuple[float, float] = (1.0, 1.0)) -> Image.Image:
    """Draw `shapes` onto `image` (in place) and return it. `scale`: pixel boxes -> this image's pixels."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    lw = line_width(width, height)
    font = _font(font_size(width, height))
    labels = []
    for shape in shapes:
        for box, label in zip(shape.boxes, shape.labels()):
            x1, y1, x2, y2 = _clip(box, scale, width, height)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            if x2 - x1 < 3 or y2 - y1 < 3:  # too thin for a band between two edges: the entity's colour alone
                draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=shape.color)
            else:
                # Pillow draws outlines inwards from these corners, so the line lies inside the box (x2, y2
                # exclusive): a band of the entity's colour between two 1-pixel edges of black or white, seen on any
                # background
                draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=text_color(shape.color), width=lw + 2)
                draw.rectangle((x1 + 1, y1 + 1, x2 - 2, y2 - 2), outline=shape.color, width=lw)
            if label:
                labels.append((shape, label, x1, y1))
    for shape, label, x1, y1 in labels:  # after every box, so no line crosses a label
        _label(draw, label, shape.color, x1, y1, width, height, font)
    return image


def _clip(box, scale, width: int, height: int) -> tuple[int, int, int, int]:
    sx, sy = scale
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((x1 * sx, x2 * sx))
    y1, y2 = sorted((y1 * sy, y2 * sy))
    clip = lambda v, hi: max(0, min(hi, int(round(v))))  # noqa: E731
    return clip(x1, width), clip(y1, height), clip(x2, width), clip(y2, height)


def _label(draw, text: str, fill, x: int, y: int, width: int, height: int, font) -> None:
    (left, top, right, bottom), text, (dx, dy) = label_box(draw, text, font, x, y, width, height)
    draw.rectangle((left, top, right - 1, bottom - 1), fill=fill)
    draw.text((left + dx, top + dy), text, font=font, fill=text_color(fill))


def label_box(draw, text: str, font, x: int, y: int, width: int, height: int):
    """Where a label for a box with top-left corner (x, y) goes: above the box when there is room, else just
    inside it; always inside the width x height picture, its text cut short to fit.

    Returns ((left, top, right, bottom) of the filled box, right and bottom exclusive), the text, and the
    text's offset in the box.
    """
    pad = max(1, getattr(font, "size", 12) // 6)
    text = _fit(draw, text, font, width - 2 * pad)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = min(width, right - left + 2 * pad), min(height, bottom - top + 2 * pad)
    x = max(0, min(x, width - w))
    y = y - h if y - h >= 0 else max(0, min(y, height - h))
    return (x, y, x + w, y + h), text, (pad - left, pad - top)


def _fit(draw, text: str, font, room: int) -> str:
    """`text` cut short with an ellipsis so it fits `room` pixels."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= room:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with "…"
        mid = (lo + hi + 1) // 2
        if draw.textlength(text[:mid].rstrip() + "…", font=font) <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"
