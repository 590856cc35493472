"""The viewer's one way into a results file: the columns its grid needs for every record, and one whole record.

    results = open_results("results.parquet")     # InputError, one line, when it cannot be read
    results.task, len(results)                    # the task that wrote it; how many records
    results.table()                               # Arrow: path, status, error, width, height, the task's fields
    results.head(offset, limit)                   # the same, of a few records, read without reading them all
    results.record(row)                           # one whole record as written (carried columns too)
    results.image_path(row)                       # the image it names, as recorded
    results.signature == signature(path)          # False once the file (or a part) was replaced or changed

A Parquet file (or a folder of Parquet parts) is read column by column: only the columns a card needs, never
a prompt, a model name or carried columns; the first page is read from its first row group alone; a whole
record is read when the detail view asks for it, from its row group. A JSONL file is read once, by Arrow's JSON
reader (line by line when a line is unusual, which also says which line is not a record), keeping each
record's byte offset, so a whole record is one seek. Everything the viewer reads goes through here, so it can
later be pointed at a shared reader.

A results file can change while it is viewed (a `--prune` or `--overwrite` rewrites it, a run appends to it, a
copy is cut short). `signature` tells (device, inode, size, modification time of each file); the viewer reads it
again when it differs. Until then the records read are those of the file as it was opened: a JSONL file is read
through the file it opened (still the old one after a rename over it), a Parquet part is read only when it is
still the file opened; a record that is no longer where it was is `Changed`, never another record.
Values nested deeper than MAX_DEPTH are shown as a note saying so (no recursion without a bound).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from .. import tasks
from ..errors import InputError
from ..inputs import carried_columns, locations
from ..output.dataset_folder import in_order
from ..tasks import Task

COMMON = ("path", "task", "status", "error", "width", "height")
MAX_DEPTH = 64  # lists and objects in a record shown this deep; deeper ones are a note
PARQUET_ENDINGS = (".parquet", ".pq")
JSONL_ENDINGS = (".jsonl", ".ndjson", ".json")


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
        """A recorded image path as it can be opened: as written, else beside the results (as draw does)."""
        return resolve(path, self.folder)


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


def _leaves(pf, names) -> list[str]:
    """The Parquet leaf columns of the top-level columns `names`, less any `boxes` (a nested column is read
    leaf by leaf, so the normalised boxes beside boxes_px cost nothing)."""
    wanted = set(names)
    out = []
    for i in range(len(pf.schema)):
        parts = pf.schema.column(i).path.split(".")
        if parts[0] in wanted and "boxes" not in parts:
            out.append(pf.schema.column(i).path)
    return out


def _shape(kind):
    """A type with its list fields' names left out: what a column holds, however its writer named list items."""
    import pyarrow as pa

    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return ("list", _shape(kind.value_type))
    if pa.types.is_struct(kind):
        return ("struct", tuple((kind.field(i).name, _shape(kind.field(i).type)) for i in range(kind.num_fields)))
    return str(kind)


def _stat(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def grown(old: Results, new: Results) -> bool:
    """Whether `new` is `old` with records added after its own (a run appending, a part added): the same task,
    and the same card columns for every record `old` has, so a record's number still names the same record."""
    if new.task is not old.task or len(new) < len(old):
        return False
    before = old.table()
    return new.table().slice(0, before.num_rows).equals(before)


def signature(path: str) -> tuple:
    """What tells a results file (or folder of parts) from a changed one: each file's device, inode, size and
    modification time (a folder: which parts it holds, and theirs). Cheap: a stat per file, nothing read."""
    try:
        if os.path.isdir(path):
            return tuple((name, _stat(os.stat(name))) for name in _parts(path))
        return _stat(os.stat(path))
    except OSError:
        return ("gone",)


def _parts(path: str) -> list[str]:
    """The files a folder's results are read from: a dataset's parts alone, in the order of their runs (a file kosmos
    did not name is no part, dataset_folder.is_part); in a folder holding no part (a file output's `.parts/`), its
    Parquet files by name."""
    names = [n for n in os.listdir(path) if n.lower().endswith(PARQUET_ENDINGS) and n[0] != "."]
    return [os.path.join(path, n) for n in in_order(names) or sorted(names)]


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


def _loads(line: bytes | str) -> Any:
    """json.loads; ValueError (not RecursionError) for a value nested deeper than Python can read."""
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("nested too deep to read") from None


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
    if locations.is_remote(path):
        raise InputError(
            f"{path}: kosmos view reads local results: copy the results file (or folder of parts) here first, "
            "then view the copy"
        )
    if not os.path.exists(path):
        raise InputError(f"results file not found: {path}")
    if os.path.isdir(path):
        parts = _parts(path)
        if not parts:
            raise InputError(f"{path} is a folder without Parquet parts: pass a .jsonl or .parquet results file")
        for part in parts:
            _regular(part)
        return ParquetResults(path, parts)
    _regular(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic == b"PAR1" or path.lower().endswith(PARQUET_ENDINGS):
        return ParquetResults(path, [path])
    return JsonlResults(path)


def _regular(path: str) -> None:
    """InputError when `path` is not a regular file (a named pipe would block the reading of it forever)."""
    from .thumbs import regular

    refused = regular(path)
    if refused is not None:
        raise InputError(f"{path}: {refused}: pass the .jsonl or .parquet file written by kosmos ground, refer or find")


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
        self._files = []  # opened once to check them; the detail view reads whole records through them
        self._stats: list[tuple[int, int, int, int]] = []  # each file as it was opened
        self._names: list[str] = []
        self._starts: list[int] = []  # the first row of each file
        self._lock = threading.Lock()
        self._reading = threading.Lock()  # the card columns, read once
        self._table: Any = None
        self._groups: OrderedDict[tuple[int, int], Any] = OrderedDict()  # the last row groups read whole
        task: type[Task] | None = None
        total = 0
        for name in files:
            try:
                self._stats.append(_stat(os.stat(name)))
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
            self._names.append(name)
            self._starts.append(total)
            total += pf.metadata.num_rows
        assert task is not None
        self.task, self._total = task, total
        self._schema = card_schema(task)
        self._paths: Any = None  # the path column, read when an image is asked for before the whole table is
        self.signature = tuple(zip(self._names, self._stats)) if os.path.isdir(path) else self._stats[0]

    def __len__(self) -> int:
        return self._total

    def table(self):
        """Read once (the index keeps it), then the same table."""
        with self._reading:
            if self._table is None:
                self._table = self._read_table()
            return self._table

    def _read_table(self):
        import pyarrow as pa

        tables = [self._cards(pf, pf.read(columns=_leaves(pf, self._schema.names))) for pf in self._opened()]
        try:
            return pa.concat_tables(tables).combine_chunks()
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # parts whose writers named list items differently
            return pa.concat_tables([t.cast(self._schema) for t in tables]).combine_chunks()

    def head(self, offset: int, limit: int):
        import pyarrow as pa

        tables = []
        for number, pf in enumerate(self._opened()):
            start = self._starts[number]
            for group in range(pf.metadata.num_row_groups):
                rows = pf.metadata.row_group(group).num_rows
                if start + rows > offset and start < offset + limit:
                    table = self._cards(pf, pf.read_row_group(group, columns=_leaves(pf, self._schema.names)))
                    tables.append(table.slice(max(offset - start, 0), offset + limit - start))
                start += rows
        if not tables:
            return pa.Table.from_pylist([], schema=self._schema)
        return tables[0] if len(tables) == 1 else pa.concat_tables([t.cast(self._schema) for t in tables])

    def image_path(self, row: int) -> str:
        with self._lock:
            if self._paths is None:
                import pyarrow as pa

                self._paths = pa.chunked_array([pf.read(columns=["path"]).column(0) for pf in self._opened()])
            paths = self._paths
        return paths[row].as_py()

    def _opened(self) -> Iterator:
        """The files opened afresh for one reader (their footers are small): threads never share a reader. Changed
        when a file is no longer the one opened (its footer would describe another file)."""
        import pyarrow.parquet as pq

        for pf, name, known in zip(self._files, self._names, self._stats):
            try:
                f = open(name, "rb")
            except OSError:
                raise Changed(f"{self.path} changed: {name} is gone") from None
            with f:
                if _stat(os.fstat(f.fileno())) != known:
                    raise Changed(f"{self.path} changed: {name} was rewritten")
                yield pq.ParquetFile(f, metadata=pf.metadata)

    def _cards(self, pf, table):
        """A table read from `pf` as the card schema has it: a column it lacks is nulls; a column of another type
        is cast (not one whose list items are only named otherwise)."""
        import pyarrow as pa

        names = set(table.schema.names)
        columns = []
        for f in self._schema:
            if f.name not in names:
                columns.append(pa.nulls(table.num_rows, f.type))
                continue
            column = table.column(f.name)
            columns.append(column if _shape(column.type) == _shape(f.type) else _cast(column, f.type))
        return pa.Table.from_arrays(columns, names=self._schema.names)

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
        text = {f.name for f in table.schema if carried_columns.is_json_text(f)}
        return {k: viewable(_json_value(v) if k in text else v) for k, v in out.items()}

    def rows(self) -> Iterator[dict[str, Any]]:
        for pf in self._opened():
            text = {f.name for f in pf.schema_arrow if carried_columns.is_json_text(f)}
            for batch in pf.iter_batches(batch_size=4096):
                for out in batch.to_pylist():
                    yield {k: viewable(_json_value(v) if k in text else v) for k, v in out.items()}


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
        return _loads(value) if isinstance(value, str) else value
    except ValueError:
        return value


# -- JSONL ----------------------------------------------------------------------------------------------
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
        self.signature = _stat(os.fstat(self._file.fileno()))
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
            value = _loads(line)
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
        row = _loads(data[offsets[0] : data.index(b"\n", offsets[0])])
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
            row = _loads(line)
        except ValueError as exc:  # not JSON, not UTF-8, nested too deep
            if not line.endswith(b"\n"):
                break  # the last line of a run still writing it: shown once it is whole
            what = "is nested too deep to read" if "too deep" in str(exc) else "is not JSON"
            raise InputError(
                f"{path} line {number} {what}: pass the .jsonl or .parquet file written by kosmos ground, refer or find"
            ) from None
        found = tasks.of_row(row) if isinstance(row, dict) else None
        if found is None or not isinstance(row.get("path"), str) or "status" not in row:
            raise _not_ours(path, f" line {number}")
        task = _one_task(path, task, found)
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
