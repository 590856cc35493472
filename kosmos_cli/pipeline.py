"""Wires the stages: sources -> prefetching loader -> engine -> writer, with resume and progress.

This is the only module that knows their order. Data flows as iterators; what is held at once is bounded by
the batch size and the prefetch depth, never by the number of images.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from . import distributed
from .engine import Engine, Prepared
from .errors import OutputError, UsageError
from .images import MODEL_SIDE, file_stat, load_image
from .jobs import Job, Unit
from .records import OK, Record
from .sources import Item, iter_items, nothing_found, shard
from .writers import Seen, Sink, StdoutSink, Store, detect_format

log = logging.getLogger("kosmos_cli")

MAX_LISTED_FAILURES = 20
DRAFT_SIDE = 2 * MODEL_SIDE  # JPEGs are decoded at a reduced scale down to this many pixels a side, not below


@dataclass(frozen=True)
class RunOptions:
    """How a run reads, batches and writes; the same for every command."""

    out: str = "-"
    format: str | None = None
    batch_size: int = 8
    workers: int | None = None
    overwrite: bool = False
    retry_failed: bool = False
    prune: bool = False
    wait: bool = False
    draft: bool = True

    def __post_init__(self):
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.workers is not None and self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.out == "-" and (self.prune or self.overwrite):
            pass  # nothing to prune or overwrite on stdout


@dataclass
class Summary:
    """What a run did. `failed` counts error records written by this run."""

    task: str = "ground"
    out: str = "-"
    done: int = 0
    failed: int = 0
    skipped: int = 0
    found: int = 0  # images (or manifest rows) the inputs named, done before or not; 0: the inputs named none
    seconds: float = 0.0
    interrupted: bool = False
    failures: list[str] = field(default_factory=list)
    rank: int | None = None  # set on one rank's share of a multi-process run
    world: int = 1  # how many processes did the run
    ranks: list[Summary] = field(default_factory=list)  # rank 0 of a multi-process run: each rank's share

    @property
    def rate(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        where = "stdout" if self.out == "-" else self.out
        state = "interrupted" if self.interrupted else "finished"
        counts = (f"{self.done} done, {self.failed} failed, {self.skipped} skipped in {self.seconds:.1f}s "
                  f"({self.rate:.2f} images/s)")
        if self.rank is not None:
            return f"kosmos {self.task} rank {self.rank}: {counts}"
        processes = f" ({self.world} processes)" if self.world > 1 else ""
        return f"kosmos {self.task} {state}: {counts} -> {where}{processes}"


class Progress:
    """The interface the pipeline reports to; the CLI passes a live one (progress.py)."""

    live = False  # a live display wants the total, counted in the background

    def start(self, total: int | None) -> None: ...
    def advance(self, done: int, failed: int, skipped: int) -> None: ...
    def close(self) -> None: ...


def run(
    job: Job,
    inputs: Iterable[str] | Iterable[Item],
    engine: Engine,
    options: RunOptions = RunOptions(),
    progress: Progress | None = None,
    on_write: Callable[[list[Record]], None] | None = None,
    rank: int = 0,
    world: int = 1,
) -> Summary:
    """Run `job` over every image named by `inputs`, writing records to `options.out`.

    Started as several processes (accelerate launch, torchrun), each one takes its share and rank 0 merges them
    into `options.out` (distributed.py). `rank` and `world` shard by hand instead, with no coordination.
    """
    team = distributed.detect() if (rank, world) == (0, 1) else None
    if team is None:
        return _run(job, inputs, engine, options, progress, on_write, rank, world)
    with team.session(options.out):
        if isinstance(inputs, (list, tuple)) and "-" in inputs:
            raise UsageError("paths on stdin (-) can feed one process only: write them to a .txt manifest "
                             "and name that")
        return _run(job, inputs, engine, options, team.progress(progress), on_write, team.rank, team.size, team)


def _run(job, inputs, engine, options, progress, on_write, rank, world, team=None) -> Summary:
    progress = progress or Progress()
    if getattr(progress, "live", False) and not job.per_row and _named(inputs) and "-" not in inputs:
        threading.Thread(target=_count_inputs, args=(inputs, progress), daemon=True).start()
    summary = Summary(task=job.task, out=options.out)
    started = time.perf_counter()
    fmt = detect_format(options.out, options.format)
    path = team.output_for(options.out) if team else options.out  # several processes write "-" to a spool
    store = None if path == "-" else Store(path, fmt, job.task, rank)
    seen: dict[str, Seen] = {}
    sink: Sink
    if store is None:
        sink = StdoutSink()
    else:
        if team is None or team.main:
            store.lock(wait=options.wait)
            store.repair()
            if options.overwrite or path != options.out:
                store.remove()
            elif store.has_parts() or (store.scan() and store.duplicates):
                store.compact()  # leftovers of an interrupted run, or records written twice
        if team is not None:
            team.ready()  # the other ranks wait here until rank 0 has prepared the output
        seen = store.scan(parts=team is None)  # with a team, parts appear only as this run writes them
        sink = store.sink(direct=team is None)
    present: set[str] | None = set() if options.prune else None
    replaced = 0
    write_failed = False
    try:
        items = _counted(_as_items(inputs, per_row=job.per_row), summary)
        if present is not None:
            items = _tracking(items, present)
        pending = _todo(shard(items, rank, world, by_image=job.per_row), job, engine, seen, options, summary, progress)
        if job.per_row:
            pending = _same_image_once(pending)
        for records in _batches(pending, job, engine, options):
            replaced += sum(1 for r in records if _key_of(job, r) in seen)
            sink.write(records)
            for r in records:
                if r.ok:
                    summary.done += 1
                else:
                    summary.failed += 1
                    if len(summary.failures) < MAX_LISTED_FAILURES:  # the count is kept; the list stays short
                        summary.failures.append(f"{r.path}: {r.error}")
            if on_write:
                on_write(records)
            progress.advance(summary.done, summary.failed, summary.skipped)
            if team is not None:
                team.check()  # another rank failed: stop
        if team is not None:
            team.finish(summary)  # rank 0 waits here for every rank and counts their records in
        if not summary.found and (team is None or team.main):
            kept = "; --prune removed no record" if options.prune else ""
            log.warning("%s%s", nothing_found(inputs), kept)
    except (KeyboardInterrupt, SystemExit):
        summary.interrupted = True
        raise
    except OutputError:
        write_failed = True  # a full disk: leave the parts for the next run rather than copy the output now
        raise
    finally:
        sink.close()
        summary.seconds = time.perf_counter() - started
        progress.close()
        if store is not None:
            try:
                if (team is None or team.merged) and not write_failed:  # with a team: rank 0, once all are done
                    _finish(store, present, replaced, summary)
            finally:
                store.unlock()
    return summary


def _finish(store: Store, present: set[str] | None, replaced: int, summary: Summary) -> None:
    """Fold parts in; drop records of removed images with --prune (only after a complete pass)."""
    prune = present is not None and not summary.interrupted and summary.found > 0  # no inputs: an unmounted disk?
    if prune or replaced or store.has_parts():
        keep = (lambda key: key.split("\x00")[0] in present) if prune else None
        store.compact(keep)
    store.tidy()


def _named(inputs) -> bool:
    return isinstance(inputs, (list, tuple)) and all(isinstance(i, str) for i in inputs)


def _count_inputs(inputs: list[str], progress: Progress) -> None:
    """The bar's total: the inputs walked once more, beside the run (cheap next to the model)."""
    try:
        progress.start(sum(1 for _ in iter_items(inputs)))
    except Exception:  # noqa: BLE001 - a total is a nicety; the run itself reports real problems
        pass


def _as_items(inputs, per_row: bool = False) -> Iterator[Item]:
    inputs = list(inputs) if not isinstance(inputs, Iterator) else inputs
    if isinstance(inputs, list) and all(isinstance(i, str) for i in inputs):
        return iter_items(inputs, per_row=per_row)
    return (i if isinstance(i, Item) else Item(str(i)) for i in inputs)


def _counted(items: Iterator[Item], summary: Summary) -> Iterator[Item]:
    for item in items:
        summary.found += 1
        yield item


def _tracking(items: Iterator[Item], present: set[str]) -> Iterator[Item]:
    for item in items:
        present.add(item.path)
        yield item


def _key_of(job: Job, record: Record) -> str:
    from .records import record_key

    return record_key({"path": record.path, "box_px": record.box_px, "phrase": record.phrase}, job.task)


def _todo(items, job: Job, engine: Engine, seen, options: RunOptions, summary: Summary, progress: Progress):
    """(item, units still to do, stat) for each item with anything left to do; counts the skipped."""
    model = engine.options.label
    for item in items:
        size, mtime = file_stat(item.path)
        units = []
        for unit in job.units(item, model):
            recorded = seen.get(unit.key)
            if recorded is not None and _fresh(recorded, size, mtime, options.retry_failed):
                summary.skipped += 1
                continue
            unit.record.file_size, unit.record.file_mtime = size, mtime
            units.append(unit)
        if units:
            yield item, units
        elif summary.skipped % 256 == 0:
            progress.advance(summary.done, summary.failed, summary.skipped)


def _same_image_once(pending):
    """Consecutive manifest rows of one image (its regions, its phrases) -> one decode and one pixels call."""
    current = None
    for item, units in pending:
        if current is not None and current[0].path == item.path:
            current[1].extend(units)
            continue
        if current is not None:
            yield current
        current = (item, list(units))
    if current is not None:
        yield current


def _fresh(recorded: Seen, size, mtime, retry_failed: bool) -> bool:
    if recorded.file_size != size or recorded.file_mtime != mtime:
        return False  # the file changed (or appeared) since it was recorded: do it again
    return recorded.status == OK or not retry_failed


def _load(item: Item, units: list[Unit], job: Job, engine: Engine, draft: bool):
    """Worker: decode the image once, then prepare every unit's request. Failures become error records."""
    loaded = load_image(item.path, draft=DRAFT_SIDE if draft else None)
    if loaded.error:
        return [(u, None) for u in units if u.record.fail(loaded.error)]
    out = []
    pixels = None
    for unit in units:
        unit.record.width, unit.record.height = loaded.width, loaded.height
        try:
            prompt = job.prompt(unit, loaded.width, loaded.height)
            if pixels is None:
                pixels = engine.pixels(loaded.image)
            out.append((unit, engine.prepare(loaded.image, prompt, image_key=item.path, pixel_values=pixels)))
        except ValueError as exc:
            out.append((unit.record.fail(str(exc)) and unit, None))
    return out


def _batches(pending, job: Job, engine: Engine, options: RunOptions) -> Iterator[list[Record]]:
    """Finished records, a batch at a time: loading runs ahead in workers while the model works."""
    size = options.batch_size
    workers = options.workers or min(4, os.cpu_count() or 1)
    buckets: dict[int, list[tuple[Unit, Prepared]]] = {}
    failed: list[Record] = []
    with ThreadPoolExecutor(workers, thread_name_prefix="kosmos-load") as pool:
        queue: deque[Future] = deque()
        ahead = max(2 * size, 2 * workers)

        def fill():
            while len(queue) < ahead:
                nxt = next(pending, None)
                if nxt is None:
                    return
                queue.append(pool.submit(_load, *nxt, job, engine, options.draft))

        fill()
        try:
            while queue:
                for unit, prepared in queue.popleft().result():
                    if prepared is None:
                        failed.append(unit.record)
                        continue
                    bucket = buckets.setdefault(len(prepared.input_ids), [])
                    bucket.append((unit, prepared))
                    if len(bucket) >= size:
                        yield failed + _forward(bucket, job, engine)
                        failed, buckets[len(prepared.input_ids)] = [], []
                fill()
                if len(failed) >= size:
                    yield failed
                    failed = []
            for bucket in buckets.values():
                if bucket:
                    yield failed + _forward(bucket, job, engine)
                    failed = []
            if failed:
                yield failed
        finally:
            for future in queue:
                future.cancel()


def _forward(bucket: list[tuple[Unit, Prepared]], job: Job, engine: Engine) -> list[Record]:
    started = time.perf_counter()
    texts = engine.forward_safe([p for _, p in bucket], job.stop_at)
    each = (time.perf_counter() - started) / len(bucket)
    records = []
    for (unit, _), text in zip(bucket, texts):
        unit.record.seconds = round(each, 4)
        try:
            job.finish(unit, text)
        except ValueError as exc:  # output the parser cannot use: that image fails, the run goes on
            unit.record.fail(f"cannot read the model's output: {exc}")
        records.append(unit.record)
    return records
