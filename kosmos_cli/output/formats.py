"""Record files: the formats (JSONL, Parquet, a folder of Parquet parts) and the sinks that write batches durably.

What an output holds and its life (lock, repair, compaction) is the store's (store.py, dataset.py); reading results
back is the reader's (reader/); this module knows how bytes go to one file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from typing import IO, Any, Protocol

from ..errors import UsageError, disk_error
from ..inputs import carried_columns, locations
from ..inputs.images import NOT_REGULAR, is_special
from ..inputs.names import clean
from ..tasks.records import Record
from .atomic import atomic_write

log = logging.getLogger("kosmos_cli")


class TaskSchema(Protocol):
    """What a sink needs of a task (tasks/): the Parquet schema of its records, `extra` the carried columns'."""

    def schema(self, extra: Any = None) -> Any: ...


FORMATS = ("jsonl", "parquet")
DATASET = "dataset"  # an --out that names a folder: Parquet parts (dataset.py)
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def names_folder(out: str) -> bool:
    """Whether `out` names a folder, which is written as a Parquet dataset: a name ending in `/`, an existing
    folder, or a bucket URL (s3://, gs://, az://) that does not end in the extension of a results file."""
    if out == "-":
        return False
    if out.endswith(("/", os.sep)):
        return True
    if locations.is_remote(out):
        return not locations.is_url(out) and os.path.splitext(out)[1].lower() not in _EXTENSIONS
    return os.path.isdir(out)


def check_out(out: str) -> None:
    """UsageError for an --out that cannot be written: a web URL, or a single file in a bucket (a bucket takes a
    dataset: a file there could not be locked, resumed and renamed into place)."""
    if locations.is_url(out):
        locations.check_local_output(out, "out")
    if out != "-" and not locations.is_remote(out) and is_special(out):  # a FIFO would hold the run forever
        raise UsageError(
            f"{{param}} {out} is {NOT_REGULAR}: name a results file (for records on stdout, give {{param}} -)",
            param="out",
        )
    if out == "-" or not locations.is_remote(out) or names_folder(out):
        return
    raise UsageError(
        f"{{param}} {out}: a bucket takes results as a Parquet dataset, not as one file; name a folder, ending "
        f"in / ({os.path.splitext(out)[0]}/), or write the file here and copy it up",
        param="out",
    )


def detect_format(path: str, fmt: str | None = None) -> str:
    """The output format: `fmt` if given, else from the extension; "-" (stdout) is JSONL; a folder is a dataset."""
    if fmt:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r} ({{param}}): use jsonl or parquet", param="format")
        if names_folder(path):
            if fmt == "jsonl":
                raise UsageError(
                    f"{path} names a folder, which kosmos writes as a Parquet dataset: leave {{param}} jsonl off, "
                    "or name a .jsonl file",
                    param="format",
                )
            return DATASET
        if path == "-" and fmt != "jsonl":
            raise UsageError("{param} - writes JSONL only: name a .parquet file to write Parquet", param="out")
        return fmt
    if path == "-":
        return "jsonl"
    if names_folder(path):
        return DATASET
    ext = os.path.splitext(path)[1].lower()
    if ext not in _EXTENSIONS:
        raise UsageError(
            f"cannot tell the output format of {path!r}: name a .jsonl or .parquet file, or a folder ending in / "
            "(a Parquet dataset), or pass {param}",
            param="format",
        )
    return _EXTENSIONS[ext]


class Sink:
    """Takes finished records, a batch at a time; each `write` is durable when it returns."""

    path: str

    def write(self, records: list[Record]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonlSink(Sink):
    """Appends each batch to a JSONL file and syncs it. A batch that cannot be written whole (a full disk, a
    quota) is cut off again before the error is raised: the file holds whole records only after any failure."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise disk_error(exc, path) from None

    def write(self, records: list[Record]) -> None:
        if not records or self._fd is None:
            return
        data = memoryview("".join(record_line(r) for r in records).encode("utf-8"))
        start = None
        try:
            start = os.fstat(self._fd).st_size
            while data:
                data = data[os.write(self._fd, data) :]
            os.fsync(self._fd)
        except OSError as exc:
            if start is not None:
                with contextlib.suppress(OSError):  # shrinking needs no space; if it fails, the next run repairs
                    os.ftruncate(self._fd, start)
            raise disk_error(exc, self.path) from None

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class StdoutSink(Sink):
    """JSONL on stdout, flushed per batch. A reader that goes away (`| head -1`) raises BrokenPipeError."""

    path = "-"

    def __init__(self, stream: IO[str] | None = None):
        self._stream = stream

    def write(self, records: list[Record]) -> None:
        stream = self._stream or sys.stdout
        try:
            stream.write("".join(record_line(r) for r in records))
            stream.flush()
        except BrokenPipeError:
            raise  # the reader went away: the CLI ends quietly
        except OSError as exc:
            raise disk_error(exc, "stdout") from None


class ParquetPartSink(Sink):
    """One Parquet file per batch in the parts folder, renamed into place once complete."""

    def __init__(self, folder: str, task: TaskSchema, rank: int):
        self.path, self.task, self.rank = folder, task, rank
        existing = [n for n in os.listdir(folder) if n.startswith(f"part-{rank:04d}-")]
        self._seq = 1 + max((int(n.split("-")[2].split(".")[0]) for n in existing), default=-1)

    def write(self, records: list[Record]) -> None:
        if not records:
            return
        import pyarrow.parquet as pq

        table = records_table(records, self.task)
        name = os.path.join(self.path, f"part-{self.rank:04d}-{self._seq:08d}.parquet")
        try:
            with atomic_write(name, "wb") as f:
                pq.write_table(table, f)
        except OSError as exc:
            raise disk_error(exc, name) from None
        self._seq += 1


def records_table(records: list[Record], task: TaskSchema, like: Any = None):
    """Records -> an Arrow table with the task's schema plus carried columns (types inferred).

    `like`: the schema of the files already beside this one (a dataset's parts): the table takes the schema that
    holds both (carried_columns.py, rule 3), so that parts agree whenever they can."""
    return rows_table([clean(r.to_dict()) for r in records], task, like)


def rows_table(rows: list[dict[str, Any]], task: TaskSchema, like: Any = None):
    """As records_table, from rows as a results file holds them (fields of the task's, then carried columns)."""
    import pyarrow as pa

    base = task.schema()
    extra_names = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in base.names]
    extra = carried_columns.schema_of(rows, extra_names) if extra_names else None
    own = task.schema(extra)
    if like is None:
        return pa.Table.from_pylist(rows, schema=own)
    schema = unified_schema(task, [like, own])
    as_text = carried_columns.to_json_text(own, schema)
    return pa.Table.from_pylist([carried_columns.as_json_text(row, as_text) for row in rows], schema=schema)


def unified_schema(task: TaskSchema, schemas: list):
    """One schema for the task and every carried column seen in any part (carried_columns.py says how types combine)."""
    return task.schema(carried_columns.unify(schemas, task.schema().names))


def dumps(row: dict[str, Any]) -> str:
    return json.dumps(carried_columns.to_jsonable(clean(row)), ensure_ascii=False, allow_nan=False) + "\n"


_SCALARS = (str, int, float, bool, type(None))


def record_line(record: Record) -> str:
    """`dumps(record.to_dict())`, the same text, in a third of the time where nothing needs making JSON-safe: our own
    fields, and carried columns of plain values, dumped as they are. Text that cannot be UTF-8 (a name that was not),
    a NaN or a value JSON does not know makes it take `dumps`, which records, nulls and stringifies them."""
    row = record.to_dict()
    if all(type(v) in _SCALARS for v in record.extra.values()):  # a carried dict could have keys JSON would rename
        try:
            text = json.dumps(row, ensure_ascii=False, allow_nan=False)
            text.encode("utf-8")  # every string valid Unicode: `clean` would change none
            return text + "\n"
        except (ValueError, TypeError):  # UnicodeEncodeError is a ValueError
            pass
    return dumps(row)


def readable_parquet(path: str) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path)
    except Exception:  # pyarrow raises several types for a damaged file
        return False
    return True


def repair_jsonl_tail(path: str) -> None:
    """Cut a torn last line (a write cut short by a crash) so the next record starts on its own line.

    A last line that is a whole JSON object (written by hand, or by a tool that ends without a newline) is kept:
    only its newline is added."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            pos = size
            while pos > 0:  # walk back to the last newline
                step = min(65536, pos)
                f.seek(pos - step)
                chunk = f.read(step)
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    pos = pos - step + cut + 1
                    break
                pos -= step
            f.seek(pos)
            if _whole_object(f.read(size - pos)):
                f.write(b"\n")
                return
            log.warning("repairing %s: dropping a torn last line left by an interrupted run", path)
            f.truncate(pos)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise disk_error(exc, path) from None


def _whole_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):  # not JSON, or not UTF-8
        return False


def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())
