"""An `--out` that names a folder, here or in a bucket (s3://, gs://, az://): the results as a Parquet dataset.

    DIR/part-<stamp>-<writer>-<seq>.parquet ...

Every part has exactly the columns of a single Parquet output of its task (the task's schema, its metadata naming
the task, then the columns carried from a manifest), and once a run has ended every part has the same schema, so
DuckDB (`read_parquet('DIR/*.parquet')`), polars (`pl.read_parquet('DIR/*.parquet')`), `pyarrow.dataset` and
`kosmos draw` / `export` read it as one table.

This module is the dataset's store: its life (life.py's one `with`), whose folder it is, its lock, what it holds.
Its other concerns have modules of their own:

- A part appears whole or not at all (dataset_folder.py): written under a hidden temporary name and renamed, or put in a
  bucket as one object.
- A run writes each batch durably as a batch of its own in the hidden staging folder `DIR/.kosmos-parts/`
  (dataset_staging.py: named by its run's stamp and its process), as a file output does in `<out>.parts/`. When
  every process is done, the main one folds its run's batches into parts of up to PART_ROWS records in the dataset
  (`part-<stamp>-r<rank>-<seq>.parquet`, the stamp of the run that wrote them) and removes them (dataset_settling.py).
  Resuming reads both, so a kill at any point loses no finished batch.
- A run folds only its own batches, and those of runs that are provably dead (dataset_staging.py says how it knows):
  a live run's batches are never folded, rewritten or removed by another.
- Parts are read in the order their runs wrote them (dataset_folder.in_order: stamp, then writer and sequence):
  `<stamp>` is when the run started, later than every part already there. As in a file output, the last record of
  a key wins, and resuming skips what is recorded (read from the parts' key columns).
- A dataset is only what kosmos wrote: a part is a file kosmos named so. A run refuses a folder holding any other
  `*.parquet` file (a results file moved in, a user's copy) in one line naming it, and never reads, rewrites or
  removes it; `kosmos import` (dataset_import.py) adds a results file's records as a part of their own.
- Settling (after the fold, the main process holding the lock: dataset_settling.py): parts are rewritten whole
  without the records a later part replaced or `--prune` drops, and to the dataset's one schema; each step leaves a
  valid dataset. `--overwrite` removes the parts first.
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

import os
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from .. import tasks
from ..errors import UsageError
from ..tasks import Task
from ..tasks.records import Record
from . import dataset_staging as staging
from .dataset_folder import (
    Folder,
    folder_of,
    in_order,
    is_part,
    is_table,
    read_schema,
    rows_while_there,
    schema_while_there,
    stamp_of,
)
from .dataset_settling import DatasetSettler
from .dataset_staging import STAGING, StagedSink
from .formats import records_table, unified_schema
from .handle import Output, RecordedKeys
from .life import OutputStore, nearest_folder, refuse_unwritable
from .locking import OutputLock
from .ownership import NotOurs, not_ours, refuse_inputs, refuse_other_task, schema_owner

PART_ROWS = 50_000  # records in a part at most
LOCK_NAME = ".kosmos.lock"
STAMP_FORMAT = "%Y%m%dT%H%M%S%f"
_WRITER = re.compile(r"[^A-Za-z0-9_.-]+")


class DatasetStore(OutputStore):
    """A folder of Parquet parts (here or in a bucket) as one output: its lock, what it holds, its parts."""

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

    # -- the life of a run (life.OutputStore.open) ---------------------------------------------------------
    def fold_leftovers(self) -> None:
        self.settler.fold()  # staged batches a dead run left
        if self.settler.twice():
            self.settler.tidy()  # a run killed while settling: records written twice

    def settle(self, output: Output) -> None:
        """After a run: fold the staged parts in; drop replaced records and (after a complete pass) pruned ones;
        one schema for every part."""
        self.settler.fold()
        self.settler.settle(output.keep())

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
        batches = staging.batches(self.staging, self.path)
        for place, name in [(self.place, n) for n in in_order(names)] + [(self.staging, n) for n in batches]:
            try:
                task = schema_owner(read_schema(place, name))
            except FileNotFoundError:
                continue  # folded or tidied away by another run meanwhile (a bucket)
            except NotOurs as exc:
                if place is self.staging:
                    raise staging.not_a_batch(self.path, self.staging, name, str(exc)) from None
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
        refuse_unwritable(nearest_folder(self.path.rstrip("/") or "/", own=self.path.rstrip("/")))
        self._lock.probe()

    def make(self) -> None:
        self.place.make()

    # -- reading -----------------------------------------------------------------------------------------
    def parts(self) -> list[str]:
        """The names of the parts, in the order their runs wrote them (stamp, then writer and sequence)."""
        return in_order(self.place.names())

    def staged(self) -> list[str]:
        """The names of the staged batches (this run's, another run's, or a dead run's), in the order written."""
        return staging.staged(self.staging)

    def scan(self, parts: bool = True) -> RecordedKeys:
        """What the dataset holds, staged batches included (whatever `parts` says: each process stages batches of
        its own), in the order their runs wrote them: the last record of each key, and how many were written
        again. A part or batch that another run (in a bucket) folds or tidies away meanwhile is skipped: what it
        held is in a part written before it went."""
        names = self.parts()
        self._start(names)
        columns = self.task.resume_columns()
        files = [(stamp_of(n), 0, i, self.place, n) for i, n in enumerate(names)]
        files += [(n.split("-", 1)[0], 1, i, self.staging, n) for i, n in enumerate(self.staged())]
        files.sort(key=lambda file: file[:3])
        return RecordedKeys.of(self.task, self.folder(), (rows_while_there(p, n, columns) for *_, p, n in files))

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
        if self.stamp is None:
            self.scan()
        return StagedSink(self.staging, self.path, self.task, str(self.stamp), self.rank)

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
        for run, names in staging.foldable(self.staging, self.stamp).items():
            for name in names:
                self.staging.remove(name)
            self.staging.remove(staging.marker(run))
        self.staging.tidy()
        self.schema = None

    def _start(self, names: list[str]) -> None:
        """This run's stamp (later than every part's: the clock may have gone back), and the parts' schema."""
        if self.stamp is None:
            now = datetime.now(timezone.utc)
            newest = max(map(stamp_of, names), default="")
            if newest >= now.strftime(STAMP_FORMAT):
                now = datetime.strptime(newest, STAMP_FORMAT) + timedelta(microseconds=1)
            self.stamp = now.strftime(STAMP_FORMAT)
        if names and self.schema is None:
            schemas = [s for s in (schema_while_there(self.place, n) for n in names) if s is not None]
            self.schema = unified_schema(self.task, schemas) if schemas else None
