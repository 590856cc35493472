"""refer: describe regions. One record per (image, box): the model's description of that region."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from ..errors import UsageError
from ..inputs.listing import MANIFEST_EXTENSIONS, Item
from ..inputs.locations import display_size
from ..model.prompts import Prompt, refer_prompt
from .base import Found, Mark, Settings, Task, Unit, need_rows
from .markup import parse, snap, strip_tags, to_normalized, to_pixels
from .records import Record

BOX_COLUMNS = ("x1", "y1", "x2", "y2")


class Region(NamedTuple):
    """A unit's box as given: the numbers (pixels, or 0-1 with --normalized), what is wrong with the row that gave
    them (None: nothing), and the box in pixels as records key it (None until the image's size is known)."""

    box: Any
    problem: str | None
    box_px: list[float] | None


@dataclass
class ReferRecord(Record):
    """box_px (as given, pixels), box_model_px (as the model saw it), description."""

    task: ClassVar[str] = "refer"
    fields: ClassVar[tuple[str, ...]] = ("box_px", "box_model_px", "description")

    box_px: list[float] | None = None
    box_model_px: list[int] | None = None
    description: str | None = None

    def own_dict(self) -> dict[str, Any]:
        return {
            "box_px": None if self.box_px is None else list(self.box_px),
            "box_model_px": None if self.box_model_px is None else list(self.box_model_px),
            "description": self.description,
        }


class Refer(Task):
    """Describe regions: "<grounding><phrase> It</phrase><object>(the box)</object> is" -> a description.

    `boxes` (from the command line) go with every image; without them each manifest row's x1, y1, x2, y2 is
    its box. Boxes are pixels of the image as displayed, or 0-1 of its sides with `normalized`.
    """

    name = "refer"
    noun = "region"
    record_type = ReferRecord
    per_row = True
    key_fields = ("box_px",)

    def __init__(self, boxes=None, normalized: bool = False):
        self.normalized = normalized
        try:
            self.boxes = [parse_box(b, normalized) for b in boxes] if boxes else None
        except ValueError as exc:
            raise UsageError(f"{{param}}: {exc}", param="boxes") from None
        self._prompt_text = refer_prompt((0.0, 0.0, 1.0, 1.0)).text

    @classmethod
    def arrow_fields(cls) -> list:
        import pyarrow as pa

        return [
            pa.field("box_px", pa.list_(pa.float64())),
            pa.field("box_model_px", pa.list_(pa.int32())),
            pa.field("description", pa.string()),
        ]

    @classmethod
    def key(cls, row: Mapping[str, Any], base: str | None = None, link: bool | None = None) -> str:
        """The image and its box as four floats: a box given as 10 or 10.0 (or -0.0 and 0) is one region."""
        return super().key({**row, "box_px": _canonical_box(row.get("box_px"))}, base, link)

    @classmethod
    def owns(cls, row: Mapping[str, Any]) -> bool:
        return "box_px" in row or "description" in row

    @classmethod
    def shapes(cls, row: Mapping[str, Any]) -> list[Found]:
        return [(row.get("description") or "", [list(row["box_px"])] if row.get("box_px") else [])]

    @classmethod
    def caption_html(cls, row: Mapping[str, Any], mark: Mark) -> str:
        return mark(row.get("description") or "(no description)", 0)

    def check(self, inputs: Sequence[Any]) -> None:
        if self.boxes is None:
            need_rows(
                inputs,
                UsageError(
                    "kosmos refer needs boxes: pass {param} X1,Y1,X2,Y2, or a manifest with path,x1,y1,x2,y2 columns",
                    param="boxes",
                ),
            )
            return
        for arg in inputs:  # boxes given for images named directly are checked against their size
            if not isinstance(arg, str) or not os.path.isfile(arg) or arg.lower().endswith(MANIFEST_EXTENSIONS):
                continue
            size = display_size(arg)
            if size is None:
                continue  # not readable: its records will say why
            for box in self.boxes:
                try:
                    check_fits(box, *size, self.normalized)
                except ValueError:
                    raise UsageError(
                        f"{{param}} {format_box(box)} is outside {arg}, which is {size[0]}x{size[1]} "
                        "pixels as displayed (EXIF orientation applied)",
                        param="boxes",
                    ) from None

    text_field, facet = "description", "region"

    @classmethod
    def entity_columns(cls, table) -> tuple[Any, Any, Any, Any]:
        """One entity a record: its region is its one box (none when not 4 numbers), its description the label."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        region = table.column("box_px").combine_chunks()
        whole = pc.fill_null(pc.equal(pc.list_value_length(region), 4), False).to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(whole)]).astype(np.int32)
        boxes = pa.ListArray.from_arrays(pa.array(offsets), region.filter(pa.array(whole)))
        description = table.column("description").combine_chunks()
        return np.arange(table.num_rows), description, boxes, pa.nulls(len(boxes), pa.list_(pa.float64()))

    @classmethod
    def facet_values(cls, table) -> Any:
        import pyarrow as pa

        regions = table.column("box_px").to_pylist()
        return pa.array([None if b is None else format_box([float(v) for v in b]) for b in regions], pa.string())

    def units(self, item: Item, settings: Settings) -> list[Unit]:
        extra = dict(item.extra)
        if self.boxes is not None:
            given: list[tuple[Any, str | None]] = [(box, None) for box in self.boxes]
        else:
            values = [extra.pop(c, None) for c in BOX_COLUMNS]
            try:
                given = [(parse_box(values, self.normalized), None)]
            except ValueError as exc:
                given = [(_numbers(values), f"bad box in manifest row: {exc}")]
        size = display_size(item.path, item.data) if self.normalized else None  # box_px (the resume key) needs it
        units = []
        for box, problem in given:
            box_px = self._box_px(box, size)
            region = Region(box, problem, box_px)
            units.append(
                self.unit(item, settings, {"box_px": box_px}, prompt=self._prompt_text, data=region, extra=dict(extra))
            )
        return units

    def prompt(self, unit: Unit) -> Prompt:
        return refer_prompt(self._placed(unit)[0])

    def own_fields(self, unit: Unit, text: str | None) -> dict[str, Any]:
        """The region as given and as the model saw it (once its image is loaded and the box fits it), and the
        model's description of it."""
        region: Region = unit.data
        box_px, box_model_px, description = region.box_px, None, None
        if unit.size is not None:
            try:
                _, box_px, box_model_px = self._placed(unit)
            except ValueError:  # a bad row, a box outside the image: as given, never seen by the model
                pass
        if text is not None:
            caption, _ = parse(text)
            lead = strip_tags(self._prompt_text).strip()  # "It is"
            if caption.startswith(lead):
                caption = caption[len(lead) :]
            description = clean_description(caption)
        return {"box_px": box_px, "box_model_px": box_model_px, "description": description}

    def _placed(self, unit: Unit) -> tuple[tuple[float, float, float, float], list[float] | None, list[int]]:
        """The unit's box on its loaded image: (0-1 of its sides, pixels as given, pixels as the model sees it);
        ValueError when there is none to ask about (a bad manifest row) or it reaches outside the image."""
        region: Region = unit.data
        if region.problem:
            raise ValueError(region.problem)
        width, height = unit.shown
        check_fits(region.box, width, height, self.normalized)
        box_px = region.box_px if region.box_px is not None else self._box_px(region.box, (width, height))
        normalized = region.box if self.normalized else to_normalized(region.box, width, height)
        return normalized, box_px, to_pixels(snap(normalized), width, height)

    def _box_px(self, box, size) -> list[float] | None:
        if box is None:
            return None
        if not self.normalized:
            return _canonical_box(box)
        if size is None:
            return None
        width, height = size
        return _canonical_box([box[0] * width, box[1] * height, box[2] * width, box[3] * height])


def parse_box(value, normalized: bool = False) -> tuple[float, float, float, float]:
    """ "x1,y1,x2,y2" or four numbers -> a box; ValueError says what is wrong with it."""
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
        x1, y1, x2, y2 = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"a box is 4 numbers x1,y1,x2,y2, got {format_box(parts)}") from None
    box = (x1, y1, x2, y2)
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"a box is 4 finite numbers, got {format_box(box)}")
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
        raise ValueError(
            f"box {format_box(box)} is outside the {width}x{height} image "
            "(pixels of the image as displayed, EXIF orientation applied)"
        )


def clean_description(text: str) -> str:
    """What the model said about a region: single spaces, no final full stop."""
    text = " ".join(text.split())
    return text[:-1].rstrip() if text.endswith(".") else text


def _canonical_box(box):
    """`box` with its values as floats, -0.0 as 0.0; anything else (None, a value that is not a number) as it is."""
    try:
        return [float(v) + 0.0 for v in box]
    except (TypeError, ValueError):
        return box


def _numbers(values) -> list[float] | None:
    """The values as floats when they are four numbers (kept on a bad row's record), else None."""
    try:
        box = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return box if len(box) == 4 and all(math.isfinite(v) for v in box) else None


def format_box(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
