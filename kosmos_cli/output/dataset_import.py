"""`kosmos import`: the records of a results file added to a dataset folder as parts of their own.

The parts (`part-<stamp>-import-<seq>.parquet`) are stamped older than every part there, so where the dataset
records an image already its record stays and the imported one is dropped. The file is left as it was; one inside
the dataset's folder is not refused by the import itself (runs refuse the folder until it is moved out). As a run
does: under the lock, repair, fold a dead run's batches; after, one record per key, one schema.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from ..errors import UsageError
from ..inputs import locations
from . import compaction
from .dataset import STAMP_FORMAT, DatasetStore
from .dataset_folder import rows_while_there, stamp_of
from .dataset_settling import chunks
from .formats import names_folder, rows_table, unified_schema
from .ownership import NotOurs, owner_of, same_file
from .reader import read_records


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


def import_file(source: str, out: str) -> Imported:
    """`kosmos import`: add the records of the results file `source` to the dataset folder `out` (`add`); the task
    is the file's own. UsageError when `source` is not a results file of kosmos."""
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
    return add(DatasetStore(out if out.endswith("/") else out + "/", task), source)


def add(store: DatasetStore, source: str) -> Imported:
    """Add the records of the results file `source` (JSONL or Parquet, of the store's task) to the dataset as
    parts of their own, older than every part there (see the module's docstring)."""
    inside = not store.remote and same_file(os.path.dirname(os.path.abspath(source)), store.path.rstrip("/") or "/")
    store.lock()
    try:
        store.check([source], ignore=os.path.basename(source) if inside else None)
        _refuse_a_folder_of_other_files(store, os.path.basename(source) if inside else None)
        store.repair()
        store.settler.fold()
        stamps = [stamp_of(n) for n in store.parts()] + [n.split("-", 1)[0] for n in store.staged()]
        oldest = min(stamps, default=None)
        if oldest is None:
            stamp = str(store.stamp)
        else:
            stamp = (datetime.strptime(oldest, STAMP_FORMAT) - timedelta(microseconds=1)).strftime(STAMP_FORMAT)
        prefix, read = f"part-{stamp}-import-", 0
        for seq, chunk in enumerate(chunks(((source, r) for r in read_records(source)), store.part_rows)):
            table = rows_table([compaction.named(row, store.task) for _, row in chunk], store.task, like=store.schema)
            store.schema = (
                table.schema if store.schema is None else unified_schema(store.task, [store.schema, table.schema])
            )
            store.place.put(f"{prefix}{seq:05d}.parquet", functools.partial(_write_table, table))
            read += len(chunk)
        store.settler.settle()
        kept = sum(1 for n in store.parts() if n.startswith(prefix) for _ in rows_while_there(store.place, n, ["path"]))
        return Imported(source, store.path, kept, read - kept, inside)
    finally:
        store.unlock()


def _refuse_a_folder_of_other_files(store: DatasetStore, source: str | None) -> None:
    """kosmos import makes a dataset only in a new or empty folder: one that holds no part but other files (a
    folder of photos) is refused, so no part is written among files kosmos did not write."""
    if store.parts() or store.staged():
        return
    others = sorted(n for n in store.place.names() if not n.startswith(".") and n != source)
    if others:
        raise UsageError(
            f"{store.path} holds files and no dataset of kosmos (e.g. {others[0]}): kosmos import adds to a "
            "dataset kosmos wrote, or starts one in a new or empty folder; name one of those"
        )


def _write_table(table: Any, f: IO[bytes]) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, f)
