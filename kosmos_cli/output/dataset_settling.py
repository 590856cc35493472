"""Settling a dataset (the main process, holding the lock): fold the staged batches it may into parts
(dataset.py says how they are named and sized), then tidy the parts.

Tidying: a part holding records that a later part replaced (redone with other settings, or written twice) or that
`--prune` drops is rewritten whole without them, or removed when nothing is left of it; a part whose schema differs
from the dataset's (a carried column widened) is rewritten to it. Each step leaves a valid dataset; a kill between
two leaves at most records written twice, which the next run drops before it starts. In a bucket, where another run
may be tidying at once, a part is rewritten from one read of it, and the run that ends last drops what is left twice.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol

from ..tasks import Task
from . import compaction
from .dataset_folder import Folder, part_rows, rows_while_there, schema_while_there
from .dataset_staging import foldable, marker
from .formats import unified_schema
from .handle import RecordedKeys

SETTLE_ROUNDS = 4  # a run in a bucket tidies again while it finds records written twice (another run's at once)


class Settled(Protocol):
    """What the settler needs of its dataset (dataset.DatasetStore)."""

    task: type[Task]
    rank: int
    remote: bool
    place: Folder
    staging: Folder
    stamp: str | None
    schema: Any
    part_rows: int

    def parts(self) -> list[str]: ...
    def scan(self) -> RecordedKeys: ...
    def folder(self) -> str | None: ...


class DatasetSettler:
    """After a run (or before one, for what a dead run left), the main process: fold the staged batches it may into
    the dataset, then rewrite whole the parts whose records a later part replaced or --prune drops."""

    def __init__(self, store: Settled):
        self.store, self.task = store, store.task

    def fold(self) -> None:
        """The staged batches this run may fold (dataset_staging.foldable), in order, into parts of up to part_rows
        records; then remove them (and their runs' markers). In a local folder (under the lock) every batch is
        this launch's or a dead run's: all of them go into parts of this run's stamp, as one. In a bucket each run's
        batches go into parts of that run's stamp (a dead run's under a name of this run's: never a name the
        other could have been writing)."""
        store = self.store
        if store.stamp is None:
            store.scan()
        runs = foldable(store.staging, store.stamp)
        if not store.remote:
            staged = [name for names in runs.values() for name in names]
            self._fold(f"part-{store.stamp}-r{store.rank:04d}-", sorted(staged))
        else:
            for (stamp, rank), names in runs.items():
                self._fold(f"part-{stamp}-r{rank}-" + ("" if stamp == store.stamp else f"{store.stamp}-"), names)
                store.staging.remove(marker((stamp, rank)))
        store.staging.tidy()

    def _fold(self, prefix: str, staged: list[str]) -> None:
        store = self.store
        schemas = {name: schema for name in staged if (schema := schema_while_there(store.staging, name)) is not None}
        if schemas:
            known = [store.schema] if store.schema is not None else []
            target = unified_schema(self.task, [*known, *schemas.values()])
            rows = ((name, row) for name in schemas for row in rows_while_there(store.staging, name))
            mine = re.compile(re.escape(prefix) + r"(\d{5})\.parquet")
            done = [int(m.group(1)) for n in store.parts() if (m := mine.fullmatch(n))]
            for seq, chunk in enumerate(chunks(rows, store.part_rows), 1 + max(done, default=-1)):
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
        files = (rows_while_there(store.place, n, columns) for n in store.parts())
        return RecordedKeys.of(self.task, store.folder(), files).duplicates

    def tidy(self, keep: Callable[[str], bool] | None = None) -> None:
        """Rewrite whole the parts holding records that a later part replaced, or that `keep` drops; remove the
        parts left with none; give every part the dataset's one schema. Each step leaves a valid dataset.

        A part is rewritten from one read of it (its keys and rows from the same bytes), dropping only records
        whose key a later part holds (or `keep` drops): a part another run rewrote or removed meanwhile (a bucket)
        loses nothing that no later part holds."""
        store = self.store
        schemas = {n: schema for n in store.parts() if (schema := schema_while_there(store.place, n)) is not None}
        names = list(schemas)
        if not names:
            return
        target = unified_schema(self.task, list(schemas.values()))
        holder: dict[str, int] = {}  # key -> the last part holding it
        tidy: set[int] = set()  # parts holding a record written twice, or one `keep` drops
        for i, name in enumerate(names):
            for row in rows_while_there(store.place, name, self.task.resume_columns()):
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


def chunks(rows: Iterator[tuple[str, dict[str, Any]]], size: int) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    chunk: list[tuple[str, dict[str, Any]]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
