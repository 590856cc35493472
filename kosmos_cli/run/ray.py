"""`--on ray`: the pipeline's stages on a Ray cluster, as one Ray Data execution; this process lists and writes.

    this process (the driver)                              the cluster
    list the inputs, skip what the output holds   ->   read     what the driver sent, chunk by chunk
    (pipeline._pass, as for a local run); send the     load     CPU tasks: fetch, decode, pixels, prompt ids
    rest in chunks through the object store            model    an actor pool, one actor per GPU: the Engine,
                                                                loaded once per actor, batched as locally
    write each record once, through the store     <-   finish   CPU tasks: text -> entities, boxes -> records

The stages are the local pipeline's own functions (`pipeline._load`, `pipeline._bucketed`, `Answered.finish`); only
who runs them differs. The driver owns the output exactly as a local run does: it takes the lock, reads what is
done, and writes every record through the store's `Output`, so resume, stale records, --retry-failed, --overwrite,
--prune and the output formats mean what they mean locally.

Exactly once: every unit the driver sends gets a ticket, and the driver keeps the tickets still out (the units of
at most a window of images). A record whose ticket is not out is a second answer for the same unit (a task Ray ran
again after a worker died) and is dropped; a ticket that never comes back ends the run with an error instead of a
silent gap. A model actor whose process dies is started again by Ray and its batch run again (Ray Data's defaults
for an actor pool: max_restarts=-1, max_task_retries=-1).

Streaming: the inputs are listed as the run goes and sent in chunks of at most CHUNK_ROWS images (or CHUNK_BYTES of
image bytes) through the object store, at most a window of images in flight, so neither the driver nor the cluster
holds a million-line manifest at once. A reader task pulls the chunks from a small feeder actor in the order they
were sent; it reads chunk N the same way whenever it runs, so Ray can run it again.

`ray` is imported here only, inside the functions that need it: without the extra, `--on ray` is refused before
anything loads (options.RunOptions).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import pickle
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ClusterError, KosmosError, ModelError, UsageError
from ..model.engine import AUTO_BATCH_SIZES, DEFAULT_BATCH_SIZE, Engine
from ..options import GenerationOptions, ModelOptions, RunOptions
from ..tasks import Task
from ..tasks.records import Record, one_line
from .pipeline import Answered, Loaded, Pending, _bucketed, _load
from .threads import ordered_map

log = logging.getLogger("kosmos_cli")

FIRST_CHUNK = 64  # images in the first chunk sent: the cluster starts work at once; later chunks double up to
CHUNK_ROWS = 4096  # images in one chunk
CHUNK_BYTES = 64 << 20  # image bytes in one chunk (WebDataset samples, Parquet image rows carry theirs)
CHUNK_WAIT = 1.0  # seconds a slow listing fills a chunk before what it has is sent anyway
WINDOW = 16384  # images in flight at most (sent, records not all back yet); more with a larger pool (`window`)
LOAD_ROWS = 16  # images per loading task at most (fewer when a batch holds fewer: `RayData.group`)
LOAD_MEMORY = 1 << 30  # a loading task's process: the processor (transformers, ~0.5 GB) and its images decoded
LOAD_THREADS = 4  # threads of one loading task (remote images are fetched side by side), unless --workers
CONNECT_TIMEOUT = 10.0  # seconds to reach the cluster's address before saying it cannot be reached
ENDED = object()


# -- joining the cluster -----------------------------------------------------------------------------------------------
def join() -> None:
    """Join the Ray cluster the way Ray does: the one this process is already in, $RAY_ADDRESS (set by `ray job
    submit`), or, with neither, a cluster started on this machine (what `ray.init()` does). One line when the
    address cannot be reached."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "auto", "local"):
        _reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)  # its errors come back here
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address} ($RAY_ADDRESS)" if address else "on this machine"
        raise ClusterError(
            f"cannot join the Ray cluster {where} ({one_line(str(exc))}): start one (ray start --head, ray up, "
            "KubeRay) or unset RAY_ADDRESS to start one here"
        ) from None


def _reachable(address: str) -> None:
    """Refuse an address nothing answers at, in seconds: ray.init would wait for it for minutes, silently."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT):
            return
    except ValueError:
        reason = "no port in it: give host:port, or ray://host:port for Ray Client"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise ClusterError(
        f"cannot reach the Ray cluster at {address} ($RAY_ADDRESS): {reason}; check that it is up and the address "
        "(ray status on its head node), or unset RAY_ADDRESS to start one on this machine"
    )


# -- the strategy the pipeline runs ------------------------------------------------------------------------------------
@dataclass
class RayData:
    """pipeline.Model on a Ray cluster: `actors` model actors, each with `gpus` GPUs (0: on the CPU)."""

    options: ModelOptions
    generation: GenerationOptions
    actors: int = 1
    gpus: int = 0
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def on_cluster(cls, model: ModelOptions, generation: GenerationOptions) -> RayData:
        """Join the cluster (`join`) and size the pool from it: one actor per GPU; on a cluster without GPUs (or
        with --device cpu) an actor per 8 CPUs, at least one."""
        if model.device.startswith("cuda:"):
            raise UsageError(
                "{param} " + model.device + " names a GPU of this machine; on Ray every model actor gets a GPU of "
                "its own: use --device auto or cuda",
                param="device",
            )
        join()
        import ray

        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if model.device == "cpu" or (model.device == "auto" and not gpus):
            return cls(dataclasses.replace(model, device="cpu"), generation, max(1, cpus // 8), 0)
        if not gpus:
            log.warning("the Ray cluster has no GPU yet: the model actors wait for one (an autoscaler adds it)")
        return cls(model, generation, max(1, gpus), 1)

    @property
    def decoding(self) -> str:
        """What records name as their decoding: the generation's label, and int8 weights when asked for (the actors
        load them so, or refuse; with int8-or-float32 an actor that falls back to float32 warns)."""
        return self.generation.label + (" quantize=int8" if self.options.quantize else "")

    def batch_size(self, given: int | None = None) -> int:
        """Images per batch sent to a model actor: `given`, else 8 on the CPU and the largest automatic size on a
        GPU; each actor splits it into batches of its engine's own size (chosen from its card's free memory)."""
        return given or (AUTO_BATCH_SIZES[1] if self.gpus else DEFAULT_BATCH_SIZE)

    def group(self, given: int | None) -> int:
        """Images per row of every stage (one loading task each): LOAD_ROWS, or a batch when it is smaller."""
        return min(LOAD_ROWS, self.batch_size(given))

    def window(self, given: int | None) -> int:
        """Images in flight at most: enough for every actor to have several batches waiting."""
        return max(WINDOW, 8 * self.actors * self.batch_size(given))

    def answered(self, pending: Pending, task: Task, options: RunOptions) -> Iterator[Answered]:
        """Send `pending` to the cluster as it is listed; the records that come back, each unit's once. Nothing
        starts on the cluster (no model loads) until there is something to do."""
        exchange = _Exchange(self, task, options)
        try:
            with _errors_said_once():
                yield from exchange.run(iter(pending))
        except Exception as exc:
            said = _said(exc)
            if said is exc:
                raise
            raise said from None
        finally:
            exchange.close()

    def _dataset(self, feeder, task: Task, options: RunOptions):
        """The one Ray Data execution: read -> load -> model -> finish."""
        import ray

        data: Any = ray.data  # typed loosely: its stubs take a stage's extra keyword arguments for errors
        model_options, generation = self.options, self.generation
        return (
            data.range(1, override_num_blocks=1)
            .map_batches(_read, fn_kwargs={"feeder": feeder}, batch_size=1, batch_format="pyarrow", num_cpus=0)
            .map_batches(
                _load_batch,
                fn_kwargs={"task": task, "model": model_options, "generation": generation, "options": options},
                batch_size=1,  # a row is `group` images already (one row the reader yields)
                batch_format="pyarrow",
                num_cpus=1,
                memory=LOAD_MEMORY,  # and keeps loading in tasks of its own, never fused into the model actors
            )
            .map_batches(
                ModelActor,
                fn_constructor_kwargs={
                    "task": task,
                    "model": model_options,
                    "generation": generation,
                    "batch_size": options.batch_size,
                },
                compute=data.ActorPoolStrategy(size=self.actors),
                batch_size=-(-self.batch_size(options.batch_size) // self.group(options.batch_size)),  # in rows
                batch_format="pyarrow",
                num_cpus=1,
                num_gpus=self.gpus,
            )  # Ray Data's own defaults start an actor whose process died again and run its batch again
            .map_batches(_finish_batch, fn_kwargs={"task": task}, batch_size=None, batch_format="pyarrow", num_cpus=0)
        )


# -- the driver's side of the exchange ---------------------------------------------------------------------------------
@dataclass
class _Ledger:
    """The tickets out (sent, their record not back yet), and the images of the chunks not all back: at most
    `window` images, so what is in flight (in the object store, in the cluster's stages) is bounded however long the
    input. Counted in images, not units: a model actor waits for a whole batch of images, however many regions or
    phrases each brings."""

    window: int
    next_ticket: int = 0
    out: dict[int, int] = field(default_factory=dict)  # ticket -> its chunk
    left: dict[int, int] = field(default_factory=dict)  # chunk -> its tickets still out
    images: dict[int, int] = field(default_factory=dict)  # chunk -> its images, until all its tickets are back
    flying: int = 0  # the images of those chunks

    @property
    def room(self) -> int:
        return max(0, self.window - self.flying)

    def issue(self, chunk: int, units: int, images: int) -> int:
        """Tickets for the `units` units of `chunk`'s `images` images: the first one; they run on from it."""
        first = self.next_ticket
        self.next_ticket += units
        self.out.update((t, chunk) for t in range(first, first + units))
        self.left[chunk], self.images[chunk] = units, images
        self.flying += images
        return first

    def take(self, ticket: int) -> int | None:
        """The ticket's chunk, when it was out (it is not any more); None for a second answer. A chunk whose every
        ticket is back is done: its index comes back negated and shifted (-chunk - 1)."""
        chunk = self.out.pop(ticket, None)
        if chunk is None:
            return None
        self.left[chunk] -= 1
        if self.left[chunk] == 0:
            del self.left[chunk]
            self.flying -= self.images.pop(chunk)
            return -chunk - 1
        return chunk


class _Exchange:
    """The driver's side: chunks of what is to do go out while the window has room, records come back; both on the
    driver's thread (the skips the listing counts and the writes the caller counts stay on one thread)."""

    def __init__(self, cluster: RayData, task: Task, options: RunOptions):
        self.cluster, self.task, self.options = cluster, task, options
        self.ledger = _Ledger(cluster.window(options.batch_size))
        self.feeder: Any = None
        self.results: _Collector | None = None
        self.chunks = 0

    def run(self, pending: Iterator) -> Iterator[Answered]:
        size, listed = FIRST_CHUNK, False
        while True:
            while not listed and self.ledger.room:
                jobs, units, listed = _chunk(pending, size, self.ledger.room)
                if jobs:
                    self._send(jobs, units)
                    size = min(2 * size, CHUNK_ROWS)
                if listed and self.feeder is not None:
                    self.feeder.close.remote(self.chunks)
                if self.results is not None and self.results.ready():
                    break  # what came back is written before more is listed
            if self.results is None:
                return  # nothing to do: nothing was started
            records: list[Record] = []
            for batch in self.results.take(wait=listed or not self.ledger.room):
                if batch is not ENDED:
                    records += self._back(batch)  # what has come back is written together: one part, not many
                    continue
                if records:
                    yield Answered(records)
                if self.ledger.out:
                    raise ClusterError(
                        f"{len(self.ledger.out)} records did not come back from the Ray cluster; what came back is "
                        "written: run the same command again to finish"
                    )
                return
            if records:
                yield Answered(records)

    def _send(self, jobs: list, units: int) -> None:
        import ray

        if self.feeder is None:  # the first chunk: start the execution
            self.feeder = ray.remote(num_cpus=0)(_Feeder).options(scheduling_strategy=_here()).remote()
            with _quiet_data():
                dataset = self.cluster._dataset(self.feeder, self.task, self.options)
            self.results = _Collector(dataset)
        first = self.ledger.issue(self.chunks, units, len(jobs))
        table = _jobs_table(jobs, first, self.cluster.group(self.options.batch_size))
        self.feeder.put.remote(self.chunks, [ray.put(table)], table.num_rows)
        self.chunks += 1

    def _back(self, batch) -> list[Record]:
        """The records of `batch` whose tickets were out; a chunk whose records are all back is freed."""
        records = []
        for made, tickets in zip(batch.column("records").to_pylist(), batch.column("tickets").to_pylist()):
            for ticket, record in zip(tickets, pickle.loads(made)):
                chunk = self.ledger.take(ticket)
                if chunk is None:
                    continue  # a second answer for a unit (a task Ray ran again): its first was written
                if chunk < 0:
                    self.feeder.forget.remote(-chunk - 1)
                records.append(record)
        return records

    def close(self) -> None:
        import ray

        if self.results is not None:
            self.results.stop()
        if self.feeder is not None:
            ray.kill(self.feeder)


def _chunk(pending: Iterator, size: int, room: int) -> tuple[list, int, bool]:
    """Up to `size` images of `pending` (fewer when the window has less `room`, CHUNK_BYTES of image bytes are in,
    or the listing took CHUNK_WAIT seconds): (jobs, their units, whether the listing ended)."""
    jobs: list = []
    units = data = 0
    started = time.monotonic()
    for item, todo in pending:
        jobs.append((item, todo))
        units += len(todo)
        data += len(item.data or b"")
        if len(jobs) >= min(size, room) or data >= CHUNK_BYTES or time.monotonic() - started >= CHUNK_WAIT:
            return jobs, units, False
    return jobs, units, True


def _jobs_table(jobs: list, first: int, size: int):
    """A chunk as the reader hands it on: rows of `size` images each, with the first ticket of each row's units
    (pickled: items and units carry whatever a manifest's columns hold)."""
    import pyarrow as pa

    rows, firsts, ticket = [], [], first
    for start in range(0, len(jobs), size):
        group = jobs[start : start + size]
        rows.append(pickle.dumps(group, protocol=pickle.HIGHEST_PROTOCOL))
        firsts.append(ticket)
        ticket += sum(len(units) for _, units in group)
    return pa.table({"jobs": pa.array(rows, pa.binary()), "first": pa.array(firsts, pa.int64())})


class _Collector:
    """Ray Data's output, pulled on a thread of its own into a short queue: the driver's thread lists and sends
    while records come back."""

    def __init__(self, dataset):
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pull, args=(dataset,), name="kosmos-ray", daemon=True)
        self._thread.start()

    def _pull(self, dataset) -> None:
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
                if not self._offer(batch):
                    return
            self._offer(ENDED)
        except BaseException as exc:  # noqa: BLE001 - raised on the driver's thread
            self._offer(exc)

    def _offer(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def ready(self) -> bool:
        return not self._queue.empty()

    def take(self, wait: bool) -> Iterator[Any]:
        """What has come back; with `wait`, at least one entry (in short waits: Ctrl-C gets through)."""
        while wait:
            try:
                entry = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                continue
        else:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return
        while True:
            if isinstance(entry, BaseException):
                raise entry
            yield entry
            if entry is ENDED:
                return
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return

    def stop(self) -> None:
        self._stop.set()


class _Feeder:
    """The chunks the driver sent, by number, for the reader: held until the driver has every record of a chunk
    back (`forget`), and asked for by number, so a reader Ray runs again reads the same rows in the same order."""

    def __init__(self) -> None:
        self.chunks: dict[int, Any] = {}  # number -> [ref of its table]
        self.rows: dict[int, int] = {}  # number -> the rows the reader yields for it (forgotten ones too)
        self.total: int | None = None
        self.changed: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self.changed is None:
            self.changed = asyncio.Event()
        return self.changed

    async def put(self, number: int, held: list, rows: int) -> None:
        self.chunks[number], self.rows[number] = held, rows
        self._event().set()

    async def close(self, total: int) -> None:
        self.total = total
        self._event().set()

    async def forget(self, number: int) -> None:
        self.chunks.pop(number, None)

    async def get(self, number: int):
        """(rows, [ref] or None when forgotten) of chunk `number`; None after the last one."""
        while number not in self.rows:
            if self.total is not None and number >= self.total:
                return None
            event = self._event()
            event.clear()
            await event.wait()
        return self.rows[number], self.chunks.get(number)


# -- the stages, on the cluster ----------------------------------------------------------------------------------------
def _read(batch, feeder) -> Iterator[Any]:
    """The reader: every chunk the driver sends, in order, a row at a time (a forgotten chunk, whose
    records are all back, as as many empty tables: a reader run again yields what it yielded before)."""
    import ray

    number = 0
    while True:
        got = ray.get(feeder.get.remote(number))
        if got is None:
            return
        rows, held = got
        table = ray.get(held[0]) if held is not None else None
        for row in range(rows):
            yield table.slice(row, 1) if table is not None else _EMPTY_JOBS()
        number += 1


@functools.lru_cache(maxsize=1)
def _EMPTY_JOBS():
    import pyarrow as pa

    return pa.table({"jobs": pa.array([], pa.binary()), "first": pa.array([], pa.int64())})


@functools.lru_cache(maxsize=2)
def _preparer(model: ModelOptions, generation: GenerationOptions) -> Engine:
    """The processor, loaded once per worker process (no weights: loading needs only the processor)."""
    return Engine(model, generation).load(weights=False)


def _load_batch(batch, task: Task, model: ModelOptions, generation: GenerationOptions, options: RunOptions):
    """Loading: fetch, decode and prepare each image of a row (pipeline._load, on threads); a row stays a row (its
    images' units, in order, each with its request), so a stage's blocks stay few however many images pass."""
    import pyarrow as pa

    engine = _preparer(model, generation)

    def load(job) -> Loaded:
        return _load(job[0], job[1], task, engine, options)

    loaded = []
    for jobs in batch.column("jobs").to_pylist():
        group = pickle.loads(jobs)
        threads = max(1, min(len(group), options.workers or LOAD_THREADS))
        done = list(ordered_map(load, group, threads, 2 * threads, "kosmos-load"))
        loaded.append(pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL))
    return pa.table({"loaded": pa.array(loaded, pa.binary()), "first": batch.column("first")})


class ModelActor:
    """The model, loaded once per actor (on its own GPU, or the CPU), answering batches of loaded images with the
    same engine, decoder and batch rules as a local run (pipeline._bucketed)."""

    def __init__(self, task: Task, model: ModelOptions, generation: GenerationOptions, batch_size: int | None):
        self.task, self.error = task, None
        try:
            self.engine = Engine(model, generation).load()
            self.size = self.engine.batch_size(batch_size)
        except KosmosError as exc:  # said by the first batch: one line on the driver, before any record
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - out of memory loading the weights: said the same way
            if type(exc).__name__ != "OutOfMemoryError":
                raise
            self.error = ModelError(
                f"out of GPU memory loading {model.name} on {socket.gethostname()}: use --dtype float16 or "
                "bfloat16, or GPUs with more memory"
            )

    def __call__(self, batch):
        import pyarrow as pa

        if self.error is not None:
            raise self.error
        loaded: list[Loaded] = []
        tickets: dict[int, int] = {}  # id of a unit's record -> its ticket (a row's units hold theirs in order)
        for row, first in zip(batch.column("loaded").to_pylist(), batch.column("first").to_pylist()):
            for units in pickle.loads(row):
                for unit, _ in units:
                    tickets[id(unit.record)] = first
                    first += 1
                loaded.append(units)
        answered, their = [], []
        for out in _bucketed(loaded, self.task, self.engine, self.size):
            answered.append(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
            their.append([tickets[id(r)] for r in out.failed] + [tickets[id(u.record)] for u, _ in out.answered])
        return pa.table({"answered": pa.array(answered, pa.binary()), "tickets": pa.array(their, pa.list_(pa.int64()))})


def _finish_batch(batch, task: Task):
    """Finishing: the model's text -> entities, boxes and scores -> records (Answered.finish), off the GPU; a row
    per batch the model answered, so the driver writes them a batch at a time, as a local run does."""
    import pyarrow as pa

    records = []
    for answered in batch.column("answered").to_pylist():
        made: list[Record] = pickle.loads(answered).finish(task)
        records.append(pickle.dumps(made, protocol=pickle.HIGHEST_PROTOCOL))
    return pa.table({"records": pa.array(records, pa.binary()), "tickets": batch.column("tickets")})


# -- Ray's settings and errors -----------------------------------------------------------------------------------------
def _here():
    """Schedule on this process's node where it can (the feeder: the chunks are put here)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)


@contextlib.contextmanager
def _quiet_data():
    """Ray Data's settings for the dataset made inside (a dataset keeps those it was made with): no progress bars
    of its own (kosmos shows one) nor advice in Ray's terms (its issue detectors: "set memory= in the call"); a
    stage's own error raised as it is (a model that cannot load: the driver says its one line); and every batch a
    stage yields passed on at once as blocks of its own rows: the rows are already what a stage wants (a row of
    images, a batch's answers), and Ray Data would otherwise hold the reader's rows until 128 MiB of them are
    ready, which a stream of paths never is."""
    import ray

    context = ray.data.DataContext.get_current()
    changed = {
        "enable_progress_bars": False,
        "target_max_block_size": 1,
        "raise_original_map_exception": True,
        "issue_detectors_config": dataclasses.replace(context.issue_detectors_config, detectors=[]),
    }
    saved = {name: getattr(context, name) for name in changed}
    for name, value in changed.items():
        setattr(context, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)


class _Said(logging.Filter):
    """What Ray Data's terminal keeps while a run executes: its warnings (a cluster too small for a stage), but not
    its information (which stage starts), its notice that its progress bars are off (kosmos shows one), nor its
    errors (a failed execution's tracebacks: the driver raises that failure itself, a KosmosError in one line,
    anything else with its traceback). Its log files keep everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno == logging.WARNING and not record.name.startswith("ray.data._internal.progress")


@contextlib.contextmanager
def _errors_said_once():
    import ray.data  # noqa: F401 - it sets up its loggers when imported

    shown = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    said = _Said()
    for handler in shown:
        handler.addFilter(said)
    try:
        yield
    finally:
        for handler in shown:
            handler.removeFilter(said)


def _said(exc: BaseException) -> BaseException:
    """What a failed Ray execution says: the KosmosError a stage raised (a model that cannot load), as it was
    raised (not Ray's copy of it, whose message is the worker's traceback); a cluster that lost the run, one line;
    anything else (a bug) as it came."""
    import ray

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KosmosError) and not isinstance(e, ray.exceptions.RayError):
            e.args = (str(e).splitlines()[0],)  # Ray Data adds lines about its retries to what a stage raised
            return e
        todo += [e.__context__, e.__cause__, getattr(e, "cause", None)]

    if isinstance(exc, (ray.exceptions.ActorDiedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError)):
        first = one_line(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return ClusterError(
            f"the Ray cluster lost the run ({first}); what came back is written: run the same command again to finish"
        )
    return exc
