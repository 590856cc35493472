"""A Parquet results file, or the Parquet parts of a folder read as one, opened for the viewer: read column by
column, only the columns a card needs (never a prompt, a model name or carried columns); the first page from its
first row group alone; a whole record from its row group, when the detail view asks for it. A part is read only
while it is still the file opened: a record that is no longer where it was is `Changed`, never another record.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from ..inputs import carried_columns
from ..output import reader
from ..tasks import Task
from .cards import Changed, Results, card_schema, not_ours, one_task, stat_of, viewable


class ParquetResults(Results):
    """A Parquet file, or the Parquet parts of a folder read as one file (in the order the reader gives them)."""

    def __init__(self, path: str, files: list[str]):
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
                self._stats.append(stat_of(os.stat(name)))
            except OSError as exc:
                raise InputError(f"cannot read {name}: {exc.strerror or exc}") from None
            pf = reader.open_parquet(name, name)
            names = set(pf.schema_arrow.names)
            found = reader.parquet_task(pf, name)
            if found is None or "path" not in names or "status" not in names:
                raise not_ours(name, "")
            task = one_task(path, task, found)
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
                if stat_of(os.fstat(f.fileno())) != known:
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


def _cast(column, data_type):
    """A column of an older or foreign file as the card schema has it (a struct with fewer fields: nulls added)."""
    import pyarrow as pa

    try:
        return column.cast(data_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.array(column.to_pylist(), type=data_type, from_pandas=False)


def _json_value(value: Any) -> Any:
    try:
        return reader.loads(value) if isinstance(value, str) else value
    except ValueError:
        return value
