"""Draws on threads of its own, for `ground --draw` and `kosmos draw` (`run`): the Drawer's results in order,
rendered several at a time."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

from ..inputs import locations
from ..output import reader
from ..run.progress import Progress
from ..run.threads import ordered_map
from ..tasks.scores import check_min_score
from .drawer import Drawer, DrawSummary, Job


class Background:
    """A Drawer fed from the main thread and drawing on threads of its own.

    `ground --draw` hands it each batch as it is written, so the model does not wait for the pictures; `kosmos
    draw` hands it the rows of a results file. Images are decoded, annotated and encoded on `threads` threads
    (Pillow lets go of the GIL for most of that); files are named, counted, put in the gallery and reported to
    `on_row` in the order of the rows. At most `depth` handfuls of rows wait, then add_rows blocks: memory stays
    bounded when drawing is slower than what feeds it. An error while drawing (a full disk) comes back on the
    next add_rows or at the end. Use as a context manager: a clean exit waits for the drawing to finish; after an
    error or an interrupt what is left is skipped.
    """

    def __init__(
        self,
        drawer: Drawer,
        threads: int | None = None,
        depth: int = 4,
        on_row: Callable[[str | None], None] | None = None,
    ):
        self.drawer, self.summary, self.on_row = drawer, drawer.summary, on_row
        self.threads = threads or min(4, os.cpu_count() or 1)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._ended = False  # the end of the rows (None) has been taken off the queue
        self._thread = threading.Thread(target=self._loop, name="kosmos-draw-order", daemon=True)
        self._started = time.perf_counter()
        self._thread.start()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:
            self._stop.set()
        self._queue.put(None)
        self._thread.join()
        self.summary.seconds = time.perf_counter() - self._started  # wall time: the threads overlap
        failed = self._error
        self.drawer.close(complete=kind is None and failed is None)
        if kind is None and failed is not None:
            raise failed

    def add_records(self, records) -> None:
        """`pipeline.run`'s on_write hook: the batch's rows, taken now, go to the drawing threads."""
        self.add_rows([record.to_dict() for record in records])

    def add_rows(self, rows: list[reader.Result | reader.Bad] | list[dict[str, Any]], missing: bool = False) -> None:
        """Rows to draw, in order; `missing`: results of an earlier run, drawn only where not drawn yet."""
        if self._error is not None:
            raise self._error
        self._queue.put((rows, missing))

    def add_missing(self, path: str) -> None:
        """`ground --draw` run again: the results at `path` (the run's output) that are not drawn yet, drawn."""
        batch: list[reader.Result | reader.Bad] = []
        for result in reader.read(path):
            batch.append(result)
            if len(batch) == 64:
                self.add_rows(batch, missing=True)
                batch = []
        self.add_rows(batch, missing=True)

    def _loop(self) -> None:
        """The order thread: rows prepared and finished in order, rendered on the drawing threads meanwhile."""
        try:
            # two rows a thread waiting to be finished, besides the one being finished
            rendered = ordered_map(self._render, self._jobs(), self.threads, 2 * self.threads + 1, "kosmos-draw")
            with closing(rendered):
                for job, outcome in rendered:
                    if self._stop.is_set():
                        break  # what is rendering is waited for and dropped, what has not started is cancelled
                    target = None if job is None else self.drawer.complete(job, outcome)
                    if self.on_row is not None:
                        self.on_row(target)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._error = exc
            self._stop.set()
        while not self._ended:  # after an error or a stop the rows left are skipped: add_rows never blocks
            self._take()

    def _jobs(self) -> Iterator[Job | None]:
        """Each row handed in, prepared in order on the order thread, until the end or a stop."""
        while (taken := self._take()) is not None:
            rows, missing = taken
            for row in rows:
                if self._stop.is_set():
                    return
                yield self.drawer.prepare(row, missing)

    def _take(self) -> tuple[list[Any], bool] | None:
        taken = self._queue.get()
        self._ended = taken is None
        return taken

    def _render(self, job: Job | None) -> tuple[Job | None, Any]:
        """On a drawing thread: the job and what rendering it gave (nothing to render for an error record)."""
        return job, None if job is None else self.drawer.render(job)


def run(
    path: str,
    out_dir: str,
    *,
    html: bool = False,
    min_score: float | None = None,
    progress: Progress | None = None,
    on_drawn: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> DrawSummary:
    """`kosmos draw` (api.draw says what it does): the results at `path` read twice through `reader.read`, once to
    check them all and find the images' common folder before anything is written, once to draw them."""
    min_score = check_min_score(min_score)
    locations.check_local_output(out_dir, "out_dir")
    total, base = 0, None
    for result in reader.read(path):
        total += 1
        if isinstance(result, reader.Result) and result.ok and locations.is_local(result.source):
            folder = os.path.dirname(os.path.abspath(result.source))
            base = folder if base is None else os.path.commonpath([base, folder])
    progress = progress or Progress()
    progress.start(total)
    title = f"kosmos draw: {os.path.basename(path)}"
    drawer = Drawer(out_dir, base, html=html, title=title, min_score=min_score, results=path)
    summary = drawer.summary

    def on_row(target: str | None) -> None:  # in the order of the rows, from the drawing side
        if target is not None and on_drawn is not None:
            on_drawn(target)
        progress.advance(summary.drawn, summary.failed + summary.unusable, summary.skipped)

    try:
        with Background(drawer, threads=threads, on_row=on_row) as background:
            batch: list[reader.Result | reader.Bad] = []
            for result in reader.read(path):
                batch.append(result)
                if len(batch) == 16:
                    background.add_rows(batch)
                    batch = []
            background.add_rows(batch)
    finally:
        progress.close()
    return summary
