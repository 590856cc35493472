"""The viewer's one way into a results file: the columns its grid needs for every record, and one whole record.

    results = open_results("results.parquet")     # InputError, one line, when it cannot be read
    results.task, len(results)                    # the task that wrote it; how many records
    results.table()                               # Arrow: path, status, error, width, height, the task's fields
    results.record(row)                           # one whole record as written (carried columns too)

A Parquet file (or a folder of Parquet parts) is read column by column: only the columns a card needs, never
a prompt, a model name or carried columns; a whole record is read when the detail view asks for it, from its
row group. A JSONL file is read once, line by line, keeping each record's byte offset, so a whole record is
one seek. Everything the viewer reads goes through here, so it can later be pointed at a shared reader.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from .. import carried, locations, tasks
from ..errors import InputError
from ..records import to_jsonable
from ..tasks import Task

COMMON = ("path", "task", "status", "error", "width", "height")
PARQUET_ENDINGS = (".parquet", ".pq")
JSONL_ENDINGS = (".jsonl", ".ndjson", ".json")


class Results:
    """A results file (or folder of parts) opened for viewing."""

    path: str  # as given
    folder: str  # where relative image paths are looked up: the results' own folder
    task: type[Task]

    def __len__(self) -> int:
        raise NotImplementedError

    def table(self):
        """The card columns of every record, in the order written (`card_schema`)."""
        raise NotImplementedError

    def record(self, row: int) -> dict[str, Any]:
        """Record number `row` (from 0) as written, made JSON-safe."""
        raise NotImplementedError

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every whole record, in order (for the download of what is shown)."""
        raise NotImplementedError

    def source(self, path: str) -> str:
        """A recorded image path as it can be opened: as written, else beside the results (as draw does)."""
        return resolve(path, self.folder)


def card_schema(task: type[Task]):
    """What the grid reads of each record: the common fields it shows and the task's own fields."""
    import pyarrow as pa

    full = task.schema()
    return pa.schema([full.field(n) for n in (*COMMON, *task.record_type.fields)])


def resolve(path: str, folder: str) -> str:
    """`path` as recorded -> where it can be opened: as written (from here), else relative to `folder`; a URL as it
    is; a sample of a container (`SHARD.tar#KEY`) with its container resolved."""
    if locations.is_remote(path):
        return path
    member = locations.split_member(path)
    if member is not None:
        return f"{resolve(member[0], folder)}#{member[1]}"
    local = locations.local_path(path)
    if os.path.isabs(local) or os.path.exists(local):
        return path
    beside = os.path.join(folder, local)
    return beside if os.path.exists(beside) else path


def open_results(path: str) -> Results:
    """The results at `path`: a .jsonl or .parquet file of kosmos ground, refer or find, or a folder of Parquet
    parts. InputError, one line saying what to pass, when it cannot be read."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"results file not found: {path}")
    if os.path.isdir(path):
        parts = sorted(
            os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(PARQUET_ENDINGS) and n[0] != "."
        )
        if not parts:
            raise InputError(f"{path} is a folder without Parquet parts: pass a .jsonl or .parquet results file")
        return ParquetResults(path, parts)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic == b"PAR1" or path.lower().endswith(PARQUET_ENDINGS):
        return ParquetResults(path, [path])
    return JsonlResults(path)


def _not_ours(path: str, where: str) -> InputError:
    return InputError(
        f"{path}{where} is not a kosmos record (no path, status or task fields): pass a results file written by "
        "kosmos ground, refer or find"
    )


def _one_task(path: str, seen: type[Task] | None, task: type[Task]) -> type[Task]:
    if seen is not None and seen is not task:
        raise InputError(f"{path} holds {seen.name} and {task.name} records: view one task's results at a time")
    return task


# -- Parquet -----------------------------------------------------------------------------------------------
class ParquetResults(Results):
    """A Parquet file, or the Parquet parts of a folder read as one file (in name order)."""

    def __init__(self, path: str, files: list[str]):
        import pyarrow.parquet as pq

        self.path, self.folder = path, os.path.abspath(path if os.path.isdir(path) else os.path.dirname(path) or ".")
        self._files = []
        self._starts: list[int] = []  # the first row of each file
        self._lock = threading.Lock()
        self._groups: OrderedDict[tuple[int, int], Any] = OrderedDict()  # the last row groups read whole
        task: type[Task] | None = None
        total = 0
        for name in files:
            try:
                pf = pq.ParquetFile(name)
            except Exception as exc:  # pyarrow raises several types for a damaged file
                raise InputError(
                    f"{name} is not a readable Parquet file ({' '.join(str(exc).split())}): pass the .jsonl or "
                    ".parquet file written by kosmos ground, refer or find"
                ) from None
            names = set(pf.schema_arrow.names)
            found = _parquet_task(pf, name)
            if found is None or "path" not in names or "status" not in names:
                raise _not_ours(name, "")
            task = _one_task(path, task, found)
            self._files.append(pf)
            self._starts.append(total)
            total += pf.metadata.num_rows
        assert task is not None
        self.task, self._total = task, total

    def __len__(self) -> int:
        return self._total

    def table(self):
        import pyarrow as pa

        schema = card_schema(self.task)
        tables = []
        for pf in self._files:
            names = set(pf.schema_arrow.names)
            wanted = [n for n in schema.names if n in names]
            table = pf.read(columns=wanted)
            columns = []
            for f in schema:
                if f.name not in names:
                    columns.append(pa.nulls(table.num_rows, f.type))
                    continue
                column = table.column(f.name)
                columns.append(column if column.type == f.type else _cast(column, f.type))
            tables.append(pa.Table.from_arrays(columns, schema=schema))
        return pa.concat_tables(tables).combine_chunks()

    def record(self, row: int) -> dict[str, Any]:
        if not 0 <= row < self._total:
            raise IndexError(row)
        number = max(i for i, start in enumerate(self._starts) if start <= row)
        pf, offset = self._files[number], row - self._starts[number]
        group = 0
        while offset >= pf.metadata.row_group(group).num_rows:
            offset -= pf.metadata.row_group(group).num_rows
            group += 1
        with self._lock:  # row groups are read whole: the detail view's neighbours come from the same one
            key = (number, group)
            if key in self._groups:
                self._groups.move_to_end(key)
            else:
                self._groups[key] = pf.read_row_group(group)
                while len(self._groups) > 2:
                    self._groups.popitem(last=False)
            table = self._groups[key]
        out = table.slice(offset, 1).to_pylist()[0]
        text = {f.name for f in table.schema if carried.is_json_text(f)}
        return {k: _json_value(v) if k in text else to_jsonable(v) for k, v in out.items()}

    def rows(self) -> Iterator[dict[str, Any]]:
        for pf in self._files:
            text = {f.name for f in pf.schema_arrow if carried.is_json_text(f)}
            for batch in pf.iter_batches(batch_size=4096):
                for out in batch.to_pylist():
                    yield {k: _json_value(v) if k in text else to_jsonable(v) for k, v in out.items()}


def _parquet_task(pf, name: str) -> type[Task] | None:
    meta = pf.schema_arrow.metadata or {}
    named = meta.get(b"kosmos_cli.task", b"").decode(errors="replace")
    if named in tasks.REGISTRY:
        return tasks.get(named)
    names = pf.schema_arrow.names
    if "task" in names and pf.metadata.num_rows:
        for value in pf.read_row_group(0, columns=["task"]).column(0).to_pylist():
            if value is not None:
                if value not in tasks.REGISTRY:
                    raise InputError(f"{name} holds records of task {value!r}: kosmos view shows ground, refer, find")
                return tasks.get(value)
    return tasks.of_row({n: None for n in names})


def _cast(column, data_type):
    """A column of an older or foreign file as the card schema has it (a struct with fewer fields: nulls added)."""
    import pyarrow as pa

    try:
        return column.cast(data_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.array(column.to_pylist(), type=data_type, from_pandas=False)


def _json_value(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return value


# -- JSONL ----------------------------------------------------------------------------------------------
class JsonlResults(Results):
    """A JSONL file, read once; each record's byte offset kept, so a whole record is one seek away."""

    def __init__(self, path: str):
        self.path, self.folder = path, os.path.abspath(os.path.dirname(path) or ".")
        self._lock = threading.Lock()
        from array import array

        task: type[Task] | None = None
        values: dict[str, list[Any]] = {}  # the card columns, filled a record at a time

        self._offsets = array("q")
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        with f:
            offset = 0
            for number, line in enumerate(f, 1):
                here, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    if not line.endswith(b"\n"):
                        break  # the last line of a run still writing it: shown once it is whole
                    raise InputError(
                        f"{path} line {number} is not JSON: pass the .jsonl or .parquet file written by kosmos "
                        "ground, refer or find"
                    ) from None
                found = tasks.of_row(row) if isinstance(row, dict) else None
                if found is None or not isinstance(row.get("path"), str) or "status" not in row:
                    raise _not_ours(path, f" line {number}")
                task = _one_task(path, task, found)
                if not values:
                    values = {name: [] for name in (*COMMON, *task.record_type.fields)}
                for name, column in values.items():
                    column.append(row.get(name))
                self._offsets.append(here)
        if task is None:
            raise InputError(f"{path} holds no records: nothing to view")
        self.task = task
        self._table = _table_of(values, task)

    def __len__(self) -> int:
        return len(self._offsets)

    def table(self):
        return self._table

    def record(self, row: int) -> dict[str, Any]:
        if not 0 <= row < len(self._offsets):
            raise IndexError(row)
        with self._lock, open(self.path, "rb") as f:
            f.seek(self._offsets[row])
            return json.loads(f.readline())

    def rows(self) -> Iterator[dict[str, Any]]:
        for row in range(len(self._offsets)):
            yield self.record(row)


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
