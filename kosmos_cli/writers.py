"""Where records go: JSONL and Parquet outputs that stream, survive a kill at any moment, and resume.

An output file is written in two layers:

- the output itself (`results.jsonl` / `results.parquet`), only ever replaced atomically (write a temporary
  file beside it, then rename), so it is always complete and readable;
- records finished since, made durable batch by batch: appended straight to `results.jsonl` by a single
  process, or as parts in `results.parquet.parts/` (one small Parquet file per batch, renamed into place when
  complete; JSONL from several ranks: one file per rank there).

`compact` folds the parts into the output. Reading an output (to resume) takes the last record of each key, so
a record written again for a changed image replaces the older one. A torn last JSONL line or a half-written part
left by a crash is repaired, never appended after.
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from . import carried
from .errors import InputError, LockedError, OutputError, UsageError
from .fsnames import clean
from .records import Record, arrow_schema, record_key, to_jsonable

log = logging.getLogger("kosmos_cli")

FORMATS = ("jsonl", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_RESUME_COLUMNS = ("path", "file_size", "file_mtime", "status", "box_px", "phrase")


def detect_format(path: str, fmt: str | None = None) -> str:
    """The output format: `fmt` if given, else from the extension; "-" (stdout) is JSONL."""
    if fmt:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}: use jsonl or parquet")
        if path == "-" and fmt != "jsonl":
            raise UsageError("--out - writes JSONL only: name a .parquet file to write Parquet")
        return fmt
    if path == "-":
        return "jsonl"
    ext = os.path.splitext(path)[1].lower()
    if ext not in _EXTENSIONS:
        raise UsageError(f"cannot tell the output format of {path!r}: name a .jsonl or .parquet file, or pass --format")
    return _EXTENSIONS[ext]


def disk_error(exc: OSError, path: str) -> OutputError:
    """One line for a failed write; ENOSPC and quota get their own advice."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"no space left writing {path}: free some space and run the same command again "
                           "(finished records are kept and will be skipped)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {path}: {exc.strerror}: choose another --out or fix its permissions")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


@dataclass
class Seen:
    """What an output already holds for one key: enough to decide whether that image is done."""

    file_size: int | None
    file_mtime: float | None
    status: str | None


class Store:
    """One named output on disk: its lock, what it holds, its parts, and folding them in."""

    def __init__(self, path: str, fmt: str, task: str, rank: int = 0):
        self.path, self.fmt, self.task, self.rank = path, fmt, task, rank
        self.parts_dir = path + ".parts"
        self.lock_path = path + ".lock"
        self._lock_fd: int | None = None

    # -- lock --------------------------------------------------------------------------------------------
    def lock(self, wait: bool = False) -> None:
        """Take the output's lock. The kernel drops it when this process ends, however it ends."""
        import fcntl

        self._ensure_folder()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise disk_error(exc, self.lock_path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"another kosmos run (pid {holder}) is writing {self.path}: "
                              "let it finish, or pass --wait to wait for it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reading -----------------------------------------------------------------------------------------
    def sources(self) -> list[str]:
        """The files holding records, oldest first: the output, then its complete parts. Reads only."""
        files = [self.path] if os.path.exists(self.path) else []
        if os.path.isdir(self.parts_dir):
            files += [os.path.join(self.parts_dir, n) for n in sorted(os.listdir(self.parts_dir))
                      if n.endswith((".jsonl", ".parquet"))]  # a `.tmp` part is still being written
        return files

    def repair(self) -> None:
        """Clear what a crashed run left half-done: unfinished or unreadable parts, a torn last JSONL line, the
        `{path}.{pid}.tmp` of a merge killed before its rename.

        Only the lock holder may call this: another process's `.tmp` part is work in progress, not damage.
        """
        folder, base = os.path.split(os.path.abspath(self.path))
        for leftover in glob.glob(os.path.join(glob.escape(folder), glob.escape(base) + ".*.tmp")):
            if os.path.basename(leftover)[len(base) + 1:-4].isdigit():  # compact() names it by the merging pid
                log.warning("removing %s left by an interrupted merge", leftover)
                _unlink(leftover)
        if os.path.isdir(self.parts_dir):
            for name in sorted(os.listdir(self.parts_dir)):
                full = os.path.join(self.parts_dir, name)
                if name.endswith(".tmp"):
                    log.warning("removing unfinished part %s left by an interrupted run", full)
                    _unlink(full)
                elif name.endswith(".parquet") and not _readable_parquet(full):
                    log.warning("removing damaged part %s left by an interrupted run", full)
                    _unlink(full)
                elif name.endswith(".jsonl"):
                    _repair_jsonl_tail(full)
        if self.fmt == "jsonl":
            _repair_jsonl_tail(self.path)

    def rows(self, path: str, columns: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """The rows of one record file (the output or a part)."""
        if path.endswith(".jsonl") or (path == self.path and self.fmt == "jsonl"):
            yield from _jsonl_rows(path)
        else:
            yield from _parquet_rows(path, columns)

    def scan(self, parts: bool = True) -> dict[str, Seen]:
        """key -> what is recorded for it (the last record wins). `parts=False`: the output alone, leaving the
        parts folder untouched (other processes may be writing there)."""
        seen: dict[str, Seen] = {}
        rows = 0
        sources = self.sources() if parts else ([self.path] if os.path.exists(self.path) else [])
        for source in sources:
            for row in self.rows(source, _RESUME_COLUMNS):
                seen[record_key(row, self.task)] = Seen(row.get("file_size"), row.get("file_mtime"), row.get("status"))
                rows += 1
        self.duplicates = rows - len(seen)  # records written again for a key: compaction keeps the last
        return seen

    def has_parts(self) -> bool:
        return any(s != self.path for s in self.sources())

    def needs_compaction(self) -> bool:
        """Parts to fold in, or a key recorded twice (one full read of the output)."""
        if self.has_parts():
            return True
        self.scan()
        return self.duplicates > 0

    # -- folding parts in ----------------------------------------------------------------------------
    def compact(self, keep: Callable[[str], bool] | None = None) -> int:
        """Rewrite the output from itself and its parts: last record per key, `keep(key)` ones only.

        Atomic: the output is replaced by rename; the parts are removed after. Returns the rows written.
        """
        sources = self.sources()
        if not sources:
            return 0
        last: dict[str, tuple[int, int]] = {}
        for i, source in enumerate(sources):
            for j, row in enumerate(self.rows(source, _RESUME_COLUMNS)):
                last[record_key(row, self.task)] = (i, j)
        wanted = {pos for key, pos in last.items() if keep is None or keep(key)}
        del last
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            if self.fmt == "jsonl":
                written = self._compact_jsonl(sources, wanted, tmp)
            else:
                written = self._compact_parquet(sources, wanted, tmp)
            os.replace(tmp, self.path)
        except OSError as exc:
            _unlink(tmp)
            raise disk_error(exc, self.path) from None
        except BaseException:
            _unlink(tmp)
            raise
        for source in sources:
            if source != self.path:
                _unlink(source)
        _rmdir(self.parts_dir)
        return written

    def _compact_jsonl(self, sources: list[str], wanted: set, tmp: str) -> int:
        written = 0
        with open(tmp, "w", encoding="utf-8") as out:
            for i, source in enumerate(sources):
                for j, row in enumerate(self.rows(source)):
                    if (i, j) in wanted:
                        out.write(dumps(row))
                        written += 1
            _sync(out)
        return written

    def _compact_parquet(self, sources: list[str], wanted: set, tmp: str) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schemas = {s: pq.read_schema(s) for s in sources if s.endswith(".parquet")}
        schema = unified_schema(self.task, list(schemas.values()))
        written = 0
        with pq.ParquetWriter(tmp, schema) as writer:
            for i, source in enumerate(sources):
                chunk: list[dict] = []
                as_text = carried.to_json_text(schemas[source], schema) if source in schemas else []
                for j, row in enumerate(self.rows(source)):
                    if (i, j) in wanted:
                        chunk.append(carried.as_json_text(row, as_text))
                    if len(chunk) >= 4096:
                        writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                        written, chunk = written + len(chunk), []
                if chunk:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                    written += len(chunk)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        return written

    # -- writing -----------------------------------------------------------------------------------------
    def sink(self, direct: bool = True) -> Sink:
        """Where this process writes. `direct`: JSONL appends to the output itself (single process only)."""
        self._ensure_folder()
        if self.fmt == "jsonl" and direct:
            _repair_jsonl_tail(self.path)
            return JsonlSink(self.path)
        os.makedirs(self.parts_dir, exist_ok=True)
        if self.fmt == "jsonl":
            part = os.path.join(self.parts_dir, f"part-{self.rank:04d}.jsonl")
            _repair_jsonl_tail(part)
            return JsonlSink(part)
        return ParquetPartSink(self.parts_dir, self.task, self.rank)

    def tidy(self) -> None:
        """Remove the parts folder when nothing is left in it."""
        _rmdir(self.parts_dir)

    def remove(self) -> None:
        """--overwrite: forget what the output holds."""
        for source in self.sources():
            _unlink(source)
        _rmdir(self.parts_dir)

    def _ensure_folder(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise disk_error(exc, self.path) from None


class Sink:
    """Takes finished records, a batch at a time; each `write` is durable when it returns."""

    path: str

    def write(self, records: list[Record]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonlSink(Sink):
    def __init__(self, path: str):
        self.path = path
        try:
            self._f = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise disk_error(exc, path) from None

    def write(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            self._f.write("".join(dumps(r.to_dict()) for r in records))
            _sync(self._f)
        except OSError as exc:
            raise disk_error(exc, self.path) from None

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass


class StdoutSink(Sink):
    """JSONL on stdout, flushed per batch. A reader that goes away (`| head -1`) raises BrokenPipeError."""

    path = "-"

    def __init__(self, stream: IO[str] | None = None):
        self._stream = stream

    def write(self, records: list[Record]) -> None:
        stream = self._stream or sys.stdout
        try:
            stream.write("".join(dumps(r.to_dict()) for r in records))
            stream.flush()
        except BrokenPipeError:
            raise  # the reader went away: the CLI ends quietly
        except OSError as exc:
            raise disk_error(exc, "stdout") from None


class ParquetPartSink(Sink):
    """One Parquet file per batch in the parts folder, renamed into place once complete."""

    def __init__(self, folder: str, task: str, rank: int):
        self.path, self.task, self.rank = folder, task, rank
        existing = [n for n in os.listdir(folder) if n.startswith(f"part-{rank:04d}-")]
        self._seq = 1 + max((int(n.split("-")[2].split(".")[0]) for n in existing), default=-1)

    def write(self, records: list[Record]) -> None:
        if not records:
            return
        import pyarrow.parquet as pq

        table = records_table(records, self.task)
        name = os.path.join(self.path, f"part-{self.rank:04d}-{self._seq:08d}.parquet")
        tmp = name + ".tmp"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name)
        except OSError as exc:
            _unlink(tmp)
            raise disk_error(exc, name) from None
        self._seq += 1


def records_table(records: list[Record], task: str):
    """Records -> an Arrow table with the task's schema plus carried columns (types inferred)."""
    import pyarrow as pa

    rows = [clean(r.to_dict()) for r in records]
    base = arrow_schema(task)
    extra_names = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in base.names]
    extra = carried.schema_of(rows, extra_names) if extra_names else None
    return pa.Table.from_pylist(rows, schema=arrow_schema(task, extra))


def unified_schema(task: str, schemas: list):
    """One schema for the task and every carried column seen in any part (carried.py says how types combine)."""
    return arrow_schema(task, carried.unify(schemas, arrow_schema(task).names))


def dumps(row: dict[str, Any]) -> str:
    return json.dumps(to_jsonable(clean(row)), ensure_ascii=False, allow_nan=False) + "\n"


def read_records(path: str) -> Iterator[dict[str, Any]]:
    """Rows of any results file this tool wrote (JSONL or Parquet), for `draw` and for tests."""
    if not os.path.exists(path):
        raise InputError(f"results file not found: {path}")
    fmt = detect_format(path) if os.path.splitext(path)[1].lower() in _EXTENSIONS else _sniff(path)
    if fmt == "jsonl":
        yield from _jsonl_rows(path, strict=True)
    else:
        yield from _parquet_rows(path, None, strict=True)


def _sniff(path: str) -> str:
    with open(path, "rb") as f:
        return "parquet" if f.read(4) == b"PAR1" else "jsonl"


def _jsonl_rows(path: str, strict: bool = False) -> Iterator[dict[str, Any]]:
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if strict:
                    raise InputError(f"{path} line {number} is not JSON: is it a results file of kosmos?") from None
                log.warning("%s line %d is damaged: ignored", path, number)
                continue
            if not isinstance(row, dict) or "path" not in row:
                if strict:
                    raise InputError(f"{path} line {number} has no 'path': is it a results file of kosmos?")
                continue
            yield row


def _parquet_rows(path: str, columns: Iterable[str] | None, strict: bool = False) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        if strict or not os.path.dirname(path).endswith(".parts"):
            raise OutputError(f"{path} is not a readable Parquet file ({exc}): move it away or pass --overwrite") from None
        log.warning("ignoring damaged part %s", path)  # Store.repair removes it
        return
    names = pf.schema_arrow.names
    if "path" not in names:
        raise InputError(f"{path} has no 'path' column: is it a results file of kosmos?")
    wanted = [c for c in columns if c in names] if columns is not None else None
    for batch in pf.iter_batches(batch_size=4096, columns=wanted):
        yield from batch.to_pylist()


def _readable_parquet(path: str) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path)
    except Exception:  # pyarrow raises several types for a damaged file
        return False
    return True


def _repair_jsonl_tail(path: str) -> None:
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


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
