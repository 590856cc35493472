"""One output on disk, and its life: lock -> repair -> remove or compact -> scan -> write -> compact -> unlock.

An output file is written in two layers:

- the output itself (`results.jsonl` / `results.parquet`), only ever replaced atomically (write a temporary
  file beside it, then rename), so it is always complete and readable;
- records finished since, made durable batch by batch: appended straight to `results.jsonl` by a single
  process, or as parts in `results.parquet.parts/` (one small Parquet file per batch, renamed into place when
  complete; JSONL from several ranks: one file per rank there).

The store knows the output's whole layout: the output, `<out>.parts/`, `<out>.lock`, `<out>.ranks/` (where the
ranks of a multi-process run keep their status), and the spool that several processes write in place of stdout.
The caller says what it wants and gets what is done and where to write, behind one `with`:

    store = Store.for_run(out, fmt, task, team)
    store.check(inputs, overwrite=False)  # before a model loads: is the output ours, and this task's?
    store.probe()                         # is it free (no other run holds its lock), and writable?
    with store.open(team, overwrite=False, wait=False) as output:
        output.seen                 # key -> what is recorded for it
        output.write(records)       # durable when it returns
        output.complete(present)    # a full pass saw every input: --prune may drop the others

Compaction (folding parts in, dropping replaced records and, after a complete pass, pruned ones), tidying and
unlocking happen on exit, also after an error; after a failed write (a full disk) the parts are left for the
next run rather than copied now. Reading an output (to resume) takes the last record of each key, so a record
written again for a changed image replaces the older one. A torn last JSONL line or a half-written part left by
a crash is repaired, never appended after.

Nothing but an output of ours is ever touched: before the lock, a repair or a write, the main process checks that
an existing output is a results file of kosmos (`owner`: the task of its first row, read cheaply) written by the
same task, and that it is not one of the run's inputs. Anything else is refused and left byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import carried, tasks
from .atomic import atomic_write, rmdir, unlink
from .errors import LockedError, OutputError, UsageError
from .records import OK, Record
from .tasks import Task
from .writers import (
    JsonlSink,
    ParquetPartSink,
    Sink,
    StdoutSink,
    disk_error,
    dumps,
    jsonl_rows,
    parquet_rows,
    readable_parquet,
    repair_jsonl_tail,
    unified_schema,
)

log = logging.getLogger("kosmos_cli")

FIRST_LINE_LIMIT = 1 << 24  # bytes: a first JSONL line longer than this is not a record of ours
TASK_METADATA = b"kosmos_cli.task"  # the Parquet schema metadata naming the task (tasks.base.Task.schema)


class Crew(Protocol):
    """What the store needs of the processes writing it (distributed.Team, or a Solo team of one)."""

    @property
    def rank(self) -> int: ...
    @property
    def main(self) -> bool: ...  # this process prepares the output and compacts it
    @property
    def solo(self) -> bool: ...  # the only process: JSONL goes straight into the output
    @property
    def merged(self) -> bool: ...  # every process is done: the output may be compacted now

    def ready(self) -> None: ...


@dataclass
class Seen:
    """What an output already holds for one key: enough to decide whether that image is done, and with what
    settings (None: not recorded, as in outputs written before the `decoding` field)."""

    file_size: int | None
    file_mtime: float | None
    status: str | None
    model: str | None = None
    prompt: str | None = None
    decoding: str | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Seen:
        """What a row says; its settings interned (a million records share a few strings)."""
        settings = (row.get(name) for name in ("model", "prompt", "decoding"))
        return cls(
            row.get("file_size"),
            row.get("file_mtime"),
            row.get("status"),
            *(sys.intern(v) if isinstance(v, str) else None for v in settings),
        )


@dataclass
class Holdings:
    """What an output holds: key -> Seen (the last record of each key), and how many rows were written again."""

    seen: dict[str, Seen] = field(default_factory=dict)
    duplicates: int = 0


class Store:
    """One named output on disk: its lock, what it holds, its parts, and folding them in."""

    spool = False  # a stand-in for stdout: resumed like any output; after a run, copied to stdout and removed

    def __init__(self, path: str, fmt: str, task: str | type[Task], rank: int = 0):
        self.task = tasks.get(task) if isinstance(task, str) else task
        self.path, self.fmt, self.rank = path, fmt, rank
        self.parts_dir = path + ".parts"
        self.lock_path = path + ".lock"
        self.ranks_dir = path + ".ranks"
        self._lock_fd: int | None = None

    @classmethod
    def for_run(cls, out: str, fmt: str, task: type[Task], crew: Any) -> Store:
        """The store a run on `out` writes: `out` itself; for `-`, stdout, or with several processes a spool named
        after the task, so that the same command run again finds what a killed run left in it."""
        if out != "-":
            return cls(out, fmt, task, crew.rank)
        if crew.solo:
            return StdoutStore(task)
        return SpoolStore(f".kosmos-stdout-{task.name}.jsonl", "jsonl", task, crew.rank)

    # -- the life of a run -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def open(self, crew: Crew, *, overwrite: bool = False, wait: bool = False) -> Iterator[Output]:
        """Prepare the output for a run, yield what it holds and where to write, and settle it afterwards.

        The main process locks it, repairs what a crash left, and removes it (`overwrite`) or folds leftovers in;
        the others wait for that (`crew.ready()`). On exit every process closes its sink; once all are done
        (`crew.merged`) the main one compacts and tidies, then lets go of the lock.
        """
        try:
            if crew.main:
                self.lock(wait=wait)
                self.check(overwrite=overwrite)  # under the lock: nothing but this task's output is touched
                self.repair()
                if overwrite:
                    self.remove()
                elif self.has_parts() or self.scan().duplicates:
                    self.compact()  # leftovers of an interrupted run, or records written twice
            crew.ready()  # the other processes wait here until the main one has prepared the output
            output = Output(self, self.scan(parts=crew.solo).seen, self.sink(direct=crew.solo))
            try:
                yield output
            except OutputError:
                output.failed = True  # a full disk: leave the parts for the next run rather than copy them now
                raise
            finally:
                output.sink.close()
                if crew.merged and crew.main and not output.failed:  # also after Ctrl-C: what is done is kept
                    self.settle(output)
        finally:
            self.unlock()

    def settle(self, output: Output) -> None:
        """After a run: fold parts in, drop replaced records and (after a complete pass) pruned ones; tidy."""
        present = output.present
        if present is not None or output.replaced or self.has_parts():
            keep = (lambda key: _present(key, present)) if present is not None else None
            self.compact(keep)
        self.tidy()

    # -- whose output ------------------------------------------------------------------------------------
    def check(self, inputs: Iterable[Any] = (), overwrite: bool = False) -> None:
        """Refuse an output that must not be touched: one of `inputs` (a manifest or an image named as input),
        a file that is not a results file of kosmos, or (unless `overwrite`) another task's results.

        Reads at most the first row; raises UsageError (about `out`) and changes nothing.
        """
        if self.spool:
            return
        for given in inputs:
            if isinstance(given, str) and given != "-" and _same_file(given, self.path):
                raise UsageError(
                    f"{{param}} {self.path} is also one of the inputs: writing there would destroy it; "
                    "choose another {param}",
                    param="out",
                )
        owner = self.owner()
        if owner is not None and owner != self.task.name and not overwrite:
            raise UsageError(
                f"{{param}} {self.path} holds kosmos {owner} records: a {self.task.name} run would mix "
                "its own in; choose another {param}, or pass --overwrite to replace them",
                param="out",
            )

    def owner(self) -> str | None:
        """The task whose records the output holds, from its first row (or, with no output yet, its first part);
        None when it holds none (absent, or empty). Raises UsageError when the output is not ours."""
        for source in self.sources():
            try:
                task = _jsonl_owner(source) if self._is_jsonl(source) else _parquet_owner(source)
            except _NotOurs as exc:
                if source == self.path:
                    raise UsageError(
                        f"{{param}} {self.path} is not a results file of kosmos ({exc}): kosmos writes "
                        "only over its own results; choose another {param}",
                        param="out",
                    ) from None
                continue  # a part is ours by where it is; a damaged one is repair()'s
            if task is not None:
                return task
        return None

    def _is_jsonl(self, path: str) -> bool:
        return path.endswith(".jsonl") or (path == self.path and self.fmt == "jsonl")

    # -- lock --------------------------------------------------------------------------------------------
    def probe(self) -> None:
        """Fail now, not after a model loads, when another run holds the lock or the output cannot be written.

        Creates nothing: a folder still to be made must be makeable, the files there writable; the lock, when its
        file exists, is taken without waiting and let go of at once.
        """
        if self.spool:
            return
        existing = os.path.dirname(os.path.abspath(self.path))
        while not os.path.isdir(existing):
            if os.path.lexists(existing):  # a file where a folder has to be
                raise disk_error(NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), existing)
            existing = os.path.dirname(existing)
        for place in (existing, self.path, self.lock_path):
            if os.path.exists(place) and not os.access(place, os.W_OK):
                raise disk_error(PermissionError(errno.EACCES, os.strerror(errno.EACCES)), place)
        if os.path.exists(self.lock_path):  # none: nobody holds it (a holder makes it before locking)
            self.lock(wait=False)
            self.unlock()

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
            raise LockedError(
                f"another kosmos run (pid {holder}) is writing {self.path}: "
                "let it finish, or pass --wait to wait for it"
            ) from None
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
            files += [
                os.path.join(self.parts_dir, n)
                for n in sorted(os.listdir(self.parts_dir))
                if n.endswith((".jsonl", ".parquet"))
            ]  # a `.tmp` part is still being written
        return files

    def repair(self) -> None:
        """Clear what a crashed run left half-done: unfinished or unreadable parts, a torn last JSONL line, the
        `{path}.{pid}.tmp` of a merge killed before its rename.

        Only the lock holder may call this: another process's `.tmp` part is work in progress, not damage.
        """
        folder, base = os.path.split(os.path.abspath(self.path))
        for leftover in glob.glob(os.path.join(glob.escape(folder), glob.escape(base) + ".*.tmp")):
            if os.path.basename(leftover)[len(base) + 1 : -4].isdigit():  # compact() names it by the merging pid
                log.warning("removing %s left by an interrupted merge", leftover)
                unlink(leftover)
        if os.path.isdir(self.parts_dir):
            for name in sorted(os.listdir(self.parts_dir)):
                full = os.path.join(self.parts_dir, name)
                if name.endswith(".tmp"):
                    log.warning("removing unfinished part %s left by an interrupted run", full)
                    unlink(full)
                elif name.endswith(".parquet") and not readable_parquet(full):
                    log.warning("removing damaged part %s left by an interrupted run", full)
                    unlink(full)
                elif name.endswith(".jsonl"):
                    repair_jsonl_tail(full)
        if self.fmt == "jsonl":
            repair_jsonl_tail(self.path)

    def rows(self, path: str, columns: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """The rows of one record file (the output or a part)."""
        if self._is_jsonl(path):
            yield from jsonl_rows(path)
        else:
            yield from parquet_rows(path, columns)

    def scan(self, parts: bool = True) -> Holdings:
        """What the output holds (the last record of each key wins). `parts=False`: the output alone, leaving
        the parts folder untouched (other processes may be writing there)."""
        tasks.forget_folders()  # this run's keys share one view of the file system, taken now
        found, rows, folder = Holdings(), 0, self.folder()
        sources = self.sources() if parts else ([self.path] if os.path.exists(self.path) else [])
        for source in sources:
            for row in self.rows(source, self.task.resume_columns()):
                found.seen[self.task.key(row, folder)] = Seen.of(row)
                rows += 1
        found.duplicates = rows - len(found.seen)  # records written again for a key: compaction keeps the last
        return found

    def folder(self) -> str:
        """Where the output is: a relative path read back from it is also tried from here (Task.key)."""
        return os.path.dirname(os.path.abspath(self.path))

    def has_parts(self) -> bool:
        return any(s != self.path for s in self.sources())

    def needs_compaction(self) -> bool:
        """Parts to fold in, or a key recorded twice (one full read of the output)."""
        return self.has_parts() or self.scan().duplicates > 0

    # -- folding parts in ----------------------------------------------------------------------------
    def compact(self, keep: Callable[[str], bool] | None = None) -> int:
        """Rewrite the output from itself and its parts: last record per key, `keep(key)` ones only.

        Atomic: the output is replaced by rename; the parts are removed after. Returns the rows written.
        """
        sources = self.sources()
        if not sources:
            return 0
        last: dict[str, tuple[int, int]] = {}
        folder = self.folder()
        for i, source in enumerate(sources):
            for j, row in enumerate(self.rows(source, self.task.resume_columns())):
                last[self.task.key(row, folder)] = (i, j)
        wanted = {pos for key, pos in last.items() if keep is None or keep(key)}
        del last
        try:
            with atomic_write(self.path, "w" if self.fmt == "jsonl" else "wb") as f:
                if self.fmt == "jsonl":
                    written = self._compact_jsonl(sources, wanted, f)
                else:
                    written = self._compact_parquet(sources, wanted, f)
        except OSError as exc:
            raise disk_error(exc, self.path) from None
        for source in sources:
            if source != self.path:
                unlink(source)
        rmdir(self.parts_dir)
        return written

    def _kept_rows(self, sources: list[str], wanted: set) -> Iterator[tuple[str, dict[str, Any]]]:
        for i, source in enumerate(sources):
            for j, row in enumerate(self.rows(source)):
                if (i, j) in wanted:
                    yield source, self._named(row)

    def _compact_jsonl(self, sources: list[str], wanted: set, out) -> int:
        written = 0
        for _, row in self._kept_rows(sources, wanted):
            out.write(dumps(row))
            written += 1
        return written

    def _compact_parquet(self, sources: list[str], wanted: set, out) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schemas = {s: pq.read_schema(s) for s in sources if s.endswith(".parquet")}
        schema = unified_schema(self.task, list(schemas.values()))
        as_text = {s: carried.to_json_text(schemas[s], schema) if s in schemas else [] for s in sources}
        written, chunk = 0, []
        with pq.ParquetWriter(out, schema) as writer:
            for source, row in self._kept_rows(sources, wanted):
                chunk.append(carried.as_json_text(row, as_text[source]))
                if len(chunk) >= 4096:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                    written, chunk = written + len(chunk), []
            if chunk:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                written += len(chunk)
        return written

    def _named(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row as it is written again: one written before records named their task gets its task."""
        if row.get("task") is None:
            named = {"path": row["path"], "task": self.task.name}
            named.update((k, v) for k, v in row.items() if k != "task")
            return named
        return row

    # -- writing -----------------------------------------------------------------------------------------
    def sink(self, direct: bool = True) -> Sink:
        """Where this process writes. `direct`: JSONL appends to the output itself (single process only)."""
        self._ensure_folder()
        if self.fmt == "jsonl" and direct:
            repair_jsonl_tail(self.path)
            return JsonlSink(self.path)
        os.makedirs(self.parts_dir, exist_ok=True)
        if self.fmt == "jsonl":
            part = os.path.join(self.parts_dir, f"part-{self.rank:04d}.jsonl")
            repair_jsonl_tail(part)
            return JsonlSink(part)
        return ParquetPartSink(self.parts_dir, self.task, self.rank)

    def tidy(self) -> None:
        """Remove the parts folder when nothing is left in it."""
        rmdir(self.parts_dir)

    def remove(self) -> None:
        """--overwrite: forget what the output holds."""
        for source in self.sources():
            unlink(source)
        rmdir(self.parts_dir)

    def _ensure_folder(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise disk_error(exc, self.path) from None


class StdoutStore(Store):
    """`--out -` from one process: JSONL on stdout as batches finish; nothing to lock, resume or compact."""

    def __init__(self, task: type[Task]):
        super().__init__("-", "jsonl", task)

    def check(self, inputs: Iterable[Any] = (), overwrite: bool = False) -> None: ...
    def probe(self) -> None: ...

    @contextlib.contextmanager
    def open(self, crew: Crew, *, overwrite: bool = False, wait: bool = False) -> Iterator[Output]:
        output = Output(self, {}, StdoutSink())
        try:
            yield output
        finally:
            output.sink.close()


class SpoolStore(Store):
    """`--out -` from several processes: they write a hidden spool in the current folder (`.kosmos-stdout-<task>.jsonl`
    and its parts). When every process is done, the main process compacts it to the records of this pass's inputs
    (the pipeline always tells it which: `Output.complete`), copies that JSONL to stdout and removes it. A run that
    fails or is killed leaves it, and the same command run again resumes from it like from any output."""

    spool = True

    @contextlib.contextmanager
    def open(self, crew: Crew, *, overwrite: bool = False, wait: bool = False) -> Iterator[Output]:
        try:
            with super().open(crew, overwrite=overwrite, wait=wait) as output:
                yield output
        finally:
            if crew.main:
                unlink(self.lock_path)

    def settle(self, output: Output) -> None:
        """Compact to this pass's records, write them to stdout, and remove the spool (still under the lock)."""
        super().settle(output)
        self._emit()
        self.remove()

    def _emit(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                for chunk in iter(lambda: f.read(1 << 20), ""):
                    sys.stdout.write(chunk)
        except FileNotFoundError:
            pass  # nothing was written
        sys.stdout.flush()


class _NotOurs(Exception):
    """A file that is not a results file of kosmos; the message says why, in a few words."""


def _jsonl_owner(path: str) -> str | None:
    """The task of a JSONL results file's first record; None when it has none yet."""
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PAR1":
                raise _NotOurs("it is Parquet, not JSONL")
            f.seek(0)
            line = b"\n"
            while line and not line.strip():
                line = f.readline(FIRST_LINE_LIMIT)
            last = not f.read(1)
    except IsADirectoryError:
        raise _NotOurs("it is a folder") from None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _NotOurs(exc.strerror or str(exc)) from None
    if not line.strip():
        return None  # empty: ours to write
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        if last and not line.endswith(b"\n") and line.startswith(b'{"path": '):
            return None  # the first record, cut short by a crash: repair() drops it
        raise _NotOurs("its first line is not a JSON record") from None
    return _row_owner(row)


def _parquet_owner(path: str) -> str | None:
    """The task of a Parquet results file: its schema metadata, else its first row; None when it has no rows."""
    import pyarrow.parquet as pq

    if os.path.isdir(path):
        raise _NotOurs("it is a folder")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _NotOurs(exc.strerror or str(exc)) from None
    if not magic:
        return None  # empty: ours to write
    if magic != b"PAR1":
        raise _NotOurs("it is not Parquet")
    try:
        pf = pq.ParquetFile(path)
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise _NotOurs("it is not a readable Parquet file") from None
    schema = pf.schema_arrow
    named = (schema.metadata or {}).get(TASK_METADATA)
    if named is not None:
        task = tasks.REGISTRY.get(named.decode(errors="replace"))
        if task is None:
            raise _NotOurs(f"it names an unknown task {named.decode(errors='replace')!r}")
        return task.name
    if "path" not in schema.names or "status" not in schema.names:
        raise _NotOurs("it has no 'path' and 'status' columns")
    for batch in pf.iter_batches(batch_size=1):
        if batch.num_rows:
            return _row_owner(batch.to_pylist()[0])
    return None


def _row_owner(row: Any) -> str:
    """The task of a first row, or _NotOurs: it must be a record (path, status) of a known task."""
    if not isinstance(row, dict) or "path" not in row or "status" not in row:
        raise _NotOurs("its first row is not a kosmos record: no 'path' and 'status'")
    task = tasks.of_row(row)
    if task is None:
        raise _NotOurs("its first row is a record of no kosmos task")
    return task.name


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either is missing, or a name the system cannot take
        return False


def _present(key: str, present: set[str]) -> bool:
    """Whether the image of `key` is in `present`. Its path may hold a NUL too, the separator of keys."""
    return key in present or any(key[:i] in present for i, c in enumerate(key) if c == "\x00")


@dataclass
class Output:
    """An open output, as a run sees it: what it holds, where records go, and what the run has told it."""

    store: Store
    seen: dict[str, Seen]
    sink: Sink
    replaced: int = 0  # records written for keys the output already held: compaction drops the older ones
    kept: int = 0  # error records not written: the output holds an ok record for their key
    kept_first: str = ""  # the first of them, "path: error"
    failed: bool = False  # a write failed: leave the parts for the next run
    present: set[str] | None = None  # after a complete pass with --prune: the paths it saw

    def write(self, records: list[Record]) -> list[Record]:
        """Write a batch of records; durable when it returns. Returns the records written: an error record for
        a key the output holds an ok record for is not written (a record that was ok is never replaced by a
        worse one; --overwrite starts afresh), only counted in `kept`."""
        written = []
        for r in records:
            held = self.seen.get(self.store.task.key(vars(r)))
            if held is not None and held.status == OK and not r.ok:
                self.kept += 1
                self.kept_first = self.kept_first or f"{r.path}: {r.error}"
                continue
            self.replaced += held is not None
            written.append(r)
        self.sink.write(written)
        return written

    def complete(self, present: set[str]) -> None:
        """A pass that provably saw every input: records of paths not in `present` may be pruned on exit."""
        self.present = present
