"""find: boxes for phrases. One record per (image, phrase): the boxes the model gives that phrase."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import UsageError
from ..inputs.listing import Item
from ..model.prompts import OBJECT_END, Prompt, clean_phrase, find_prompt
from .base import Found, Mark, Settings, Task, Unit, need_rows
from .markup import parse, to_pixels
from .records import Record
from .scores import entity_scores


@dataclass
class FindRecord(Record):
    """phrase, boxes (0-1), boxes_px and a score per box (records.Entity says what it is); empty lists when the
    model did not ground the phrase; scores None when the decoding kept no probabilities (beam search)."""

    task: ClassVar[str] = "find"
    fields: ClassVar[tuple[str, ...]] = ("phrase", "boxes", "boxes_px", "scores")

    phrase: str | None = None
    boxes: list[list[float]] = field(default_factory=list)
    boxes_px: list[list[int]] = field(default_factory=list)
    scores: list[float | None] | None = None

    def own_dict(self) -> dict[str, Any]:
        return {
            "phrase": self.phrase,
            "boxes": [list(b) for b in self.boxes],
            "boxes_px": [list(b) for b in self.boxes_px],
            "scores": None if self.scores is None else list(self.scores),
        }


class Find(Task):
    """Boxes for phrases: "<grounding><phrase> a red car</phrase>" -> the <object> the model gives it.

    `phrases` (from the command line) go with every image; without them each manifest row's `phrase` is used.
    A phrase the model does not ground gets empty box lists.
    """

    name = "find"
    noun = "phrase"
    record_type = FindRecord
    detects = True
    per_row = True
    stop_at = OBJECT_END  # the boxes are all in the first <object>...</object>: no need to generate on
    key_fields = ("phrase",)

    def __init__(self, phrases=None):
        phrases = list(phrases or [])
        for number, phrase in enumerate(phrases, 1):
            try:
                check_phrase(phrase)
            except ValueError as exc:
                raise UsageError(f"phrase {number} ({phrase!r}) cannot be used: {exc}") from None
        self.phrases = [check_phrase(p) for p in phrases] or None

    @classmethod
    def arrow_fields(cls) -> list:
        import pyarrow as pa

        box, box_px = pa.list_(pa.float64()), pa.list_(pa.int32())
        return [
            pa.field("phrase", pa.string()),
            pa.field("boxes", pa.list_(box)),
            pa.field("boxes_px", pa.list_(box_px)),
            pa.field("scores", pa.list_(pa.float64())),
        ]

    @classmethod
    def key(cls, row: Mapping[str, Any], base: str | None = None, link: bool | None = None) -> str:
        """The image and its phrase cleaned as it is asked (`a cup`, `<a cup>` and ` a  cup ` are one phrase)."""
        phrase = row.get("phrase")
        cleaned = clean_phrase(phrase) if isinstance(phrase, str) else phrase
        return super().key({**row, "phrase": cleaned}, base, link)

    @classmethod
    def owns(cls, row: Mapping[str, Any]) -> bool:
        return "phrase" in row and "boxes_px" in row

    @classmethod
    def shapes(cls, row: Mapping[str, Any]) -> list[Found]:
        return [(row.get("phrase") or "", [list(b) for b in row.get("boxes_px") or []])]

    @classmethod
    def box_scores(cls, row: Mapping[str, Any]) -> list[list[float | None] | None]:
        return [row.get("scores")]

    @classmethod
    def caption_html(cls, row: Mapping[str, Any], mark: Mark) -> str:
        n = len(row.get("boxes_px") or [])
        found = f"{n} box{'es' if n != 1 else ''}" if n else "not found"
        return f'{mark(row.get("phrase") or "", 0)} <span class="n">{html.escape(found)}</span>'

    def check(self, inputs: Sequence[Any]) -> None:
        if self.phrases is None:
            need_rows(
                inputs,
                UsageError(
                    "kosmos find needs phrases: name them after the input, or give a manifest with path,phrase columns"
                ),
            )

    text_field = facet = "phrase"

    @classmethod
    def entity_columns(cls, table) -> tuple[Any, Any, Any, Any]:
        import numpy as np

        column = table.column  # one entity a record: the phrase found, with its boxes
        return np.arange(table.num_rows), *(column(n).combine_chunks() for n in ("phrase", "boxes_px", "scores"))

    @classmethod
    def facet_values(cls, table) -> Any:
        return table.column("phrase")

    def units(self, item: Item, settings: Settings) -> list[Unit]:
        extra = dict(item.extra)
        if self.phrases is not None:
            given: list[tuple[str | None, str | None]] = [(p, None) for p in self.phrases]
        else:
            value = extra.pop("phrase", None)
            try:
                given = [(check_phrase(value), None)]
            except ValueError as exc:
                given = [(value if isinstance(value, str) else None, f"bad phrase in manifest row: {exc}")]
        units = []
        for phrase, problem in given:
            asked = find_prompt(phrase).text if problem is None and phrase is not None else None
            keyed = {"phrase": phrase}
            units.append(self.unit(item, settings, keyed, prompt=asked, data=(phrase, problem), extra=dict(extra)))
        return units

    def prompt(self, unit: Unit) -> Prompt:
        phrase, problem = unit.data
        if problem:
            raise ValueError(problem)
        assert phrase is not None
        return find_prompt(phrase)

    def own_fields(self, unit: Unit, text: str | None) -> dict[str, Any]:
        phrase, _ = unit.data
        if text is None:
            return {"phrase": phrase}
        _, parsed = parse(text)
        scored = unit.generated is not None and unit.generated.probs is not None
        own: dict[str, Any] = {"phrase": phrase, "scores": [] if scored else None}
        # the prompt's own phrase opens the text; it is grounded only if the model put an <object> right after it
        if parsed and parsed[0].phrase and parsed[0].start == 0:
            own["boxes"] = [list(b) for b in parsed[0].boxes]
            own["boxes_px"] = [to_pixels(b, *unit.shown) for b in parsed[0].boxes]
            own["scores"] = entity_scores([parsed[0].boxes], unit.generated)[0]
        return own


def check_phrase(value) -> str:
    """A phrase to find, cleaned of markup; ValueError when there is nothing left."""
    if not isinstance(value, str) or not clean_phrase(value):
        raise ValueError("a phrase must be some text, e.g. 'a red car'")
    return clean_phrase(value)
