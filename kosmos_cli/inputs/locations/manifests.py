"""Manifests: the files that list images, one row an image (.txt, .csv, .jsonl/.ndjson, .parquet), read as `Item`s.

A row's path resolves against the manifest's folder (a folder in object storage too, a URL's for a manifest behind
a URL); its other columns are carried into the image's record. A Parquet file whose rows hold the images
themselves (`--image-column`) is read by table.py.

Text manifests (and stdin, read by sources.py through `read_lines`) are UTF-8, a byte-order mark allowed; bytes
that are not UTF-8 are kept as Python keeps them in file names (surrogate escapes), so a listing of non-UTF-8 file
names opens those files; inputs/names.py says how they are recorded. A JSON line that does not parse, or nests more than
MAX_DEPTH levels deep, is skipped with a warning naming its line, and so is a row with no path (a CSV or Parquet
row whose every field is empty is a blank line); what is skipped is counted in `Unlisted`, so the run knows it did
not read every input. A CSV the csv module cannot read (an unclosed quote, a field over 128 KiB) is a broken
manifest: an InputError naming its line.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import posixpath
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ...errors import InputError
from ..carried_columns import from_parquet
from ..listing import Columns, Item, Unlisted
from .base import FetchOptions, is_remote, local_path, named_suffix
from .table import iter_table

log = logging.getLogger("kosmos_cli")

MAX_DEPTH = 100  # levels of nesting a JSON manifest line may have (deeper would overflow the stack downstream)
_ENCODING, _ERRORS = "utf-8-sig", "surrogateescape"  # manifests: a BOM dropped, bytes that are not UTF-8 kept
_DEEP = object()


def read_manifest(
    path: str,
    columns: Columns = Columns(),
    opener=open,
    unseen: Unlisted | None = None,
    fetch: FetchOptions = FetchOptions(),
) -> Iterator[Item]:
    """Rows of a manifest; relative paths resolve against the manifest's folder; other columns are carried.

    `opener(path, mode, **kwargs)` opens it (fsspec's, for a manifest in object storage). With `columns.image`,
    a Parquet manifest brings each row's image bytes (locations/table.py), capped at `fetch.max_bytes`. `unseen`
    counts the rows skipped."""
    base = posixpath.dirname(path) if is_remote(path) else os.path.dirname(path)
    ext = os.path.splitext(named_suffix(path))[1]
    if ext == ".txt":
        with opener(path, "r", encoding=_ENCODING, errors=_ERRORS) as f:
            yield from read_lines(f, base=base, name=path, columns=columns, unseen=unseen)
    elif ext == ".csv":
        with opener(path, "r", newline="", encoding=_ENCODING, errors=_ERRORS) as f:
            yield from _read_csv(f, path, base, columns, unseen)
    elif ext in (".jsonl", ".ndjson"):
        with opener(path, "r", encoding=_ENCODING, errors=_ERRORS) as f:
            yield from read_lines(f, base=base, name=path, json_only=True, columns=columns, unseen=unseen)
    elif ext == ".parquet" and columns.image is not None:
        yield from iter_table(path, columns, opener, unseen, fetch)
    elif ext == ".parquet":
        with opener(path, "rb") as f:
            yield from _read_parquet(f, path, base, columns, unseen)


def _read_csv(f: IO[str], path: str, base: str, columns: Columns, unseen: Unlisted | None = None) -> Iterator[Item]:
    """Rows of a CSV manifest. A repeated column name gets `_2`, `_3`, ...; fields past the header's end are
    carried as a list under `_extra` (a unique name the same way)."""
    lines = _Lines(f)
    reader = csv.reader(lines)
    line = 1  # where the row being read starts
    try:
        header = next(reader, [])
        _require_path_column(header, path, columns)
        names = unique_names(header + ["_extra"])
        width, ragged = len(header), names.pop()
        line = reader.line_num + 1
        while (fields := next(reader, None)) is not None:
            if lines.ended:  # the csv module ends a quoted field at the end of the file without a word
                raise csv.Error("the file ends inside a quoted field")
            if any(fields):
                row: dict[str, Any] = dict(zip(names, fields + [None] * (width - len(fields))))
                if len(fields) > width:
                    row[ragged] = fields[width:]
                item = _item_from_row(row, base, columns)
                if item is not None:
                    yield item
                else:
                    _skipped(f"{path} line {line}", f'has no "{columns.path}"', unseen)
            line = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"manifest {path} line {line}: {exc}: check that its quotes are closed") from None


class _Lines:
    """The lines of a file, noting when they ran out: a row the csv module gives after that was ended by the end
    of the file, inside a quote that is never closed."""

    def __init__(self, f: Iterable[str]):
        self._lines = iter(f)
        self.ended = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        try:
            return next(self._lines)
        except StopIteration:
            self.ended = True
            raise


def _skipped(where: str, why: str, unseen: Unlisted | None) -> None:
    log.warning("%s %s: skipped", where, why)
    if unseen is not None:
        unseen.skip(where)


def unique_names(names: list[str]) -> list[str]:
    """`names` with each repeat renamed `name_2`, `name_3`, ... (the first that is free)."""
    taken = set(names)
    out: list[str] = []
    for name in names:
        if name in out:
            n = 2
            while f"{name}_{n}" in taken:
                n += 1
            name = f"{name}_{n}"
            taken.add(name)
        out.append(name)
    return out


def read_lines(
    f: Iterable[str],
    base: str | None,
    name: str,
    json_only: bool = False,
    columns: Columns = Columns(),
    unseen: Unlisted | None = None,
) -> Iterator[Item]:
    """One path a line; a line that starts with "{" is a JSON object with a "path" key (`columns.path`) and carried
    keys. A line that cannot be used is warned about, skipped and counted in `unseen`."""
    for number, line in enumerate(f, 1):
        line = line.strip().lstrip("\ufeff") if number == 1 else line.strip()
        if not line or (line.startswith("#") and not json_only):
            continue
        if line.startswith("{") or json_only:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                _skipped(f"{name} line {number}", f"is not valid JSON ({exc.msg})", unseen)
                continue
            except RecursionError:
                row = _DEEP
            if row is _DEEP or _too_deep(row):
                _skipped(f"{name} line {number}", f"nests more than {MAX_DEPTH} levels deep", unseen)
                continue
            if not isinstance(row, dict) or not row.get(columns.path):
                _skipped(f"{name} line {number}", f'has no "{columns.path}"', unseen)
                continue
            item = _item_from_row(row, base, columns)
        else:
            item = Item(_resolve(line, base))
        if item is not None:
            yield item


def _too_deep(value: Any) -> bool:
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [v for x in level if isinstance(x, (dict, list)) for v in (x.values() if isinstance(x, dict) else x)]
        if not level:
            return False
    return True


def _read_parquet(f: Any, path: str, base: str, columns: Columns, unseen: Unlisted | None = None) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"cannot read manifest {path}: {exc}") from None
    _require_path_column(pf.schema_arrow.names, path, columns)
    number = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            item = _item_from_row(from_parquet(row), base, columns)
            if item is not None:
                yield item
            elif any(value not in (None, "") for value in row.values()):
                _skipped(f"{path} row {number}", f'has no "{columns.path}"', unseen)


def _require_path_column(names: list[str], path: str, columns: Columns = Columns()) -> None:
    if columns.path not in names:
        if columns.path == "path":
            raise InputError(
                f"manifest {path} has no 'path' column: add one with the image paths, or name the column that "
                "holds them with --path-column (--image-column for image bytes)"
            )
        raise InputError(f"manifest {path} has no {columns.path!r} column (--path-column): check its name")


def _item_from_row(row: dict[str, Any], base: str | None, columns: Columns = Columns()) -> Item | None:
    value = row.get(columns.path)
    if value is None or str(value).strip() == "":
        return None
    extra = {k: v for k, v in row.items() if k != columns.path}
    return Item(_resolve(str(value).strip(), base), extra)


def _resolve(path: str, base: str | None) -> str:
    """A manifest's path as it is read: a URL as it is; a relative path against the manifest's folder (a folder
    in object storage too)."""
    if is_remote(path):
        return path
    path = local_path(path)
    if base and is_remote(base) and not path.startswith("/"):
        head, _, folder = base.partition("://")
        return f"{head}://{posixpath.normpath(posixpath.join(folder, path))}"
    path = os.path.expanduser(path)
    if base and not os.path.isabs(path):
        path = os.path.join(base, path)
    return os.path.normpath(path)
