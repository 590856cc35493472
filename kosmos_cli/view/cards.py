"""What the viewer reads of a results file, whatever its format: the `Results` it opens (parquet_table.py,
jsonl_table.py), the card columns of every record (`card_schema`), and a record's values made fit to show.

Values nested deeper than MAX_DEPTH are shown as a note saying so (no recursion without a bound).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from ..inputs import carried_columns
from ..output import reader
from ..tasks import Task

COMMON = ("path", "task", "status", "error", "width", "height")
MAX_DEPTH = 64  # lists and objects in a record shown this deep; deeper ones are a note


class Changed(InputError):
    """The results file changed since it was opened: what was asked for is not where it was."""


class Results:
    """A results file (or folder of parts) opened for viewing."""

    path: str  # as given
    folder: str  # where relative image paths are looked up: the results' own folder
    task: type[Task]
    signature: tuple  # the files as they were opened (`signature`)

    def __len__(self) -> int:
        raise NotImplementedError

    def table(self):
        """The card columns of every record, in the order written (`card_schema`)."""
        raise NotImplementedError

    def head(self, offset: int, limit: int):
        """The card columns of records offset .. offset + limit, read without reading them all."""
        return self.table().slice(offset, limit)

    def image_path(self, row: int) -> str:
        """The image path record `row` names, as recorded."""
        return self.table().column("path")[row].as_py()

    def record(self, row: int) -> dict[str, Any]:
        """Record number `row` (from 0) as written, made JSON-safe."""
        raise NotImplementedError

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every whole record, in order (for the download of what is shown)."""
        raise NotImplementedError

    def source(self, path: str) -> str:
        """A recorded image path as it can be opened: as written, else beside the results (reader.locate, as draw
        opens it)."""
        return reader.locate(path, self.folder)


def card_schema(task: type[Task]):
    """What the grid reads of each record: the common fields it shows and the task's own fields, but not the
    normalised `boxes` (the page draws pixel boxes)."""
    import pyarrow as pa

    full = task.schema()
    return pa.schema([_without_boxes(full.field(n)) for n in (*COMMON, *task.record_type.fields) if n != "boxes"])


def _without_boxes(field):
    import pyarrow as pa

    kind = field.type
    if pa.types.is_list(kind) and pa.types.is_struct(kind.value_type):
        inner = [kind.value_type.field(i) for i in range(kind.value_type.num_fields)]
        return field.with_type(pa.list_(pa.struct([f for f in inner if f.name != "boxes"])))
    return field


def stat_of(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def viewable(value: Any, depth: int = 0) -> Any:
    """A value of a record made JSON-safe (carried_columns.to_jsonable), lists and objects shown at most MAX_DEPTH
    deep: a deeper one is a note saying so."""
    if isinstance(value, (list, tuple, dict)) and depth >= MAX_DEPTH:
        return f"(nested more than {MAX_DEPTH} deep: see the results file)"
    if isinstance(value, (list, tuple)):
        return [viewable(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): viewable(v, depth + 1) for k, v in value.items()}
    return carried_columns.to_jsonable(value)


def not_ours(path: str, where: str) -> InputError:
    return InputError(
        f"{path}{where} is not a kosmos record (no path, status or task fields): pass a results file written by "
        "kosmos ground, refer or find"
    )


def one_task(path: str, seen: type[Task] | None, task: type[Task]) -> type[Task]:
    if seen is not None and seen is not task:
        raise InputError(f"{path} holds {seen.name} and {task.name} records: view one task's results at a time")
    return task
