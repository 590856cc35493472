"""Results read back as typed results: what draw, export and eval see of each record.

    for result in reader.read("results.parquet"):
        if isinstance(result, Bad): ...                            # warn (result.message(path)), skip, count
        result.task, result.path, result.status, result.regions   # a Result

`read` takes whatever the path names (files.results_path: a JSONL file, a Parquet file, a folder of parts) and
reads its rows (files.rows). A file is a results file of kosmos when its first row is a kosmos record: a
`path`, a `status` and the fields of a known task; anything else (a manifest, an image, a damaged Parquet file) is
refused in one line (InputError), before a reader writes anything. Any other line or row that cannot be used (not
JSON, not a record; a record with NaN in a box, a box of three numbers or of strings, a string width or score,
entities that are not a list) is a `Bad` naming it and why: every reader warns, skips and counts it and goes on with
the rest, as ground does with a damaged line of its own output.

What a record shows is its task's to say (`Task.shapes`, `Task.box_scores`): this module asks the task and hands
each result its `regions`, a label (a phrase, a region's description) with pixel boxes of the image as displayed
and a score per box. `source` is where the recorded image opens: as written, else beside the results file (a name
recorded with `\\xNN` escapes, by its original bytes). Every string is in its recorded form (inputs/names.py).
Readers never look at raw rows for boxes; the row stays on the result for what only its task reads (a caption's
spans, for the gallery).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import NoneType
from typing import Any

from ... import tasks
from ...errors import InputError
from ...inputs import locations
from ...inputs.names import clean, original
from ...tasks.records import OK
from .files import NOT_RESULTS, Bad, rows

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the image as displayed


@dataclass(frozen=True)
class Region:
    """One thing a result shows: its label, its pixel boxes, and a score per box (None: none known)."""

    label: str
    boxes: tuple[Box, ...] = ()
    scores: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class Result:
    """One record of a results file, typed: which task wrote it, its image, how it went, what it shows."""

    task: str  # ground, refer or find: the record says it (or, written before it did, its fields)
    path: str  # as recorded
    source: str  # where the image opens: as recorded, else beside the results file
    status: str
    error: str | None = None
    width: int | None = None  # of the image as displayed: the frame of the pixel boxes
    height: int | None = None
    model: str | None = None
    regions: tuple[Region, ...] = ()
    row: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the record as read

    @property
    def ok(self) -> bool:
        return self.status == OK

    def key(self) -> str:
        """What makes the record unique in its output (`Task.key`): a record written again replaces this one."""
        return tasks.get(self.task).key(self.row)


class BadRecord(ValueError):
    """A row that is no usable record; the message says why."""


class NotARecord(BadRecord):
    """A row that is no record of kosmos at all: as a file's first row, the file is not a results file."""


NOT_A_RECORD = "not a kosmos record: no status, caption, box_px or phrase"


def read(path: str) -> Iterator[Result | Bad]:
    """The results in the file (or the folder of parts) at `path`, in order, and a `Bad` for each line or row that
    cannot be used. InputError when its first row is not a kosmos record: it is no results file of kosmos."""
    here = os.path.dirname(os.path.abspath(path))
    first = True
    for where, row in rows(path):
        try:
            if isinstance(row, Bad):
                raise NotARecord(row.why)
            result = result_of(row, here)
        except BadRecord as exc:
            if first and isinstance(exc, NotARecord):
                raise InputError(f"{path} is not a results file of kosmos ({where} is {exc}): {NOT_RESULTS}") from None
            yield Bad(where, str(exc))
        else:
            yield result
        first = False


def result_of(row: Mapping[str, Any], root: str | None = None) -> Result:
    """A row as a Result (a record being written, or one read back); `root`: where a relative path is also looked
    for (the results file's folder). BadRecord, saying why, when the row is no usable record: not a record of
    kosmos, or an ok record whose size, boxes, labels or scores are not what kosmos writes (NaN, a box of three
    numbers or of strings, a string width or score, entities that are not a list). Every string of the result is
    in its recorded form (inputs/names.py); `source` opens the image by its real name."""
    task = tasks.of_row(row) if isinstance(row, Mapping) else None
    path = row.get("path") if isinstance(row, Mapping) else None
    if task is None or not isinstance(path, str) or not path or "status" not in row:
        raise NotARecord(NOT_A_RECORD)
    source = locate(path, root)
    row = clean(dict(row))
    status = row["status"]
    if not isinstance(status, str):
        raise BadRecord(f"its status is not text: {_shown(status)}")
    ok = status == OK
    width, height = _size(row, "width"), _size(row, "height")
    if ok and (width is None or height is None):
        raise BadRecord("an ok record without its width and height")
    return Result(
        task=task.name,
        path=row["path"],
        source=source,
        status=status,
        error=_text(row.get("error")),
        width=width,
        height=height,
        model=_text(row.get("model")),
        regions=_regions(task, row) if ok else (),
        row=row,
    )


def _regions(task: type[tasks.Task], row: Mapping[str, Any]) -> tuple[Region, ...]:
    """What the record shows, as its task says (`Task.shapes`, `Task.box_scores`), checked."""
    for f in dataclasses.fields(task.record_type):
        value = row.get(f.name)
        if f.name in task.record_type.fields and "list" in str(f.type) and not isinstance(value, (list, NoneType)):
            raise BadRecord(f"{f.name} is not a list")
    try:
        found, scored = task.shapes(row), task.box_scores(row)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError):
        raise BadRecord(f"its {', '.join(task.record_type.fields)} are not as kosmos {task.name} writes them") from None
    regions = []
    for (label, boxes), scores in zip(found, scored):
        if not isinstance(label, str):
            raise BadRecord(f"a label is not text: {_shown(label)}")
        regions.append(Region(label, tuple(_box(b) for b in boxes), _scores(scores, len(boxes))))
    return tuple(regions)


def _box(value: Any) -> Box:
    if isinstance(value, (list, tuple)) and len(value) == 4 and all(_number(v) for v in value):
        return tuple(value)
    raise BadRecord(f"a box is not 4 finite numbers: {_shown(value)}")


def _scores(scores: Any, n: int) -> tuple[float | None, ...]:
    """A score per box; None for each when the record has none for them (or not one per box)."""
    if scores is not None and not isinstance(scores, list):
        raise BadRecord(f"scores is not a list: {_shown(scores)}")
    if scores is None or len(scores) != n:
        return (None,) * n
    for score in scores:
        if score is not None and not _number(score):
            raise BadRecord(f"a score is not a number: {_shown(score)}")
    return tuple(scores)


def _size(row: Mapping[str, Any], name: str) -> int | None:
    """The record's width or height: a whole number above 0, or None when it has none."""
    value = row.get(name)
    if value is None:
        return None
    if _number(value) and value == int(value) and value > 0:
        return int(value)
    raise BadRecord(f"{name} is not a whole number above 0: {_shown(value)}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)


def _shown(value: Any) -> str:
    """A value as a warning names it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def locate(path: str, root: str | None) -> str:
    """A recorded path as it can be opened: as written (relative to here), else relative to `root`; a name recorded
    with `\\xNN` escapes (inputs/names.py) by its original bytes when no file has the name as written."""
    if locations.is_remote(path):
        return path  # a URL (of an image, or of a shard or table holding it)
    member = locations.split_member(path)
    if member is not None:  # a sample of a shard or table: its container is where the path says
        return f"{locate(member[0], root)}#{member[1]}"
    for name in dict.fromkeys((path, original(path))):
        if os.path.exists(name):
            return name
        beside = os.path.join(root, name) if root is not None and not os.path.isabs(name) else None
        if beside is not None and os.path.exists(beside):
            return beside
    return path
