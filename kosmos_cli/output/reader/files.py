"""What a results path names and the rows in it: the one place that reads results files back, for draw, export,
eval, view, import and resume.

    source = results_path(path)                # JSONL file, Parquet file, or a folder of parts (here or in a bucket)
    for where, row in rows(source): ...       # ("line 7", row); a line that is no JSON comes as a Bad
    read_records(path)                        # the public reader: rows as dicts, InputError at one that is no record
    resume_rows(path, columns, jsonl=True)    # what a resume scan reads: a damaged line warned and skipped
    parquet_task(pf, name)                    # the task that wrote a Parquet file

A results path is a JSONL file or a Parquet file (told by its first bytes), or a folder: a dataset that --out DIR/
wrote (here or in a bucket) or a file output's `<out>.parts/`, whose files are read as one (dataset_folder.
read_as_one). A missing path, a FIFO, a socket or a device (reading one would wait forever), a folder holding no
part: each is refused in one line (InputError), worded as its caller's users know it (`Wording`). A Parquet file
that cannot be opened, or a page of one that cannot be read, is one InputError naming the file (and the row).
A JSONL line is parsed by `loads`, the one parser every reader of a line uses.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from ... import tasks
from ...errors import InputError, OutputError
from ...inputs.images import NOT_REGULAR
from ...tasks import Task
from ..dataset_folder import Folder, folder_of, read_as_one
from ..formats import names_folder

log = logging.getLogger("kosmos_cli")

NOT_RESULTS = "pass the .jsonl or .parquet file written by kosmos ground, refer or find"
JSONL, PARQUET, FOLDER = "jsonl", "parquet", "folder"
NOT_UTF8, NOT_JSON, TOO_DEEP = "not UTF-8 text", "not JSON", "nested too deep to read"
_PART = "restore it, or move it out of the folder"  # what to do with a damaged part of a folder


@dataclass(frozen=True)
class Bad:
    """A line or row of a results file that cannot be used: where it is ("line 7", "row 7") and why."""

    where: str
    why: str

    def message(self, path: str) -> str:
        """The one line a reader warns with (`path`: the results file, when the row came from one)."""
        return f"{path} {self.where} skipped: {self.why}" if path else f"{self.where} skipped: {self.why}"


@dataclass(frozen=True)
class Wording:
    """How a caller words the refusal of a path that names no results ({path}; {why}: what kind of special file)."""

    special: str  # a FIFO, a socket, a device
    no_parts: str  # a folder holding no Parquet part


DRAW = Wording(  # draw, export, eval, import and read_records
    special="{path} is " + NOT_REGULAR + ": results are read from a file that kosmos wrote",
    no_parts="{path} is a folder: " + NOT_RESULTS + " (or a dataset folder that --out DIR/ wrote)",
)
VIEW = Wording(
    special="{path}: {why}: " + NOT_RESULTS,
    no_parts="{path} is a folder without Parquet parts: pass a .jsonl or .parquet results file",
)


class Unreadable(InputError):
    """A Parquet file that cannot be opened (damaged, or no Parquet at all)."""

    def __init__(self, name: str, why: str, hint: str):
        super().__init__(f"{name} is not a readable Parquet file: {hint} ({why})")
        self.name, self.why = name, why


@dataclass(frozen=True)
class Source:
    """What a results path names: a JSONL or Parquet file, or a folder whose `parts` are read as one, in order."""

    path: str
    kind: str  # JSONL, PARQUET or FOLDER
    folder: Folder | None = None  # FOLDER: where the parts are (here or in a bucket)
    parts: tuple[str, ...] = ()  # FOLDER: the names of the files read, in order

    def files(self) -> list[str]:
        """The files the results are read from, as paths (a bucket's as URLs)."""
        return [self.folder.full(name) for name in self.parts] if self.folder is not None else [self.path]


def results_path(path: str, say: Wording = DRAW) -> Source:
    """What `path` names; InputError, one line, when it names no results: missing, a FIFO (or a socket, a device),
    a folder holding no Parquet part."""
    if names_folder(path):  # a dataset: a folder of Parquet parts, here or in a bucket; or a file output's .parts/
        folder = folder_of(path)
        if folder.kind() == "missing":
            raise InputError(f"results folder not found: {path}")
        parts = read_as_one(folder.names() if folder.remote else _listed(path))
        if not parts:
            raise InputError(say.no_parts.format(path=path))
        if not folder.remote:
            for name in parts:
                check_regular(folder.full(name), say)
        return Source(path, FOLDER, folder, tuple(parts))
    if not os.path.exists(path):
        raise InputError(f"results file not found: {path}")
    check_regular(path, say)
    return Source(path, PARQUET if _is_parquet(path) else JSONL)


def check_regular(path: str, say: Wording = DRAW) -> None:
    """InputError when `path` is a FIFO, a socket or a device: reading one would wait forever, or never end."""
    why = _special(path)
    if why is not None:
        raise InputError(say.special.format(path=path, why=why))


def _special(path: str) -> str | None:
    import stat

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None  # missing, no permission, a NUL in the name: the opening says it
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    what = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"{NOT_REGULAR} ({what})"


def _listed(path: str) -> list[str]:
    """A local folder's names (any kind of file: a FIFO among the parts is refused, not passed over), sorted."""
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _is_parquet(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def loads(line: bytes | str) -> Any:
    """One JSONL line, parsed; ValueError saying why it cannot be (NOT_UTF8, NOT_JSON, TOO_DEEP), never a
    RecursionError."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError:
        raise ValueError(NOT_UTF8) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None
    except ValueError:
        raise ValueError(NOT_JSON) from None


# -- rows ------------------------------------------------------------------------------------------------------
def rows(source: Source | str, columns: Iterable[str] | None = None) -> Iterator[tuple[str, Any]]:
    """(where, row) for each row of the results, in order: "line 7" (JSONL) or "row 7" (Parquet, counted across a
    folder's parts); a JSONL line that is no JSON comes as a Bad. `columns`: of Parquet, only those it has."""
    if isinstance(source, str):
        source = results_path(source)
    if source.kind == JSONL:
        yield from _jsonl(source.path)
        return
    number = 0
    if source.folder is None:
        for row in parquet_rows(open_parquet(source.path, source.path), source.path, columns, f"{NOT_RESULTS}, whole"):
            number += 1
            yield f"row {number}", row
        return
    folder = source.folder
    for name in source.parts:
        with folder.open(name) as f:
            pf = open_parquet(f, folder.url + name, _PART)
            if "path" not in pf.schema_arrow.names:
                raise InputError(f"{folder.url}{name} has no 'path' column: is it a results file of kosmos?")
            for row in parquet_rows(pf, folder.url + name, columns, _PART):
                number += 1
                yield f"row {number}", row


def _jsonl(path: str, missing: bool = False) -> Iterator[tuple[str, Any]]:
    """(where, row) of each line that is not blank; a Bad for a line that is no JSON. `missing`: a file that is gone
    has no rows (a part folded meanwhile)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        if missing:
            return
        raise InputError(f"results file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                yield where, loads(line)
            except ValueError as exc:
                yield where, Bad(where, str(exc))


def open_parquet(file: str | IO[bytes], name: str, hint: str = NOT_RESULTS):
    """A pyarrow ParquetFile; Unreadable (naming the file, saying what to do: `hint`) when it cannot be opened."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(file)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise Unreadable(name, _why(exc), hint) from None


def parquet_rows(pf, name: str, columns: Iterable[str] | None = None, hint: str = NOT_RESULTS) -> Iterator[dict]:
    """The rows of an open Parquet file (`columns`: only those it has); a page that cannot be read is one InputError
    naming the file and the row."""
    if columns is not None:
        columns = [c for c in columns if c in pf.schema_arrow.names]
    batches, number = pf.iter_batches(batch_size=4096, columns=columns), 0
    while True:
        try:
            batch = next(batches, None)
        except Exception as exc:  # noqa: BLE001 - a damaged page: pyarrow raises OSError, ArrowInvalid, ...
            raise InputError(f"{name} cannot be read past row {number} ({_why(exc)}): it is damaged; {hint}") from None
        if batch is None:
            return
        number += batch.num_rows
        yield from batch.to_pylist()


def _why(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def parquet_task(pf, name: str) -> type[Task] | None:
    """The task that wrote a Parquet file: its schema says it (`kosmos_cli.task`), else its rows' `task`, else its
    columns (a file written before either); None when no task's. InputError for a task kosmos does not know."""
    named = (pf.schema_arrow.metadata or {}).get(b"kosmos_cli.task", b"").decode(errors="replace")
    if named in tasks.REGISTRY:
        return tasks.get(named)
    names = pf.schema_arrow.names
    if "task" in names and pf.metadata.num_rows:
        for value in pf.read_row_group(0, columns=["task"]).column(0).to_pylist():
            if value is not None:
                if value not in tasks.REGISTRY:
                    known = ", ".join(tasks.REGISTRY)
                    raise InputError(f"{name} holds records of task {value!r}: kosmos reads {known} records")
                return tasks.get(value)
    return tasks.of_row(dict.fromkeys(names))


# -- what each caller reads ------------------------------------------------------------------------------------
def read_records(path: str) -> Iterator[dict[str, Any]]:
    """Rows of any results file this tool wrote (JSONL or Parquet), or of a dataset folder of Parquet parts (here
    or in a bucket), as dicts; InputError at the first line or row that is no record (no JSON, no 'path')."""
    for where, row in rows(path):
        if isinstance(row, Bad):
            raise InputError(f"{path} {where} is {row.why}: is it a results file of kosmos?")
        if not isinstance(row, dict) or "path" not in row:
            raise InputError(f"{path} {where} has no 'path': is it a results file of kosmos?")
        yield row


def resume_rows(path: str, columns: Iterable[str] | None, jsonl: bool) -> Iterator[dict[str, Any]]:
    """The rows a resume scan reads of one record file (an output or one of its parts), `columns` only where it is
    Parquet: a damaged line is warned and skipped, a row without a path skipped, a file that is gone has none. A
    Parquet output that cannot be read is an OutputError; a part that cannot be, warned and skipped (repair removes
    it)."""
    if jsonl:
        for where, row in _jsonl(path, missing=True):
            if isinstance(row, Bad):
                log.warning("%s %s is damaged: ignored", path, where)
            elif isinstance(row, dict) and "path" in row:
                yield row
        return
    try:
        pf = open_parquet(path, path)
    except Unreadable as exc:
        if not os.path.dirname(path).endswith(".parts"):
            raise OutputError(
                f"{path} is not a readable Parquet file ({exc.why}): move it away or pass --overwrite"
            ) from None
        log.warning("ignoring damaged part %s", path)
        return
    if "path" not in pf.schema_arrow.names:
        raise InputError(f"{path} has no 'path' column: is it a results file of kosmos?")
    yield from parquet_rows(pf, path, columns, "move it away or pass --overwrite")
