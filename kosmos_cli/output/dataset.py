"""An `--out` that names a folder, here or in a bucket (s3://, gs://, az://): the results as a Parquet dataset.

    DIR/part-<stamp>-<writer>-<seq>.parquet ...

Every part has exactly the columns of a single Parquet output of its task (the task's schema, its metadata naming
the task, then the columns carried from a manifest), and once a run has ended every part has the same schema, so
DuckDB (`read_parquet('DIR/*.parquet')`), polars (`pl.read_parquet('DIR/*.parquet')`), `pyarrow.dataset` and
`kosmos draw` / `export` read it as one table.

- A part appears whole or not at all (dataset_folder.py): written under a hidden temporary name and renamed, or put in a
  bucket as one object.
- A run writes each batch durably as a part of its own in the hidden staging folder `DIR/.kosmos-parts/` (every
  process of a launch, named by its run's stamp and its rank), as a file output does in `<out>.parts/`. When
  every process is done, the main one folds them into parts of up to PART_ROWS records in the dataset and
  removes them. Resuming reads both, so a kill at any point loses no finished batch; staged parts a killed run
  left are folded in by the next.
- Parts sort in the order they were written: `<stamp>` is when the run started, later than every part already
  there. As in a file output, the last record of a key wins, and resuming skips what is recorded (read from the
  parts' key columns).
- Settling (after the fold, the main process holding the lock): a part holding records that a later part
  replaced (redone with other settings, or written twice) or that `--prune` drops is rewritten whole without
  them, or removed when nothing is left of it; a part whose schema differs from the dataset's (a carried column
  widened) is rewritten to it. Each step leaves a valid dataset; a kill between two leaves at most records
  written twice, which the next run drops before it starts. `--overwrite` removes the parts first.
- The lock (two runs at once are refused, exit 75) is `DIR/.kosmos.lock`, removed when the run ends. A bucket has
  no lock: two runs at once on one prefix are not refused and lose nothing (their staged batches never share a
  name); where both record an image, the record of the run that started later is kept, and the next run drops the
  other.
- Only a dataset of ours is written: every `*.parquet` file in the folder must name this task in its schema
  (ownership.py); other files there are never read or touched.

For a runner on a cluster (Ray Data): make the store on the driver, open and settle it there; write parts from
the workers; resume from what the driver read:

    store = DatasetStore(url, task)
    store.check(inputs, overwrite); store.probe()      # before any model loads: whose folder, the lock
    with store.open(Solo(), overwrite=...) as output:   # lock, repair, fold leftovers, overwrite or deduplicate
        output.seen                                     # key -> Seen: what is recorded (store.recorded_keys())
        # on each worker (the store pickles; open fixed its stamp):
        store.write_part(records, name)                 # one part now, whole; the same name again replaces it
        sink = store.part_writer(name)                  # or buffered: parts of part_rows records, at least every
        sink.write(records); sink.close()               #   part_seconds, and on close
        output.complete(present)                        # a complete pass: --prune drops the others on exit
    # on exit: settle (drop replaced and pruned records, one schema), let go of the lock

Within one run, write each key once: parts of one run have no order among their writers (a retried task that
writes its part again under the same name is the way to write something twice).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from .. import tasks
from ..errors import OutputError, UsageError, disk_error
from ..tasks import Task
from ..tasks.records import Record
from . import compaction
from .dataset_folder import Folder, folder_of, is_part, part_rows, read_schema
from .formats import Sink, records_table, unified_schema
from .handle import Holdings, Output, Seen, Writers, in_use, present_only
from .locking import OutputLock
from .ownership import NotOurs, not_ours, refuse_inputs, refuse_other_task, schema_owner

PART_ROWS = 50_000  # records in a part at most
PART_SECONDS = 300.0  # a part is written at least this often while records come in
LOCK_NAME = ".kosmos.lock"
STAGING = ".kosmos-parts"  # each batch of a run, durable, until the run folds them into the dataset
_STAMP = re.compile(r"^part-(\d{8}T\d{12})Z?-")
_STAMP_FORMAT = "%Y%m%dT%H%M%S%f"
_WRITER = re.compile(r"[^A-Za-z0-9_.-]+")


class DatasetStore:
    """A folder of Parquet parts (here or in a bucket) as one output: its lock, what it holds, its parts."""

    spool = False
    fmt = "dataset"
    part_rows = PART_ROWS
    part_seconds = PART_SECONDS

    def __init__(self, url: str, task: str | type[Task], rank: int = 0):
        self.task = tasks.get(task) if isinstance(task, str) else task
        self.rank = rank
        self.place: Folder = folder_of(url)
        self.path = self.place.url  # ends with "/"
        self.staging: Folder = folder_of(self.path + STAGING + "/")
        self.remote = self.place.remote
        self.lock_path = None if self.remote else os.path.join(self.path, LOCK_NAME)
        self._lock = None if self.lock_path is None else OutputLock(self.lock_path, self.path)
        self.stamp: str | None = None  # when this run started: its parts' names sort after every earlier part
        self.schema: Any = None  # the schema the parts share (as far as this process knows)

    def __getstate__(self) -> dict[str, Any]:
        """A copy sent to a worker (Ray) writes parts; the lock stays with the driver that holds it."""
        return {**self.__dict__, "_lock": None}

    # -- the life of a run -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def open(self, writers: Writers, *, overwrite: bool = False, wait: bool = False) -> Iterator[Output]:
        """As Store.open: prepare (main process: lock, check, repair, --overwrite or deduplicate), yield what is
        recorded and where to write, and settle after (once every process is done), then let go of the lock."""
        try:
            if writers.main:
                self.lock(wait=wait)
                self.check(overwrite=overwrite)  # under the lock: nothing but this task's dataset is touched
                self.repair()
                if overwrite:
                    self.remove()
                else:
                    self.settler.fold()  # staged parts a killed run left
                    if self.scan().duplicates:
                        self.settler.tidy()  # a run killed while settling: records written twice
            with in_use(Output(self, self.scan().seen, self.sink()), writers) as output:
                yield output
        finally:
            self.unlock()

    def settle(self, output: Output) -> None:
        """After a run: fold the staged parts in; drop replaced records and (after a complete pass) pruned ones;
        one schema for every part."""
        self.settler.fold()
        self.settler.tidy(present_only(output.present) if output.present is not None else None)

    @property
    def settler(self) -> Settler:
        return Settler(self)

    # -- whose dataset -----------------------------------------------------------------------------------
    def check(self, inputs: Iterable[Any] = (), overwrite: bool = False) -> None:
        """Refuse a folder that must not be written: one of the inputs, a file, a folder holding Parquet files
        that kosmos did not write, or (unless `overwrite`) another task's dataset. Reads the parts' schemas only."""
        if not self.remote:
            refuse_inputs(self.path.rstrip("/"), inputs)
        if self.place.kind() == "file":
            raise UsageError(
                f"{{param}} {self.path} names a folder (a Parquet dataset), but {self.path.rstrip('/')} is a file: "
                "leave off the / to write that file, or choose another {param}",
                param="out",
            )
        refuse_other_task(self.path, self.owner(), self.task.name, overwrite)

    def owner(self) -> str | None:
        """The task whose records the dataset holds (its parts' schemas); None when it holds none. UsageError
        when a Parquet file in it is not ours."""
        found = None
        for place, name in [(self.place, n) for n in self.parts()] + [(self.staging, n) for n in self.staged()]:
            try:
                try:
                    task = schema_owner(read_schema(place, name))
                except NotOurs:
                    raise
                except (OSError, ValueError, OutputError) as exc:
                    raise NotOurs("it is not a readable Parquet file") from exc
            except NotOurs as exc:
                if place is self.staging:
                    continue  # ours by where it is
                raise not_ours(self.path, NotOurs(f"it holds {name}: {exc}"), what="dataset") from None
            found = found or task
            if task != found:
                raise not_ours(self.path, NotOurs(f"its parts hold {found} and {task} records"), what="dataset")
        return found

    # -- the lock (a local folder only) ------------------------------------------------------------------
    def probe(self) -> None:
        """Fail now, not after a model loads: a folder that cannot be made or written, or the lock of another run.
        Creates nothing. A bucket says whether it can be read in `check`; there is nothing more to try."""
        if self._lock is None or self.lock_path is None:
            return
        existing = self.path.rstrip("/") or "/"
        while not os.path.isdir(existing):
            if os.path.lexists(existing) and existing != self.path.rstrip("/"):
                raise disk_error(NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), existing)
            existing = os.path.dirname(os.path.abspath(existing))
        if not os.access(existing, os.W_OK):
            raise disk_error(PermissionError(errno.EACCES, os.strerror(errno.EACCES)), existing)
        self._lock.probe()

    def lock(self, wait: bool = False) -> None:
        if self._lock is not None:
            self.place.make()
            self._lock.take(wait)

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    # -- reading -----------------------------------------------------------------------------------------
    def parts(self) -> list[str]:
        """The names of the parts, oldest first."""
        return [name for name in self.place.names() if is_part(name)]

    def staged(self) -> list[str]:
        """The names of the staged parts (this run's batches, or a killed run's), in the order written."""
        return [name for name in self.staging.names() if name.endswith(".parquet")]

    def rows(self, name: str, columns: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        return part_rows(self.place, name, columns)

    def scan(self) -> Holdings:
        """What the dataset holds, staged parts included: the last record of each key, and how many were written
        again."""
        names = self.parts()
        self._start(names)
        columns = self.task.resume_columns()
        files = [part_rows(self.place, n, columns) for n in names]
        files += [part_rows(self.staging, n, columns) for n in self.staged()]
        return Holdings.of(self.task, self.folder(), files)

    def recorded_keys(self) -> dict[str, Seen]:
        """Key -> what is recorded for it (the last record of each key): what a run skips."""
        return self.scan().seen

    def folder(self) -> str | None:
        """Where a relative path read back from the dataset is also tried from (Task.key): beside its folder."""
        return None if self.remote else os.path.dirname(os.path.abspath(self.path.rstrip("/")))

    def repair(self) -> None:
        """Remove the temporary files of parts a killed run was writing (only the lock holder may)."""
        for place in (self.place, self.staging):
            for name in place.names():
                if name.startswith(".") and name.endswith(".tmp"):  # folders.LocalFolder.put names them so
                    place.remove(name)

    # -- writing -----------------------------------------------------------------------------------------
    def sink(self, direct: bool = True) -> StagedSink:
        """Where this process writes: each batch a staged part, named after its rank."""
        return StagedSink(self)

    def part_writer(self, name: str, rows: int | None = None, seconds: float | None = None) -> PartSink:
        """A sink buffering records into parts named `part-<stamp>-<name>-<seq>.parquet` (`name`: a worker's), of
        `rows` records at most, one written at least every `seconds` (the store's part_rows, part_seconds)."""
        return PartSink(self, name, rows or self.part_rows, self.part_seconds if seconds is None else seconds)

    def write_part(self, records: list[Record], name: str) -> str:
        """Write `records` as one part now, whole or not at all; returns its file name. Writing the same `name`
        again (a retried task) replaces that part."""
        import pyarrow.parquet as pq

        if self.stamp is None:
            self._start(self.parts())
        table = records_table(records, self.task, like=self.schema)
        self.schema = table.schema
        part = f"part-{self.stamp}-{_WRITER.sub('_', name)}.parquet"
        self.place.put(part, lambda f: pq.write_table(table, f))
        return part

    def remove(self) -> None:
        """--overwrite: remove every part, staged ones too."""
        for name in self.parts():
            self.place.remove(name)
        for name in self.staged():
            self.staging.remove(name)
        self.staging.tidy()
        self.schema = None

    # -- inside ------------------------------------------------------------------------------------------
    def _start(self, names: list[str]) -> None:
        """This run's stamp (later than every part's: the clock may have gone back), and the parts' schema."""
        if self.stamp is None:
            now = datetime.now(timezone.utc)
            newest = max((m.group(1) for m in map(_STAMP.match, names) if m), default="")
            if newest >= now.strftime(_STAMP_FORMAT):
                now = datetime.strptime(newest, _STAMP_FORMAT) + timedelta(microseconds=1)
            self.stamp = now.strftime(_STAMP_FORMAT)
        if names and self.schema is None:
            self.schema = unified_schema(self.task, [read_schema(self.place, n) for n in names])


class Settler:
    """After a run (or before one, for what a killed run left), the main process holding the lock: fold the staged
    parts into the dataset, then rewrite whole the parts whose records a later part replaced or --prune drops."""

    def __init__(self, store: DatasetStore):
        self.store, self.task = store, store.task

    def fold(self) -> None:
        """The staged parts, in order, into parts of up to part_rows records in the dataset; then remove them."""
        store = self.store
        staged = store.staged()
        if staged:
            if store.stamp is None:
                store.scan()
            schemas = {name: read_schema(store.staging, name) for name in staged}
            known = [store.schema] if store.schema is not None else []
            target = unified_schema(self.task, [*known, *schemas.values()])
            rows = ((name, row) for name in staged for row in part_rows(store.staging, name))
            prefix = f"part-{store.stamp}-r{store.rank:04d}-"
            done = [int(n[len(prefix) :].split(".")[0]) for n in store.parts() if n.startswith(prefix)]
            for seq, chunk in enumerate(_chunks(rows, store.part_rows), 1 + max(done, default=-1)):
                part = f"{prefix}{seq:05d}.parquet"
                store.place.put(part, functools.partial(compaction.write_parquet, chunk, schemas, target))
            store.schema = target
            for name in staged:
                store.staging.remove(name)
        store.staging.tidy()

    def tidy(self, keep: Callable[[str], bool] | None = None) -> None:
        """Rewrite whole the parts holding records that a later part replaced, or that `keep` drops; remove the
        parts left with none; give every part the dataset's one schema. Each step leaves a valid dataset."""
        store = self.store
        names = store.parts()
        if not names:
            return
        schemas = {name: read_schema(store.place, name) for name in names}
        target = unified_schema(self.task, list(schemas.values()))
        last = compaction.last_positions(names, store.rows, self.task, store.folder())
        wanted: dict[int, set[int]] = {i: set() for i in range(len(names))}
        for key, (i, j) in last.items():
            if keep is None or keep(key):
                wanted[i].add(j)
        del last
        for i, name in enumerate(names):
            if len(wanted[i]) == self._count(name) and schemas[name].equals(target, check_metadata=True):
                continue
            if not wanted[i]:
                store.place.remove(name)
                continue
            kept = compaction.kept_rows([name], {(0, j) for j in wanted[i]}, self.task, store.rows)
            store.place.put(name, functools.partial(compaction.write_parquet, kept, {name: schemas[name]}, target))
        store.schema = target

    def _count(self, name: str) -> int:
        import pyarrow.parquet as pq

        with self.store.place.open(name) as f:
            return pq.ParquetFile(f).metadata.num_rows


def _chunks(rows: Iterator[tuple[str, dict[str, Any]]], size: int) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    chunk: list[tuple[str, dict[str, Any]]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class StagedSink(Sink):
    """Each batch of one process as a staged part of its own, whole and durable when `write` returns. Named
    `<stamp>-<rank>-<seq>.parquet`: in the order written, and never the name of another run's part (two runs at
    once on a bucket, which no lock keeps apart, never write over each other's batches)."""

    def __init__(self, store: DatasetStore):
        if store.stamp is None:
            store.scan()
        self.store, self.path = store, store.path
        self._prefix = f"{store.stamp}-{store.rank:04d}-"
        self._seq = 0

    def write(self, records: list[Record]) -> None:
        import pyarrow.parquet as pq

        if not records:
            return
        table = records_table(records, self.store.task)
        self.store.staging.put(f"{self._prefix}{self._seq:08d}.parquet", lambda f: pq.write_table(table, f))
        self._seq += 1


class PartSink(Sink):
    """Records of one writer buffered into parts: one part of `rows` records at most, written at least every
    `seconds` while records come in, and on close. A part that cannot be written loses its records (they are not
    recorded: the next run does them again); the error is raised."""

    def __init__(
        self,
        store: DatasetStore,
        writer: str,
        rows: int = PART_ROWS,
        seconds: float = PART_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store, self.writer, self.rows, self.seconds, self.clock = store, writer, rows, seconds, clock
        self.path = store.path
        self._buffer: list[Record] = []
        self._since = 0.0
        self._seq = 0

    def write(self, records: list[Record]) -> None:
        if not records:
            return
        if not self._buffer:
            self._since = self.clock()
        self._buffer.extend(records)
        if len(self._buffer) >= self.rows or self.clock() - self._since >= self.seconds:
            self.flush()

    def flush(self) -> None:
        records, self._buffer = self._buffer, []
        while records:
            chunk, records = records[: self.rows], records[self.rows :]
            self.store.write_part(chunk, f"{self.writer}-{self._seq:05d}")
            self._seq += 1

    def close(self) -> None:
        self.flush()
