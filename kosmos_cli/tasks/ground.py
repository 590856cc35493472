"""ground: caption an image and ground the phrases in it. One record per image."""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..inputs.listing import Item
from ..model.prompts import Prompt, caption_prompt
from .base import Found, Mark, Settings, Task, Unit
from .markup import parse, to_pixels
from .records import Entity, Record
from .scores import entity_scores


@dataclass
class GroundRecord(Record):
    """caption, and entities [{phrase, start, end, boxes (0-1), boxes_px, scores}] with spans into the caption."""

    task: ClassVar[str] = "ground"
    fields: ClassVar[tuple[str, ...]] = ("caption", "entities")

    caption: str | None = None
    entities: list[Entity] = field(default_factory=list)

    def own_dict(self) -> dict[str, Any]:
        return {"caption": self.caption, "entities": [e.to_dict() for e in self.entities]}


class Ground(Task):
    """Caption an image and ground the phrases in it."""

    name = "ground"
    record_type = GroundRecord
    detects = True

    def __init__(self, prompt: str | None = None):
        self._prompt = caption_prompt(prompt)

    @classmethod
    def arrow_fields(cls) -> list:
        import pyarrow as pa

        box, box_px = pa.list_(pa.float64()), pa.list_(pa.int32())
        entity = pa.struct(
            [
                ("phrase", pa.string()),
                ("start", pa.int32()),
                ("end", pa.int32()),
                ("boxes", pa.list_(box)),
                ("boxes_px", pa.list_(box_px)),
                ("scores", pa.list_(pa.float64())),
            ]
        )
        return [pa.field("caption", pa.string()), pa.field("entities", pa.list_(entity))]

    @classmethod
    def owns(cls, row: Mapping[str, Any]) -> bool:
        return isinstance(row.get("entities"), list) or "caption" in row

    @classmethod
    def shapes(cls, row: Mapping[str, Any]) -> list[Found]:
        return [(e.get("phrase") or "", [list(b) for b in e.get("boxes_px") or []]) for e in row.get("entities") or []]

    @classmethod
    def box_scores(cls, row: Mapping[str, Any]) -> list[list[float | None] | None]:
        return [e.get("scores") for e in row.get("entities") or []]

    @classmethod
    def caption_html(cls, row: Mapping[str, Any], mark: Mark) -> str:
        """The caption, each entity's span marked in its colour (overlapping spans: the first one wins)."""
        caption = row.get("caption") or ""
        spans = sorted(
            (e.get("start"), e.get("end"), i)
            for i, e in enumerate(row.get("entities") or [])
            if isinstance(e.get("start"), int)
            and isinstance(e.get("end"), int)
            and 0 <= e["start"] < e["end"] <= len(caption)
        )
        out, pos = [], 0
        for start, end, i in spans:
            if start < pos:
                continue
            out += [html.escape(caption[pos:start]), mark(caption[start:end], i)]
            pos = end
        return "".join(out) + html.escape(caption[pos:])

    text_field = "caption"

    @classmethod
    def entity_columns(cls, table) -> tuple[Any, Any, Any, Any]:
        import pyarrow.compute as pc

        entities = table.column("entities").combine_chunks()
        flat = entities.flatten()
        owner = pc.list_parent_indices(entities).to_numpy(zero_copy_only=False)
        return owner, flat.field("phrase"), flat.field("boxes_px"), flat.field("scores")

    def units(self, item: Item, settings: Settings) -> list[Unit]:
        return [self.unit(item, settings, prompt=self._prompt.text)]

    def prompt(self, unit: Unit) -> Prompt:
        return self._prompt

    def own_fields(self, unit: Unit, text: str | None) -> dict[str, Any]:
        if text is None:
            return {}
        caption, parsed = parse(text, strip_prompt=self._prompt.text)
        scores = entity_scores([p.boxes for p in parsed], unit.generated)
        entities = [
            Entity(
                p.phrase, p.start, p.end, [list(b) for b in p.boxes], [to_pixels(b, *unit.shown) for b in p.boxes], s
            )
            for p, s in zip(parsed, scores)
        ]
        return {"caption": caption, "entities": entities}
