"""What each command asks of the model, and how the answer becomes a record.

A job turns an input `Item` into units (one per record: an image for ground, an image and region for refer, an
image and phrase for find), gives each unit its prompt once the image's size is known, and fills the record
from the generated text. The pipeline runs any job the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from .grounding import parse, to_pixels
from .prompts import Prompt, caption_prompt
from .records import Entity, Record
from .sources import Item


@dataclass
class Unit:
    """One record to produce: its resume key and the record being filled."""

    key: str
    record: Record
    data: object = None  # what the job needs to build the prompt (a box, a phrase)


class Job:
    task = "ground"

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
        return [Unit(item.path, record)]

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
