"""One output on disk, and its life: lock -> repair -> remove or compact -> scan -> write -> compact -> unlock.

An output file is written in two layers:

- the output itself (`results.jsonl` / `results.parquet`), only ever replaced atomically (write a temporary
  file beside it, then rename), so it is always complete and readable;
- records finished since, made durable batch by batch: appended straight to `results.jsonl` by a single
  process, or as parts in `results.parquet.parts/` (one small Parquet file per batch, renamed into place when
  complete; JSONL from rank 0 of several processes: one file there).

The store knows the output's whole layout: the output, `<out>.parts/`, `<out>.lock`, and the spool that several
processes write in place of stdout.
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

The store's concerns live in modules of their own, and life.py (the life every store shares) puts them in order:
whose file an output is (ownership.py: nothing but an output of this task is ever touched), the lock (locking.py),
folding record files into one and clearing what a crash left (compaction.py), and the bytes of each format
(formats.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import tasks
from ..tasks import Task
from . import compaction
from .atomic import rmdir, unlink
from .dataset import DatasetStore
from .formats import (
    DATASET,
    JsonlSink,
    ParquetPartSink,
    Sink,
    StdoutSink,
    disk_error,
    repair_jsonl_tail,
)
from .handle import Output, Recorded, RecordedKeys, Writers, present_only
from .life import OutputStore, nearest_folder, refuse_unwritable
from .locking import OutputLock
from .ownership import NotOurs, not_ours, owner_of, refuse_inputs, refuse_other_task
from .reader import resume_rows

log = logging.getLogger("kosmos_cli")


class Store(OutputStore):
    """One named output on disk: its lock, what it holds, its parts, and folding them in."""

    def __init__(self, path: str, fmt: str, task: str | type[Task], rank: int = 0):
        self.task = tasks.get(task) if isinstance(task, str) else task
        self.path, self.fmt, self.rank = path, fmt, rank
        self.parts_dir = path + ".parts"
        self.lock_path = path + ".lock"
        self._lock: OutputLock = OutputLock(self.lock_path, path)

    @classmethod
    def for_run(cls, out: str, fmt: str, task: type[Task], writers: Writers) -> Store | DatasetStore:
        """The store a run on `out` writes: `out` itself; a folder (fmt "dataset"), a DatasetStore; for `-`, stdout,
        or with several processes a spool named after the task, so that the same command run again finds what a
        killed run left in it (their records come in all at once, at the end)."""
        if fmt == DATASET:
            return DatasetStore(out, task, writers.rank)
        if out != "-":
            return cls(out, fmt, task, writers.rank)
        if writers.solo:
            return StdoutStore(task)
        return SpoolStore(f".kosmos-stdout-{task.name}.jsonl", "jsonl", task, writers.rank)

    # -- the life of a run (life.OutputStore.open) ---------------------------------------------------------
    def fold_leftovers(self) -> None:
        if self.needs_compaction():
            self.compact()  # leftovers of an interrupted run, or records written twice

    def settle(self, output: Output) -> None:
        """After a run: fold parts in, drop replaced records and (after a complete pass) pruned ones; tidy."""
        if output.present is not None or output.replaced or self.has_parts():
            self.compact(output.keep())
        self.tidy()

    # -- whose output (ownership.py) -------------------------------------------------------------------
    def check(self, inputs: Iterable[Any] = (), overwrite: bool = False) -> None:
        """Refuse an output that must not be touched: one of `inputs` (a manifest or an image named as input),
        a file that is not a results file of kosmos, or (unless `overwrite`) another task's results.

        Reads at most the first row; raises UsageError (about `out`) and changes nothing.
        """
        if self.spool:
            return
        refuse_inputs(self.path, inputs)
        refuse_other_task(self.path, self.owner(), self.task.name, overwrite)

    def owner(self) -> str | None:
        """The task whose records the output holds, from its first row (or, with no output yet, its first part);
        None when it holds none (absent, or empty). Raises UsageError when the output is not ours."""
        for source in self.sources():
            try:
                task = owner_of(source, self._is_jsonl(source))
            except NotOurs as exc:
                if source == self.path:
                    raise not_ours(self.path, exc) from None
                continue  # a part is ours by where it is; a damaged one is repair()'s
            if task is not None:
                return task
        return None

    def _is_jsonl(self, path: str) -> bool:
        return path.endswith(".jsonl") or (path == self.path and self.fmt == "jsonl")

    # -- lock (locking.py) -------------------------------------------------------------------------------
    def probe(self) -> None:
        """Fail now, not after a model loads, when another run holds the lock or the output cannot be written.

        Creates nothing: a folder still to be made must be makeable, the files there writable; the lock, when its
        file exists, is taken without waiting and let go of at once.
        """
        if self.spool:
            return
        for place in (nearest_folder(os.path.dirname(os.path.abspath(self.path))), self.path, self.lock_path):
            if os.path.exists(place):
                refuse_unwritable(place)
        self._lock.probe()

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
        """Clear what a crashed run left half-done (compaction.repair). Only the lock holder may call this."""
        compaction.repair(self.path, self.fmt, self.parts_dir)

    def rows(self, path: str, columns: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """The rows of one record file (the output or a part), as a resume scan reads them (reader.resume_rows)."""
        yield from resume_rows(path, columns, jsonl=self._is_jsonl(path))

    def scan(self, parts: bool = True) -> RecordedKeys:
        """What the output holds (the last record of each key wins). `parts=False`: the output alone, leaving
        the parts folder untouched (other processes may be writing there)."""
        sources = self.sources() if parts else ([self.path] if os.path.exists(self.path) else [])
        return RecordedKeys.of(self.task, self.folder(), (self.rows(s, self.task.resume_columns()) for s in sources))

    def folder(self) -> str:
        """Where the output is: a relative path read back from it is also tried from here (Task.key)."""
        return os.path.dirname(os.path.abspath(self.path))

    def has_parts(self) -> bool:
        return any(s != self.path for s in self.sources())

    def needs_compaction(self) -> bool:
        """Parts to fold in, or a key recorded twice (one full read of the output)."""
        return self.has_parts() or self.scan().duplicates > 0

    # -- folding parts in (compaction.py) ------------------------------------------------------------------
    def compact(self, keep: Callable[[str], bool] | None = None) -> int:
        """Rewrite the output from itself and its parts: last record per key, `keep(key)` ones only.

        Atomic: the output is replaced by rename; the parts are removed after. Returns the rows written.
        """
        sources = self.sources()
        if not sources:
            return 0
        try:
            written = compaction.fold(sources, self.path, self.fmt, self.task, self.rows, self.folder(), keep)
        except OSError as exc:
            raise disk_error(exc, self.path) from None
        for source in sources:
            if source != self.path:
                unlink(source)
        rmdir(self.parts_dir)
        return written

    # -- writing -----------------------------------------------------------------------------------------
    def sink(self, direct: bool = True) -> Sink:
        """Where this process writes. `direct`: JSONL appends to the output itself (single process only)."""
        self.make()
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

    def make(self) -> None:
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
    def open(self, writers: Writers, *, overwrite: bool = False, wait: bool = False) -> Iterator[Output]:
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


__all__ = [
    "DatasetStore",
    "RecordedKeys",
    "Output",
    "Recorded",
    "SpoolStore",
    "StdoutStore",
    "Store",
    "Writers",
    "present_only",
]
