"""Draws results of every task into a folder (what `reader.read` yields, or a `Record.to_dict()` being written),
keeping their layout, with an optional gallery; counts what it drew, skipped and could not draw. `run` is
`kosmos draw`: a results file read through `reader.read`, drawn on threads of its own.

What a result shows is its task's to say (`Result.regions`, `Task.caption_html`): ground draws each entity's boxes
labelled with its phrase, refer the region labelled with the model's description, find the phrase's boxes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import KosmosError, UsageError
from ..inputs import locations
from ..inputs.locations import open_image
from ..inputs.names import recorded
from ..output.reader import Bad, BadRecord, Result, result_of
from ..run.reports import SoloReport
from .gallery import Gallery
from .naming import Targets, claim, save
from .render import Shape, annotate, shapes_of

log = logging.getLogger("kosmos_cli")


@dataclass
class DrawSummary(SoloReport):
    """What a draw did: images written, error records skipped, images that could not be opened, time spent."""

    out_dir: str
    drawn: int = 0
    skipped: int = 0
    failed: int = 0
    unusable: int = 0  # lines or records of the results file that cannot be used: warned, skipped
    seconds: float = 0.0
    index: str | None = None
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        index = f" (gallery {self.index})" if self.index else ""
        return (
            f"kosmos draw finished: {self.drawn} drawn, {self.skipped} skipped (error records), "
            f"{self.failed} failed{self.unusable_part()} in {self.seconds:.1f}s -> {self.out_dir}{index}"
        )


@dataclass
class Job:
    """One result on its way: the result, where its image comes from and goes to, and how long rendering took."""

    result: Result
    source: str
    target: str
    seconds: float = 0.0


class Drawer:
    """Draws result rows into `out_dir`, keeping their layout relative to `base`; optionally an index.html.

    `out_dir` is claimed when the Drawer is made (naming.claim): made and marked as ours, or refused in one line
    when it holds files kosmos did not draw. Labels carry each box's score when the row has one; `min_score` leaves
    out the boxes scored below it.

    Use as a context manager: on a clean exit the gallery is put in place, otherwise it is dropped. Each image
    is written to a temporary file and renamed, so no half-written image is ever left.
    """

    def __init__(
        self,
        out_dir: str,
        base: str | None,
        html: bool = False,
        root: str | None = None,
        title: str = "kosmos draw",
        option: str = "--out-dir",
        min_score: float | None = None,
        results: str = "",
    ):
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise UsageError(f"{option} {out_dir} is a file: name a folder for the annotated images")
        if base is not None and os.path.isdir(out_dir) and os.path.samefile(out_dir, base):
            raise UsageError(
                f"{option} {out_dir} is the folder of the images: drawing there would overwrite "
                "them; choose another folder"
            )
        claim(out_dir, option.lstrip("-").replace("-", "_"))  # ours, or refused before anything is written
        self.out_dir, self.base, self.root, self.title, self.option = out_dir, base, root, title, option
        self.results = results  # the results file the rows come from, named in the warnings about them
        self.min_score = min_score  # boxes scored below it are not drawn (scores.passes)
        self.summary = DrawSummary(out_dir, index=os.path.join(out_dir, "index.html") if html else None)
        self._gallery = Gallery(self.summary.index, title) if self.summary.index else None
        self._target = Targets(out_dir, base)
        self._prepared: set[str] = set()  # the paths of the results drawn (or tried), for `prepare(missing=True)`

    def __enter__(self) -> Drawer:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(complete=kind is None)

    def add_records(self, records) -> None:
        """`pipeline.run`'s on_write hook: draw each finished record."""
        for record in records:
            self.add(record.to_dict())

    def add(self, row: Result | Bad | Mapping[str, Any]) -> str | None:
        """Draw one result (or a record's row); returns the file written, or None (an error record, or an image
        that cannot be read)."""
        job = self.prepare(row)
        return None if job is None else self.complete(job, self.render(job))

    # add() in three steps, so that Background can render on several threads and still name files and write the
    # gallery in the order of the rows: prepare and complete run in order, render anywhere.
    def prepare(self, row: Result | Bad | Mapping[str, Any], missing: bool = False) -> Job | None:
        """Where the result's image comes from and goes to (None: an error record, counted as skipped; or a line
        that cannot be used, warned and counted as unusable).

        `missing`: a result of an earlier run, drawn only when its image is not drawn yet (`ground --draw` run
        again: what the run before wrote but had not drawn when it stopped) and not drawn by this Drawer already;
        nothing else is counted or said of it."""
        got: Result | Bad
        if isinstance(row, (Result, Bad)):
            got = row
        else:
            try:
                got = result_of(row, self.root)
            except BadRecord as exc:
                got = Bad(f"the record of {row.get('path')!r}", str(exc))
        if missing and (isinstance(got, Bad) or not got.ok or got.path in self._prepared):
            return None  # the run that wrote it said what there was to say
        if isinstance(got, Bad):
            self.summary.unusable += 1
            log.warning("%s", got.message(self.results))
            return None
        result = got
        if not result.ok:
            self.summary.skipped += 1
            return None
        self._prepared.add(result.path)
        target = self._target(recorded(result.source))  # named in valid UTF-8
        return None if missing and os.path.exists(target) else Job(result, result.source, target)

    def render(self, job: Job) -> list[Shape] | str:
        """Load, annotate and write the image: its shapes, or why it could not be drawn. Thread-safe."""
        started = time.perf_counter()
        try:
            loaded = open_image(job.source)
            if loaded.image is None:
                return loaded.error or "cannot read the image"
            if (
                locations.is_local(job.source)
                and os.path.exists(job.target)
                and os.path.samefile(job.target, job.source)
            ):
                return f"the annotated image would overwrite it: choose another {self.option}"
            image, result = loaded.image, job.result
            scale = (
                image.width / result.width if result.width else 1.0,
                image.height / result.height if result.height else 1.0,
            )
            shapes = shapes_of(result, self.min_score)
            annotate(image, shapes, scale)
            save(image, job.target, self.option)
            return shapes
        except KosmosError:
            raise  # a folder that cannot be written (a full disk): the end of the drawing, said in one line
        except Exception as exc:  # noqa: BLE001 - a drawing failure is this image's, never the end of a run
            return f"{type(exc).__name__}: {exc}"
        finally:
            job.seconds = time.perf_counter() - started

    def complete(self, job: Job, outcome: list[Shape] | str) -> str | None:
        """Count the rendered row and add it to the gallery; the file written, or None."""
        self.summary.seconds += job.seconds
        if isinstance(outcome, str):
            self._failed(job.result.path, outcome)
            return None
        if self._gallery is not None:
            self._gallery.add(job.result, outcome, job.target)
        self.summary.drawn += 1
        return job.target

    def close(self, complete: bool = True) -> DrawSummary:
        if self._gallery is not None:
            self._gallery.close(complete)
        return self.summary

    def _failed(self, path: str, why: str) -> None:
        self.summary.failed += 1
        self.summary.failures.append(f"{path}: {why}")
        log.warning("cannot draw %s: %s", path, why)
