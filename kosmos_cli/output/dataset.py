"""An `--out` that names a folder, here or in a bucket (s3://, gs://, az://): the results as a Parquet dataset.

    DIR/part-<stamp>-<writer>-<seq>.parquet ...

Every part has exactly the columns of a single Parquet output of its task (the task's schema, its metadata naming
the task, then the columns carried from a manifest), and once a run has ended every part has the same schema, so
DuckDB (`read_parquet('DIR/*.parquet')`), polars (`pl.read_parquet('DIR/*.parquet')`), `pyarrow.dataset` and
`kosmos draw` / `export` read it as one table.

- A part appears whole or not at all (dataset_folder.py): written under a hidden temporary name and renamed, or put in a
  bucket as one object.
- A run writes each batch durably as a batch of its own in the hidden staging folder `DIR/.kosmos-parts/`
  (`<stamp>-<rank>-<seq>.parquet`: named by its run's stamp and its process), as a file output does in
  `<out>.parts/`. When every process is done, the main one folds its run's batches into parts of up to PART_ROWS
  records in the dataset (`part-<stamp>-r<rank>-<seq>.parquet`, the stamp of the run that wrote them) and removes
  them. Resuming reads both, so a kill at any point loses no finished batch.
- A run folds only its own batches, and those of runs that are provably dead: in a local folder every other run's
  (the lock proves it ended); in a bucket, where two runs may write at once, a run's batches once its marker
  (`<stamp>-<rank>.run`: host, boot, pid) names a process of this machine that is gone, or once it has written
  nothing for STALE_AFTER seconds (an hour). A live run's batches are never folded, rewritten or removed by another.
- Parts are read in the order their runs wrote them (dataset_folder.in_order: stamp, then writer and sequence):
  `<stamp>` is when the run started, later than every part already there. As in a file output, the last record of
  a key wins, and resuming skips what is recorded (read from the parts' key columns).
- A dataset is only what kosmos wrote: a part is a file kosmos named so. A run refuses a folder holding any other
  `*.parquet` file (a results file moved in, a user's copy) in one line naming it, and never reads, rewrites or
  removes it; `import_file` (`kosmos import`) adds a results file's records as a part of their own.
- Settling (after the fold, the main process holding the lock): a part holding records that a later part
  replaced (redone with other settings, or written twice) or that `--prune` drops is rewritten whole without
  them, or removed when nothing is left of it; a part whose schema differs from the dataset's (a carried column
  widened) is rewritten to it. Each step leaves a valid dataset; a kill between two leaves at most records
  written twice, which the next run drops before it starts. `--overwrite` removes the parts first.
- The lock (two runs at once are refused, exit 75) is `DIR/.kosmos.lock`, removed when the run ends. A bucket has
  no lock: two runs at once on one prefix are not refused and lose nothing (each folds only its own batches; a
  part another run removes or replaces meanwhile is read whole or skipped, and a part is rewritten from one read
  of it, so it only ever loses records a later part holds); where both record an image, the record of the run that
  started later is kept. The run that ends last finds the records written twice and drops them.
- Only a dataset of ours is written: every part must name this task in its schema (ownership.py); other files
  there that are no tables (notes, a README) are never read or touched.

How a run uses it (run/pipeline.py, through the store's one `with`):

    store = DatasetStore(url, task)
    store.check(inputs, overwrite); store.probe()      # before any model loads: whose folder, the lock
    with store.open(Solo(), overwrite=...) as output:   # lock, repair, fold leftovers, overwrite or deduplicate
        output.seen                                     # key -> Recorded: what is recorded (store.recorded_keys())
        output.write(records)                           # each batch a staged part of this run
        output.complete(present)                        # a complete pass: --prune drops the others on exit
    # on exit: settle (fold this run's batches, drop replaced and pruned records, one schema), let go of the lock

Within one run, write each key once: parts of one run have no order among their writers (a retried task that
writes its part again under the same name is the way to write something twice).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import IO, Any

from .. import tasks
from ..errors import UsageError, disk_error
from ..inputs import locations
from ..tasks import Task
from ..tasks.records import Record
from . import compaction
from .dataset_folder import Folder, folder_of, in_order, is_part, is_table, part_rows, read_schema
from .formats import Sink, names_folder, records_table, rows_table, unified_schema
from .handle import Output, Recorded, RecordedKeys, Writers, in_use, present_only
from .locking import OutputLock
from .ownership import NotOurs, not_ours, owner_of, refuse_inputs, refuse_other_task, same_file, schema_owner
from .reader import read_records

PART_ROWS = 50_000  # records in a part at most
LOCK_NAME = ".kosmos.lock"
STAGING = ".kosmos-parts"  # each batch of a run, durable, until the run folds them into the dataset
STALE_AFTER = 3600.0  # seconds: a run in a bucket that has written nothing for this long is taken for dead
SETTLE_ROUNDS = 4  # a run in a bucket tidies again while it finds records written twice (another run's at once)
_STAMP = re.compile(r"^part-(\d{8}T\d{12})Z?-")
_STAGED = re.compile(r"^(\d{8}T\d{12})-(\d{4})-(\d{8})\.parquet$")  # <stamp>-<rank>-<seq>: a batch of a run
_MARKER = re.compile(r"^(\d{8}T\d{12})-(\d{4})\.run$")  # <stamp>-<rank>.run: the process writing those batches
_STAMP_FORMAT = "%Y%m%dT%H%M%S%f"
_WRITER = re.compile(r"[^A-Za-z0-9_.-]+")


class DatasetStore:
    """A folder of Parquet parts (here or in a bucket) as one output: its lock, what it holds, its parts."""

    spool = False
    fmt = "dataset"
    part_rows = PART_ROWS

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
                    self.settler.fold()  # staged batches a dead run left
                    if self.settler.twice():
                        self.settler.tidy()  # a run killed while settling: records written twice
            with in_use(Output(self, self.scan().seen, self.sink()), writers) as output:
                yield output
        finally:
            self.unlock()

    def settle(self, output: Output) -> None:
        """After a run: fold the staged parts in; drop replaced records and (after a complete pass) pruned ones;
        one schema for every part."""
        self.settler.fold()
        self.settler.settle(present_only(output.present) if output.present is not None else None)

    @property
    def settler(self) -> DatasetSettler:
        return DatasetSettler(self)

    # -- whose dataset -----------------------------------------------------------------------------------
    def check(self, inputs: Iterable[Any] = (), overwrite: bool = False, ignore: str | None = None) -> None:
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
        refuse_other_task(self.path, self.owner(ignore), self.task.name, overwrite)

    def owner(self, ignore: str | None = None) -> str | None:
        """The task whose records the dataset holds (its parts' schemas); None when it holds none. UsageError
        when a file in it is no part of ours (a `*.parquet` kosmos did not name, a part of no kosmos task, a file
        in the staging folder that is no batch of ours); OutputError naming a part that cannot be read. `ignore`:
        the name of a file not to refuse (the results file `kosmos import` reads)."""
        names = self.place.names()
        for name in names:
            if is_table(name) and not is_part(name) and name != ignore:
                raise UsageError(
                    f"{{param}} {self.path} is not a results dataset of kosmos alone (it holds {name}, a file kosmos "
                    "did not write as a part): kosmos never reads, rewrites or removes it; move it out of the folder "
                    f"and run again (to add its records to the dataset first: kosmos import {self.path}{name} "
                    f"{self.path})",
                    param="out",
                )
        found = None
        for place, name in [(self.place, n) for n in in_order(names)] + [(self.staging, n) for n in self._batches()]:
            try:
                task = schema_owner(read_schema(place, name))
            except FileNotFoundError:
                continue  # folded or tidied away by another run meanwhile (a bucket)
            except NotOurs as exc:
                if place is self.staging:
                    raise UsageError(
                        f"{{param}} {self.path}: {self.staging.url}{name} is not a batch kosmos staged ({exc}); "
                        f"kosmos keeps only its own batches in {STAGING}/: move it out of there and run again",
                        param="out",
                    ) from None
                raise not_ours(self.path, NotOurs(f"it holds {name}: {exc}"), what="dataset") from None
            found = found or task
            if task != found:
                raise not_ours(self.path, NotOurs(f"its parts hold {found} and {task} records"), what="dataset")
        return found

    def _batches(self) -> list[str]:
        """The staging folder's Parquet files, each a batch of a run (UsageError naming one that is not)."""
        names = [name for name in self.staging.names() if name.endswith(".parquet")]
        for name in names:
            if not _STAGED.match(name):
                raise UsageError(
                    f"{{param}} {self.path}: {self.staging.url}{name} is not a batch kosmos staged (kosmos names them "
                    f"<stamp>-<rank>-<seq>.parquet); kosmos keeps only its own batches in {STAGING}/: move it out of "
                    "there and run again",
                    param="out",
                )
        return names

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
        """The names of the parts, in the order their runs wrote them (stamp, then writer and sequence)."""
        return in_order(self.place.names())

    def staged(self) -> list[str]:
        """The names of the staged batches (this run's, another run's, or a dead run's), in the order written."""
        return sorted(name for name in self.staging.names() if _STAGED.match(name))

    def runs(self) -> dict[tuple[str, str], list[str]]:
        """(stamp, rank) -> the staged batches of that process of a run, in the order written."""
        found: dict[tuple[str, str], list[str]] = {}
        for name in self.staged():
            m = _STAGED.match(name)
            assert m is not None
            found.setdefault((m.group(1), m.group(2)), []).append(name)
        return found

    def foldable(self) -> dict[tuple[str, str], list[str]]:
        """The staged batches this run may fold or remove: in a local folder (under the lock, once every process
        of the launch is done), all; in a bucket, this run's own, and those of runs that are provably dead."""
        runs = self.runs()
        if not self.remote:
            return runs
        files = self.staging.modified()
        markers = {(m.group(1), m.group(2)): n for n in files if (m := _MARKER.match(n))}
        return {
            run: names for run, names in runs.items() if run[0] == self.stamp or self._dead(run, names, markers, files)
        }

    def _dead(self, run: tuple[str, str], names: list[str], markers: dict[tuple[str, str], str], files) -> bool:
        """Whether the process of a run that staged `names` has provably ended: its marker names a process of this
        machine that is gone, or nothing of it was written for STALE_AFTER seconds."""
        marker = markers.get(run)
        if marker is not None:
            try:
                with self.staging.snapshot(marker) as f:
                    who = json.loads(f.read())
            except FileNotFoundError:
                return False  # its run is folding it now
            except ValueError:
                who = None
            if isinstance(who, dict) and _gone(who):
                return True
        newest = max((files.get(n, 0.0) for n in [*names, *([marker] if marker else [])]), default=0.0)
        return time.time() - newest > STALE_AFTER

    def rows(self, name: str, columns: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        return part_rows(self.place, name, columns)

    def scan(self) -> RecordedKeys:
        """What the dataset holds, staged batches included, in the order their runs wrote them: the last record of
        each key, and how many were written again. A part or batch that another run (in a bucket) folds or
        tidies away meanwhile is skipped: what it held is in a part written before it went."""
        names = self.parts()
        self._start(names)
        columns = self.task.resume_columns()
        files = [(_stamp_of(n), 0, i, self.place, n) for i, n in enumerate(names)]
        files += [(n.split("-", 1)[0], 1, i, self.staging, n) for i, n in enumerate(self.staged())]
        files.sort(key=lambda file: file[:3])
        return RecordedKeys.of(self.task, self.folder(), (_rows_while_there(p, n, columns) for *_, p, n in files))

    def recorded_keys(self) -> dict[str, Recorded]:
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
        """--overwrite: remove every part, and the staged batches this run may fold (not those of a live run)."""
        for name in self.parts():
            self.place.remove(name)
        for run, names in self.foldable().items():
            for name in names:
                self.staging.remove(name)
            self.staging.remove(_marker(run))
        self.staging.tidy()
        self.schema = None

    def import_file(self, source: str) -> Imported:
        """Add the records of the results file `source` (JSONL or Parquet, of this store's task) to the dataset as
        parts of their own (`part-<stamp>-import-<seq>.parquet`), older than every part there: where the dataset
        records an image already, its record stays and the imported one is dropped. `source` is left as it was.
        As a run does: under the lock, repair, fold a dead run's batches; after, one record per key, one schema."""
        inside = not self.remote and same_file(os.path.dirname(os.path.abspath(source)), self.path.rstrip("/") or "/")
        self.lock()
        try:
            self.check([source], ignore=os.path.basename(source) if inside else None)
            self._refuse_a_folder_of_other_files(os.path.basename(source) if inside else None)
            self.repair()
            self.settler.fold()
            stamps = [_stamp_of(n) for n in self.parts()] + [n.split("-", 1)[0] for n in self.staged()]
            oldest = min(stamps, default=None)
            if oldest is None:
                stamp = str(self.stamp)
            else:
                stamp = (datetime.strptime(oldest, _STAMP_FORMAT) - timedelta(microseconds=1)).strftime(_STAMP_FORMAT)
            prefix, read = f"part-{stamp}-import-", 0
            for seq, chunk in enumerate(_chunks(((source, r) for r in read_records(source)), self.part_rows)):
                table = rows_table([compaction.named(row, self.task) for _, row in chunk], self.task, like=self.schema)
                self.schema = (
                    table.schema if self.schema is None else unified_schema(self.task, [self.schema, table.schema])
                )
                self.place.put(f"{prefix}{seq:05d}.parquet", functools.partial(_write_table, table))
                read += len(chunk)
            self.settler.settle()
            kept = sum(
                1 for n in self.parts() if n.startswith(prefix) for _ in _rows_while_there(self.place, n, ["path"])
            )
            return Imported(source, self.path, kept, read - kept, inside)
        finally:
            self.unlock()

    def _refuse_a_folder_of_other_files(self, source: str | None) -> None:
        """kosmos import makes a dataset only in a new or empty folder: one that holds no part but other files (a
        folder of photos) is refused, so no part is written among files kosmos did not write."""
        if self.parts() or self.staged():
            return
        others = sorted(n for n in self.place.names() if not n.startswith(".") and n != source)
        if others:
            raise UsageError(
                f"{self.path} holds files and no dataset of kosmos (e.g. {others[0]}): kosmos import adds to a "
                "dataset kosmos wrote, or starts one in a new or empty folder; name one of those"
            )

    # -- inside ------------------------------------------------------------------------------------------
    def _start(self, names: list[str]) -> None:
        """This run's stamp (later than every part's: the clock may have gone back), and the parts' schema."""
        if self.stamp is None:
            now = datetime.now(timezone.utc)
            newest = max(map(_stamp_of, names), default="")
            if newest >= now.strftime(_STAMP_FORMAT):
                now = datetime.strptime(newest, _STAMP_FORMAT) + timedelta(microseconds=1)
            self.stamp = now.strftime(_STAMP_FORMAT)
        if names and self.schema is None:
            schemas = [s for s in (_schema_while_there(self.place, n) for n in names) if s is not None]
            self.schema = unified_schema(self.task, schemas) if schemas else None


class DatasetSettler:
    """After a run (or before one, for what a dead run left), the main process: fold the staged batches it may into
    the dataset, then rewrite whole the parts whose records a later part replaced or --prune drops."""

    def __init__(self, store: DatasetStore):
        self.store, self.task = store, store.task

    def fold(self) -> None:
        """The staged batches this run may fold (DatasetStore.foldable), in order, into parts of up to part_rows
        records; then remove them (and their runs' markers). In a local folder (under the lock) every batch is
        this launch's or a dead run's: all of them go into parts of this run's stamp, as one. In a bucket each run's
        batches go into parts of that run's stamp (a dead run's under a name of this run's: never a name the
        other could have been writing)."""
        store = self.store
        if store.stamp is None:
            store.scan()
        runs = store.foldable()
        if not store.remote:
            staged = [name for names in runs.values() for name in names]
            self._fold(f"part-{store.stamp}-r{store.rank:04d}-", sorted(staged))
        else:
            for (stamp, rank), names in runs.items():
                self._fold(f"part-{stamp}-r{rank}-" + ("" if stamp == store.stamp else f"{store.stamp}-"), names)
                store.staging.remove(_marker((stamp, rank)))
        store.staging.tidy()

    def _fold(self, prefix: str, staged: list[str]) -> None:
        store = self.store
        schemas = {name: schema for name in staged if (schema := _schema_while_there(store.staging, name)) is not None}
        if schemas:
            known = [store.schema] if store.schema is not None else []
            target = unified_schema(self.task, [*known, *schemas.values()])
            rows = ((name, row) for name in schemas for row in _rows_while_there(store.staging, name))
            mine = re.compile(re.escape(prefix) + r"(\d{5})\.parquet")
            done = [int(m.group(1)) for n in store.parts() if (m := mine.fullmatch(n))]
            for seq, chunk in enumerate(_chunks(rows, store.part_rows), 1 + max(done, default=-1)):
                part = f"{prefix}{seq:05d}.parquet"
                store.place.put(part, functools.partial(compaction.write_parquet, chunk, schemas, target))
            store.schema = target
        for name in staged:
            store.staging.remove(name)

    def settle(self, keep: Callable[[str], bool] | None = None) -> None:
        """Tidy; in a bucket, where another run may have been tidying at once, again while a scan finds records
        written twice (the run that ends last leaves each key once)."""
        store = self.store
        for _ in range(SETTLE_ROUNDS if store.remote else 1):
            self.tidy(keep)
            if not store.remote or self.twice() == 0:
                return

    def twice(self) -> int:
        """How many records the parts hold for a key that a later record of the parts holds too."""
        store, columns = self.store, self.task.resume_columns()
        files = (_rows_while_there(store.place, n, columns) for n in store.parts())
        return RecordedKeys.of(self.task, store.folder(), files).duplicates

    def tidy(self, keep: Callable[[str], bool] | None = None) -> None:
        """Rewrite whole the parts holding records that a later part replaced, or that `keep` drops; remove the
        parts left with none; give every part the dataset's one schema. Each step leaves a valid dataset.

        A part is rewritten from one read of it (its keys and rows from the same bytes), dropping only records
        whose key a later part holds (or `keep` drops): a part another run rewrote or removed meanwhile (a bucket)
        loses nothing that no later part holds."""
        store = self.store
        schemas = {n: schema for n in store.parts() if (schema := _schema_while_there(store.place, n)) is not None}
        names = list(schemas)
        if not names:
            return
        target = unified_schema(self.task, list(schemas.values()))
        holder: dict[str, int] = {}  # key -> the last part holding it
        tidy: set[int] = set()  # parts holding a record written twice, or one `keep` drops
        for i, name in enumerate(names):
            for row in _rows_while_there(store.place, name, self.task.resume_columns()):
                key = self.task.key(row, store.folder())
                before = holder.get(key)
                if before is not None:
                    tidy.add(before)  # written again: the older record goes
                if keep is not None and not keep(key):
                    tidy.add(i)
                holder[key] = i
        for i, name in enumerate(names):
            if i in tidy or not schemas[name].equals(target, check_metadata=True):
                self._rewrite(i, name, holder, keep, schemas[name], target)
        store.schema = target

    def _rewrite(self, i: int, name: str, holder: dict[str, int], keep, schema: Any, target: Any) -> None:
        """Part `name` (the `i`th) again, from one read of it: the last record of each key no later part holds."""
        store = self.store
        try:
            with store.place.snapshot(name) as f:
                data = f.read()
        except FileNotFoundError:
            return  # removed by another run (a bucket): a later part holds each of its keys
        snapshot = LocalBytes(data, store.place.url)
        last: dict[str, int] = {}
        for j, row in enumerate(part_rows(snapshot, name, self.task.resume_columns())):
            last[self.task.key(row, store.folder())] = j
        wanted = {(0, j) for key, j in last.items() if holder.get(key, i) <= i and (keep is None or keep(key))}
        del last
        if not wanted:
            store.place.remove(name)
            return
        kept = compaction.kept_rows([name], wanted, self.task, lambda n, columns=None: part_rows(snapshot, n, columns))
        store.place.put(name, functools.partial(compaction.write_parquet, kept, {name: schema}, target))


class LocalBytes:
    """One part's bytes, read once, as a folder holding that part alone (DatasetSettler._rewrite)."""

    def __init__(self, data: bytes, url: str):
        self.data, self.url = data, url

    def open(self, name: str) -> IO[bytes]:
        return io.BytesIO(self.data)

    snapshot = open


def _chunks(rows: Iterator[tuple[str, dict[str, Any]]], size: int) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    chunk: list[tuple[str, dict[str, Any]]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True)
class Imported:
    """What `kosmos import` did: the records of `source` added to the dataset `out`, and those it left out (the
    dataset recorded their image already, or the file recorded it again later)."""

    source: str
    out: str
    added: int
    dropped: int
    inside: bool  # the file lies in the dataset's folder: runs refuse the folder until it is moved out

    def line(self) -> str:
        line = f"kosmos import finished: {self.added} records of {self.source} added to {self.out}"
        if self.dropped:
            line += f", {self.dropped} left out (their images recorded already, the dataset's records kept)"
        if self.inside:
            return line + f"; now move {self.source} out of the folder (runs refuse a folder holding it)"
        return line + f"; {self.source} is left as it was"


def _write_table(table: Any, f: IO[bytes]) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, f)


def _stamp_of(part: str) -> str:
    m = _STAMP.match(part)
    return m.group(1) if m else ""


def _marker(run: tuple[str, str]) -> str:
    return f"{run[0]}-{run[1]}.run"


def _rows_while_there(place: Any, name: str, columns: Any = None) -> Iterator[dict[str, Any]]:
    """A part's (or batch's) rows; none when it is gone (folded or tidied away by another run, in a bucket)."""
    with contextlib.suppress(FileNotFoundError):
        yield from part_rows(place, name, columns)


def _schema_while_there(place: Folder, name: str) -> Any:
    try:
        return read_schema(place, name)
    except FileNotFoundError:
        return None


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux), to tell it from a later one given its pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _boot() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _this_process() -> dict[str, Any]:
    """What a run's marker says of the process writing its batches."""
    return {"host": socket.gethostname(), "boot": _boot(), "pid": os.getpid(), "started": _started(os.getpid())}


def _gone(who: dict[str, Any]) -> bool:
    """Whether a marker's process provably ended: it ran on this machine (same host, same boot) and is not running
    now (or its pid is another process's)."""
    me = _this_process()
    if not me["boot"] or who.get("host") != me["host"] or who.get("boot") != me["boot"]:
        return False  # another machine (or no way to tell): only its age can say
    pid = who.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # running, as another user
    return who.get("started") is not None and _started(pid) != who.get("started")


class StagedSink(Sink):
    """Each batch of one process as a staged batch of its own, whole and durable when `write` returns. Named
    `<stamp>-<rank>-<seq>.parquet`: in the order written, and never the name of another run's batch (two runs at
    once on a bucket, which no lock keeps apart, never write over each other's batches). In a bucket, the first
    batch goes with a marker (`<stamp>-<rank>.run`: this host, its boot, this pid) by which a later run knows this
    one ended."""

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
        if self._seq == 0 and self.store.remote:
            who = json.dumps(_this_process()).encode()
            self.store.staging.put(_marker((str(self.store.stamp), f"{self.store.rank:04d}")), lambda f: f.write(who))
        self.store.staging.put(f"{self._prefix}{self._seq:08d}.parquet", lambda f: pq.write_table(table, f))
        self._seq += 1


def import_file(source: str, out: str) -> Imported:
    """`kosmos import`: add the records of the results file `source` to the dataset folder `out` (DatasetStore.
    import_file); the task is the file's own. UsageError when `source` is not a results file of kosmos."""
    if names_folder(source) or locations.is_remote(source):
        raise UsageError(f"{source}: kosmos import reads one results file on this machine, not a folder or a URL")
    if not os.path.isfile(source):
        raise UsageError(f"results file not found: {source}" if not os.path.exists(source) else f"{source} is no file")
    try:
        with open(source, "rb") as f:
            jsonl = f.read(4) != b"PAR1"
        task = owner_of(source, jsonl)
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    except NotOurs as exc:
        why = f"{source} is not a results file of kosmos ({exc})"
        raise UsageError(f"{why}: kosmos import adds only the records kosmos wrote") from None
    if task is None:
        raise UsageError(f"{source} holds no records: there is nothing to import")
    return DatasetStore(out if out.endswith("/") else out + "/", task).import_file(source)
