"""Wires the stages: sources -> prefetching loader -> engine -> writer, with resume and progress.

This is the only module that knows their order. Data flows as iterators; what is held at once is bounded by
the batch size and the prefetch depth, never by the number of images.

Who runs the model is a strategy (`Model`): `InProcess` loads images on worker threads and runs the engine in this
process (batching.py); run/ray.py runs the same stages (`load`, `bucketed`, `Answered.finish`) in actors on a Ray
cluster. Either way this process lists the inputs, skips what the output holds (standing.py), and writes every
record.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from .. import tasks
from ..errors import UsageError
from ..inputs.listing import Item, Unlisted
from ..inputs.locations import stat as location_stat
from ..inputs.sources import countable, iter_items, nothing_found, shard
from ..model.engine import Engine
from ..options import GenerationOptions, ModelOptions, RunOptions
from ..output.dataset import DatasetStore
from ..output.store import Output, Store, Writers
from ..tasks import Task, path_key
from ..tasks.records import Record
from .batching import Answered, Pending, answered_here
from .progress import Progress
from .standing import SETTINGS, standing_units
from .threads import FinishBehind, read_ahead

log = logging.getLogger("kosmos_cli")

MAX_LISTED_FAILURES = 20
FINISH_AHEAD = 2  # batches the model may answer before the last is finished and written (0: in line, no thread)


@dataclass
class Summary:
    """What a run did. `failed` counts error records written by this run."""

    task: str = "ground"
    out: str = "-"
    done: int = 0
    failed: int = 0
    skipped: int = 0
    redone: int = 0  # records the output held that were made with other settings (`changed`), done again
    changed: set[str] = field(default_factory=set)  # which of SETTINGS differed
    kept: int = 0  # of the skipped: failed now, but the output holds an ok record for them, which is kept
    found: int = 0  # images (or manifest rows) the inputs named, done before or not; 0: the inputs named none
    seconds: float = 0.0
    interrupted: bool = False
    failures: list[str] = field(default_factory=list)
    rank: int | None = None  # set on one rank's share of a multi-process run
    world: int = 1  # how many processes did the run
    ranks: list[Summary] = field(default_factory=list)  # rank 0 of a multi-process run: each rank's share
    drawing: Any = None  # ground with draw=: the DrawSummary of the pictures drawn beside the run
    warned: ClassVar[bool] = False  # failures are not warned as they come: the command line lists them at the end

    @property
    def rate(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def strict_failure(self) -> str | None:
        """Why --strict fails a run that finished: some records failed, or the inputs named no image at all."""
        if self.failed:
            return f"{counted(self.task, self.failed)} failed"
        return None if self.found else "no images found"

    def line(self) -> str:
        where = "stdout" if self.out == "-" else self.out
        state = "interrupted" if self.interrupted else "finished"
        counts = (
            f"{self.done} done, {self.failed} failed, {self.skipped} skipped in {self.seconds:.1f}s "
            f"({self.rate:.2f} images/s)"
        )
        if self.rank is not None:
            return f"kosmos {self.task} rank {self.rank}: {counts}"
        processes = f" ({self.world} processes)" if self.world > 1 else ""
        return f"kosmos {self.task} {state}: {counts} -> {where}{processes}"


def counted(task: str, n: int) -> str:
    """`n` records of `task` as the user hears of them: "1 image", "3 regions", "2 phrases"."""
    noun = tasks.REGISTRY[task].noun if task in tasks.REGISTRY else "image"
    return f"{n} {noun}{'s' if n != 1 else ''}"


class Model(Protocol):
    """Who runs the model over what is still to do: this process (`InProcess`), or a cluster (run/ray.py)."""

    @property
    def options(self) -> ModelOptions: ...  # records name its label as their model
    @property
    def generation(self) -> GenerationOptions: ...

    @property
    def decoding(self) -> str: ...  # what records name as their decoding (the generation's, and int8 weights)

    def batch_size(self, given: int | None = None) -> int: ...

    def answered(self, pending: Pending, task: Task, options: RunOptions) -> Iterator[Answered]:
        """The model's answers for `pending`, batch by batch, in any order; each unit in exactly one batch."""
        ...


@dataclass
class InProcess:
    """The model in this process: images load on worker threads, batches go through `engine` here (batching.py)."""

    engine: Engine

    @property
    def options(self) -> ModelOptions:
        return self.engine.options

    @property
    def generation(self) -> GenerationOptions:
        return self.engine.generation

    @property
    def decoding(self) -> str:
        return self.engine.decoding

    def batch_size(self, given: int | None = None) -> int:
        return self.engine.batch_size(given)

    def answered(self, pending: Pending, task: Task, options: RunOptions) -> Iterator[Answered]:
        return answered_here(pending, task, self.engine, options)


@dataclass
class Run:
    """A run, set up (runner.py does it, once): what a pass over the inputs needs, typed."""

    task: Task
    inputs: Any  # what the inputs name (a list of str), or Items
    model: Model  # InProcess(engine), or a cluster
    options: RunOptions
    team: Writers  # who writes the output, as its store sees them: ranks.Team (rank 0), or a Solo team of one
    store: Store | DatasetStore
    progress: Progress | None = None
    on_write: Callable[[list[Record]], None] | None = None
    share: tuple[int, int] = (0, 1)  # (rank, world): this process's share of the inputs

    @property
    def rank(self) -> int:
        return self.share[0]


def execute(run: Run) -> Summary:
    """Run `run.task` over every image its inputs name, writing records into its store.

    Started as several processes (accelerate launch, torchrun), this runs on rank 0 only, and `run.model` hands the
    other ranks their shares (ranks/).
    """
    store, options, inputs = run.store, run.options, run.inputs
    summary = Summary(task=run.task.name, out=options.out)
    shown: Progress = run.progress or Progress()
    if shown.live and not run.task.per_row and _named(inputs) and countable(inputs):
        threading.Thread(target=_count_inputs, args=(inputs, shown), daemon=True).start()
    started = time.perf_counter()
    with store.open(run.team, overwrite=options.overwrite, wait=options.wait) as output:
        try:
            _pass(run, output, summary, shown)
            if summary.redone:
                changed = "/".join(s for s in SETTINGS if s in summary.changed)
                log.warning(
                    "%d record%s made with other settings (%s): redone",
                    summary.redone,
                    "s were" if summary.redone != 1 else " was",
                    changed,
                )
        except (KeyboardInterrupt, SystemExit):
            summary.interrupted = True
            raise
        finally:
            summary.seconds = time.perf_counter() - started
            shown.close()
    return summary


def _pass(run: Run, output: Output, summary: Summary, progress: Progress) -> None:
    """One pass over the inputs: what is not done yet goes through the model and into `output`."""
    task, inputs, model, options = run.task, run.inputs, run.model, run.options
    rank, world = run.share
    present: set[str] | None = set() if options.prune or output.store.spool else None
    unseen = Unlisted()  # what the listing could not look into or skipped: then the pass did not see every input
    listed = as_items(inputs, options, task.per_row, unseen, (rank, world))
    # listing on a thread of its own: a shard streamed or a bucket listed over the network never stalls the model
    items = _counted(read_ahead(stated(listed), 2 * model.batch_size(options.batch_size), "kosmos-list"), summary)
    if present is not None:
        items = _tracking(items, present)
    counting = threading.Lock()  # what is pending is pulled on a thread of its own (batching): both count skips
    pending = _todo(
        shard(items, rank, world, by_image=task.per_row), task, model, output.seen, options, summary, progress, counting
    )
    if task.per_row:
        pending = _same_image_once(pending)

    def finish(batch: Answered) -> tuple[list[Record], list[Record]]:  # behind the model, on the writing thread
        records = batch.finish(task)
        return records, output.write(records)

    def count(done: tuple[list[Record], list[Record]]) -> None:  # back on this thread, once written
        records, written = done
        with counting:
            summary.skipped += len(records) - len(written)  # error records of keys recorded ok: not written
            for r in written:
                if r.ok:
                    summary.done += 1
                else:
                    summary.failed += 1
                    if len(summary.failures) < MAX_LISTED_FAILURES:  # the count is kept; the list stays short
                        summary.failures.append(f"{r.path}: {r.error}")
            progress.advance(summary.done, summary.failed, summary.skipped)
        if run.on_write and written:
            run.on_write(written)

    # the next batch goes through the model while the last ones are finished and written; on any way out (Ctrl-C
    # too) what the model answered is still finished and written, and a writing error is raised here
    with FinishBehind(finish, count, FINISH_AHEAD, "kosmos-write") as behind:
        for batch in model.answered(pending, task, options):
            behind.put(batch)
    summary.kept = output.kept
    if output.kept:
        log.warning(
            "%s recorded ok failed this time (e.g. %s): %s kept",
            counted(task.name, output.kept),
            output.kept_first,
            "its ok record is" if output.kept == 1 else "their ok records are",
        )
    if not summary.found:
        if options.prune:  # an unmounted disk, an empty stdin: not a reason to forget every record
            raise UsageError(
                f"{nothing_found(inputs)}; {{param}} refused: it would remove every record of "
                f"{options.out}. Check that the inputs are there",
                param="prune",
            )
        log.warning("%s", nothing_found(inputs))
    if present is None:
        return
    if unseen and not output.store.spool:
        log.warning("--prune removed no record: %s", unseen.line())
        return
    # the pass saw every input: --prune may drop the records of the others; a spool keeps only this pass's
    output.complete(present)


def _named(inputs) -> bool:
    return isinstance(inputs, (list, tuple)) and all(isinstance(i, str) for i in inputs)


def _count_inputs(inputs: list[str], progress: Progress) -> None:
    """The bar's total: the inputs walked once more, beside the run (cheap next to the model)."""
    try:
        progress.start(sum(1 for _ in iter_items(inputs)))
    except Exception:  # noqa: BLE001 - a total is a nicety; the run itself reports real problems
        pass


def as_items(inputs, options: RunOptions, per_row: bool, unseen: Unlisted, share: tuple[int, int]) -> Iterator[Item]:
    inputs = list(inputs) if not isinstance(inputs, Iterator) else inputs
    if isinstance(inputs, list) and all(isinstance(i, str) for i in inputs):
        return iter_items(
            inputs,
            per_row=per_row,
            null=options.null,
            unseen=unseen,
            columns=options.columns,
            fetch=options.fetch,
            share=share,
        )
    return (i if isinstance(i, Item) else Item(str(i)) for i in inputs)


def stated(items: Iterator[Item]) -> Iterator[Item]:
    """Items with their (size, modification time), which resume compares: looked up here, on the listing thread (an
    object named in a manifest in a bucket costs a request), unless the listing brought them."""
    for item in items:
        yield item if item.stat is not None else dataclasses.replace(item, stat=location_stat(item.path))


def _counted(items: Iterator[Item], summary: Summary) -> Iterator[Item]:
    for item in items:
        summary.found += 1
        yield item


def _tracking(items: Iterator[Item], present: set[str]) -> Iterator[Item]:
    for item in items:
        present.add(path_key(item.path, link=item.link))  # as keys hold it: canonical
        yield item


def _todo(items, task: Task, model: Model, seen, options: RunOptions, summary: Summary, progress: Progress, counting):
    """(item, units still to do) for each item with anything left to do; counts the skipped (holding `counting`:
    the writing side counts too, and this may run on another thread)."""
    for item, standings in standing_units(items, task, model.options.label, model.decoding, seen):
        units = []
        for unit, standing in standings:
            skipped = standing.skipped(options.retry_failed)
            if skipped or standing.settings:
                with counting:
                    if standing.settings:
                        summary.redone += 1
                        summary.changed |= standing.settings
                    if skipped:
                        summary.skipped += 1
                        if summary.skipped % 256 == 0:
                            progress.advance(summary.done, summary.failed, summary.skipped)
            if not skipped:
                units.append(unit)
        if units:
            yield item, units


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
