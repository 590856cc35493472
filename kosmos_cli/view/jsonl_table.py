"""A JSONL results file opened for the viewer: read once, by Arrow's JSON reader (line by line when a line is
unusual, which also says which line is not a record), keeping each record's byte offset, so a whole record is one
seek. The file opened stays open: a whole record is read from it as it was, even after another file is renamed over
it; a record that is no longer where it was is `Changed`, never another record.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from .. import tasks
from ..errors import InputError
from ..output import reader
from ..tasks import Task
from .cards import Changed, Results, card_schema, not_ours, one_task, stat_of, viewable


class JsonlResults(Results):
    """A JSONL file, read once; each record's byte offset kept, so a whole record is one seek away. The file opened
    is kept open: a whole record is read from it, as it was, even after another file is renamed over it."""

    def __init__(self, path: str):
        self.path, self.folder = path, os.path.abspath(os.path.dirname(path) or ".")
        self._lock = threading.Lock()
        try:
            self._file = open(path, "rb")
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        self.signature = stat_of(os.fstat(self._file.fileno()))
        try:
            self.task, self._table, self._offsets = _read_fast(path, self._file)
        except _Slow:  # anything unusual: line by line, which also says what is wrong and where
            self._file.seek(0)
            self.task, self._table, self._offsets = _read_slow(path, self._file)
        except BaseException:
            self._file.close()
            raise

    def __len__(self) -> int:
        return len(self._offsets)

    def table(self):
        return self._table

    def close(self) -> None:
        self._file.close()

    def record(self, row: int) -> dict[str, Any]:
        if not 0 <= row < len(self._offsets):
            raise IndexError(row)
        return self._at(row)

    def rows(self) -> Iterator[dict[str, Any]]:
        for row in range(len(self._offsets)):
            yield self._at(row)

    def _at(self, row: int) -> dict[str, Any]:
        """Record `row` read from the file opened; Changed when it is not there any more (cut or rewritten)."""
        try:
            with self._lock:
                self._file.seek(self._offsets[row])
                line = self._file.readline()
            value = reader.loads(line)
        except (OSError, ValueError):  # a closed file, a line cut short, no JSON, nested too deep
            value = None
        if not isinstance(value, dict) or value.get("path") != self._table.column("path")[row].as_py():
            raise Changed(f"{self.path} changed while it was viewed: record {row} is not where it was")
        return viewable(value)


class _Slow(Exception):
    """The fast reading of a JSONL file met something it leaves to the line-by-line one."""


def _read_fast(path: str, f):
    """Arrow's JSON reader over the whole file, when every line is a whole record of one task: (task, table,
    offsets)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    try:
        data = f.read()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data.endswith(b"\n"):
        raise _Slow  # a last line still being written, or an empty file
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    starts = np.concatenate([[0], ends[:-1] + 1])
    short = np.flatnonzero(ends - starts < 4)
    blank = [i for i in short if not data[starts[i] : ends[i]].strip()]
    offsets = np.delete(starts, blank) if blank else starts
    if not len(offsets):
        raise _Slow
    try:
        row = reader.loads(data[offsets[0] : data.index(b"\n", offsets[0])])
    except ValueError:  # not JSON, not UTF-8, nested too deep
        raise _Slow from None
    task = tasks.of_row(row) if isinstance(row, dict) else None
    if task is None:
        raise _Slow
    schema = card_schema(task)
    try:
        table = pj.read_json(
            pa.BufferReader(data),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise _Slow from None
    del data
    named = {v for v in pc.unique(table.column("task")).to_pylist() if v is not None}
    if (
        table.num_rows != len(offsets)
        or named - {task.name}
        or table.column("path").null_count
        or table.column("status").null_count
    ):
        raise _Slow
    from array import array

    return task, table.select(schema.names).combine_chunks(), array("q", offsets.tolist())


def _read_slow(path: str, f):
    """Line by line: (task, table, offsets), or InputError naming the line that is not a record of ours."""
    from array import array

    task: type[Task] | None = None
    values: dict[str, list[Any]] = {}  # the card columns, filled a record at a time
    offsets = array("q")
    offset = 0
    for number, line in enumerate(f, 1):
        here, offset = offset, offset + len(line)
        if not line.strip():
            continue
        try:
            row = reader.loads(line)
        except ValueError as exc:  # not JSON, not UTF-8, nested too deep
            if not line.endswith(b"\n"):
                break  # the last line of a run still writing it: shown once it is whole
            what = f"is {reader.TOO_DEEP}" if str(exc) == reader.TOO_DEEP else "is not JSON"
            raise InputError(
                f"{path} line {number} {what}: pass the .jsonl or .parquet file written by kosmos ground, refer or find"
            ) from None
        found = tasks.of_row(row) if isinstance(row, dict) else None
        if found is None or not isinstance(row.get("path"), str) or "status" not in row:
            raise not_ours(path, f" line {number}")
        task = one_task(path, task, found)
        if not values:
            values = {name: [] for name in card_schema(task).names}
        for name, column in values.items():
            column.append(row.get(name))
        offsets.append(here)
    if task is None:
        raise InputError(f"{path} holds no records: nothing to view")
    return task, _table_of(values, task), offsets


def _table_of(values: dict[str, list[Any]], task: type[Task]):
    """The card columns of JSON rows, as Arrow; a value of the wrong type (a hand-edited file) becomes null."""
    import pyarrow as pa

    schema = card_schema(task)
    columns = []
    for f in schema:
        column = values.pop(f.name)  # let each list go once it is Arrow
        try:
            columns.append(pa.array(column, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            columns.append(pa.array([_or_none(v, f.type) for v in column], type=f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _or_none(value: Any, data_type) -> Any:
    import pyarrow as pa

    try:
        pa.array([value], type=data_type)
        return value
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
