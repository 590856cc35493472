"""What each command asks of the model, and how the answer becomes a record.

A job turns an input `Item` into units (one per record: an image for ground, an image and region for refer, an
image and phrase for find), gives each unit its prompt once the image's size is known, and fills the record
from the generated text. The pipeline runs any job the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .grounding import parse, snap, strip_tags, to_normalized, to_pixels
from .images import display_size
from .prompts import OBJECT_END, Prompt, caption_prompt, clean_phrase, find_prompt, refer_prompt
from .records import Entity, Record, record_key
from .sources import Item

BOX_COLUMNS = ("x1", "y1", "x2", "y2")


@dataclass
class Unit:
    """One record to produce: its resume key and the record being filled."""

    key: str
    record: Record
    data: object = None  # what the job needs to build the prompt (a box, a phrase)


class Job:
    task = "ground"
    per_row = False  # True: several records per image, so manifest rows naming one image are all kept
    stop_at: str | None = None  # a token after which nothing the job reads can follow: generation ends there

    def units(self, item: Item, model: str) -> list[Unit]:
        raise NotImplementedError

    def prompt(self, unit: Unit, width: int, height: int) -> Prompt:
        """The prompt for `unit` on an image of this displayed size; raise ValueError to fail just this unit."""
        raise NotImplementedError

    def finish(self, unit: Unit, text: str) -> None:
        raise NotImplementedError


class GroundJob(Job):
    """Caption an image and ground the phrases in it."""

    task = "ground"

    def __init__(self, prompt: str | None = None):
        self._prompt = caption_prompt(prompt)

    def units(self, item: Item, model: str) -> list[Unit]:
        record = Record(path=item.path, task=self.task, prompt=self._prompt.text, model=model, extra=dict(item.extra))
        return [Unit(record_key({"path": item.path}, self.task), record)]

    def prompt(self, unit: Unit, width: int, height: int) -> Prompt:
        return self._prompt

    def finish(self, unit: Unit, text: str) -> None:
        record = unit.record
        caption, parsed = parse(text, strip_prompt=self._prompt.text)
        record.caption = caption
        record.entities = [
            Entity(p.phrase, p.start, p.end, [list(b) for b in p.boxes],
                   [to_pixels(b, record.width, record.height) for b in p.boxes])
            for p in parsed
        ]


class ReferJob(Job):
    """Describe regions: "<grounding><phrase> It</phrase><object>(the box)</object> is" -> a description.

    `boxes` (from the command line) go with every image; without them each manifest row's x1, y1, x2, y2 is
    its box. Boxes are pixels of the image as displayed, or 0-1 of its sides with `normalized`.
    """

    task = "refer"
    per_row = True

    def __init__(self, boxes=None, normalized: bool = False):
        self.normalized = normalized
        self.boxes = [parse_box(b, normalized) for b in boxes] if boxes else None
        self._prompt_text = refer_prompt((0.0, 0.0, 1.0, 1.0)).text

    def units(self, item: Item, model: str) -> list[Unit]:
        extra = dict(item.extra)
        if self.boxes is not None:
            given = [(box, None) for box in self.boxes]
        else:
            values = [extra.pop(c, None) for c in BOX_COLUMNS]
            try:
                given = [(parse_box(values, self.normalized), None)]
            except ValueError as exc:
                given = [(_numbers(values), f"bad box in manifest row: {exc}")]
        size = display_size(item.path) if self.normalized else None  # box_px (the resume key) needs the size
        units = []
        for box, problem in given:
            record = Record(path=item.path, task=self.task, prompt=self._prompt_text, model=model, extra=extra)
            record.box_px = self._box_px(box, size)
            units.append(Unit(record_key({"path": item.path, "box_px": record.box_px}, self.task), record,
                              (box, problem)))
        return units

    def prompt(self, unit: Unit, width: int, height: int) -> Prompt:
        box, problem = unit.data
        if problem:
            raise ValueError(problem)
        check_fits(box, width, height, self.normalized)
        record = unit.record
        if record.box_px is None:
            record.box_px = self._box_px(box, (width, height))
        normalized = box if self.normalized else to_normalized(box, width, height)
        record.box_model_px = to_pixels(snap(normalized), width, height)
        return refer_prompt(normalized)

    def finish(self, unit: Unit, text: str) -> None:
        caption, _ = parse(text)
        lead = strip_tags(self._prompt_text).strip()  # "It is"
        if caption.startswith(lead):
            caption = caption[len(lead):]
        unit.record.description = clean_description(caption)

    def _box_px(self, box, size) -> list[float] | None:
        if box is None:
            return None
        if not self.normalized:
            return [float(v) for v in box]
        if size is None:
            return None
        width, height = size
        return [box[0] * width, box[1] * height, box[2] * width, box[3] * height]


class FindJob(Job):
    """Boxes for phrases: "<grounding><phrase> a red car</phrase>" -> the <object> the model gives it.

    `phrases` (from the command line) go with every image; without them each manifest row's `phrase` is used.
    A phrase the model does not ground gets empty box lists.
    """

    task = "find"
    per_row = True
    stop_at = OBJECT_END  # the boxes are all in the first <object>...</object>: no need to generate on

    def __init__(self, phrases=None):
        self.phrases = [check_phrase(p) for p in phrases] if phrases else None

    def units(self, item: Item, model: str) -> list[Unit]:
        extra = dict(item.extra)
        if self.phrases is not None:
            given = [(p, None) for p in self.phrases]
        else:
            value = extra.pop("phrase", None)
            try:
                given = [(check_phrase(value), None)]
            except ValueError as exc:
                given = [(value if isinstance(value, str) else None, f"bad phrase in manifest row: {exc}")]
        units = []
        for phrase, problem in given:
            record = Record(path=item.path, task=self.task, model=model, extra=extra, phrase=phrase)
            if problem is None:
                record.prompt = find_prompt(phrase).text
            units.append(Unit(record_key({"path": item.path, "phrase": phrase}, self.task), record, problem))
        return units

    def prompt(self, unit: Unit, width: int, height: int) -> Prompt:
        if unit.data:
            raise ValueError(unit.data)
        return find_prompt(unit.record.phrase)

    def finish(self, unit: Unit, text: str) -> None:
        record = unit.record
        _, parsed = parse(text)
        # the prompt's own phrase opens the text; it is grounded only if the model put an <object> right after it
        if parsed and parsed[0].phrase and parsed[0].start == 0:
            record.boxes = [list(b) for b in parsed[0].boxes]
            record.boxes_px = [to_pixels(b, record.width, record.height) for b in parsed[0].boxes]


def parse_box(value, normalized: bool = False) -> tuple[float, float, float, float]:
    """"x1,y1,x2,y2" or four numbers -> a box; ValueError says what is wrong with it."""
    if isinstance(value, str):
        parts = [p for p in value.replace(",", " ").split()]
    else:
        parts = list(value)
    if any(p is None or (isinstance(p, str) and not p.strip()) for p in parts):
        missing = [c for c, p in zip(BOX_COLUMNS, parts) if p is None or (isinstance(p, str) and not p.strip())]
        raise ValueError(f"no value for {', '.join(missing)}: a box is x1,y1,x2,y2")
    if len(parts) != 4:
        raise ValueError(f"a box is 4 numbers x1,y1,x2,y2, got {len(parts)}")
    try:
        box = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"a box is 4 numbers x1,y1,x2,y2, got {format_box(parts)}") from None
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"a box is 4 finite numbers, got {format_box(box)}")
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {format_box(box)} is empty: x2 must be greater than x1 and y2 greater than y1")
    if min(box) < 0:
        raise ValueError(f"box {format_box(box)} is outside the image: coordinates cannot be negative")
    if normalized and max(box) > 1:
        raise ValueError(f"box {format_box(box)} is not normalised: with --normalized every value lies in 0-1")
    if not normalized and x2 - x1 < 1 and y2 - y1 < 1:
        raise ValueError(f"box {format_box(box)} is smaller than a pixel: for 0-1 boxes pass --normalized")
    return box


def check_fits(box, width: int, height: int, normalized: bool = False) -> None:
    """ValueError when `box` (pixels, or 0-1 with `normalized`) reaches outside a width x height image."""
    if normalized:
        return  # 0-1 boxes always fit; parse_box checked the range
    if box[2] > width or box[3] > height:
        raise ValueError(f"box {format_box(box)} is outside the {width}x{height} image "
                         "(pixels of the image as displayed, EXIF orientation applied)")


def check_phrase(value) -> str:
    """A phrase to find, cleaned of markup; ValueError when there is nothing left."""
    if not isinstance(value, str) or not clean_phrase(value):
        raise ValueError("a phrase must be some text, e.g. 'a red car'")
    return clean_phrase(value)


def clean_description(text: str) -> str:
    """What the model said about a region: single spaces, no final full stop."""
    text = " ".join(text.split())
    return text[:-1].rstrip() if text.endswith(".") else text


def _numbers(values) -> list[float] | None:
    """The values as floats when they are four numbers (kept on a bad row's record), else None."""
    try:
        box = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return box if len(box) == 4 and all(math.isfinite(v) for v in box) else None


def format_box(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
