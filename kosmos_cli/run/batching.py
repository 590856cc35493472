"""The model's stages over what is still to do: images loaded on workers, requests batched, the model's answers.

    (item, units) -> load (a worker: read, decode, each unit's prompt and request) -> formed (batches of
    requests), collated (one host tensor of a batch's pixels) -> _forward (the engine) -> Answered -> finish (each
    unit's record, built once from its facts)

Here (`answered_here`) everything up to the collated batch runs on a feeding thread, a batch ahead of the model's.

The same code runs here (pipeline.InProcess) and in a Ray cluster's actors (run/ray.py). A unit learns its facts as
it goes (its displayed size, the seconds the model took, its generation, or an error); no record exists until
`Answered.finish` builds each from them, on the writing thread (or an actor, which sends the records back).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from ..errors import OutOfMemory
from ..inputs.images import MODEL_SIDE
from ..inputs.listing import Item
from ..inputs.locations import open_image
from ..model.engine import Engine, Prepared
from ..options import RunOptions
from ..tasks import Task, Unit
from ..tasks.records import Record
from .threads import ordered_map, read_ahead

DRAFT_SIDE = 2 * MODEL_SIDE  # JPEGs are decoded at a reduced scale down to this many pixels a side, not below
MAX_WORKERS = 16  # image loaders by default: one per CPU up to this (a 16-core GPU host feeds 500 images/s)

Pending = Iterator[tuple[Item, list[Unit]]]  # what is still to do: each image and its units
Loaded = list[tuple[Unit, Prepared | None]]  # an image's units, each with its request, or None: failed (its error)


def load(item: Item, units: list[Unit], task: Task, engine: Engine, options: RunOptions) -> Loaded:
    """Worker: read (a remote image: fetch) and decode the image once, then prepare every unit's request. A failure
    is the unit's error. `engine` needs only its processor (Engine.load(weights=False))."""
    if item.error is not None:
        return [(u.failed(item.error), None) for u in units]
    loaded = open_image(item.path, options.fetch, draft=DRAFT_SIDE if options.draft else None, data=item.data)
    if loaded.image is None or loaded.width is None or loaded.height is None:
        return [(u.failed(loaded.error or "cannot read the image"), None) for u in units]
    out: Loaded = []
    pixels = None
    for unit in units:
        unit = dataclasses.replace(unit, size=(loaded.width, loaded.height))
        try:
            prompt = task.prompt(unit)
            if pixels is None:
                pixels = engine.pixels(loaded.image)
            out.append((unit, engine.prepare(loaded.image, prompt, image_key=item.path, pixel_values=pixels)))
        except ValueError as exc:
            out.append((unit.failed(str(exc)), None))
    return out


@dataclass
class Answered:
    """A batch as the model left it: its units, each failed (before the model: an unreadable image, a prompt refused;
    or in it: out of memory) or answered (its generation); or the records made of them already (by a cluster's
    actor, another rank). `finish` makes the units' records, on any thread: records first, then units, in order."""

    units: list[Unit] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)

    def finish(self, task: Task) -> list[Record]:
        return [*self.records, *(task.record(unit) for unit in self.units)]


def answered_here(pending: Pending, task: Task, engine: Engine, options: RunOptions) -> Iterator[Answered]:
    """Answered batches, one at a time, on the caller's thread (the model's), which only runs the model.

    Everything before it runs on a feeding thread, a batch ahead: `pending` pulled (the listing, the resume check),
    images loaded by the workers, requests bucketed (`formed`) and each batch's pixels collated into one host
    tensor (`Engine.collate`: uint8, pinned on CUDA). So the model's thread takes a batch ready to copy. When the
    caller stops (an error, Ctrl-C, SIGTERM), the loaders are told at once (`current_stop`), and a read that never
    returns holds up nothing: the feeding thread, a daemon, is left behind as a stuck loader is."""
    size = engine.batch_size(options.batch_size)
    workers = options.workers or default_workers()
    stop = threading.Event()

    def loading(job):  # on a worker: (item, units) -> [(unit, prepared or None)]
        return load(*job, task, engine, options)

    def fed() -> Iterator[Formed]:  # on the feeding thread
        ahead = max(2 * size, 2 * workers)
        with closing(ordered_map(loading, pending, workers, ahead, "kosmos-load", stop)) as loaded:
            for failed, bucket in formed(loaded, engine, size):
                yield failed, bucket, engine.collate([p for _, p in bucket]) if bucket else None

    batches = read_ahead(fed(), 1, "kosmos-feed")
    try:
        for failed, bucket, collated in batches:
            yield _forward(failed, bucket, task, engine, collated) if bucket else Answered(failed)
    finally:
        stop.set()
        batches.close()


Formed = tuple[list[Unit], list[tuple[Unit, Prepared]], Any]  # failed units, a bucket, its pixels collated or None


def formed(loaded: Iterable[Loaded], engine: Engine, size: int) -> Iterator[tuple[list[Unit], list]]:
    """Batches of `size` requests (the last ones fewer) out of loaded images, each after the units that failed before
    it: (failed, bucket), the bucket empty when only failed units are left to hand on.

    Requests are bucketed by prompt token length for generate; the fast decoder takes any lengths in one batch, so
    then every batch is full (refer and find manifests mix lengths)."""
    buckets: dict[int, list[tuple[Unit, Prepared]]] = {}
    failed: list[Unit] = []
    for units in loaded:
        for unit, prepared in units:
            if prepared is None:
                failed.append(unit)
                continue
            key = 0 if engine.fast else len(prepared.input_ids)  # generate's batches need one prompt length
            bucket = buckets.setdefault(key, [])
            bucket.append((unit, prepared))
            if len(bucket) >= size:
                yield failed, bucket
                failed, buckets[key] = [], []
        if len(failed) >= size:
            yield failed, []
            failed = []
    for bucket in buckets.values():
        if bucket:
            yield failed, bucket
            failed = []
    if failed:
        yield failed, []


def bucketed(loaded: Iterable[Loaded], task: Task, engine: Engine, size: int) -> Iterator[Answered]:
    """The model's answers for loaded images, batch by batch (`formed`), on this thread (a Ray actor's)."""
    for failed, bucket in formed(loaded, engine, size):
        yield _forward(failed, bucket, task, engine) if bucket else Answered(failed)


def _forward(
    failed: list[Unit], bucket: list[tuple[Unit, Prepared]], task: Task, engine: Engine, collated: Any = None
) -> Answered:
    """The model's answers for `bucket` (its pixels `collated` already, or not yet), after the units that `failed`
    before it."""
    started = time.perf_counter()
    try:
        answers = engine.forward_scored_safe(collated if collated is not None else [p for _, p in bucket], task.stop_at)
    except OutOfMemory as exc:  # not even one request fits: these units fail, the run goes on
        return Answered(failed + [unit.failed(str(exc)) for unit, _ in bucket])
    each = round((time.perf_counter() - started) / len(bucket), 4)
    answered = [dataclasses.replace(unit, seconds=each, generated=answer) for (unit, _), answer in zip(bucket, answers)]
    return Answered(failed + answered)


def default_workers() -> int:
    """Image loaders when --workers is not given: one per CPU this process may run on, at most MAX_WORKERS."""
    try:
        cpus = len(os.sched_getaffinity(0))  # what taskset or a container's cpuset leaves us, where known
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))
